//! The browser harness: headless Chromium driven through `chromedriver` (WebDriver over plain HTTP
//! on loopback) with a fresh profile. Every wait is bounded; the driver is killed on drop.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;

const DRIVER_TIMEOUT: Duration = Duration::from_secs(60);
const ELEMENT_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Browser {
    pub client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
}

fn chromium_binary() -> String {
    if let Ok(path) = std::env::var("ORCHARD_CHROMIUM") {
        return path;
    }
    for candidate in [
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
        "/usr/bin/google-chrome",
    ] {
        if std::path::Path::new(candidate).exists() {
            return candidate.to_string();
        }
    }
    panic!(
        "no Chromium found: install it with `apt-get install -y chromium chromium-driver` (.ci/run does)"
    );
}

/// Starts chromedriver and a headless Chromium session.
pub async fn start_browser() -> Browser {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").expect("a free port");
        l.local_addr().unwrap().port()
    };
    let driver = Command::new(
        std::env::var("ORCHARD_CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into()),
    )
    .arg(format!("--port={port}"))
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .expect("start chromedriver (apt-get install -y chromium-driver)");
    let profile = tempfile::tempdir().expect("profile dir");
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": chromium_binary(),
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--ignore-certificate-errors", "--window-size=1280,900",
                format!("--user-data-dir={}", profile.path().display()),
            ]
        }),
    );
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + DRIVER_TIMEOUT;
    let mut driver = driver;
    let client = loop {
        match ClientBuilder::new(HttpConnector::new())
            .capabilities(caps.clone())
            .connect(&url)
            .await
        {
            Ok(c) => break c,
            Err(e) => {
                if Instant::now() > deadline {
                    let _ = driver.kill();
                    panic!("chromedriver did not start a session within {DRIVER_TIMEOUT:?}: {e}");
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    Browser {
        client,
        driver,
        _profile: profile,
    }
}

impl Browser {
    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.expect("navigate");
    }

    /// Signs in at `base` through the sign-in form and waits for the dashboard.
    pub async fn sign_in(&self, base: &str, username: &str, password: &str) {
        self.goto(&format!("{base}/signin")).await;
        self.wait_for_heading("Sign in to Orchard").await;
        self.fill("#field-username", username).await;
        self.fill("#field-password", password).await;
        self.click_and_load("main button[type=submit]").await;
        self.wait_for_heading("Dashboard").await;
    }

    /// Waits (bounded) for an element and returns it.
    pub async fn find(&self, css: &str) -> fantoccini::elements::Element {
        self.client
            .wait()
            .at_most(ELEMENT_TIMEOUT)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no element {css}: {e}"))
    }

    pub async fn fill(&self, css: &str, text: &str) {
        let el = self.find(css).await;
        el.clear().await.expect("clear");
        el.send_keys(text).await.expect("type");
    }

    /// Chooses `path` in the file input `css`, as an admin picking the file does.
    pub async fn choose_file(&self, css: &str, path: &std::path::Path) {
        let el = self.find(css).await;
        el.send_keys(&path.display().to_string())
            .await
            .expect("choose the file");
    }

    /// GETs `path` from the page with the browser's own session and gives the body's text
    /// (for a download, which headless Chromium would otherwise save out of reach).
    pub async fn fetch_text(&self, path: &str) -> String {
        let script = "var done = arguments[arguments.length - 1];\n\
            fetch(arguments[0], { credentials: 'same-origin' })\n\
              .then(function (r) { return r.text().then(function (t) { done([r.status, t]); }); })\n\
              .catch(function (e) { done([0, String(e)]); });";
        let answer = self
            .client
            .execute_async(script, vec![serde_json::Value::String(path.into())])
            .await
            .unwrap_or_else(|e| panic!("fetch {path}: {e}"));
        assert_eq!(answer[0], 200, "GET {path}: {answer}");
        answer[1].as_str().expect("text").to_string()
    }

    pub async fn click(&self, css: &str) {
        self.find(css).await.click().await.expect("click");
    }

    /// Clicks `css` (a submit button or a link) and waits (bounded) until the page it leads to
    /// has loaded, so nothing is read from the page being left.
    pub async fn click_and_load(&self, css: &str) {
        self.client
            .execute("document.documentElement.dataset.left = 'yes';", vec![])
            .await
            .expect("mark the page");
        self.click(css).await;
        let deadline = Instant::now() + ELEMENT_TIMEOUT;
        loop {
            let loaded = self
                .client
                .execute(
                    "return document.readyState === 'complete' && !document.documentElement.dataset.left;",
                    vec![],
                )
                .await;
            if matches!(loaded, Ok(serde_json::Value::Bool(true))) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "clicking {css} did not load a page within {ELEMENT_TIMEOUT:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The text of the page's `<main>`.
    pub async fn main_text(&self) -> String {
        self.find("main").await.text().await.expect("text")
    }

    pub async fn path(&self) -> String {
        self.client
            .current_url()
            .await
            .expect("url")
            .path()
            .to_string()
    }

    /// Waits (bounded) until the page's `<h1>` reads `text`.
    pub async fn wait_for_heading(&self, text: &str) {
        let deadline = Instant::now() + ELEMENT_TIMEOUT;
        loop {
            if let Ok(h1) = self.client.find(Locator::Css("h1")).await
                && h1.text().await.map(|t| t.contains(text)).unwrap_or(false)
            {
                return;
            }
            if Instant::now() > deadline {
                let source = self.client.source().await.unwrap_or_default();
                panic!("heading {text:?} did not appear; page:\n{source}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// With ORCHARD_SCREENSHOTS=DIR set, saves a screenshot of the page as `DIR/name.png`.
    pub async fn snap(&self, name: &str) {
        if let Ok(dir) = std::env::var("ORCHARD_SCREENSHOTS") {
            self.screenshot(&std::path::Path::new(&dir).join(format!("{name}.png")))
                .await;
        }
    }

    /// Saves a PNG screenshot (for looking at the UI).
    pub async fn screenshot(&self, path: &std::path::Path) {
        let png = self.client.screenshot().await.expect("screenshot");
        std::fs::write(path, png).expect("write screenshot");
    }

    pub async fn close(self) {
        let client = self.client.clone();
        let _ = tokio::time::timeout(Duration::from_secs(20), client.close()).await;
        // Drop kills the driver.
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
