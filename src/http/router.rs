//! Path routing: `/devices/{serial}` patterns with named parameters and a `{*rest}` tail, matched
//! per method. The route payload is generic so the web layer decides what a route carries.

use std::fmt;

use ::http::Method;

/// A registered pattern that cannot be used: said at start-up, never at request time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("route pattern {0:?} must start with '/'")]
    NoLeadingSlash(String),
    #[error("route pattern {0:?} has an empty or malformed segment")]
    BadSegment(String),
    #[error("route {method} {pattern} is registered twice")]
    Duplicate { method: Method, pattern: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
    /// `{*name}`: the rest of the path, possibly empty; only last.
    Rest(String),
}

/// Path parameters of a matched route, percent-decoded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params(Vec<(String, String)>);

impl Params {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What the router found for a method and path.
pub enum Found<'a, T> {
    Route(&'a T, Params),
    /// The path exists, but not for this method; these methods would work.
    MethodNotAllowed(Vec<Method>),
    NotFound,
}

impl<T> fmt::Debug for Found<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Found::Route(_, p) => write!(f, "Route({p:?})"),
            Found::MethodNotAllowed(m) => write!(f, "MethodNotAllowed({m:?})"),
            Found::NotFound => write!(f, "NotFound"),
        }
    }
}

struct Entry<T> {
    method: Method,
    pattern: String,
    segments: Vec<Segment>,
    value: T,
}

/// Routes by method and path pattern.
pub struct Router<T> {
    entries: Vec<Entry<T>>,
}

impl<T> Default for Router<T> {
    fn default() -> Self {
        Router {
            entries: Vec::new(),
        }
    }
}

impl<T> Router<T> {
    pub fn new() -> Self {
        Router::default()
    }

    /// Adds a route. Literal segments win over `{param}`, which wins over `{*rest}`, whatever the
    /// registration order.
    pub fn add(&mut self, method: Method, pattern: &str, value: T) -> Result<(), RouteError> {
        let segments = parse_pattern(pattern)?;
        if self
            .entries
            .iter()
            .any(|e| e.method == method && same_shape(&e.segments, &segments))
        {
            return Err(RouteError::Duplicate {
                method,
                pattern: pattern.to_string(),
            });
        }
        self.entries.push(Entry {
            method,
            pattern: pattern.to_string(),
            segments,
            value,
        });
        Ok(())
    }

    /// Every registered (method, pattern), in registration order.
    pub fn patterns(&self) -> impl Iterator<Item = (&Method, &str)> {
        self.entries.iter().map(|e| (&e.method, e.pattern.as_str()))
    }

    /// Finds the most specific route for `path` (without query). `HEAD` falls back to `GET`.
    pub fn find(&self, method: &Method, path: &str) -> Found<'_, T> {
        let Some(parts) = split_path(path) else {
            return Found::NotFound;
        };
        let mut best: Option<(&Entry<T>, Params, Vec<u8>)> = None;
        let mut allowed = Vec::new();
        for entry in &self.entries {
            let Some((params, rank)) = match_segments(&entry.segments, &parts) else {
                continue;
            };
            let method_ok =
                entry.method == method || (method == Method::HEAD && entry.method == Method::GET);
            if !method_ok {
                if !allowed.contains(&entry.method) {
                    allowed.push(entry.method.clone());
                }
                continue;
            }
            // An exact method beats HEAD's fallback to GET; then the more specific pattern wins.
            let better = match &best {
                None => true,
                Some((b, _, brank)) => {
                    (rank.as_slice(), entry.method == method)
                        > (brank.as_slice(), b.method == method)
                }
            };
            if better {
                best = Some((entry, params, rank));
            }
        }
        match best {
            Some((entry, params, _)) => Found::Route(&entry.value, params),
            None if !allowed.is_empty() => Found::MethodNotAllowed(allowed),
            None => Found::NotFound,
        }
    }
}

fn parse_pattern(pattern: &str) -> Result<Vec<Segment>, RouteError> {
    let Some(rest) = pattern.strip_prefix('/') else {
        return Err(RouteError::NoLeadingSlash(pattern.to_string()));
    };
    if rest.is_empty() {
        return Ok(Vec::new());
    }
    let raw: Vec<&str> = rest.split('/').collect();
    let mut out = Vec::with_capacity(raw.len());
    for (i, seg) in raw.iter().enumerate() {
        let bad = || RouteError::BadSegment(pattern.to_string());
        let segment = if let Some(inner) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            if let Some(name) = inner.strip_prefix('*') {
                if i != raw.len() - 1 || name.is_empty() {
                    return Err(bad());
                }
                Segment::Rest(name.to_string())
            } else if inner.is_empty() || inner.contains(['{', '}', '*']) {
                return Err(bad());
            } else {
                Segment::Param(inner.to_string())
            }
        } else if seg.is_empty() || seg.contains(['{', '}']) {
            return Err(bad());
        } else {
            Segment::Literal(seg.to_string())
        };
        out.push(segment);
    }
    Ok(out)
}

fn same_shape(a: &[Segment], b: &[Segment]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| match (x, y) {
            (Segment::Literal(p), Segment::Literal(q)) => p == q,
            (Segment::Param(_), Segment::Param(_)) | (Segment::Rest(_), Segment::Rest(_)) => true,
            _ => false,
        })
}

