//! Route registration and dispatch. Each page module exposes `pub fn routes(r: &mut Routes)`; the
//! route kind (its [`Surface`]) decides the body limit and the checks run before the handler:
//!
//! | surface | who | checks | body limit |
//! |---|---|---|---|
//! | admin page | signed-in admins | session (else to sign-in), Origin + CSRF on POST | 64 KiB ([`Routes::upload`]: 1 MiB) |
//! | API | automation | `Authorization: Bearer` API key | 1 MiB |
//! | device | Macs (`/mdm/*`, `/scep`, `/enroll*`) | none here (the handler checks identity) | 8 MiB |
//! | public | anyone (sign-in, setup, health) | Origin + CSRF cookie on POST | 64 KiB |

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use ::http::{HeaderValue, Method, StatusCode, header};
use hyper::body::Incoming;

use super::request::{Effects, Req};
use super::response::{self, WebError, WebResult};
use super::session;
use super::{App, api};
use crate::http::{self, BoxFuture, Found, Peer, Response, RouteError, Router};

pub const FORM_LIMIT: usize = 64 * 1024;
pub const UPLOAD_LIMIT: usize = 1024 * 1024;
pub const API_LIMIT: usize = 1024 * 1024;
pub const DEVICE_LIMIT: usize = 8 * 1024 * 1024;

/// Who a route serves; decides checks, limits and how errors are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    Admin,
    Api,
    Device,
    Public,
}

impl Surface {
    pub fn label(self) -> &'static str {
        match self {
            Surface::Admin => "admin",
            Surface::Api => "api",
            Surface::Device => "device",
            Surface::Public => "public",
        }
    }

    /// The surface an unmatched path most likely meant, so its error reads right.
    pub fn guess(path: &str) -> Surface {
        if path.starts_with("/api/") {
            Surface::Api
        } else if ["/mdm", "/scep", "/enroll"]
            .iter()
            .any(|p| path.starts_with(p))
        {
            Surface::Device
        } else {
            Surface::Admin
        }
    }
}

/// The navigation items, in the order UI.md gives. Shown only once a feature registers a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Nav {
    Dashboard,
    Devices,
    Profiles,
    Tokens,
    Sync,
    Push,
    Users,
    Audit,
    Settings,
}

impl Nav {
    pub fn label(self) -> &'static str {
        match self {
            Nav::Dashboard => "Dashboard",
            Nav::Devices => "Devices",
            Nav::Profiles => "Enrollment profiles",
            Nav::Tokens => "Tokens",
            Nav::Sync => "Sync",
            Nav::Push => "Push certificate",
            Nav::Users => "Users",
            Nav::Audit => "Audit log",
            Nav::Settings => "Settings",
        }
    }
}

type HandlerFn = Arc<dyn Fn(App, Req) -> BoxFuture<WebResult> + Send + Sync>;

struct Route {
    surface: Surface,
    limit: usize,
    handler: HandlerFn,
}

/// Routes being registered. Registration errors are collected and reported by [`Routes::finish`].
#[derive(Default)]
pub struct Routes {
    router: Router<Route>,
    nav: Vec<(Nav, &'static str)>,
    errors: Vec<RouteError>,
}

impl Routes {
    pub fn new() -> Routes {
        Routes::default()
    }

