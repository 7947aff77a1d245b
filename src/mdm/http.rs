//! Thin HTTP adapters for the device endpoints `PUT /mdm/checkin` and `PUT /mdm/connect`: take
//! the body and headers, find the identity, call one service method, map its error to the
//! status Apple documents (never 401, which would unenroll the Mac).

use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode};
use http_body_util::Full;

use super::auth::Authenticator;
use super::service::{MdmError, MdmService, Reply};

/// Largest check-in body accepted.
pub const MAX_CHECKIN_BODY: usize = 256 * 1024;
/// Largest connect body (an InstalledApplicationList report can be large).
pub const MAX_CONNECT_BODY: usize = 8 * 1024 * 1024;
/// The header carrying the detached CMS signature of the body.
pub const MDM_SIGNATURE: &str = "mdm-signature";

/// The device-facing MDM endpoints.
#[derive(Clone)]
pub struct MdmEndpoints {
    service: MdmService,
    auth: Authenticator,
}

impl MdmEndpoints {
    pub fn new(service: MdmService, auth: Authenticator) -> Self {
        MdmEndpoints { service, auth }
    }

    pub fn service(&self) -> &MdmService {
        &self.service
    }

    /// `PUT /mdm/checkin`. `tls_chain` is the client certificate chain (leaf first, may be empty).
    pub fn checkin(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        tls_chain: &[Vec<u8>],
    ) -> Response<Full<Bytes>> {
        let result = self
            .identify(headers, body, tls_chain)
            .and_then(|id| self.service.checkin(id.as_ref(), body));
        respond("checkin", result)
    }

    /// `PUT /mdm/connect`.
    pub fn connect(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        tls_chain: &[Vec<u8>],
    ) -> Response<Full<Bytes>> {
        let result = self
            .identify(headers, body, tls_chain)
            .and_then(|id| self.service.connect(id.as_ref(), body));
        respond("connect", result)
    }

    fn identify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        tls_chain: &[Vec<u8>],
    ) -> Result<Option<super::service::DeviceIdentity>, MdmError> {
        let sig = headers.get(MDM_SIGNATURE).map(|v| v.as_bytes());
        self.auth.identify(sig, body, tls_chain)
    }
}

fn respond(endpoint: &'static str, result: Result<Reply, MdmError>) -> Response<Full<Bytes>> {
    match result {
        Ok(Reply::Empty) => plain(StatusCode::OK, Bytes::new()),
        Ok(Reply::Plist(body)) => Response::builder()
            .status(StatusCode::OK)
            .header(http::header::CONTENT_TYPE, "application/xml")
            .body(Full::new(Bytes::from(body)))
            .unwrap_or_else(|_| plain(StatusCode::INTERNAL_SERVER_ERROR, Bytes::new())),
        Err(e) => {
            let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
            if status.is_server_error() {
                tracing::error!(endpoint, error = %e, "MDM request failed");
            } else {
                tracing::info!(endpoint, error = %e, status = status.as_u16(), "MDM request refused");
            }
            plain(status, Bytes::from(format!("{e}\n")))
        }
    }
}

fn plain(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    r
}
