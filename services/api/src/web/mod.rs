//! The web page for radiologists: the site's worklist in reading order, kept
//! current from the event stream, and a study view with each image's overlay and
//! claim, release and report buttons.
//!
//! Plain HTML, CSS and JavaScript, embedded in the binary and served without
//! authentication: the page itself holds no data. Everything it shows comes from
//! `/api/v1` with the token the user typed, which the page keeps in the tab's
//! `sessionStorage` and sends only as `Authorization: Bearer`. The event stream is
//! read with `fetch()` and a stream reader rather than `EventSource` (which cannot
//! send that header), so the token never appears in a URL or an access log.

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// One embedded file and the headers it is served with.
#[derive(Debug, Clone, Copy)]
struct Asset {
    body: &'static [u8],
    content_type: &'static str,
}

const INDEX_HTML: Asset = Asset {
    body: include_bytes!("index.html"),
    content_type: "text/html; charset=utf-8",
};
const APP_JS: Asset = Asset {
    body: include_bytes!("app.js"),
    content_type: "text/javascript; charset=utf-8",
};
const APP_CSS: Asset = Asset {
    body: include_bytes!("app.css"),
    content_type: "text/css; charset=utf-8",
};
const FAVICON_SVG: Asset = Asset {
    body: include_bytes!("favicon.svg"),
    content_type: "image/svg+xml",
};

/// The page may load only its own files and talk only to its own origin; images
/// are shown from `blob:` URLs of overlays fetched with the token. No form may
/// submit natively, so a token can never end up in a query string.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; img-src 'self' blob:; connect-src 'self'; base-uri 'none'; \
    form-action 'none'; frame-ancestors 'none'";

/// The routes of the page, to merge into the API's router.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|| async { serve(INDEX_HTML) }))
        .route("/index.html", get(|| async { serve(INDEX_HTML) }))
        .route("/app.js", get(|| async { serve(APP_JS) }))
        .route("/app.css", get(|| async { serve(APP_CSS) }))
        .route("/favicon.svg", get(|| async { serve(FAVICON_SVG) }))
}

fn serve(asset: Asset) -> Response {
    let mut response = asset.body.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    // Revalidate every time, so a new release's page is never mixed with an old script.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_page_and_its_assets_are_served_without_credentials() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        let server = tokio::spawn(async move { axum::serve(listener, router::<()>()).await });
        let http = reqwest::Client::new();
        for (path, content_type) in [
            ("/", "text/html; charset=utf-8"),
            ("/app.js", "text/javascript; charset=utf-8"),
            ("/app.css", "text/css; charset=utf-8"),
            ("/favicon.svg", "image/svg+xml"),
        ] {
            let response = http
                .get(format!("http://{address}{path}"))
                .send()
                .await
                .expect("served");
            assert_eq!(response.status(), 200, "{path}");
            assert_eq!(response.headers()["content-type"], content_type, "{path}");
            assert!(
                response.headers().contains_key("content-security-policy"),
                "{path}"
            );
        }
        server.abort();
    }

    #[test]
    fn the_page_loads_nothing_from_elsewhere_and_shows_the_disclaimer() {
        let page = std::str::from_utf8(INDEX_HTML.body).expect("utf-8");
        let script = std::str::from_utf8(APP_JS.body).expect("utf-8");
        let style = std::str::from_utf8(APP_CSS.body).expect("utf-8");
        for text in [page, script, style] {
            assert!(!text.contains("http://") && !text.contains("https://"));
            assert!(!text.contains("@import") && !text.contains("@font-face"));
        }
        assert!(page.contains("AI results support prioritisation only; not a diagnosis"));
        // The stream is read with fetch, which can send the token as a header.
        assert!(!script.contains("new EventSource"));
        assert!(!script.contains("localStorage"));
    }
}
