//! The HTTP face of the DEP simulator: routes Apple's paths, checks `User-Agent`, scripted faults,
//! OAuth and sessions, waits the configured latency, reads bodies with a limit, then hands the
//! typed request to the [`World`] of the MDM server the token or session belongs to.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response};

use super::SimOptions;
use super::world::{Reply, World};
use crate::apple::dep::Endpoint;
use crate::apple::dep::client::SESSION_HEADER;
use crate::apple::dep::oauth::parse_authorization_header;
use crate::apple::dep::types::{AssignRequest, CursorRequest, SerialsRequest};

/// Largest request body accepted (1000 serials are ~15 KB).
const MAX_BODY: usize = 1024 * 1024;

/// Clients whose generic User-Agent Apple refuses (`USER_AGENT_INVALID`).
const GENERIC_AGENTS: &[&str] = &[
    "go-http-client",
    "curl",
    "python",
    "java",
    "okhttp",
    "hyper",
    "reqwest",
    "nanodep-godep",
    "mozilla",
];

/// The MDM servers one simulated service answers for, like Apple's one host for every server of
/// every organisation, and how long it takes to answer. The first server keeps the scripted
/// faults and the request counts.
#[derive(Clone)]
pub(super) struct Servers(Arc<ServersInner>);

struct ServersInner {
    worlds: Mutex<Vec<World>>,
    latency_ms: AtomicU64,
}

impl Servers {
    pub(super) fn new(first: World, latency: Duration) -> Servers {
        let servers = Servers(Arc::new(ServersInner {
            worlds: Mutex::new(vec![first]),
            latency_ms: AtomicU64::new(0),
        }));
        servers.set_latency(latency);
        servers
    }

    pub(super) fn push(&self, world: World) {
        self.worlds().push(world);
    }

    pub(super) fn set_latency(&self, latency: Duration) {
        let ms = u64::try_from(latency.as_millis()).unwrap_or(u64::MAX);
        self.0.latency_ms.store(ms, Ordering::Relaxed);
    }

    fn latency(&self) -> Duration {
        Duration::from_millis(self.0.latency_ms.load(Ordering::Relaxed))
    }

    fn worlds(&self) -> std::sync::MutexGuard<'_, Vec<World>> {
        // Only a failing test panics while holding the lock; keep serving.
        self.0.worlds.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn first(&self) -> World {
        // Never empty: made with the first server, and servers are only added.
        self.worlds()[0].clone()
    }

    /// The server whose world matches, or the first (which then refuses the call).
    fn find(&self, matches: impl Fn(&World) -> bool) -> World {
        let worlds = self.worlds();
        worlds
            .iter()
            .find(|w| matches(w))
            .unwrap_or(&worlds[0])
            .clone()
    }
}

pub(super) async fn handle(
    servers: Servers,
    opts: SimOptions,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let first = servers.first();
    let in_flight = first.enter();
    let latency = servers.latency();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let (reply, session) = route(&servers, &first, &opts, req).await;
    drop(in_flight);
    let mut resp = Response::builder()
        .status(reply.status)
        .header(http::header::CONTENT_TYPE, "application/json;charset=UTF8");
    if let Some(ra) = reply.retry_after {
        resp = resp.header(http::header::RETRY_AFTER, ra);
    }
    if let Some(s) = session {
        resp = resp.header(SESSION_HEADER, s);
    }
    Ok(resp
        .body(Full::new(Bytes::from(reply.body)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()))))
}

fn endpoint_of(method: &http::Method, path: &str) -> Result<Endpoint, Reply> {
    use http::Method as M;
    let (endpoint, allowed): (Endpoint, bool) = match path {
        "/session" => (Endpoint::Session, method == M::GET),
        "/account" => (Endpoint::Account, method == M::GET),
        "/server/devices" => (Endpoint::FetchDevices, method == M::POST),
        "/devices/sync" => (Endpoint::SyncDevices, method == M::POST),
        "/devices" => (Endpoint::DeviceDetails, method == M::POST),
        "/devices/disown" => (Endpoint::Disown, method == M::POST),
        "/profile" if method == M::GET => (Endpoint::GetProfile, true),
        "/profile" => (Endpoint::DefineProfile, method == M::POST),
        "/profile/devices" if method == M::DELETE => (Endpoint::RemoveProfile, true),
        "/profile/devices" => (
            Endpoint::AssignProfile,
            method == M::PUT || method == M::POST,
        ),
        _ => return Err(Reply::code(404, "NOT_FOUND")),
    };
    if !allowed {
        return Err(Reply::code(405, "METHOD_NOT_ALLOWED"));
    }
    Ok(endpoint)
}

