//! The web page for radiologists: the worklist in reading order (a site's, or a
//! reading network's merged across its sites), kept current from the event
//! stream of each site, and a study view with each image's overlay and claim,
//! release and report buttons.
//!
//! Plain HTML, CSS and JavaScript modules (no build step, nothing from another
//! origin), embedded in the binary and served without authentication: the page
//! itself holds no data. Everything it shows comes from `/api/v1` with the token
//! the user typed, which the page keeps in the tab's `sessionStorage` and sends
//! only as `Authorization: Bearer`. The event streams are read with `fetch()` and
//! a stream reader rather than `EventSource` (which cannot send that header), so
//! the token never appears in a URL or an access log.
//!
//! The script's modules, under `js/`:
//!
//! | module | what |
//! |---|---|
//! | `main.js` | start-up and routing between the views (`index.html` loads only this one) |
//! | `api.js` | `fetch` with the bearer token, the API's error messages |
//! | `session.js` | sign-in to a site or a group, `sessionStorage`, sign-out |
//! | `events.js` | Server-Sent Events over `fetch`, one stream per site, reconnecting |
//! | `worklist.js` | the worklist table, filters, paging, claim-next, ticking clocks |
//! | `study.js` | the study view: overlays from `blob:` URLs, claim, release, report |
//! | `deliveries.js` | the site's failed result deliveries, for its admins, with "send again" |
//! | `analytics.js` | the site's turnaround over 30 days, drawn as SVG in the page |
//! | `discrepancies.js` | the second look: reported "no fracture" where the AI suspected one, with the review form |
//! | `format.js` | DOM building (text only) and formatting helpers |

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
const APP_CSS: Asset = Asset {
    body: include_bytes!("app.css"),
    content_type: "text/css; charset=utf-8",
};
const FAVICON_SVG: Asset = Asset {
    body: include_bytes!("favicon.svg"),
    content_type: "image/svg+xml",
};

/// A JavaScript module of the page, served at `/js/<name>`.
const fn module(body: &'static [u8]) -> Asset {
    Asset {
        body,
        content_type: "text/javascript; charset=utf-8",
    }
}

/// The page's script: ES modules loaded by the browser itself (no build step),
/// `main.js` first (`<script type="module">` in `index.html`), which imports the
/// others by relative path. Each needs its route here: a module the browser
/// cannot load stops the whole page, which the tests below guard against.
const MODULES: &[(&str, Asset)] = &[
    ("/js/main.js", module(include_bytes!("js/main.js"))),
    ("/js/api.js", module(include_bytes!("js/api.js"))),
    ("/js/session.js", module(include_bytes!("js/session.js"))),
    ("/js/events.js", module(include_bytes!("js/events.js"))),
    ("/js/worklist.js", module(include_bytes!("js/worklist.js"))),
    ("/js/study.js", module(include_bytes!("js/study.js"))),
    (
        "/js/deliveries.js",
        module(include_bytes!("js/deliveries.js")),
    ),
    (
        "/js/analytics.js",
        module(include_bytes!("js/analytics.js")),
    ),
    (
        "/js/discrepancies.js",
        module(include_bytes!("js/discrepancies.js")),
    ),
    ("/js/drift.js", module(include_bytes!("js/drift.js"))),
    ("/js/sso.js", module(include_bytes!("js/sso.js"))),
    ("/js/format.js", module(include_bytes!("js/format.js"))),
];

/// The page may load only its own files and talk only to its own origin; images
/// are shown from `blob:` URLs of overlays fetched with the token. No form may
/// submit natively, so a token can never end up in a query string.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; img-src 'self' blob:; connect-src 'self'; base-uri 'none'; \
    form-action 'none'; frame-ancestors 'none'";