/// Splits and percent-decodes a request path; `None` when it is not a clean absolute path.
fn split_path(path: &str) -> Option<Vec<String>> {
    let rest = path.strip_prefix('/')?;
    if rest.is_empty() {
        return Some(Vec::new());
    }
    rest.split('/').map(decode_segment).collect()
}

/// A path segment, percent-decoded; `None` when malformed or when it would hide a '/'.
fn decode_segment(segment: &str) -> Option<String> {
    let text = percent_decode(segment)?;
    // A decoded '/' would let one parameter span two segments.
    if text.contains('/') { None } else { Some(text) }
}

/// RFC 3986 percent-decoding into UTF-8 text; `None` for a bad escape or invalid UTF-8.
pub fn percent_decode(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Matches and ranks: per segment 2 = literal, 1 = parameter, 0 = rest (bigger is more specific).
fn match_segments(pattern: &[Segment], parts: &[String]) -> Option<(Params, Vec<u8>)> {
    let mut params = Vec::new();
    let mut rank = Vec::with_capacity(pattern.len());
    for (i, seg) in pattern.iter().enumerate() {
        match seg {
            Segment::Rest(name) => {
                params.push((name.clone(), parts.get(i..).unwrap_or_default().join("/")));
                rank.push(0);
                return Some((Params(params), rank));
            }
            Segment::Literal(lit) => {
                if parts.get(i)? != lit {
                    return None;
                }
                rank.push(2);
            }
            Segment::Param(name) => {
                let value = parts.get(i)?;
                if value.is_empty() {
                    return None;
                }
                params.push((name.clone(), value.clone()));
                rank.push(1);
            }
        }
    }
    (parts.len() == pattern.len()).then_some((Params(params), rank))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router() -> Router<&'static str> {
        let mut r = Router::new();
        r.add(Method::GET, "/", "root").unwrap();
        r.add(Method::GET, "/devices/{serial}", "device").unwrap();
        r.add(Method::GET, "/devices/export", "export").unwrap();
        r.add(Method::POST, "/devices/{serial}/erase", "erase")
            .unwrap();
        r.add(Method::GET, "/static/{*path}", "static").unwrap();
        r
    }

    fn hit(r: &Router<&'static str>, m: Method, p: &str) -> Option<(&'static str, Params)> {
        match r.find(&m, p) {
            Found::Route(v, params) => Some((*v, params)),
            _ => None,
        }
    }

    #[test]
    fn literals_beat_parameters_whatever_the_order() {
        let r = router();
        assert_eq!(hit(&r, Method::GET, "/devices/export").unwrap().0, "export");
        let (v, p) = hit(&r, Method::GET, "/devices/C02ABC").unwrap();
        assert_eq!(v, "device");
        assert_eq!(p.get("serial"), Some("C02ABC"));
        assert_eq!(hit(&r, Method::GET, "/").unwrap().0, "root");
    }

    #[test]
    fn parameters_are_percent_decoded_and_rest_takes_the_tail() {
        let r = router();
        let (_, p) = hit(&r, Method::GET, "/devices/a%20b").unwrap();
        assert_eq!(p.get("serial"), Some("a b"));
        let (v, p) = hit(&r, Method::GET, "/static/css/orchard.css").unwrap();
        assert_eq!(v, "static");
        assert_eq!(p.get("path"), Some("css/orchard.css"));
        // An encoded slash or bad escape never matches.
        assert!(hit(&r, Method::GET, "/devices/a%2Fb").is_none());
        assert!(hit(&r, Method::GET, "/devices/%zz").is_none());
        assert!(hit(&r, Method::GET, "/devices/%ff").is_none());
    }

    #[test]
    fn wrong_method_and_unknown_paths_are_told_apart() {
        let r = router();
        match r.find(&Method::GET, "/devices/X/erase") {
            Found::MethodNotAllowed(m) => assert_eq!(m, vec![Method::POST]),
            other => panic!("{other:?}"),
        }
        assert!(matches!(r.find(&Method::GET, "/nope"), Found::NotFound));
        assert!(matches!(r.find(&Method::GET, "/devices/"), Found::NotFound));
        assert!(matches!(r.find(&Method::GET, "no-slash"), Found::NotFound));
        assert!(matches!(
            r.find(&Method::GET, "/devices/X/erase/more"),
            Found::NotFound
        ));
        assert_eq!(hit(&r, Method::HEAD, "/devices/X").unwrap().0, "device");
    }

    #[test]
    fn bad_patterns_and_duplicates_are_refused() {
        let mut r = router();
        assert!(matches!(
            r.add(Method::GET, "/devices/{id}", "dup"),
            Err(RouteError::Duplicate { .. })
        ));
        assert!(r.add(Method::GET, "x", "x").is_err());
        assert!(r.add(Method::GET, "/a//b", "x").is_err());
        assert!(r.add(Method::GET, "/a/{*rest}/b", "x").is_err());
        assert!(r.add(Method::GET, "/a/{}", "x").is_err());
        assert!(r.add(Method::POST, "/devices/{id}", "ok").is_ok());
    }
}