    /// An admin page (session required; CSRF and Origin checked on POST; 64 KiB forms).
    pub fn page<F, Fut>(&mut self, method: Method, path: &str, f: F)
    where
        F: Fn(App, Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = WebResult> + Send + 'static,
    {
        self.add(Surface::Admin, FORM_LIMIT, method, path, f);
    }

    /// An admin page taking `multipart/form-data` uploads up to 1 MiB (CSRF from the `_csrf` field).
    pub fn upload<F, Fut>(&mut self, method: Method, path: &str, f: F)
    where
        F: Fn(App, Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = WebResult> + Send + 'static,
    {
        self.add(Surface::Admin, UPLOAD_LIMIT, method, path, f);
    }

    /// An automation endpoint under `/api/v1/` (API key required; JSON errors).
    pub fn api<F, Fut>(&mut self, method: Method, path: &str, f: F)
    where
        F: Fn(App, Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = WebResult> + Send + 'static,
    {
        self.add(Surface::Api, API_LIMIT, method, path, f);
    }

    /// A device endpoint (no session, no CSRF; up to 8 MiB). Never answers 401 on its own.
    pub fn device<F, Fut>(&mut self, method: Method, path: &str, f: F)
    where
        F: Fn(App, Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = WebResult> + Send + 'static,
    {
        self.add(Surface::Device, DEVICE_LIMIT, method, path, f);
    }

    /// A page anyone may open (sign-in, setup, health). Forms posted to it need the CSRF cookie.
    pub fn public<F, Fut>(&mut self, method: Method, path: &str, f: F)
    where
        F: Fn(App, Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = WebResult> + Send + 'static,
    {
        self.add(Surface::Public, FORM_LIMIT, method, path, f);
    }

    /// Shows `item` in the navigation, linking to `path`.
    pub fn nav(&mut self, item: Nav, path: &'static str) {
        self.nav.push((item, path));
    }

    fn add<F, Fut>(&mut self, surface: Surface, limit: usize, method: Method, path: &str, f: F)
    where
        F: Fn(App, Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = WebResult> + Send + 'static,
    {
        let handler: HandlerFn = Arc::new(move |app, req| Box::pin(f(app, req)));
        let route = Route {
            surface,
            limit,
            handler,
        };
        if let Err(e) = self.router.add(method, path, route) {
            self.errors.push(e);
        }
    }

    /// The finished site, or the first registration mistake.
    pub fn finish(mut self, app: App) -> Result<Site, RouteError> {
        if let Some(e) = self.errors.into_iter().next() {
            return Err(e);
        }
        self.nav.sort();
        self.nav.dedup_by_key(|(item, _)| *item);
        Ok(Site(Arc::new(SiteInner {
            app,
            router: self.router,
            nav: Arc::new(self.nav),
        })))
    }
}

/// Every route of Orchard, ready to serve. Implements [`http::Handler`].
#[derive(Clone)]
pub struct Site(Arc<SiteInner>);

struct SiteInner {
    app: App,
    router: Router<Route>,
    nav: Arc<Vec<(Nav, &'static str)>>,
}

impl Site {
    /// The site with every feature's routes ([`super::register_all`]).
    pub fn build(app: App) -> Result<Site, RouteError> {
        let mut r = Routes::new();
        super::register_all(&mut r);
        r.finish(app)
    }

    pub fn app(&self) -> &App {
        &self.0.app
    }
}

impl http::Handler for Site {
    fn handle(&self, req: ::http::Request<Incoming>, peer: Peer) -> BoxFuture<Response> {
        let site = self.0.clone();
        Box::pin(async move { dispatch(site, req, peer).await })
    }
}

async fn dispatch(site: Arc<SiteInner>, req: ::http::Request<Incoming>, peer: Peer) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let effects = Arc::new(Mutex::new(Effects::default()));
    let (surface, result) = match site.router.find(&method, &path) {
        Found::NotFound => (Surface::guess(&path), Err(WebError::NotFound)),
        Found::MethodNotAllowed(allowed) => (
            Surface::guess(&path),
            Err(WebError::MethodNotAllowed(allowed)),
        ),
        Found::Route(route, params) => {
            let result = prepare(&site, route, params, req, peer.clone(), effects.clone()).await;
            let result = match result {
                Ok(r) => (route.handler)(site.app.clone(), r).await,
                Err(e) => Err(e),
            };
            (route.surface, result)
        }
    };
    let mut resp = match result {
        Ok(resp) => resp,
        Err(e) => response::error_response(surface, &e),
    };
    finish_response(&mut resp, surface, &effects);
    let status = resp.status();
    site.app.metrics.inc(
        "orchard_http_requests_total",
        &[("surface", surface.label()), ("code", status.as_str())],
    );
    tracing::info!(
        method = %method,
        path = %path,
        status = status.as_u16(),
        surface = surface.label(),
        peer = %peer.addr,
        ms = started.elapsed().as_millis() as u64,
        "request"
    );
    resp
}

/// Reads the body and runs the surface's checks, giving the handler its [`Req`].
async fn prepare(
    site: &SiteInner,
    route: &Route,
    params: http::Params,
    req: ::http::Request<Incoming>,
    peer: Peer,
    effects: Arc<Mutex<Effects>>,
) -> Result<Req, WebError> {
    let app = &site.app;
    let (parts, body) = req.into_parts();
    let body = http::read_body(&parts.headers, body, route.limit)
        .await
        .map_err(|e| match e {
            http::BodyError::TooLarge { limit } => WebError::TooLarge(limit),
            http::BodyError::Read(m) => {
                WebError::BadRequest(format!("the request body could not be read ({m})"))
            }
        })?;
    let mut r = Req::new(parts, params, peer, body, site.nav.clone(), effects);
    let unsafe_method = !matches!(r.method, Method::GET | Method::HEAD | Method::OPTIONS);
    match route.surface {
        Surface::Admin => {
            let Some(found) = session::load(app, r.cookie(session::SESSION_COOKIE).as_deref())?
            else {
                return Err(WebError::SignInNeeded {
                    next: (r.method == Method::GET).then(|| r.path_and_query()),
                });
            };
            r.session = Some(found);
            if unsafe_method {
                check_origin(&r)?;
                r.parse_form().await?;
                let expected = r
                    .session
                    .as_ref()
                    .map(|s| s.record.csrf.clone())
                    .unwrap_or_default();
                check_csrf(&r, &expected)?;
            }
        }
        Surface::Public => {
            r.session = session::load(app, r.cookie(session::SESSION_COOKIE).as_deref())?;
            if unsafe_method {
                check_origin(&r)?;
                r.parse_form().await?;
                let expected = r.cookie(session::CSRF_COOKIE).unwrap_or_default();
                check_csrf(&r, &expected)?;
            }
        }
        Surface::Api => {
            r.api_key = Some(api::authenticate(app, &r).await?);
        }
        Surface::Device => {}
    }
    Ok(r)
}

/// Refuses a state-changing browser request that comes from another site.
fn check_origin(r: &Req) -> Result<(), WebError> {
    let host = r.host().unwrap_or_default();
    if let Some(origin) = r.header(header::ORIGIN.as_str()) {
        if origin != format!("https://{host}") {
            return Err(WebError::Forbidden(
                "This form was sent from another web site, so Orchard ignored it.".into(),
            ));
        }
    } else if let Some(site) = r.header("sec-fetch-site")
        && !matches!(site.as_str(), "same-origin" | "none")
    {
        return Err(WebError::Forbidden(
            "This form was sent from another web site, so Orchard ignored it.".into(),
        ));
    }
    Ok(())
}

fn check_csrf(r: &Req, expected: &str) -> Result<(), WebError> {
    let given = r.form().get("_csrf").unwrap_or_default();
    if expected.is_empty() || !session::constant_time_eq(given.as_bytes(), expected.as_bytes()) {
        return Err(WebError::CsrfFailed);
    }
    Ok(())
}

/// Security headers, cookies the request asked for.
fn finish_response(resp: &mut Response, surface: Surface, effects: &Mutex<Effects>) {
    let h = resp.headers_mut();
    let set = |h: &mut ::http::HeaderMap, name: &'static str, value: &'static str| {
        if !h.contains_key(name) {
            h.insert(name, HeaderValue::from_static(value));
        }
    };
    set(
        h,
        "content-security-policy",
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'",
    );
    set(h, "strict-transport-security", "max-age=31536000");
    set(h, "x-content-type-options", "nosniff");
    set(h, "x-frame-options", "DENY");
    set(h, "referrer-policy", "same-origin");
    if surface != Surface::Device {
        set(h, "cache-control", "no-store");
    }
    let effects = effects.lock().unwrap_or_else(|p| p.into_inner());
    for cookie in &effects.cookies {
        if let Ok(v) = HeaderValue::from_str(cookie) {
            h.append(header::SET_COOKIE, v);
        }
    }
    if resp.status() == StatusCode::METHOD_NOT_ALLOWED {
        // Allow was set by error_response; nothing more to do.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_feature_registers_without_conflict() {
        let (app, _) = super::super::testing::app();
        let site = Site::build(app).unwrap();
        let nav: Vec<_> = site.0.nav.iter().map(|(n, _)| *n).collect();
        let mut sorted = nav.clone();
        sorted.sort();
        assert_eq!(nav, sorted);
        assert!(nav.contains(&Nav::Dashboard));
    }

    #[test]
    fn duplicate_registration_is_reported() {
        let (app, _) = super::super::testing::app();
        let mut r = Routes::new();
        r.public(Method::GET, "/x", |_, _| async { Err(WebError::NotFound) });
        r.page(Method::GET, "/x", |_, _| async { Err(WebError::NotFound) });
        assert!(r.finish(app).is_err());
    }

    #[test]
    fn unmatched_paths_get_the_right_kind_of_error() {
        assert_eq!(Surface::guess("/api/v1/nope"), Surface::Api);
        assert_eq!(Surface::guess("/mdm/nope"), Surface::Device);
        assert_eq!(Surface::guess("/nope"), Surface::Admin);
    }
}