fn check_user_agent(req: &Request<Incoming>) -> Option<Reply> {
    let Some(ua) = req
        .headers()
        .get(http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
    else {
        return Some(Reply::code(400, "USER_AGENT_MISSING"));
    };
    let lower = ua.to_ascii_lowercase();
    let product = lower.split('/').next().unwrap_or_default();
    let well_formed = lower.contains('/') && !product.is_empty();
    if !well_formed || GENERIC_AGENTS.contains(&product) {
        return Some(Reply::code(400, "USER_AGENT_INVALID"));
    }
    None
}

async fn route(
    servers: &Servers,
    first: &World,
    opts: &SimOptions,
    req: Request<Incoming>,
) -> (Reply, Option<String>) {
    let endpoint = match endpoint_of(req.method(), req.uri().path()) {
        Ok(e) => e,
        Err(reply) => return (reply, None),
    };
    if let Some(reply) = check_user_agent(&req) {
        return (reply, None);
    }
    if let Some(reply) = first.take_fault(endpoint) {
        return (reply, None);
    }
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    if endpoint == Endpoint::Session {
        let Some(host) = header("host") else {
            return (Reply::code(400, "HOST_MISSING"), None);
        };
        let scheme = if opts.tls.is_some() { "https" } else { "http" };
        let Ok(url) = url::Url::parse(&format!("{scheme}://{host}/session")) else {
            return (Reply::code(400, "HOST_INVALID"), None);
        };
        let authorization = header("authorization");
        let consumer_key = authorization
            .as_deref()
            .and_then(|h| parse_authorization_header(h).ok())
            .map(|signed| signed.params.consumer_key)
            .unwrap_or_default();
        let world = servers.find(|w| w.has_consumer_key(&consumer_key));
        let reply = world.handle_session(
            authorization.as_deref(),
            &url,
            opts.timestamp_window,
            opts.session_ttl,
        );
        return (reply, None);
    }
    let session = header(SESSION_HEADER);
    let world = &servers.find(|w| session.as_deref().is_some_and(|s| w.has_session(s)));
    let session =
        match world.check_session(session.as_deref(), opts.rotate_sessions, opts.session_ttl) {
            Ok(s) => s,
            Err(reply) => return (reply, None),
        };
    let version = header("x-server-protocol-version")
        .and_then(|v| v.trim().parse::<u32>().ok())
        .unwrap_or(1);
    let query = req.uri().query().map(str::to_string);
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return (Reply::code(400, "MALFORMED_REQUEST_BODY"), Some(session)),
    };
    let reply = match endpoint {
        Endpoint::Account => world.handle_account(),
        Endpoint::FetchDevices | Endpoint::SyncDevices => {
            // An empty body is a fetch of the first page with the default limit.
            let request = if body.is_empty() {
                Some(CursorRequest::default())
            } else {
                parse_object::<CursorRequest>(&body)
            };
            match request {
                None => Reply::code(400, "MALFORMED_REQUEST_BODY"),
                Some(r) if endpoint == Endpoint::FetchDevices => {
                    world.handle_fetch(r.cursor.as_deref(), r.limit)
                }
                Some(r) => world.handle_sync(r.cursor.as_deref(), r.limit),
            }
        }
        Endpoint::DeviceDetails | Endpoint::Disown | Endpoint::RemoveProfile => {
            match parse_object::<SerialsRequest>(&body) {
                None => Reply::code(400, "MALFORMED_REQUEST_BODY"),
                Some(r) => match endpoint {
                    Endpoint::DeviceDetails => world.handle_details(&r.devices),
                    Endpoint::Disown => world.handle_disown(&r.devices),
                    _ => world.handle_remove(&r.devices),
                },
            }
        }
        Endpoint::AssignProfile => match parse_object::<AssignRequest>(&body) {
            None => Reply::code(400, "MALFORMED_REQUEST_BODY"),
            Some(r) => world.handle_assign(&r.profile_uuid, &r.devices, version),
        },
        Endpoint::DefineProfile => match parse_object::<serde_json::Value>(&body) {
            None => Reply::code(400, "MALFORMED_REQUEST_BODY"),
            Some(v) => world.handle_define(&v, version),
        },
        Endpoint::GetProfile => {
            let uuid = query.as_deref().and_then(|q| {
                url::form_urlencoded::parse(q.as_bytes())
                    .find(|(k, _)| k == "profile_uuid")
                    .map(|(_, v)| v.into_owned())
            });
            world.handle_get_profile(uuid.as_deref())
        }
        Endpoint::Session => Reply::code(404, "NOT_FOUND"),
    };
    (reply, Some(session))
}

/// A JSON object body as `T`; `None` for anything else (Apple answers `MALFORMED_REQUEST_BODY`).
fn parse_object<T: serde::de::DeserializeOwned>(body: &[u8]) -> Option<T> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    if !value.is_object() {
        return None;
    }
    serde_json::from_value(value).ok()
}
