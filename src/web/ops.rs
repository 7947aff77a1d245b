//! Operational endpoints: `/healthz`, `/metrics`, the compiled-in static files and the local CA
//! certificate (for admins to install so browsers trust Orchard).

use ::http::{HeaderValue, Method, StatusCode, header};
use bytes::Bytes;

use super::response::with_body;
use super::routes::Routes;
use super::{App, Req, WebError, WebResult};

/// Files under `static/`, compiled into the binary.
const STATIC_FILES: &[(&str, &str, &[u8])] = &[
    (
        "orchard.css",
        "text/css; charset=utf-8",
        include_bytes!("../../static/orchard.css"),
    ),
    (
        "orchard.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../static/orchard.js"),
    ),
    (
        "sync.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../static/sync.js"),
    ),
    (
        "logo.svg",
        "image/svg+xml",
        include_bytes!("../../static/logo.svg"),
    ),
];

pub fn routes(r: &mut Routes) {
    r.public(Method::GET, "/healthz", healthz);
    r.public(Method::GET, "/metrics", metrics);
    r.public(Method::GET, "/static/{*path}", static_file);
    r.public(Method::GET, "/ca.crt", ca_certificate);
}

/// Describes Orchard's own metrics and sets the build gauge; called once at start.
pub fn init_metrics(app: &App) {
    let m = &app.metrics;
    m.describe(
        "orchard_http_requests_total",
        "HTTP requests answered, by surface and status code.",
    );
    m.describe(
        "orchard_build_info",
        "Always 1; the version label says which build runs.",
    );
    m.set(
        "orchard_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1.0,
    );
}

async fn healthz(app: App, _req: Req) -> WebResult {
    match app.store.schema_version() {
        Ok(_) => Ok(with_body(
            StatusCode::OK,
            "text/plain; charset=utf-8",
            Bytes::from_static(b"ok\n"),
        )),
        Err(e) => Err(WebError::Unavailable(format!(
            "the store cannot be read: {e}"
        ))),
    }
}

async fn metrics(app: App, _req: Req) -> WebResult {
    // Gauges that follow the data (and, for tokens, the passing of time) are read at scrape time.
    for (state, n) in app.inventory.counts() {
        app.metrics
            .set("orchard_devices", &[("state", state.as_str())], n as f64);
    }
    if let Err(e) = app.tokens.refresh_metrics() {
        tracing::warn!(error = %e, "cannot refresh the token metrics");
    }
    Ok(with_body(
        StatusCode::OK,
        "text/plain; version=0.0.4; charset=utf-8",
        Bytes::from(app.metrics.render()),
    ))
}

async fn static_file(_app: App, req: Req) -> WebResult {
    let path = req.param("path")?;
    let (_, content_type, bytes) = STATIC_FILES
        .iter()
        .find(|(name, _, _)| *name == path)
        .ok_or(WebError::NotFound)?;
    let mut resp = with_body(StatusCode::OK, content_type, Bytes::from_static(bytes));
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    Ok(resp)
}

async fn ca_certificate(app: App, _req: Req) -> WebResult {
    let mut resp = with_body(
        StatusCode::OK,
        "application/x-x509-ca-cert",
        Bytes::from(app.ca.cert_pem().to_string()),
    );
    resp.headers_mut().insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"orchard-ca.crt\""),
    );
    Ok(resp)
}
