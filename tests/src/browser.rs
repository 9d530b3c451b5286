//! Debian's headless Chromium driven through ChromeDriver (WebDriver), for the console's
//! browser tests. Screenshots go to `GRAYLINE_ARTIFACTS` (default `test-artifacts/`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use tempfile::TempDir;

use crate::wait::eventually;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// The built console (`dist/`): `GRAYLINE_CONSOLE_DIR`, else `dist` at the workspace root.
pub fn console_dir() -> PathBuf {
    let dir = std::env::var_os("GRAYLINE_CONSOLE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../dist"));
    assert!(
        dir.join("index.html").is_file(),
        "the console is not built at {}: run scripts/build-console (scripts/test does)",
        dir.display()
    );
    dir
}

/// Where screenshots and other artifacts go.
pub fn artifacts_dir() -> PathBuf {
    let dir = std::env::var_os("GRAYLINE_ARTIFACTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../test-artifacts"));
    std::fs::create_dir_all(&dir).expect("create the artifacts directory");
    dir
}

/// A ChromeDriver process and one headless Chromium session.
pub struct Browser {
    pub client: Client,
    driver: Child,
    port: u16,
    session: Option<String>,
    _profile: TempDir,
}

impl std::fmt::Debug for Browser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Browser").finish_non_exhaustive()
    }
}

impl Browser {
    pub async fn start() -> Browser {
        Browser::start_trusting(&[]).await
    }

    /// A browser that also trusts servers presenting these public keys (SPKI SHA-256,
    /// base64; see [`crate::pki::Leaf`]): the console over HTTPS with a test CA.
    pub async fn start_trusting(spki: &[&str]) -> Browser {
        for tool in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(tool).exists(),
                "{tool} is missing: install Debian's chromium and chromium-driver (scripts/setup browser, which scripts/test runs)"
            );
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let url = format!("http://127.0.0.1:{port}");
        eventually("chromedriver answers", Duration::from_secs(20), || async {
            reqwest::get(format!("{url}/status"))
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
        .await;
        let profile = TempDir::new().expect("profile dir");
        let caps = serde_json::json!({
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                    "--window-size=1280,1000",
                    format!("--user-data-dir={}", profile.path().display()),
                    format!("--ignore-certificate-errors-spki-list={}", spki.join(",")),
                ]
            }
        });
        let serde_json::Value::Object(caps) = caps else {
            unreachable!()
        };
        let client = ClientBuilder::rustls()
            .expect("tls")
            .capabilities(caps)
            .connect(&url)
            .await
            .expect("start a Chromium session");
        let session = client.session_id().await.ok().flatten();
        Browser {
            client,
            driver,
            port,
            session,
            _profile: profile,
        }
    }

    /// Ends the Chromium session (ChromeDriver then closes the browser).
    pub async fn close(mut self) {
        let client = self.client.clone();
        if client.close().await.is_ok() {
            self.session = None;
        }
    }

    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.expect("navigate");
    }

    /// Waits for an element matching `css` and returns it.
    pub async fn find(&self, css: &str) -> fantoccini::elements::Element {
        eventually(
            &format!("element {css}"),
            Duration::from_secs(15),
            || async {
                self.client
                    .find(Locator::Css(css))
                    .await
                    .map_err(|e| e.to_string())
            },
        )
        .await
    }

    pub async fn click(&self, css: &str) {
        let element = self.find(css).await;
        element
            .click()
            .await
            .unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    /// Replaces the value of an input or textarea.
    pub async fn fill(&self, css: &str, text: &str) {
        let element = self.find(css).await;
        element
            .clear()
            .await
            .unwrap_or_else(|e| panic!("clear {css}: {e}"));
        element
            .send_keys(text)
            .await
            .unwrap_or_else(|e| panic!("type into {css}: {e}"));
    }

    /// Replaces the value and leaves the field (fires `change`).
    pub async fn fill_and_leave(&self, css: &str, text: &str) {
        self.fill(css, text).await;
        self.find(css)
            .await
            .send_keys("\u{E004}")
            .await
            .expect("tab");
    }

    pub async fn select(&self, css: &str, value: &str) {
        let element = self.find(css).await;
        element
            .select_by_value(value)
            .await
            .unwrap_or_else(|e| panic!("select {value} in {css}: {e}"));
    }

    pub async fn text(&self, css: &str) -> String {
        self.find(css).await.text().await.unwrap_or_default()
    }

    /// Waits until the text of `css` contains `needle`, and returns it.
    pub async fn wait_text(&self, css: &str, needle: &str) -> String {
        eventually(
            &format!("{css} contains {needle:?}"),
            Duration::from_secs(15),
            || async {
                let text = match self.client.find(Locator::Css(css)).await {
                    Ok(e) => e.text().await.unwrap_or_default(),
                    Err(e) => return Err(e.to_string()),
                };
                text.contains(needle).then_some(text.clone()).ok_or(text)
            },
        )
        .await
    }

    /// The `attr` of every element matching `css` now, in document order.
    pub async fn attrs(&self, css: &str, attr: &str) -> Vec<String> {
        let mut out = Vec::new();
        for e in self
            .client
            .find_all(Locator::Css(css))
            .await
            .unwrap_or_default()
        {
            if let Ok(Some(v)) = e.attr(attr).await {
                out.push(v);
            }
        }
        out
    }

    /// Whether an element matching `css` exists right now.
    pub async fn exists(&self, css: &str) -> bool {
        self.client.find(Locator::Css(css)).await.is_ok()
    }

    /// Saves a PNG of the viewport as `<artifacts>/<name>.png`.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.expect("screenshot");
        let path = artifacts_dir().join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write screenshot");
        path
    }

    pub async fn resize(&self, width: u32, height: u32) {
        self.client
            .set_window_size(width, height)
            .await
            .expect("resize the window");
    }
}

impl Drop for Browser {
    /// After a failed test: end the WebDriver session (so ChromeDriver closes Chromium) with a
    /// plain blocking request, then stop ChromeDriver.
    fn drop(&mut self) {
        if let Some(id) = self.session.take() {
            use std::io::{Read, Write};
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                let _ = write!(
                    s,
                    "DELETE /session/{id} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
                );
                let _ = s.read_to_end(&mut Vec::new());
            }
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
