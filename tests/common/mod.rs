//! The integration harness: starts the real `orchard` binary on 127.0.0.1:0 with a temporary data
//! directory, waits for `/healthz`, and talks HTTPS to it trusting its own CA, with a cookie jar and
//! helpers that sign in and post forms with their CSRF token. Every wait is bounded; the process is
//! killed on drop.
#![allow(dead_code)] // each test binary uses a different part of the harness

pub mod browser;
pub mod dep_app;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode, header};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// How long the binary may take to start serving.
const START_TIMEOUT: Duration = Duration::from_secs(90);
/// How long any one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

pub const ADMIN_USER: &str = "admin";
pub const ADMIN_PASSWORD: &str = "correct horse battery staple";

/// A running `orchard serve`.
pub struct TestApp {
    /// `https://127.0.0.1:PORT`
    pub base_url: String,
    pub port: u16,
    pub data_dir: PathBuf,
    /// The certificate(s) the clients trust (Orchard's CA unless the test gave its own).
    pub trust_pem: Vec<u8>,
    /// The first-admin link the server logged, if any.
    pub setup_link: Option<String>,
    pub client: TestClient,
    child: Option<Child>,
    logs: Arc<Mutex<Vec<String>>>,
    _temp: Option<tempfile::TempDir>,
}

/// Starts `orchard serve` with a fresh data directory and `args`/`env` added.
pub async fn spawn_app(args: &[&str], env: &[(&str, &str)]) -> TestApp {
    let temp = tempfile::tempdir().expect("temp dir");
    let data_dir = temp.path().join("data");
    let mut app = spawn_in(&data_dir, args, env).await;
    app._temp = Some(temp);
    app
}

/// Starts `orchard serve` on an existing data directory (for restart tests). The caller keeps the
/// directory alive.
pub async fn spawn_in(data_dir: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> TestApp {
    spawn_in_trusting(data_dir, args, env, None).await
}

/// [`spawn_in`] for a server with an admin-supplied certificate: the client trusts `trust_pem`
/// instead of Orchard's own CA.
pub async fn spawn_in_trusting(
    data_dir: &std::path::Path,
    args: &[&str],
    env: &[(&str, &str)],
    trust_pem: Option<Vec<u8>>,
) -> TestApp {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_orchard"));
    cmd.arg("serve")
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--listen")
        .arg("127.0.0.1:0")
        .args(args)
        .env("RUST_LOG", "info")
        .env_remove("ORCHARD_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("start the orchard binary");
    let logs = Arc::new(Mutex::new(Vec::new()));
    for stream in [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let logs = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                if std::env::var_os("ORCHARD_TEST_LOGS").is_some() {
                    eprintln!("[orchard] {line}");
                }
                logs.lock().unwrap().push(line);
            }
        });
    }

    let deadline = Instant::now() + START_TIMEOUT;
    let port = loop {
        if let Some(port) = find_in_logs(&logs, "Orchard is serving", "addr")
            .and_then(|a| a.rsplit(':').next().and_then(|p| p.parse::<u16>().ok()))
        {
            break port;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "orchard exited with {status} before serving:\n{}",
                logs.lock().unwrap().join("\n")
            );
        }
        assert!(
            Instant::now() < deadline,
            "orchard did not start within {START_TIMEOUT:?}:\n{}",
            logs.lock().unwrap().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let setup_link = find_in_logs(&logs, "No admin account exists yet", "link");
    let base_url = format!("https://127.0.0.1:{port}");
    let ca_pem = trust_pem.unwrap_or_else(|| {
        std::fs::read(data_dir.join("tls").join("ca.crt")).expect("the CA certificate exists")
    });
    let client = TestClient::new(&base_url, &ca_pem, false);
    let app = TestApp {
        base_url,
        port,
        data_dir: data_dir.to_path_buf(),
        trust_pem: ca_pem,
        setup_link,
        client,
        child: Some(child),
        logs,
        _temp: None,
    };
    // Wait for /healthz (bounded).
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(resp) = app.client.try_get("/healthz").await
            && resp.status == StatusCode::OK
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/healthz did not answer:\n{}",
            app.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app
}

