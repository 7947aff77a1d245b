//! What a handler receives: the request with its body already read within the route's limit, path
//! parameters, the peer (address and TLS client certificates), the session or API key the surface
//! checked, and the parsed form.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use ::http::request::Parts;
use ::http::{HeaderMap, Method, Uri, header};
use bytes::Bytes;
use rustls::pki_types::CertificateDer;

use super::api::ApiKey;
use super::response::{Flash, WebError};
use super::routes::Nav;
use super::session::{self, LoadedSession};
use crate::http::{Params, Peer};

/// Most fields and files a form may carry (the body limit bounds their size).
const MAX_FORM_FIELDS: usize = 200;

/// Side effects a handler asks of the response (cookies), applied by the dispatcher.
#[derive(Debug, Default)]
pub struct Effects {
    pub cookies: Vec<String>,
}

/// One uploaded file of a `multipart/form-data` form.
#[derive(Debug, Clone)]
pub struct UploadedFile {
    pub field: String,
    pub file_name: Option<String>,
    pub content_type: Option<String>,
    pub bytes: Bytes,
}

/// A parsed form: text fields in order, and uploaded files.
#[derive(Debug, Clone, Default)]
pub struct Form {
    fields: Vec<(String, String)>,
    files: Vec<UploadedFile>,
}

impl Form {
    /// The first value of a field, trimmed of nothing (passwords keep their spaces).
    pub fn get(&self, name: &str) -> Option<String> {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }

    /// The value, trimmed, or empty when absent.
    pub fn text(&self, name: &str) -> String {
        self.get(name)
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    }

    /// Every value of a repeated field (checkboxes).
    pub fn all(&self, name: &str) -> Vec<String> {
        self.fields
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// The uploaded file of a field, if one with content was sent.
    pub fn file(&self, name: &str) -> Option<&UploadedFile> {
        self.files
            .iter()
            .find(|f| f.field == name && !f.bytes.is_empty())
    }

    pub fn from_pairs(pairs: &[(&str, &str)]) -> Form {
        Form {
            fields: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            files: Vec::new(),
        }
    }
}

/// A request as a handler sees it.
pub struct Req {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    pub params: Params,
    pub peer: Peer,
    pub body: Bytes,
    /// The signed-in admin (always set on admin pages; set on public pages when signed in).
    pub session: Option<LoadedSession>,
    /// The API key used (always set on API routes).
    pub api_key: Option<ApiKey>,
    form: Option<Form>,
    pub(super) nav: Arc<Vec<(Nav, &'static str)>>,
    effects: Arc<Mutex<Effects>>,
}

impl Req {
    pub(super) fn new(
        parts: Parts,
        params: Params,
        peer: Peer,
        body: Bytes,
        nav: Arc<Vec<(Nav, &'static str)>>,
        effects: Arc<Mutex<Effects>>,
    ) -> Req {
        Req {
            method: parts.method,
            uri: parts.uri,
            headers: parts.headers,
            params,
            peer,
            body,
            session: None,
            api_key: None,
            form: None,
            nav,
            effects,
        }
    }

    /// A path parameter (`{serial}`), or 404 when absent.
    pub fn param(&self, name: &str) -> Result<&str, WebError> {
        self.params.get(name).ok_or(WebError::NotFound)
    }

    /// A query-string parameter.
    pub fn query(&self, name: &str) -> Option<String> {
        let q = self.uri.query()?;
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }

    pub fn path_and_query(&self) -> String {
        self.uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into())
    }

    /// A header as text (absent or not text: `None`).
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }

    /// The host the client asked for (`Host` header, or the HTTP/2 authority).
    pub fn host(&self) -> Option<String> {
        self.header(header::HOST.as_str())
            .or_else(|| self.uri.authority().map(|a| a.as_str().to_string()))
    }

    pub fn client_addr(&self) -> SocketAddr {
        self.peer.addr
    }

    /// The TLS client certificate chain, leaf first (empty when none was presented).
    pub fn client_certs(&self) -> &[CertificateDer<'static>] {
        &self.peer.certs
    }

    /// A cookie sent with the request.
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    }

    /// Adds a `Set-Cookie` to the response, whatever the handler returns.
    pub fn set_cookie(&self, cookie: String) {
        self.effects
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .cookies
            .push(cookie);
    }

    /// The parsed form (empty for requests without one).
    pub fn form(&self) -> &Form {
        static EMPTY: std::sync::OnceLock<Form> = std::sync::OnceLock::new();
        self.form
            .as_ref()
            .unwrap_or_else(|| EMPTY.get_or_init(Form::default))
    }

    /// The body as JSON (API routes).
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, WebError> {
        serde_json::from_slice(&self.body)
            .map_err(|e| WebError::BadRequest(format!("the JSON body is not valid: {e}")))
    }

