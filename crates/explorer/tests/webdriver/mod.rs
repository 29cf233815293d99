//! A small WebDriver client for Debian's headless Chromium: chromedriver speaks plain HTTP/JSON
//! (W3C WebDriver), so a few requests through reqwest drive the browser.

#![allow(dead_code)]

use base64::Engine;
use serde_json::{json, Value};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where Debian's `chromium` package installs the browser.
const CHROMIUM: &str = "/usr/bin/chromium";
/// The driver from Debian's `chromium-driver` package (on PATH).
const CHROMEDRIVER: &str = "chromedriver";
/// The packages a machine needs for these tests.
pub const PACKAGES: &str = "Debian's `chromium` and `chromium-driver` packages \
(apt-get install -y chromium chromium-driver)";
/// Longest wait for chromedriver to answer its status after starting.
const DRIVER_START_MS: u64 = 10_000;
/// Longest a page may take to load, and a script to run, inside the browser.
const PAGE_LOAD_MS: u64 = 15_000;
const SCRIPT_MS: u64 = 10_000;
/// Longest one WebDriver request may take.
const REQUEST_MS: u64 = 30_000;
/// How often a wait polls the page.
const POLL_MS: u64 = 100;
/// The W3C key of an element reference.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Browser {
    http: reqwest::Client,
    /// `http://127.0.0.1:<port>/session/<id>`
    session: String,
    driver: Child,
    /// The browser's process, killed if the session is not closed (a test that panicked).
    browser_pid: Option<u64>,
    closed: bool,
    _profile: tempfile::TempDir,
}

/// Fails with a message naming the packages when the browser or its driver is missing.
fn require_browser() {
    let driver_found = std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|dir| dir.join(CHROMEDRIVER).is_file())
    });
    assert!(
        Path::new(CHROMIUM).is_file() && driver_found,
        "the explorer's browser tests need {PACKAGES}: {CHROMIUM} or {CHROMEDRIVER} is missing"
    );
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

impl Browser {
    /// Starts chromedriver on a free local port and one headless Chromium session with a fresh
    /// profile.
    pub async fn start() -> Browser {
        require_browser();
        let port = free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {CHROMEDRIVER} ({PACKAGES}): {e}"));
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(REQUEST_MS))
            .build()
            .unwrap();
        let root = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        while http.get(format!("{root}/status")).send().await.is_err() {
            assert!(
                started.elapsed() < Duration::from_millis(DRIVER_START_MS),
                "{CHROMEDRIVER} did not answer within {DRIVER_START_MS} ms"
            );
            tokio::time::sleep(Duration::from_millis(POLL_MS)).await;
        }
        let profile = tempfile::tempdir().unwrap();
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "timeouts": {"pageLoad": PAGE_LOAD_MS, "script": SCRIPT_MS, "implicit": 0},
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--window-size=1200,900",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            },
        }}});
        let answer: Value = http
            .post(format!("{root}/session"))
            .json(&capabilities)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = answer["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("chromedriver refused a session: {answer}"));
        Browser {
            http,
            session: format!("{root}/session/{id}"),
            browser_pid: answer["value"]["capabilities"]["goog:processID"].as_u64(),
            driver,
            closed: false,
            _profile: profile,
        }
    }

    async fn command(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self.http.request(method, format!("{}{path}", self.session));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer: Value = request.send().await.unwrap().json().await.unwrap();
        let value = answer["value"].clone();
        if let Some(error) = value.get("error") {
            panic!("WebDriver {path}: {error}: {}", value["message"]);
        }
        value
    }

    pub async fn goto(&self, url: &str) {
        self.command(reqwest::Method::POST, "/url", Some(json!({ "url": url })))
            .await;
    }

    /// The page's current address.
    pub async fn url(&self) -> String {
        let value = self.command(reqwest::Method::GET, "/url", None).await;
        value.as_str().unwrap_or_default().to_string()
    }

    /// Runs `script` (a function body; `arguments` are `args`) and returns what it returns.
    pub async fn script(&self, script: &str, args: Vec<Value>) -> Value {
        self.command(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
        .await
    }

    /// The rendered text of the first element matching `css`, or `None` when there is none.
    pub async fn text(&self, css: &str) -> Option<String> {
        let value = self
            .script(
                "var e = document.querySelector(arguments[0]); return e ? e.innerText : null;",
                vec![json!(css)],
            )
            .await;
        value.as_str().map(str::to_string)
    }

    /// The whole page's rendered text.
    pub async fn page_text(&self) -> String {
        self.text("body").await.unwrap_or_default()
    }

    /// Polls until `done` holds for the element's text, or fails after `limit`.
    pub async fn wait_text(
        &self,
        css: &str,
        limit: Duration,
        done: impl Fn(&str) -> bool,
    ) -> String {
        let started = Instant::now();
        loop {
            let text = self.text(css).await;
            if let Some(text) = text.as_deref().filter(|t| done(t)) {
                return text.to_string();
            }
            assert!(
                started.elapsed() < limit,
                "`{css}` did not reach the expected text within {limit:?}: {text:?}"
            );
            tokio::time::sleep(Duration::from_millis(POLL_MS)).await;
        }
    }

    /// Types `text` into the first element matching `css` and presses Enter.
    pub async fn type_and_enter(&self, css: &str, text: &str) {
        let element = self
            .command(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        let id = element[ELEMENT_KEY]
            .as_str()
            .unwrap_or_else(|| panic!("no element `{css}`: {element}"))
            .to_string();
        self.command(
            reqwest::Method::POST,
            &format!("/element/{id}/value"),
            Some(json!({ "text": format!("{text}\u{E007}") })),
        )
        .await;
    }

    /// Saves a PNG of the viewport to `path`.
    pub async fn screenshot(&self, path: &Path) {
        let value = self
            .command(reqwest::Method::GET, "/screenshot", None)
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(value.as_str().unwrap_or_default())
            .unwrap();
        std::fs::write(path, png).unwrap();
    }

    /// Closes the session (the browser exits) and stops the driver.
    pub async fn quit(mut self) {
        let _ = self
            .http
            .delete(&self.session)
            .send()
            .await
            .and_then(|r| r.error_for_status());
        self.closed = true;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.closed {
            if let Some(pid) = self.browser_pid {
                let _ = Command::new("kill").arg(pid.to_string()).status();
            }
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Where the screenshots go: `target/explorer-screenshots` (or under `CARGO_TARGET_DIR`).
pub fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let dir = target.join("explorer-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir.canonicalize().unwrap_or(dir)
}