/// The value of `key` on the first log line containing `marker`, in human (`key=value`) or JSON
/// (`"key":"value"`) format.
fn find_in_logs(logs: &Mutex<Vec<String>>, marker: &str, key: &str) -> Option<String> {
    let logs = logs.lock().unwrap();
    let line = logs.iter().find(|l| l.contains(marker))?;
    let human = format!("{key}=");
    let json = format!("\"{key}\":\"");
    let (start, stop): (usize, fn(char) -> bool) = if let Some(at) = line.find(&human) {
        (at + human.len(), char::is_whitespace)
    } else {
        (line.find(&json)? + json.len(), |c| c == '"')
    };
    let rest = &line[start..];
    let end = rest.find(stop).unwrap_or(rest.len());
    Some(rest[..end].trim_matches('"').to_string())
}

impl TestApp {
    /// Everything the server logged so far.
    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    /// A new client (own cookie jar) trusting this server's CA; HTTP/1.1 only when `http1`.
    pub fn new_client(&self, http1: bool) -> TestClient {
        TestClient::new(&self.base_url, &self.trust_pem, http1)
    }

    /// Creates the first admin through the setup link (or signs in if it already exists) with
    /// [`ADMIN_USER`] / [`ADMIN_PASSWORD`]; the client is signed in afterwards.
    pub async fn sign_in_admin(&self) {
        if let Some(link) = &self.setup_link {
            let path = link
                .split_once("/setup/")
                .map(|(_, t)| format!("/setup/{t}"))
                .unwrap();
            let page = self.client.get(&path).await;
            if page.status == StatusCode::OK {
                let resp = self
                    .client
                    .post_form(
                        &path,
                        &[
                            ("username", ADMIN_USER),
                            ("password", ADMIN_PASSWORD),
                            ("confirm", ADMIN_PASSWORD),
                        ],
                    )
                    .await;
                assert_eq!(
                    resp.status,
                    StatusCode::SEE_OTHER,
                    "setup failed: {}",
                    resp.body
                );
                return;
            }
        }
        self.client.sign_in(ADMIN_USER, ADMIN_PASSWORD).await;
    }

