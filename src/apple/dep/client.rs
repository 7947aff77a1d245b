//! The DEP API client: one `/session` per token (OAuth 1.0a), every endpoint, Apple's error codes
//! and the retry policy of reference §8. Requests for one token go one at a time (Apple may not
//! support parallel sessions per token); clones share the session and that queue.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;
use time::OffsetDateTime;

use super::error::{DepError, Endpoint};
use super::oauth::OAuthParams;
use super::token::ServerToken;
use super::types::{
    Account, AssignRequest, CursorRequest, DefinedProfile, DeviceDetails, DevicePage,
    DeviceStatuses, Profile, SerialsRequest, SessionResponse,
};
use crate::clock::SharedClock;
use crate::metrics::Metrics;

/// Apple's DEP API.
pub const APPLE_BASE_URL: &str = "https://mdmenrollment.apple.com";
/// `X-Server-Protocol-Version` sent on every request (10: `retry_after_seconds` in assign answers).
pub const PROTOCOL_VERSION: &str = "10";
/// Most serials Apple takes in one assign, remove, disown or details call.
pub const MAX_SERIALS: usize = 1000;
/// The session header Apple hands out and refreshes.
pub const SESSION_HEADER: &str = "X-ADM-Auth-Session";
const REQUESTS_METRIC: &str = "orchard_dep_requests_total";
const JSON: &str = "application/json;charset=UTF8";
/// Largest answer read from Apple (a 5000-device page is ~3 MB).
const MAX_RESPONSE: usize = 32 * 1024 * 1024;

/// How hard the client tries before giving up until the next sync.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts per request for 5xx, network errors, 429 and 503 (the first included).
    pub max_attempts: u32,
    /// First backoff; doubled per attempt, plus up to as much again of jitter.
    pub base_delay: Duration,
    /// Longest backoff between attempts.
    pub max_delay: Duration,
    /// Longest `Retry-After` waited in place; longer ones return [`DepError::Throttled`].
    pub retry_after_cap: Duration,
    /// Time limit of one HTTP exchange.
    pub timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(8),
            retry_after_cap: Duration::from_secs(60),
            timeout: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    fn backoff(&self, attempt: u32) -> Duration {
        let base = self
            .base_delay
            .saturating_mul(1 << attempt.saturating_sub(1).min(16))
            .min(self.max_delay);
        let jitter_ms = base.as_millis().min(u128::from(u32::MAX)) as u64;
        let jitter = Duration::from_millis(rand::random_range(0..=jitter_ms));
        (base + jitter).min(self.max_delay)
    }
}

/// Where and how the client talks.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Apple's address by default; a simulator's in tests and demos.
    pub base_url: String,
    pub user_agent: String,
    pub retry: RetryPolicy,
    /// Certificates trusted besides the public web roots (a simulator's or a TLS proxy's CA).
    pub extra_roots: Vec<rustls::pki_types::CertificateDer<'static>>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            base_url: APPLE_BASE_URL.into(),
            user_agent: concat!("orchard/", env!("CARGO_PKG_VERSION")).into(),
            retry: RetryPolicy::default(),
            extra_roots: Vec::new(),
        }
    }
}

type Http = HyperClient<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A client of Apple's DEP API for one server token.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    base: String,
    opts: ClientOptions,
    token: ServerToken,
    metrics: Metrics,
    clock: SharedClock,
    http: Http,
    /// The current `X-ADM-Auth-Session`; the lock also serialises requests for this token.
    session: tokio::sync::Mutex<Option<String>>,
}

struct Answer {
    status: u16,
    session: Option<String>,
    body: Bytes,
}

