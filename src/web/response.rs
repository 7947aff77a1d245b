//! Building responses: rendered pages inside the layout ([`Chrome`]), redirects with flash messages,
//! JSON, and the error type every handler returns ([`WebError`]), shown per surface: an HTML page for
//! people, JSON for the API, a bare status for devices. Internals never reach the client.

use ::http::{HeaderValue, Method, StatusCode, header};
use askama::Template;
use base64::Engine;
use bytes::Bytes;
use http_body_util::Full;
use serde::{Deserialize, Serialize};

use super::request::Req;
use super::routes::Surface;
use super::session;
use crate::http::Response;
use crate::store::StoreError;

pub type WebResult = Result<Response, WebError>;

/// Why a request failed, in words for the person (or program) who sent it.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error("This page does not exist.")]
    NotFound,
    #[error("This address does not accept that kind of request.")]
    MethodNotAllowed(Vec<Method>),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Forbidden(String),
    #[error(
        "This form has expired or was not sent from Orchard. Go back, reload the page and try again."
    )]
    CsrfFailed,
    #[error("Sign in to continue.")]
    SignInNeeded { next: Option<String> },
    #[error("{0}")]
    Unauthorized(String),
    #[error("The upload is too large: the limit is {}.", human_size(*.0))]
    TooLarge(usize),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unavailable(String),
    /// Logged in full; the client only sees that something went wrong.
    #[error("Something went wrong inside Orchard. The details are in the server log.")]
    Internal(String),
}

impl WebError {
    pub fn status(&self) -> StatusCode {
        match self {
            WebError::NotFound => StatusCode::NOT_FOUND,
            WebError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            WebError::BadRequest(_) => StatusCode::BAD_REQUEST,
            WebError::Forbidden(_) | WebError::CsrfFailed => StatusCode::FORBIDDEN,
            WebError::SignInNeeded { .. } => StatusCode::SEE_OTHER,
            WebError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            WebError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            WebError::Conflict(_) => StatusCode::CONFLICT,
            WebError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            WebError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn title(&self) -> &'static str {
        match self {
            WebError::NotFound => "Page not found",
            WebError::MethodNotAllowed(_) => "Not allowed here",
            WebError::BadRequest(_) => "Orchard could not read that request",
            WebError::Forbidden(_) | WebError::CsrfFailed => "Request refused",
            WebError::SignInNeeded { .. } | WebError::Unauthorized(_) => "Sign in needed",
            WebError::TooLarge(_) => "Too large",
            WebError::Conflict(_) => "Already changed",
            WebError::Unavailable(_) => "Not available right now",
            WebError::Internal(_) => "Something went wrong",
        }
    }
}

impl From<StoreError> for WebError {
    fn from(e: StoreError) -> Self {
        WebError::Internal(e.to_string())
    }
}

impl From<crate::ade::inventory::InventoryError> for WebError {
    fn from(e: crate::ade::inventory::InventoryError) -> Self {
        match e {
            crate::ade::inventory::InventoryError::NotFound(_) => WebError::NotFound,
            other => WebError::Internal(other.to_string()),
        }
    }
}

impl From<askama::Error> for WebError {
    fn from(e: askama::Error) -> Self {
        WebError::Internal(format!("template: {e}"))
    }
}

/// A one-time message shown on the page after a redirect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flash {
    /// "success", "info" or "warning" (a CSS class and the tag's word).
    pub kind: String,
    pub message: String,
}

impl Flash {
    pub fn success(message: impl Into<String>) -> Flash {
        Flash {
            kind: "success".into(),
            message: message.into(),
        }
    }

    pub fn info(message: impl Into<String>) -> Flash {
        Flash {
            kind: "info".into(),
            message: message.into(),
        }
    }

    pub fn warning(message: impl Into<String>) -> Flash {
        Flash {
            kind: "warning".into(),
            message: message.into(),
        }
    }

    pub(super) fn encode(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
    }

    pub(super) fn decode(raw: &str) -> Option<Flash> {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(raw)
            .ok()?;
        let flash: Flash = serde_json::from_slice(&bytes).ok()?;
        let ok_kind = matches!(flash.kind.as_str(), "success" | "info" | "warning");
        (ok_kind && flash.message.len() <= 500).then_some(flash)
    }
}

/// A navigation link in the layout.
#[derive(Debug, Clone)]
pub struct NavLink {
    pub label: &'static str,
    pub href: &'static str,
    pub current: bool,
}

/// What the layout needs around every page: build it with [`Chrome::new`] and put it in the
/// template struct as a field named `chrome`.
#[derive(Debug, Clone)]
pub struct Chrome {
    pub title: String,
    pub nav: Vec<NavLink>,
    /// The signed-in admin's name.
    pub user: Option<String>,
    pub csrf: String,
    pub flash: Option<Flash>,
    pub version: &'static str,
}

impl Chrome {
    pub fn new(req: &Req, title: impl Into<String>) -> Chrome {
        let path = req.uri.path();
        let user = req.session.as_ref().map(|s| s.record.username.clone());
        let nav = if user.is_some() {
            req.nav
                .iter()
                .map(|(item, href)| NavLink {
                    label: item.label(),
                    href,
                    current: if *href == "/" {
                        path == "/"
                    } else {
                        path == *href || path.starts_with(&format!("{href}/"))
                    },
                })
                .collect()
        } else {
            Vec::new()
        };
        Chrome {
            title: title.into(),
            nav,
            user,
            csrf: req.csrf_token(),
            flash: req.take_flash(),
            version: env!("CARGO_PKG_VERSION"),
        }
    }