    /// Sends SIGTERM and waits (bounded) for the process to exit; returns whether it exited cleanly.
    pub fn terminate(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return false;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A response read in full.
#[derive(Debug)]
pub struct TestResponse {
    pub status: StatusCode,
    pub headers: hyper::HeaderMap,
    pub body: String,
    pub version: hyper::Version,
}

impl TestResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn location(&self) -> Option<&str> {
        self.header("location")
    }
}

/// An HTTPS client with a cookie jar that remembers the last page (for its CSRF token).
pub struct TestClient {
    pub base_url: String,
    inner: HyperClient<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    cookies: Mutex<BTreeMap<String, String>>,
    last_page: Mutex<String>,
}

impl TestClient {
    pub fn new(base_url: &str, ca_pem: &[u8], http1_only: bool) -> TestClient {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pemfile::certs(&mut &ca_pem[..]) {
            roots.add(cert.expect("CA PEM")).expect("CA certificate");
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let builder = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(config)
            .https_only();
        let connector = if http1_only {
            builder.enable_http1().build()
        } else {
            builder.enable_http1().enable_http2().build()
        };
        TestClient {
            base_url: base_url.to_string(),
            inner: HyperClient::builder(TokioExecutor::new()).build(connector),
            cookies: Mutex::new(BTreeMap::new()),
            last_page: Mutex::new(String::new()),
        }
    }

    pub fn cookie(&self, name: &str) -> Option<String> {
        self.cookies.lock().unwrap().get(name).cloned()
    }

    pub fn set_cookie(&self, name: &str, value: &str) {
        self.cookies
            .lock()
            .unwrap()
            .insert(name.into(), value.into());
    }

    pub fn clear_cookies(&self) {
        self.cookies.lock().unwrap().clear();
    }

    /// The `_csrf` value of the last page fetched.
    pub fn csrf(&self) -> Option<String> {
        extract_csrf(&self.last_page.lock().unwrap())
    }

    pub async fn get(&self, path: &str) -> TestResponse {
        self.send(Method::GET, path, vec![], Bytes::new()).await
    }

    pub async fn try_get(&self, path: &str) -> Result<TestResponse, String> {
        self.try_send(Method::GET, path, vec![], Bytes::new()).await
    }

    /// Posts a form, adding `_csrf` from the last page unless the fields carry one.
    pub async fn post_form(&self, path: &str, fields: &[(&str, &str)]) -> TestResponse {
        let mut pairs: Vec<(String, String)> = fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if !pairs.iter().any(|(k, _)| k == "_csrf")
            && let Some(token) = self.csrf()
        {
            pairs.push(("_csrf".into(), token));
        }
        self.post_form_exact(path, &pairs).await
    }

    /// Posts exactly these fields (no CSRF added).
    pub async fn post_form_exact(&self, path: &str, pairs: &[(String, String)]) -> TestResponse {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish();
        let headers = vec![
            (
                "content-type".to_string(),
                "application/x-www-form-urlencoded".to_string(),
            ),
            ("origin".to_string(), self.base_url.clone()),
        ];
        self.send(Method::POST, path, headers, Bytes::from(body))
            .await
    }

    /// Posts `multipart/form-data` with text fields (plus `_csrf` from the last page) and files
    /// given as (field, file name, bytes).
    pub async fn post_multipart(
        &self,
        path: &str,
        fields: &[(&str, &str)],
        files: &[(&str, &str, &[u8])],
    ) -> TestResponse {
        let boundary = "orchard-test-boundary-7d3f";
        let mut body = Vec::new();
        let mut fields: Vec<(String, String)> = fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if !fields.iter().any(|(k, _)| k == "_csrf")
            && let Some(token) = self.csrf()
        {
            fields.push(("_csrf".into(), token));
        }
        for (k, v) in &fields {
            body.extend_from_slice(
                format!(
                    "--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n"
                )
                .as_bytes(),
            );
        }
        for (field, name, bytes) in files {
            body.extend_from_slice(
                format!(
                    "--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
                )
                .as_bytes(),
            );
            body.extend_from_slice(bytes);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        let headers = vec![
            (
                "content-type".to_string(),
                format!("multipart/form-data; boundary={boundary}"),
            ),
            ("origin".to_string(), self.base_url.clone()),
        ];
        self.send(Method::POST, path, headers, Bytes::from(body))
            .await
    }

    /// Signs in through the sign-in form; panics when it fails.
    pub async fn sign_in(&self, username: &str, password: &str) {
        let page = self.get("/signin").await;
        assert_eq!(page.status, StatusCode::OK);
        let resp = self
            .post_form("/signin", &[("username", username), ("password", password)])
            .await;
        assert_eq!(
            resp.status,
            StatusCode::SEE_OTHER,
            "sign-in failed: {}",
            resp.body
        );
    }

    /// Follows a redirect response with a GET.
    pub async fn follow(&self, resp: &TestResponse) -> TestResponse {
        let to = resp.location().expect("a redirect");
        self.get(to).await
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: Vec<(String, String)>,
        body: Bytes,
    ) -> TestResponse {
        match self.try_send(method.clone(), path, headers, body).await {
            Ok(r) => r,
            Err(e) => panic!("{method} {path}: {e}"),
        }
    }

    pub async fn try_send(
        &self,
        method: Method,
        path: &str,
        headers: Vec<(String, String)>,
        body: Bytes,
    ) -> Result<TestResponse, String> {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{}", self.base_url, path));
        let cookie_header = {
            let jar = self.cookies.lock().unwrap();
            jar.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("; ")
        };
        if !cookie_header.is_empty() {
            req = req.header(header::COOKIE, cookie_header);
        }
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let req = req.body(Full::new(body)).map_err(|e| e.to_string())?;
        let resp = tokio::time::timeout(REQUEST_TIMEOUT, self.inner.request(req))
            .await
            .map_err(|_| "timed out".to_string())?
            .map_err(|e| format!("{e:?}"))?;
        let status = resp.status();
        let version = resp.version();
        let headers = resp.headers().clone();
        let body = tokio::time::timeout(REQUEST_TIMEOUT, resp.into_body().collect())
            .await
            .map_err(|_| "body timed out".to_string())?
            .map_err(|e| e.to_string())?
            .to_bytes();
        let body = String::from_utf8_lossy(&body).to_string();
        {
            let mut jar = self.cookies.lock().unwrap();
            for value in headers.get_all(header::SET_COOKIE) {
                let Ok(value) = value.to_str() else { continue };
                let first = value.split(';').next().unwrap_or_default();
                let Some((name, val)) = first.split_once('=') else {
                    continue;
                };
                if value.contains("Max-Age=0") {
                    jar.remove(name.trim());
                } else {
                    jar.insert(name.trim().to_string(), val.to_string());
                }
            }
        }
        if headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/html"))
        {
            *self.last_page.lock().unwrap() = body.clone();
        }
        Ok(TestResponse {
            status,
            headers,
            body,
            version,
        })
    }
}

/// The `_csrf` hidden field's value in a page.
pub fn extract_csrf(html: &str) -> Option<String> {
    let at = html.find("name=\"_csrf\" value=\"")? + "name=\"_csrf\" value=\"".len();
    let rest = &html[at..];
    Some(rest[..rest.find('"')?].to_string())
}
