//! A small W3C WebDriver client for the browser tests: Debian's chromedriver on a
//! free loopback port driving headless Chromium with a fresh profile, spoken to
//! as JSON over HTTP with reqwest (no WebDriver crate needed for a handful of
//! commands). Chromedriver and every Chromium process it started are killed when
//! the [`Browser`] drops, also when a test fails.
#![allow(dead_code)]

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::free_loopback_port;

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// The key of an element reference in WebDriver answers.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";
/// The key under which `wait_for` reports a script that found the page not yet
/// rendered (a `TypeError`), instead of failing the wait.
const NOT_YET: &str = "fxtriage_not_yet";

/// Whether Chromium and chromedriver are installed (`scripts/bootstrap` installs
/// them). Missing, the test is skipped with a message, unless the real stack is
/// required (see `fxtriage_testkit::stack`), where it fails.
pub fn browser_installed() -> bool {
    let missing: Vec<&str> = [CHROMIUM, CHROMEDRIVER]
        .into_iter()
        .filter(|program| !Path::new(program).exists())
        .collect();
    if missing.is_empty() {
        return true;
    }
    fxtriage_testkit::stack::skip(&format!(
        "{} missing (Debian packages chromium and chromium-driver; scripts/bootstrap installs them)",
        missing.join(" and ")
    ));
    false
}

/// Where tests leave screenshots: `target/test-artifacts/`.
pub fn artifacts_dir() -> PathBuf {
    let directory = crate::support::repository_path("target/test-artifacts");
    std::fs::create_dir_all(&directory).expect("create target/test-artifacts");
    directory
}

/// The chromedriver process, leader of its own process group so that the
/// Chromium it starts can be killed with it.
struct Chromedriver {
    child: Child,
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _already_gone = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _reaped = self.child.wait();
    }
}

/// One WebDriver session in headless Chromium.
pub struct Browser {
    http: reqwest::Client,
    /// `http://127.0.0.1:<port>/session/<id>`
    session: String,
    // Dropped in this order: the processes first, then their profile directory.
    driver: Chromedriver,
    profile: tempfile::TempDir,
    log: PathBuf,
}

/// An element reference of the current page.
#[derive(Debug, Clone)]
pub struct Element(String);