    /// A bare chrome for error pages (no navigation, no form).
    fn bare(title: &str) -> Chrome {
        Chrome {
            title: title.into(),
            nav: Vec::new(),
            user: None,
            csrf: String::new(),
            flash: None,
            version: env!("CARGO_PKG_VERSION"),
        }
    }
}

/// Renders a page with status 200.
pub fn render<T: Template>(page: &T) -> Result<Response, WebError> {
    render_status(StatusCode::OK, page)
}

/// Renders a page with the given status (422 for a form with errors).
pub fn render_status<T: Template>(status: StatusCode, page: &T) -> Result<Response, WebError> {
    let html = page.render()?;
    Ok(with_body(
        status,
        "text/html; charset=utf-8",
        Bytes::from(html),
    ))
}

/// A `303 See Other` to `to` (a path on this site).
pub fn redirect(to: &str) -> Response {
    let mut resp = with_body(
        StatusCode::SEE_OTHER,
        "text/plain; charset=utf-8",
        Bytes::new(),
    );
    let location = if to.starts_with('/') && !to.starts_with("//") {
        to
    } else {
        "/"
    };
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

/// A redirect that shows `flash` on the next page.
pub fn redirect_with_flash(to: &str, flash: Flash) -> Response {
    let mut resp = redirect(to);
    let cookie = format!(
        "{}={}; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age=60",
        session::FLASH_COOKIE,
        flash.encode()
    );
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    resp
}

/// A JSON response.
pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Response {
    let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    with_body(status, "application/json", Bytes::from(body))
}

/// A response with a body and content type.
pub fn with_body(status: StatusCode, content_type: &'static str, body: Bytes) -> Response {
    let mut resp = ::http::Response::new(Full::new(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    chrome: Chrome,
    status: u16,
    message: &'a str,
}

/// The response for an error on `surface`.
pub fn error_response(surface: Surface, err: &WebError) -> Response {
    if let WebError::Internal(detail) = err {
        tracing::error!(error = %detail, "request failed");
    }
    if let WebError::SignInNeeded { next } = err
        && surface != Surface::Api
    {
        return match next {
            Some(next) => redirect(&format!(
                "/signin?next={}",
                url::form_urlencoded::byte_serialize(next.as_bytes()).collect::<String>()
            )),
            None => redirect_with_flash(
                "/signin",
                Flash::info(
                    "Your session ended, so Orchard did not save that change. Sign in and try again.",
                ),
            ),
        };
    }
    let status = err.status();
    let message = err.to_string();
    let mut resp = match surface {
        Surface::Api => json(
            status,
            &serde_json::json!({ "error": { "status": status.as_u16(), "message": message } }),
        ),
        Surface::Device => with_body(status, "text/plain; charset=utf-8", Bytes::from(message)),
        Surface::Admin | Surface::Public => {
            let page = ErrorPage {
                chrome: Chrome::bare(err.title()),
                status: status.as_u16(),
                message: &message,
            };
            match page.render() {
                Ok(html) => with_body(status, "text/html; charset=utf-8", Bytes::from(html)),
                Err(_) => with_body(status, "text/plain; charset=utf-8", Bytes::from(message)),
            }
        }
    };
    if let WebError::MethodNotAllowed(allowed) = err {
        let list = allowed
            .iter()
            .map(Method::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        if let Ok(v) = HeaderValue::from_str(&list) {
            resp.headers_mut().insert(header::ALLOW, v);
        }
    }
    resp
}

/// "64 KiB", "1 MiB".
pub fn human_size(bytes: usize) -> String {
    if bytes >= 1024 * 1024 && bytes.is_multiple_of(1024 * 1024) {
        format!("{} MiB", bytes / (1024 * 1024))
    } else if bytes >= 1024 {
        format!("{} KiB", bytes / 1024)
    } else {
        format!("{bytes} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flash_round_trips_and_refuses_garbage() {
        let f = Flash::success("Admin alice created");
        assert_eq!(Flash::decode(&f.encode()), Some(f));
        assert_eq!(Flash::decode("%%%"), None);
        let bad = Flash {
            kind: "<script>".into(),
            message: "x".into(),
        };
        assert_eq!(Flash::decode(&bad.encode()), None);
    }

    #[test]
    fn errors_never_show_internals() {
        let resp = error_response(
            Surface::Admin,
            &WebError::Internal("sled: disk on fire".into()),
        );
        assert_eq!(resp.status(), 500);
        let body = format!("{:?}", resp.body());
        assert!(!body.contains("disk on fire"));
        let resp = error_response(Surface::Api, &WebError::TooLarge(1024 * 1024));
        assert_eq!(resp.status(), 413);
        assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/json");
    }

    #[test]
    fn redirects_stay_on_this_site() {
        assert_eq!(
            redirect("//evil.example/x").headers()[header::LOCATION],
            "/"
        );
        assert_eq!(
            redirect("https://evil.example").headers()[header::LOCATION],
            "/"
        );
        assert_eq!(redirect("/devices").headers()[header::LOCATION], "/devices");
        assert_eq!(human_size(64 * 1024), "64 KiB");
        assert_eq!(human_size(1024 * 1024), "1 MiB");
    }
}
