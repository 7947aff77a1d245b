//! The TLS listener as a library: a client certificate presented in the handshake reaches the
//! handler (browsers present none and still connect), and `server::start` serves in-process on a
//! loopback port and stops cleanly.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use orchard::http::{self, BoxFuture, Handler, Peer, Response, Shutdown};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// Answers with the number of client certificates and the leaf's length.
struct CountCerts;

impl Handler for CountCerts {
    fn handle(
        &self,
        _req: ::http::Request<hyper::body::Incoming>,
        peer: Peer,
    ) -> BoxFuture<Response> {
        let text = format!(
            "{} {}",
            peer.certs.len(),
            peer.certs.first().map(|c| c.len()).unwrap_or(0)
        );
        Box::pin(async move { ::http::Response::new(Full::new(Bytes::from(text))) })
    }
}

fn self_signed(name: &str) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec![name.to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    (
        cert.der().clone(),
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    )
}

async fn fetch(
    server_cert: &CertificateDer<'static>,
    port: u16,
    client_cert: Option<(CertificateDer<'static>, PrivateKeyDer<'static>)>,
) -> String {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(server_cert.clone()).unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let config = match client_cert {
        Some((cert, key)) => builder.with_client_auth_cert(vec![cert], key).unwrap(),
        None => builder.with_no_client_auth(),
    };
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_only()
        .enable_http1()
        .enable_http2()
        .build();
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    let req = ::http::Request::get(format!("https://127.0.0.1:{port}/"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(30), client.request(req))
        .await
        .unwrap()
        .unwrap();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(body.to_vec()).unwrap()
}

#[tokio::test]
async fn client_certificates_reach_the_handler_and_are_optional() {
    let (server_cert, server_key) = self_signed("127.0.0.1");
    let tls = http::tls::server_config(vec![server_cert.clone()], server_key, vec![]).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let shutdown = Shutdown::new();
    let task = tokio::spawn(http::serve(
        listener,
        tls,
        Arc::new(CountCerts),
        shutdown.clone(),
        Duration::from_secs(5),
    ));

    // A browser-like client with no certificate.
    assert_eq!(fetch(&server_cert, port, None).await, "0 0");
    // A Mac-like client with its identity certificate (any issuer is accepted at the TLS level).
    let (device_cert, device_key) = self_signed("device.example");
    let expected = format!("1 {}", device_cert.len());
    assert_eq!(
        fetch(&server_cert, port, Some((device_cert, device_key))).await,
        expected
    );

    shutdown.trigger();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn server_starts_in_process_on_a_loopback_port_and_stops() {
    let dir = tempfile::tempdir().unwrap();
    let config = orchard::config::Config::for_data_dir(dir.path());
    let running = orchard::server::start(config).await.unwrap();
    assert_ne!(running.addr.port(), 0);
    assert_eq!(running.public_url.port(), Some(running.addr.port()));
    assert!(
        running
            .setup_link
            .as_deref()
            .unwrap()
            .starts_with("https://localhost:")
    );
    let ca = std::fs::read(dir.path().join("tls/ca.crt")).unwrap();
    let ca = rustls_pemfile::certs(&mut &ca[..]).next().unwrap().unwrap();
    // The in-process server answers /healthz over TLS verified against its own CA.
    let body = {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca).unwrap();
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(config)
            .https_only()
            .enable_http1()
            .build();
        let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
        let req =
            ::http::Request::get(format!("https://127.0.0.1:{}/healthz", running.addr.port()))
                .body(Full::new(Bytes::new()))
                .unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(30), client.request(req))
            .await
            .unwrap()
            .unwrap();
        resp.into_body().collect().await.unwrap().to_bytes()
    };
    assert_eq!(&body[..], b"ok\n");
    tokio::time::timeout(Duration::from_secs(30), running.stop())
        .await
        .unwrap()
        .unwrap();
}