/// The routes of the page, to merge into the API's router.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let router = Router::new()
        .route("/", get(|| async { serve(INDEX_HTML) }))
        .route("/index.html", get(|| async { serve(INDEX_HTML) }))
        .route("/app.css", get(|| async { serve(APP_CSS) }))
        .route("/favicon.svg", get(|| async { serve(FAVICON_SVG) }));
    MODULES.iter().fold(router, |router, &(path, asset)| {
        router.route(path, get(move || async move { serve(asset) }))
    })
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
    use std::collections::BTreeSet;

    use super::*;

    fn text(asset: &Asset) -> &'static str {
        std::str::from_utf8(asset.body).expect("utf-8")
    }

    fn served_module(path: &str) -> Option<&'static Asset> {
        MODULES
            .iter()
            .find(|(served, _)| *served == path)
            .map(|(_, asset)| asset)
    }

    /// The module names a script imports: `import … from "x"`, `export … from
    /// "x"`, `import "x"` and `import("x")`.
    fn imports(script: &str) -> Vec<String> {
        let mut found = Vec::new();
        for keyword in ["from", "import"] {
            for (at, _) in script.match_indices(keyword) {
                let before = script[..at].chars().next_back();
                if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$' || c == '.') {
                    continue;
                }
                let rest = script[at + keyword.len()..].trim_start();
                let rest = if keyword == "import" {
                    rest.strip_prefix('(').unwrap_or(rest).trim_start()
                } else {
                    rest
                };
                let Some(quote) = rest
                    .chars()
                    .next()
                    .filter(|c| matches!(c, '"' | '\'' | '`'))
                else {
                    continue;
                };
                let name = &rest[1..];
                let end = name.find(quote).expect("a closed module name");
                found.push(name[..end].to_owned());
            }
        }
        found
    }

    /// `./x.js` imported by the module at `/js/y.js` is `/js/x.js`.
    fn resolve(importer: &str, specifier: &str) -> String {
        let relative = specifier.strip_prefix("./").unwrap_or_else(|| {
            panic!("{importer} imports {specifier:?}: only ./ names of the page's own modules")
        });
        assert!(
            !relative.contains('/') && relative.ends_with(".js"),
            "{importer} imports {specifier:?}"
        );
        let directory = &importer[..=importer.rfind('/').expect("a path")];
        format!("{directory}{relative}")
    }

    #[tokio::test]
    async fn the_page_and_its_assets_are_served_without_credentials() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        let server = tokio::spawn(async move { axum::serve(listener, router::<()>()).await });
        let http = reqwest::Client::new();
        let mut expected = vec![
            ("/", INDEX_HTML),
            ("/index.html", INDEX_HTML),
            ("/app.css", APP_CSS),
            ("/favicon.svg", FAVICON_SVG),
        ];
        expected.extend(MODULES.iter().copied());
        for (path, asset) in expected {
            let response = http
                .get(format!("http://{address}{path}"))
                .send()
                .await
                .expect("served");
            assert_eq!(response.status(), 200, "{path}");
            let headers = response.headers().clone();
            assert_eq!(headers["content-type"], asset.content_type, "{path}");
            assert_eq!(
                headers["content-security-policy"], CONTENT_SECURITY_POLICY,
                "{path}"
            );
            assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
            assert_eq!(headers["referrer-policy"], "no-referrer", "{path}");
            assert_eq!(headers["cache-control"], "no-cache", "{path}");
            assert_eq!(response.bytes().await.expect("body"), asset.body, "{path}");
        }
        let old_script = http
            .get(format!("http://{address}/app.js"))
            .send()
            .await
            .expect("answered");
        assert_eq!(old_script.status(), 404);
        server.abort();
    }

    #[test]
    fn the_page_loads_nothing_from_elsewhere_and_shows_the_disclaimer() {
        let page = text(&INDEX_HTML);
        let style = text(&APP_CSS);
        let mut texts = vec![("index.html", page), ("app.css", style)];
        texts.extend(MODULES.iter().map(|(path, asset)| (*path, text(asset))));
        for (name, text) in texts {
            // The SVG namespace is a name, not an address: nothing is fetched.
            let text = text.replace("\"http://www.w3.org/2000/svg\"", "");
            assert!(
                !text.contains("http://") && !text.contains("https://"),
                "{name}"
            );
            assert!(
                !text.contains("@import") && !text.contains("@font-face"),
                "{name}"
            );
        }
        assert!(page.contains("AI results support prioritisation only; not a diagnosis"));
        for (path, module) in MODULES {
            let script = text(module);
            // The stream is read with fetch, which can send the token as a header.
            assert!(!script.contains("EventSource("), "{path}");
            assert!(!script.contains("localStorage"), "{path}");
            // Text from the server is set as text, never parsed as HTML.
            assert!(!script.contains("innerHTML"), "{path}");
            assert!(!script.contains("outerHTML"), "{path}");
            assert!(!script.contains("insertAdjacentHTML"), "{path}");
            assert!(!script.contains("document.write"), "{path}");
        }
    }

    #[test]
    fn the_page_loads_one_module_script_and_every_module_it_imports_is_served() {
        let page = text(&INDEX_HTML);
        assert_eq!(page.matches("<script").count(), 1, "one script tag");
        assert!(page.contains(r#"<script type="module" src="/js/main.js"></script>"#));
        assert!(served_module("/js/main.js").is_some());

        // Every module reachable from main.js is served, and every module
        // served is reachable.
        let mut reached = BTreeSet::from(["/js/main.js".to_owned()]);
        let mut pending = vec!["/js/main.js".to_owned()];
        while let Some(importer) = pending.pop() {
            let script = text(served_module(&importer).expect("served"));
            for specifier in imports(script) {
                let path = resolve(&importer, &specifier);
                assert!(
                    served_module(&path).is_some(),
                    "{importer} imports {specifier}, but the router does not serve {path}: add it to MODULES"
                );
                if reached.insert(path.clone()) {
                    pending.push(path);
                }
            }
        }
        let served: BTreeSet<String> = MODULES.iter().map(|(path, _)| (*path).to_owned()).collect();
        assert_eq!(reached, served, "every module served is imported");
    }

    #[test]
    fn every_module_in_the_js_folder_is_served() {
        let folder = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/web/js");
        let on_disk: BTreeSet<String> = std::fs::read_dir(&folder)
            .expect("src/web/js")
            .map(|entry| {
                entry
                    .expect("entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .filter(|name| name.ends_with(".js"))
            .map(|name| format!("/js/{name}"))
            .collect();
        let served: BTreeSet<String> = MODULES.iter().map(|(path, _)| (*path).to_owned()).collect();
        assert_eq!(on_disk, served);
        for (path, asset) in MODULES {
            let name = path.strip_prefix("/js/").expect("under /js/");
            assert_eq!(
                std::fs::read(folder.join(name)).expect("the module's file"),
                asset.body,
                "{path} serves js/{name}"
            );
        }
    }

    #[test]
    fn module_imports_are_found() {
        let script = "import { a, b } from \"./a.js\";\nimport './side.js';\n\
            export { c } from './c.js';\nconst d = await import(\"./d.js\");\n\
            // the value comes from here\nconst imported = 1; const fromage = 2;";
        assert_eq!(imports(script), ["./a.js", "./c.js", "./side.js", "./d.js"]);
        assert_eq!(resolve("/js/main.js", "./api.js"), "/js/api.js");
    }
}