impl Browser {
    /// Starts chromedriver (log in `log_dir`) and a session in a fresh profile.
    pub async fn launch(log_dir: &Path) -> Self {
        let port = free_loopback_port();
        let log = log_dir.join("chromedriver.log");
        let log_file = std::fs::File::create(&log).expect("chromedriver log");
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(log_file.try_clone().expect("log file"))
            .stderr(log_file)
            .process_group(0)
            .spawn()
            .expect("spawn chromedriver");
        let driver = Chromedriver { child };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("http client");
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = match http.get(format!("{base}/status")).send().await {
                Ok(response) => response
                    .json::<Value>()
                    .await
                    .is_ok_and(|status| status["value"]["ready"] == true),
                Err(_) => false,
            };
            if ready {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not get ready within 30 s; log: {}",
                log.display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }

        let profile = tempfile::tempdir().expect("profile directory");
        let capabilities = json!({
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {
                        "binary": CHROMIUM,
                        "args": [
                            "--headless=new",
                            "--no-sandbox",
                            "--disable-gpu",
                            "--disable-background-networking",
                            "--disable-component-update",
                            "--disable-sync",
                            "--no-first-run",
                            "--disable-quic",
                            "--disable-dev-shm-usage",
                            "--window-size=1440,1080",
                            format!("--user-data-dir={}", profile.path().display()),
                        ],
                    },
                },
            },
        });
        let created = command(
            &http,
            reqwest::Method::POST,
            &format!("{base}/session"),
            Some(capabilities),
        )
        .await
        .unwrap_or_else(|error| panic!("cannot start Chromium: {error}; log: {}", log.display()));
        let id = created["sessionId"]
            .as_str()
            .expect("a session id")
            .to_owned();
        Self {
            http,
            session: format!("{base}/session/{id}"),
            driver,
            profile,
            log,
        }
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        command(
            &self.http,
            reqwest::Method::POST,
            &format!("{}{path}", self.session),
            Some(body),
        )
        .await
        .unwrap_or_else(|error| panic!("WebDriver POST {path}: {error}"))
    }

    pub async fn goto(&self, url: &str) {
        self.post("/url", json!({ "url": url })).await;
    }

    pub async fn find(&self, css: &str) -> Element {
        let found = self
            .post("/element", json!({ "using": "css selector", "value": css }))
            .await;
        Element(
            found[ELEMENT_KEY]
                .as_str()
                .unwrap_or_else(|| panic!("no element reference for {css}: {found}"))
                .to_owned(),
        )
    }

    /// Clicks the element as a user would (it must be visible and enabled).
    pub async fn click(&self, css: &str) {
        let Element(id) = self.find(css).await;
        self.post(&format!("/element/{id}/click"), json!({})).await;
    }

    /// Clears the field and types `text` into it.
    pub async fn type_into(&self, css: &str, text: &str) {
        let Element(id) = self.find(css).await;
        self.post(&format!("/element/{id}/clear"), json!({})).await;
        self.post(&format!("/element/{id}/value"), json!({ "text": text }))
            .await;
    }

    /// Runs `body` (a function body; `arguments` holds `args`) in the page.
    pub async fn script(&self, body: &str, args: Value) -> Value {
        self.post("/execute/sync", json!({ "script": body, "args": args }))
            .await
    }

    /// Polls `body` until it returns something truthy, and returns that. A
    /// `TypeError` (an element the page has not rendered yet, such as the study
    /// header while the study loads) counts as "not yet" and is kept for the
    /// report. On timeout: a screenshot `browser-failure.png`, the page's text,
    /// the last such error, and a panic.
    pub async fn wait_for(&self, what: &str, body: &str, args: Value) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        let guarded = format!(
            "try {{ return (function () {{ {body} }}).apply(null, arguments); }} \
             catch (error) {{ if (error instanceof TypeError) \
             return {{ {NOT_YET}: String(error) }}; throw error; }}"
        );
        let mut last_error = None;
        loop {
            let value = self.script(&guarded, args.clone()).await;
            if let Some(error) = value.get(NOT_YET) {
                last_error = Some(error.to_string());
            }
            let truthy = match &value {
                Value::Null => false,
                Value::Object(fields) if fields.contains_key(NOT_YET) => false,
                Value::Bool(flag) => *flag,
                Value::String(text) => !text.is_empty(),
                Value::Array(items) => !items.is_empty(),
                _ => true,
            };
            if truthy {
                return value;
            }
            if Instant::now() > deadline {
                let screenshot = artifacts_dir().join("browser-failure.png");
                self.screenshot(&screenshot).await;
                let text = self
                    .script("return document.body.innerText;", json!([]))
                    .await;
                panic!(
                    "the page never showed {what} within 30 s (screenshot {}; last script error: {}):\n{}",
                    screenshot.display(),
                    last_error.as_deref().unwrap_or("none"),
                    text.as_str().unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The visible page as PNG.
    pub async fn screenshot(&self, path: &Path) {
        let encoded = command(
            &self.http,
            reqwest::Method::GET,
            &format!("{}/screenshot", self.session),
            None,
        )
        .await
        .unwrap_or_else(|error| panic!("WebDriver screenshot: {error}"));
        let png = decode_base64(encoded.as_str().expect("base64 text"))
            .expect("the screenshot is base64");
        assert!(png.starts_with(b"\x89PNG"), "the screenshot is a PNG");
        std::fs::write(path, png).expect("write the screenshot");
    }

    /// Ends the session (Chromium exits); the processes are killed on drop anyway.
    pub async fn quit(self) {
        let _ended = command(&self.http, reqwest::Method::DELETE, &self.session, None).await;
    }

    pub fn log(&self) -> &Path {
        &self.log
    }
}

/// One WebDriver command: its `value`, or the error WebDriver answered.
async fn command(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: Option<Value>,
) -> Result<Value, String> {
    let mut request = http.request(method, url);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.map_err(|error| error.to_string())?;
    let status = response.status();
    let answer: Value = response.json().await.map_err(|error| error.to_string())?;
    if !status.is_success() {
        return Err(format!(
            "{status} {}: {}",
            answer["value"]["error"].as_str().unwrap_or("error"),
            answer["value"]["message"].as_str().unwrap_or_default()
        ));
    }
    Ok(answer["value"].clone())
}

/// Standard base64 (screenshots are a few hundred kilobytes, so simple is fine).
pub fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let sextet = |byte: u8| -> Option<u32> {
        Some(match byte {
            b'A'..=b'Z' => byte - b'A',
            b'a'..=b'z' => byte - b'a' + 26,
            b'0'..=b'9' => byte - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let symbols: Vec<u8> = text
        .bytes()
        .filter(|byte| !byte.is_ascii_whitespace())
        .collect();
    let unpadded = symbols
        .iter()
        .rposition(|&byte| byte != b'=')
        .map_or(0, |last| last + 1);
    let mut bytes = Vec::with_capacity(unpadded * 3 / 4);
    for chunk in symbols[..unpadded].chunks(4) {
        let mut group = 0u32;
        for (index, &byte) in chunk.iter().enumerate() {
            group |= sextet(byte)? << (18 - 6 * index);
        }
        let decoded = group.to_be_bytes();
        match chunk.len() {
            4 => bytes.extend_from_slice(&decoded[1..4]),
            3 => bytes.extend_from_slice(&decoded[1..3]),
            2 => bytes.push(decoded[1]),
            _ => return None,
        }
    }
    Some(bytes)
}

#[test]
fn base64_decodes_what_it_should() {
    assert_eq!(decode_base64("").as_deref(), Some(&b""[..]));
    assert_eq!(decode_base64("Zg==").as_deref(), Some(&b"f"[..]));
    assert_eq!(decode_base64("Zm8=").as_deref(), Some(&b"fo"[..]));
    assert_eq!(decode_base64("Zm9v").as_deref(), Some(&b"foo"[..]));
    assert_eq!(decode_base64("Zm9vYmFy\n").as_deref(), Some(&b"foobar"[..]));
    assert_eq!(
        decode_base64("iVBORw0K").as_deref(),
        Some(&b"\x89PNG\r\n"[..])
    );
    assert!(decode_base64("Zm9v!").is_none());
}
