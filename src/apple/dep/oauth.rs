//! OAuth 1.0a HMAC-SHA1 signing of `GET /session` (RFC 5849), the only OAuth request the DEP API
//! knows. The simulator verifies with the same functions; both are pinned by the known-answer vectors
//! in `testdata/apple-dep/synthetic/oauth1_session_kat.json`.

use base64::Engine as _;
use hmac::{KeyInit as _, Mac as _};

/// The six `oauth_*` parameters of a `/session` request, in the order gomodule/oauth1 writes them.
#[derive(Clone, PartialEq, Eq)]
pub struct OAuthParams {
    pub consumer_key: String,
    pub token: String,
    pub nonce: String,
    pub timestamp: String,
}

/// RFC 3986 percent-encoding as OAuth requires: only `A-Za-z0-9-._~` stay as they are.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes `%XX` escapes; `None` for a malformed escape or bytes that are not UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    crate::http::router::percent_decode(s)
}

/// The base URI of RFC 5849 §3.4.1.2: lower-case scheme and host, default port dropped, no query.
pub fn normalize_url(url: &url::Url) -> String {
    // `url::Url` already lower-cases the scheme and host and drops the scheme's default port.
    let mut out = format!("{}://{}", url.scheme(), url.host_str().unwrap_or_default());
    if let Some(port) = url.port() {
        out.push_str(&format!(":{port}"));
    }
    out.push_str(url.path());
    out
}