    /// The signed-in admin's username ("system" outside a session), for the audit log.
    pub fn actor(&self) -> String {
        if let Some(s) = &self.session {
            s.record.username.clone()
        } else if let Some(k) = &self.api_key {
            format!("API key {}", k.name)
        } else {
            format!("anonymous ({})", self.peer.addr.ip())
        }
    }

    /// The token for the `_csrf` field of forms on this page: the session's, or for visitors who
    /// are not signed in, a cookie-bound token (set on this response when new).
    pub fn csrf_token(&self) -> String {
        if let Some(s) = &self.session {
            return s.record.csrf.clone();
        }
        if let Some(existing) = self
            .cookie(session::CSRF_COOKIE)
            .filter(|t| session::well_formed(t))
        {
            return existing;
        }
        let mut effects = self.effects.lock().unwrap_or_else(|p| p.into_inner());
        let prefix = format!("{}=", session::CSRF_COOKIE);
        if let Some(c) = effects.cookies.iter().find(|c| c.starts_with(&prefix)) {
            return c[prefix.len()..]
                .split(';')
                .next()
                .unwrap_or_default()
                .to_string();
        }
        let token = session::random_token();
        effects
            .cookies
            .push(session::cookie(session::CSRF_COOKIE, &token));
        token
    }

    /// The flash message left by the previous POST, cleared once shown.
    pub fn take_flash(&self) -> Option<Flash> {
        let raw = self.cookie(session::FLASH_COOKIE)?;
        self.set_cookie(session::clear_cookie(session::FLASH_COOKIE));
        Flash::decode(&raw)
    }

    /// Parses a urlencoded or multipart body into [`Req::form`].
    pub(super) async fn parse_form(&mut self) -> Result<(), WebError> {
        let content_type = self
            .header(header::CONTENT_TYPE.as_str())
            .unwrap_or_default();
        let mime = content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        let form = match mime.as_str() {
            "application/x-www-form-urlencoded" | "" => {
                let fields: Vec<(String, String)> = url::form_urlencoded::parse(&self.body)
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .take(MAX_FORM_FIELDS + 1)
                    .collect();
                if fields.len() > MAX_FORM_FIELDS {
                    return Err(WebError::BadRequest("the form has too many fields".into()));
                }
                Form {
                    fields,
                    files: Vec::new(),
                }
            }
            "multipart/form-data" => parse_multipart(&content_type, self.body.clone()).await?,
            _ => {
                return Err(WebError::BadRequest(format!(
                    "a form was expected, but the request body is {mime}"
                )));
            }
        };
        self.form = Some(form);
        Ok(())
    }
}

async fn parse_multipart(content_type: &str, body: Bytes) -> Result<Form, WebError> {
    let bad = |e: multer::Error| {
        WebError::BadRequest(format!("the uploaded form could not be read ({e})"))
    };
    let boundary = multer::parse_boundary(content_type).map_err(bad)?;
    let stream = futures_util::stream::once(async move { Ok::<Bytes, std::io::Error>(body) });
    let mut multipart = multer::Multipart::new(stream, boundary);
    let mut form = Form::default();
    let mut count = 0;
    while let Some(field) = multipart.next_field().await.map_err(bad)? {
        count += 1;
        if count > MAX_FORM_FIELDS {
            return Err(WebError::BadRequest("the form has too many fields".into()));
        }
        let name = field.name().unwrap_or_default().to_string();
        match field.file_name().map(str::to_string) {
            Some(file_name) => {
                let content_type = field.content_type().map(|m| m.to_string());
                let bytes = field.bytes().await.map_err(bad)?;
                form.files.push(UploadedFile {
                    field: name,
                    file_name: Some(file_name),
                    content_type,
                    bytes,
                });
            }
            None => {
                let text = field.text().await.map_err(bad)?;
                form.fields.push((name, text));
            }
        }
    }
    Ok(form)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn multipart_fields_and_files_are_parsed() {
        let body = "--XyZ\r\nContent-Disposition: form-data; name=\"_csrf\"\r\n\r\ntok\r\n--XyZ\r\nContent-Disposition: form-data; name=\"token\"; filename=\"t.p7m\"\r\nContent-Type: application/pkcs7-mime\r\n\r\nBYTES\r\n--XyZ--\r\n";
        let form = parse_multipart("multipart/form-data; boundary=XyZ", Bytes::from(body))
            .await
            .unwrap();
        assert_eq!(form.get("_csrf").as_deref(), Some("tok"));
        let file = form.file("token").unwrap();
        assert_eq!(file.file_name.as_deref(), Some("t.p7m"));
        assert_eq!(&file.bytes[..], b"BYTES");
    }

    #[tokio::test]
    async fn broken_multipart_is_a_clear_bad_request() {
        let err = parse_multipart(
            "multipart/form-data; boundary=XyZ",
            Bytes::from_static(b"--XyZ\r\ngarbage"),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, WebError::BadRequest(_)), "{err:?}");
        let err = parse_multipart("multipart/form-data", Bytes::new())
            .await
            .unwrap_err();
        assert!(matches!(err, WebError::BadRequest(_)));
    }
}
