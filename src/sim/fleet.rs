//! Many simulated Macs at once (one tokio task each), reaching Orchard over HTTPS, each waking
//! when the APNs simulator delivers a push to its token. `orchard demo` uses [`run_fleet`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::CertificateDer;
use tokio::sync::mpsc;

use super::mac::{MacError, MacModel, SimFuture, SimMac, SimRequest, SimResponse, Transport};

/// Largest response body a simulated Mac reads.
const MAX_RESPONSE: usize = 4 * 1024 * 1024;

/// HTTPS to a running Orchard, trusting its CA.
#[derive(Clone)]
pub struct HttpsTransport {
    base_url: String,
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl HttpsTransport {
    /// `base_url` is `https://host:port`; `ca_der` is the root that signed Orchard's TLS
    /// certificate.
    pub fn new(base_url: &str, ca_der: &[u8]) -> Result<Self, MacError> {
        HttpsTransport::build(base_url, ca_der, None)
    }

    /// Like [`HttpsTransport::new`], presenting a TLS client certificate (a Mac's identity:
    /// certificate DER, PKCS#8 key DER) on every connection.
    pub fn with_identity(
        base_url: &str,
        ca_der: &[u8],
        identity: (Vec<u8>, Vec<u8>),
    ) -> Result<Self, MacError> {
        HttpsTransport::build(base_url, ca_der, Some(identity))
    }

    fn build(
        base_url: &str,
        ca_der: &[u8],
        identity: Option<(Vec<u8>, Vec<u8>)>,
    ) -> Result<Self, MacError> {
        let tls_err = |e: rustls::Error| MacError::Transport(e.to_string());
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from(ca_der.to_vec()))
            .map_err(tls_err)?;
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(tls_err)?
        .with_root_certificates(roots);
        let tls = match identity {
            Some((cert, key)) => builder
                .with_client_auth_cert(
                    vec![CertificateDer::from(cert)],
                    rustls::pki_types::PrivateKeyDer::Pkcs8(key.into()),
                )
                .map_err(tls_err)?,
            None => builder.with_no_client_auth(),
        };
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .build();
        Ok(HttpsTransport {
            base_url: base_url.trim_end_matches('/').to_string(),
            client: Client::builder(TokioExecutor::new()).build(https),
        })
    }
}

impl Transport for HttpsTransport {
    fn send(&self, req: SimRequest) -> SimFuture<'_> {
        Box::pin(async move {
            let mut b = http::Request::builder()
                .method(req.method)
                .uri(format!("{}{}", self.base_url, req.path));
            for (k, v) in &req.headers {
                b = b.header(*k, v);
            }
            let request = b
                .body(Full::new(Bytes::from(req.body)))
                .map_err(|e| e.to_string())?;
            let resp = self
                .client
                .request(request)
                .await
                .map_err(|e| e.to_string())?;
            let status = resp.status().as_u16();
            let body = http_body_util::Limited::new(resp.into_body(), MAX_RESPONSE)
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes()
                .to_vec();
            Ok(SimResponse { status, body })
        })
    }
}

/// What a fleet run reports for one Mac.
#[derive(Debug, Clone)]
pub struct MacSummary {
    pub serial: String,
    pub udid: String,
    pub enrolled: bool,
    pub error: Option<String>,
    /// (request type, status) of every command answered.
    pub answered: Vec<(String, String)>,
}

/// Where the Macs get their enrollment profiles (the manual enrollment download).
pub trait ProfileSource: Send + Sync + 'static {
    fn profile(&self, mac: &MacModel) -> SimFuture<'_>;
}

/// Gives a simulated Mac its APNs device token (the APNs simulator's `register_device`).
pub type TokenSource = Arc<dyn Fn(&MacModel) -> Vec<u8> + Send + Sync>;

/// Enrolls the simulated Macs `models` with profiles from `profiles`, then keeps each one
/// answering: whenever a push for its token arrives on `pushes`, it runs an MDM session. `pace`
/// spaces out power-on (None: all at once, `--fast`). Runs until `pushes` closes; the returned
/// channel yields each Mac's summary after enrollment and after every session.
pub fn run_fleet(
    transport: Arc<dyn Transport>,
    profiles: Arc<dyn ProfileSource>,
    tokens: TokenSource,
    models: Vec<MacModel>,
    pace: Option<Duration>,
    mut pushes: mpsc::UnboundedReceiver<Vec<u8>>,
) -> mpsc::UnboundedReceiver<MacSummary> {
    let (report_tx, report_rx) = mpsc::unbounded_channel();
    let mut routes: HashMap<Vec<u8>, mpsc::UnboundedSender<()>> = HashMap::new();
    let mut macs = Vec::new();
    for model in models {
        let token = tokens(&model);
        let (tx, rx) = mpsc::unbounded_channel();
        routes.insert(token.clone(), tx);
        macs.push((model, token, rx));
    }
    tokio::spawn(async move {
        while let Some(token) = pushes.recv().await {
            if let Some(tx) = routes.get(&token) {
                let _ = tx.send(());
            }
        }
    });
    for (i, (model, token, mut wake)) in macs.into_iter().enumerate() {
        let transport = transport.clone();
        let profiles = profiles.clone();
        let report = report_tx.clone();
        let delay = pace.map(|p| p * i as u32);
        tokio::spawn(async move {
            if let Some(d) = delay {
                tokio::time::sleep(d).await;
            }
            let mut summary = MacSummary {
                serial: model.serial.clone(),
                udid: model.udid.clone(),
                enrolled: false,
                error: None,
                answered: Vec::new(),
            };
            let mut mac = match SimMac::new(model, token) {
                Ok(m) => m,
                Err(e) => {
                    summary.error = Some(e.to_string());
                    let _ = report.send(summary);
                    return;
                }
            };
            let enrolled = match profiles.profile(&mac.model).await {
                Ok(p) if p.status == 200 => mac.install_profile(transport.as_ref(), &p.body).await,
                Ok(p) => Err(MacError::Refused {
                    what: "profile download",
                    status: p.status,
                    body: String::from_utf8_lossy(&p.body).chars().take(200).collect(),
                }),
                Err(e) => Err(MacError::Transport(e)),
            };
            summary.enrolled = enrolled.is_ok();
            summary.error = enrolled.err().map(|e| e.to_string());
            let _ = report.send(summary.clone());
            if !summary.enrolled {
                return;
            }
            while wake.recv().await.is_some() {
                // Pushes coalesce: one session drains whatever arrived meanwhile.
                while wake.try_recv().is_ok() {}
                let result = mac.session(transport.as_ref()).await;
                summary.error = result.err().map(|e| e.to_string());
                summary.answered = mac
                    .reported
                    .iter()
                    .map(|(t, s)| (t.clone(), s.as_str().to_string()))
                    .collect();
                let _ = report.send(summary.clone());
            }
        });
    }
    report_rx
}
