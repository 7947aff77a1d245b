//! hyper plumbing shared by every surface: the TLS listener (HTTP/1.1 and HTTP/2), the router, body
//! limits and graceful shutdown. Knows nothing of Orchard's domain: the web layer hands it one
//! [`Handler`].

pub mod router;
pub mod tls;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rustls::ServerConfig;
use rustls::pki_types::CertificateDer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

pub use router::{Found, Params, RouteError, Router};

/// Every response Orchard sends: the body is built in memory.
pub type Response = ::http::Response<Full<Bytes>>;

/// A boxed future, for handlers stored in tables.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Who is on the other end of a connection: its address and the certificate chain it presented
/// during the TLS handshake (leaf first; empty for browsers). Inserted into every request's
/// extensions and handed to handlers by the web layer.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    pub certs: Arc<Vec<CertificateDer<'static>>>,
}

/// What serves the requests of every connection.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, req: ::http::Request<Incoming>, peer: Peer) -> BoxFuture<Response>;
}

/// A request body that is too large or broke off.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the request body is larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("the request body could not be read: {0}")]
    Read(String),
}

/// Reads a whole body, refusing more than `limit` bytes (checking `Content-Length` first, so an
/// honest oversized upload is refused before it is sent).
pub async fn read_body<B>(
    headers: &::http::HeaderMap,
    body: B,
    limit: usize,
) -> Result<Bytes, BodyError>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let declared = headers
        .get(::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge { limit });
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(BodyError::TooLarge { limit }),
        Err(e) => Err(BodyError::Read(e.to_string())),
    }
}

/// Tells a running listener to stop; cheap to clone.
#[derive(Debug, Clone)]
pub struct Shutdown(Arc<watch::Sender<bool>>);

impl Shutdown {
    pub fn new() -> Shutdown {
        Shutdown(Arc::new(watch::channel(false).0))
    }

    pub fn trigger(&self) {
        self.0.send_replace(true);
    }

    /// A receiver that changes to `true` when shutdown starts (for background workers).
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.0.subscribe()
    }
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown::new()
    }
}

/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `handler` over TLS on an already bound `listener` until `shutdown` fires, then stops
/// accepting, lets in-flight requests finish (at most `grace`) and returns.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    handler: Arc<dyn Handler>,
    shutdown: Shutdown,
    grace: Duration,
) {
    let acceptor = TlsAcceptor::from(tls);
    let builder = auto::Builder::new(TokioExecutor::new());
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut stop = shutdown.subscribe();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|stop| *stop) => break,
        };
        let (tcp, addr) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Usually EMFILE: back off a little instead of spinning.
                tracing::warn!(error = %e, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let builder = builder.clone();
        let handler = handler.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    tracing::debug!(%addr, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%addr, "TLS handshake timed out");
                    return;
                }
            };
            let certs = stream
                .get_ref()
                .1
                .peer_certificates()
                .map(|chain| chain.iter().map(|c| c.clone().into_owned()).collect())
                .unwrap_or_default();
            let peer = Peer {
                addr,
                certs: Arc::new(certs),
            };
            let service = hyper::service::service_fn(move |req: ::http::Request<Incoming>| {
                let mut req = req;
                req.extensions_mut().insert(peer.clone());
                let fut = handler.handle(req, peer.clone());
                async move { Ok::<_, Infallible>(fut.await) }
            });
            let conn = builder
                .serve_connection(TokioIo::new(stream), service)
                .into_owned();
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(%addr, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("some connections were still busy after {grace:?}; closing them");
    }
}