impl Client {
    /// Builds a client; refuses a base URL that is not `http(s)://host[/path]`.
    pub fn new(
        opts: ClientOptions,
        token: ServerToken,
        metrics: Metrics,
        clock: SharedClock,
    ) -> Result<Client, DepError> {
        let url = url::Url::parse(&opts.base_url).map_err(|e| DepError::BaseUrl(e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https")
            || url.host_str().is_none()
            || url.query().is_some()
        {
            return Err(DepError::BaseUrl(format!(
                "{} is not an http(s) address",
                opts.base_url
            )));
        }
        let tls_error = |e: rustls::Error| DepError::BaseUrl(format!("TLS setup failed: {e}"));
        let mut roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        for cert in &opts.extra_roots {
            roots.add(cert.clone()).map_err(tls_error)?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(tls_error)?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        let http = HyperClient::builder(TokioExecutor::new()).build(connector);
        metrics.describe(
            REQUESTS_METRIC,
            "Requests to Apple's DEP API by endpoint and HTTP status (or network_error).",
        );
        Ok(Client {
            inner: Arc::new(Inner {
                base: url.as_str().trim_end_matches('/').to_string(),
                opts,
                token,
                metrics,
                clock,
                http,
                session: tokio::sync::Mutex::new(None),
            }),
        })
    }

    /// The token this client signs with.
    pub fn token(&self) -> &ServerToken {
        &self.inner.token
    }

    /// `GET /account`: the MDM server and organisation of the token.
    pub async fn account(&self) -> Result<Account, DepError> {
        self.call(Endpoint::Account, None, None).await
    }

    /// `POST /server/devices`: one page of the full device list (no cursor for the first page).
    pub async fn fetch_devices(
        &self,
        cursor: Option<&str>,
        limit: Option<u32>,
    ) -> Result<DevicePage, DepError> {
        let body = CursorRequest {
            cursor: cursor.map(str::to_string),
            limit,
        };
        self.call(Endpoint::FetchDevices, None, Some(json(&body)))
            .await
    }

    /// `POST /devices/sync`: changes since `cursor` (from a fetch or an earlier sync).
    pub async fn sync_devices(
        &self,
        cursor: &str,
        limit: Option<u32>,
    ) -> Result<DevicePage, DepError> {
        let body = CursorRequest {
            cursor: Some(cursor.to_string()),
            limit,
        };
        self.call(Endpoint::SyncDevices, None, Some(json(&body)))
            .await
    }

    /// `POST /devices`: details of up to 1000 serials.
    pub async fn device_details(&self, serials: &[String]) -> Result<DeviceDetails, DepError> {
        self.serials_call(Endpoint::DeviceDetails, serials).await
    }

    /// `POST /profile`: defines a profile (and assigns `profile.devices`, at most 1000).
    pub async fn define_profile(&self, profile: &Profile) -> Result<DefinedProfile, DepError> {
        check_count(profile.devices.len())?;
        self.call(Endpoint::DefineProfile, None, Some(json(profile)))
            .await
    }

    /// `GET /profile?profile_uuid=`: a profile as Apple holds it.
    pub async fn get_profile(&self, profile_uuid: &str) -> Result<Profile, DepError> {
        let query = format!(
            "profile_uuid={}",
            super::oauth::percent_encode(profile_uuid)
        );
        self.call(Endpoint::GetProfile, Some(query), None).await
    }

    /// `PUT /profile/devices`: assigns a profile to at most 1000 serials (refused before sending
    /// otherwise). `THROTTLED` serials come back with `retry_after_seconds`.
    pub async fn assign_profile(
        &self,
        profile_uuid: &str,
        serials: &[String],
    ) -> Result<DeviceStatuses, DepError> {
        check_count(serials.len())?;
        let body = AssignRequest {
            profile_uuid: profile_uuid.to_string(),
            devices: serials.to_vec(),
        };
        self.call(Endpoint::AssignProfile, None, Some(json(&body)))
            .await
    }

    /// `DELETE /profile/devices`: removes the profile from at most 1000 serials.
    pub async fn remove_profile(&self, serials: &[String]) -> Result<DeviceStatuses, DepError> {
        self.serials_call(Endpoint::RemoveProfile, serials).await
    }

    /// `POST /devices/disown`: permanently removes at most 1000 serials from the organisation.
    pub async fn disown(&self, serials: &[String]) -> Result<DeviceStatuses, DepError> {
        self.serials_call(Endpoint::Disown, serials).await
    }

    /// A call whose body is `{"devices": [serials]}` (at most 1000, else refused before sending).
    async fn serials_call<T: DeserializeOwned>(
        &self,
        endpoint: Endpoint,
        serials: &[String],
    ) -> Result<T, DepError> {
        check_count(serials.len())?;
        let body = SerialsRequest {
            devices: serials.to_vec(),
        };
        self.call(endpoint, None, Some(json(&body))).await
    }

    /// One API call: session, one transparent re-auth on 401 / 403 `FORBIDDEN`, error mapping.
    async fn call<T: DeserializeOwned>(
        &self,
        endpoint: Endpoint,
        query: Option<String>,
        body: Option<Bytes>,
    ) -> Result<T, DepError> {
        let now = self.inner.clock.now();
        if self.inner.token.is_expired(now) {
            return Err(DepError::TokenPastExpiry {
                expiry: self.inner.token.access_token_expiry.date().to_string(),
            });
        }
        let mut url = format!("{}{}", self.inner.base, endpoint.path());
        if let Some(q) = query {
            url.push('?');
            url.push_str(&q);
        }
        let mut session = self.inner.session.lock().await;
        let mut reauthed = false;
        loop {
            let current = match session.as_ref() {
                Some(s) => s.clone(),
                None => {
                    let s = self.new_session().await?;
                    *session = Some(s.clone());
                    s
                }
            };
            let answer = self
                .send(endpoint, &url, Some(&current), None, body.clone())
                .await?;
            if let Some(new) = answer.session.as_ref().filter(|s| **s != current) {
                *session = Some(new.clone());
            }
            let text = String::from_utf8_lossy(&answer.body);
            let stale =
                answer.status == 401 || (answer.status == 403 && text.contains("FORBIDDEN"));
            if stale && !reauthed {
                tracing::debug!(
                    endpoint = endpoint.name(),
                    "DEP session refused, signing in again"
                );
                *session = None;
                reauthed = true;
                continue;
            }
            if answer.status != 200 {
                return Err(DepError::from_response(endpoint, answer.status, &text));
            }
            return serde_json::from_slice(&answer.body)
                .map_err(|e| DepError::InvalidResponse(format!("{}: {e}", endpoint.name())));
        }
    }

    /// `GET /session` signed with OAuth 1.0a; returns the new `auth_session_token`.
    async fn new_session(&self) -> Result<String, DepError> {
        let url = format!("{}{}", self.inner.base, Endpoint::Session.path());
        let parsed = url::Url::parse(&url).map_err(|e| DepError::BaseUrl(e.to_string()))?;
        let token = &self.inner.token;
        let params = OAuthParams {
            consumer_key: token.consumer_key.clone(),
            token: token.access_token.clone(),
            nonce: hex::encode(rand::random::<[u8; 16]>()),
            timestamp: self.inner.clock.now().unix_timestamp().to_string(),
        };
        let signature =
            params.signature("GET", &parsed, &token.consumer_secret, &token.access_secret);
        let authorization = params.authorization_header(&signature);
        let answer = self
            .send(Endpoint::Session, &url, None, Some(&authorization), None)
            .await?;
        let text = String::from_utf8_lossy(&answer.body);
        if answer.status != 200 {
            return Err(DepError::from_response(
                Endpoint::Session,
                answer.status,
                &text,
            ));
        }
        let session: SessionResponse = serde_json::from_slice(&answer.body)
            .map_err(|e| DepError::InvalidResponse(format!("session: {e}")))?;
        if session.auth_session_token.is_empty() {
            return Err(DepError::InvalidResponse(
                "session: empty auth_session_token".into(),
            ));
        }
        Ok(session.auth_session_token)
    }

    /// Sends one request with the retry policy: `Retry-After` on 429/503 (capped), backoff with
    /// jitter on 5xx and network errors; other answers are returned as they are.
    async fn send(
        &self,
        endpoint: Endpoint,
        url: &str,
        session: Option<&str>,
        authorization: Option<&str>,
        body: Option<Bytes>,
    ) -> Result<Answer, DepError> {
        let policy = &self.inner.opts.retry;
        let max = policy.max_attempts.max(1);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = self
                .send_once(endpoint, url, session, authorization, body.clone())
                .await;
            let (answer, retry_after) = match result {
                Err(e) => {
                    self.count(endpoint, "network_error");
                    if attempt >= max {
                        return Err(DepError::Network(e));
                    }
                    tracing::warn!(endpoint = endpoint.name(), attempt, error = %e, "DEP request failed, retrying");
                    tokio::time::sleep(policy.backoff(attempt)).await;
                    continue;
                }
                Ok(pair) => pair,
            };
            self.count(endpoint, &answer.status.to_string());
            if matches!(answer.status, 429 | 503) {
                let wait = retry_after.unwrap_or_else(|| policy.backoff(attempt));
                if attempt >= max || wait > policy.retry_after_cap {
                    return Err(DepError::Throttled {
                        status: answer.status,
                        retry_after,
                    });
                }
                tracing::warn!(
                    endpoint = endpoint.name(),
                    status = answer.status,
                    wait_ms = wait.as_millis() as u64,
                    "Apple is throttling, waiting"
                );
                tokio::time::sleep(wait).await;
                continue;
            }
            if answer.status >= 500 && attempt < max {
                tracing::warn!(
                    endpoint = endpoint.name(),
                    status = answer.status,
                    attempt,
                    "DEP server error, retrying"
                );
                tokio::time::sleep(policy.backoff(attempt)).await;
                continue;
            }
            return Ok(answer);
        }
    }

    async fn send_once(
        &self,
        endpoint: Endpoint,
        url: &str,
        session: Option<&str>,
        authorization: Option<&str>,
        body: Option<Bytes>,
    ) -> Result<(Answer, Option<Duration>), String> {
        let mut req = http::Request::builder()
            .method(endpoint.method())
            .uri(url)
            .header(http::header::USER_AGENT, &self.inner.opts.user_agent)
            .header("X-Server-Protocol-Version", PROTOCOL_VERSION)
            .header(http::header::ACCEPT, JSON)
            .header(http::header::CONTENT_TYPE, JSON);
        if let Some(s) = session {
            req = req.header(SESSION_HEADER, s);
        }
        if let Some(a) = authorization {
            req = req.header(http::header::AUTHORIZATION, a);
        }
        let req = req
            .body(Full::new(body.unwrap_or_default()))
            .map_err(|e| format!("cannot build the request: {e}"))?;
        let exchange = async {
            let resp = self.inner.http.request(req).await.map_err(|e| {
                let mut msg = e.to_string();
                let mut src = std::error::Error::source(&e);
                while let Some(s) = src {
                    msg = format!("{msg}: {s}");
                    src = s.source();
                }
                msg
            })?;
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            let body = Limited::new(resp.into_body(), MAX_RESPONSE)
                .collect()
                .await
                .map_err(|e| format!("reading the answer: {e}"))?
                .to_bytes();
            Ok::<_, String>((status, headers, body))
        };
        let (status, headers, body) = tokio::time::timeout(self.inner.opts.retry.timeout, exchange)
            .await
            .map_err(|_| "timed out".to_string())??;
        let session = headers
            .get(SESSION_HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .map(str::to_string);
        let retry_after = headers
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, self.inner.clock.now()));
        Ok((
            Answer {
                status,
                session,
                body,
            },
            retry_after,
        ))
    }

    fn count(&self, endpoint: Endpoint, status: &str) {
        self.inner.metrics.inc(
            REQUESTS_METRIC,
            &[("endpoint", endpoint.name()), ("status", status)],
        );
    }
}

/// Parses `Retry-After`: delay seconds or an HTTP date (a date in the past means now).
pub fn parse_retry_after(value: &str, now: OffsetDateTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return value.parse::<u64>().ok().map(Duration::from_secs);
    }
    let when = OffsetDateTime::from(httpdate::parse_http_date(value).ok()?);
    let secs = (when - now).whole_seconds();
    Some(Duration::from_secs(secs.max(0) as u64))
}

fn check_count(count: usize) -> Result<(), DepError> {
    if count > MAX_SERIALS {
        return Err(DepError::TooManySerials {
            count,
            max: MAX_SERIALS,
        });
    }
    Ok(())
}

fn json<T: serde::Serialize>(value: &T) -> Bytes {
    // Serializing these plain structs cannot fail.
    Bytes::from(serde_json::to_vec(value).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = time::macros::datetime!(2026-11-27 12:00:00 UTC);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Fri, 27 Nov 2026 12:01:30 GMT", now),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            parse_retry_after("Fri, 27 Nov 2026 11:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
        assert_eq!(parse_retry_after("", now), None);
        assert_eq!(parse_retry_after("99999999999999999999999", now), None);
    }

    #[test]
    fn backoff_grows_and_is_bounded() {
        let p = RetryPolicy::default();
        for attempt in 1..20 {
            let d = p.backoff(attempt);
            assert!(d <= p.max_delay);
            assert!(d >= p.base_delay.min(p.max_delay));
        }
        assert!(p.backoff(3) >= Duration::from_secs(2));
    }
}