impl OAuthParams {
    fn pairs(&self) -> [(&'static str, &str); 6] {
        [
            ("oauth_consumer_key", &self.consumer_key),
            ("oauth_nonce", &self.nonce),
            ("oauth_signature_method", "HMAC-SHA1"),
            ("oauth_timestamp", &self.timestamp),
            ("oauth_token", &self.token),
            ("oauth_version", "1.0"),
        ]
    }

    /// The signature base string of RFC 5849 §3.4.1 for `method url`.
    pub fn base_string(&self, method: &str, url: &url::Url) -> String {
        let mut pairs: Vec<(String, String)> = self
            .pairs()
            .iter()
            .map(|(k, v)| (percent_encode(k), percent_encode(v)))
            .collect();
        pairs.sort();
        let params = pairs
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&");
        format!(
            "{}&{}&{}",
            method.to_ascii_uppercase(),
            percent_encode(&normalize_url(url)),
            percent_encode(&params)
        )
    }

    /// The base64 HMAC-SHA1 signature, keyed by `consumer_secret&access_secret`.
    pub fn signature(
        &self,
        method: &str,
        url: &url::Url,
        consumer_secret: &str,
        access_secret: &str,
    ) -> String {
        sign(
            &self.base_string(method, url),
            consumer_secret,
            access_secret,
        )
    }

    /// The `Authorization` header value, parameters in gomodule/oauth1's order.
    pub fn authorization_header(&self, signature: &str) -> String {
        let mut parts = Vec::with_capacity(7);
        for (k, v) in self.pairs() {
            parts.push(format!("{k}=\"{}\"", percent_encode(v)));
            if k == "oauth_nonce" {
                parts.push(format!("oauth_signature=\"{}\"", percent_encode(signature)));
            }
        }
        format!("OAuth {}", parts.join(", "))
    }
}

/// HMAC-SHA1 of `base` with the key `pct(consumer_secret)&pct(access_secret)`, base64.
pub fn sign(base: &str, consumer_secret: &str, access_secret: &str) -> String {
    let key = format!(
        "{}&{}",
        percent_encode(consumer_secret),
        percent_encode(access_secret)
    );
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = match hmac::Hmac::<sha1::Sha1>::new_from_slice(key.as_bytes()) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    mac.update(base.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Why an `Authorization` header is not a usable OAuth header (Apple answers 400 for these).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("the Authorization header is not an OAuth header")]
    NotOAuth,
    #[error("the OAuth parameter {0} is malformed")]
    Malformed(String),
    #[error("the OAuth parameter {0} is given twice")]
    Duplicated(String),
    #[error("the OAuth parameter {0} is missing")]
    Missing(&'static str),
    #[error("the OAuth parameter {0} is not supported")]
    Unsupported(String),
}

/// A parsed `Authorization: OAuth ...` header with its signature.
#[derive(Clone, PartialEq, Eq)]
pub struct SignedHeader {
    pub params: OAuthParams,
    pub signature: String,
}

/// Parses an `Authorization` header as the server side of the exchange does: every parameter
/// exactly once, `HMAC-SHA1`, version `1.0` (optional per RFC 5849), nothing unknown.
pub fn parse_authorization_header(header: &str) -> Result<SignedHeader, HeaderError> {
    let rest = header
        .trim()
        .strip_prefix("OAuth ")
        .ok_or(HeaderError::NotOAuth)?;
    let mut seen: std::collections::BTreeMap<String, String> = Default::default();
    for part in rest.split(',') {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| HeaderError::Malformed(part.chars().take(40).collect()))?;
        let k = k.trim();
        let v = v
            .trim()
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .ok_or_else(|| HeaderError::Malformed(k.to_string()))?;
        let v = percent_decode(v).ok_or_else(|| HeaderError::Malformed(k.to_string()))?;
        if k == "realm" {
            continue;
        }
        if !matches!(
            k,
            "oauth_consumer_key"
                | "oauth_nonce"
                | "oauth_signature"
                | "oauth_signature_method"
                | "oauth_timestamp"
                | "oauth_token"
                | "oauth_version"
        ) {
            return Err(HeaderError::Unsupported(k.chars().take(40).collect()));
        }
        if seen.insert(k.to_string(), v).is_some() {
            return Err(HeaderError::Duplicated(k.to_string()));
        }
    }
    let mut take = |k: &'static str| seen.remove(k).ok_or(HeaderError::Missing(k));
    let consumer_key = take("oauth_consumer_key")?;
    let nonce = take("oauth_nonce")?;
    let signature = take("oauth_signature")?;
    let method = take("oauth_signature_method")?;
    let timestamp = take("oauth_timestamp")?;
    let token = take("oauth_token")?;
    if method != "HMAC-SHA1" {
        return Err(HeaderError::Unsupported(format!(
            "oauth_signature_method={}",
            method.chars().take(20).collect::<String>()
        )));
    }
    if let Some(version) = seen.remove("oauth_version")
        && version != "1.0"
    {
        return Err(HeaderError::Unsupported("oauth_version".into()));
    }
    Ok(SignedHeader {
        params: OAuthParams {
            consumer_key,
            token,
            nonce,
            timestamp,
        },
        signature,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    struct Vector {
        method: String,
        url: String,
        consumer_key: String,
        consumer_secret: String,
        access_token: String,
        access_secret: String,
        oauth_nonce: String,
        oauth_timestamp: String,
        signature_base_string: String,
        oauth_signature: String,
        authorization_header: String,
    }

    #[derive(serde::Deserialize)]
    struct Vectors {
        vectors: Vec<Vector>,
    }

    fn vectors() -> Vec<Vector> {
        let text = include_str!("../../../tests/fixtures/apple-dep/oauth1_session_kat.json");
        serde_json::from_str::<Vectors>(text).unwrap().vectors
    }

    #[test]
    fn known_answer_vectors() {
        let vectors = vectors();
        assert_eq!(vectors.len(), 2);
        for v in vectors {
            let url = url::Url::parse(&v.url).unwrap();
            let params = OAuthParams {
                consumer_key: v.consumer_key,
                token: v.access_token,
                nonce: v.oauth_nonce,
                timestamp: v.oauth_timestamp,
            };
            assert_eq!(params.base_string(&v.method, &url), v.signature_base_string);
            let sig = params.signature(&v.method, &url, &v.consumer_secret, &v.access_secret);
            assert_eq!(sig, v.oauth_signature);
            let header = params.authorization_header(&sig);
            assert_eq!(header, v.authorization_header);
            let parsed = parse_authorization_header(&header).unwrap();
            assert!(parsed.params == params);
            assert_eq!(parsed.signature, v.oauth_signature);
        }
    }

    #[test]
    fn normalizes_scheme_host_and_default_port() {
        let a = url::Url::parse("HTTPS://MDMEnrollment.Apple.com:443/session").unwrap();
        assert_eq!(normalize_url(&a), "https://mdmenrollment.apple.com/session");
        let b = url::Url::parse("http://127.0.0.1:80/session?x=1").unwrap();
        assert_eq!(normalize_url(&b), "http://127.0.0.1/session");
    }

    #[test]
    fn percent_encoding_round_trips() {
        let s = "a b+c/d=é~";
        assert_eq!(percent_encode(s), "a%20b%2Bc%2Fd%3D%C3%A9~");
        assert_eq!(percent_decode(&percent_encode(s)).as_deref(), Some(s));
        assert_eq!(percent_decode("%G1"), None);
        assert_eq!(percent_decode("%4"), None);
    }

    #[test]
    fn header_problems_are_refused() {
        let p = OAuthParams {
            consumer_key: "CK_1".into(),
            token: "AT_1".into(),
            nonce: "n".into(),
            timestamp: "1".into(),
        };
        let good = p.authorization_header("sig");
        assert!(parse_authorization_header(&good).is_ok());
        let err = |h: &str| parse_authorization_header(h).err();
        assert_eq!(err("Basic abc"), Some(HeaderError::NotOAuth));
        let dup = format!("{good}, oauth_nonce=\"x\"");
        assert_eq!(
            err(&dup),
            Some(HeaderError::Duplicated("oauth_nonce".into()))
        );
        let missing = good.replace("oauth_token=\"AT_1\", ", "");
        assert_eq!(err(&missing), Some(HeaderError::Missing("oauth_token")));
        let plaintext = good.replace("HMAC-SHA1", "PLAINTEXT");
        assert!(matches!(err(&plaintext), Some(HeaderError::Unsupported(_))));
        let extra = format!("{good}, oauth_callback=\"x\"");
        assert!(matches!(err(&extra), Some(HeaderError::Unsupported(_))));
    }
}
