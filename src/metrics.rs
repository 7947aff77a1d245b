//! Counters and gauges, rendered in the Prometheus text format at `/metrics`.
//!
//! Names and labels are Orchard's own constants, so the registry is a map behind one mutex: the
//! hot paths (check-in, connect) touch it once per request, which costs far less than the request.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
}

type Labels = Vec<(String, String)>;

#[derive(Debug, Default)]
struct Family {
    kind: Option<Kind>,
    help: Option<&'static str>,
    series: BTreeMap<Labels, f64>,
}

/// The process's metrics. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    families: Arc<Mutex<BTreeMap<&'static str, Family>>>,
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics::default()
    }

    /// Sets the `# HELP` text of a metric.
    pub fn describe(&self, name: &'static str, help: &'static str) {
        self.with(name, |f| f.help = Some(help));
    }

    /// Adds one to a counter.
    pub fn inc(&self, name: &'static str, labels: &[(&str, &str)]) {
        self.add(name, labels, 1.0);
    }

    /// Adds `n` to a counter.
    pub fn add(&self, name: &'static str, labels: &[(&str, &str)], n: f64) {
        self.with(name, |f| {
            f.kind = Some(Kind::Counter);
            *f.series.entry(owned(labels)).or_default() += n;
        });
    }

    /// Sets a gauge.
    pub fn set(&self, name: &'static str, labels: &[(&str, &str)], value: f64) {
        self.with(name, |f| {
            f.kind = Some(Kind::Gauge);
            f.series.insert(owned(labels), value);
        });
    }

    /// The current value of one series (for tests and the dashboard).
    pub fn value(&self, name: &'static str, labels: &[(&str, &str)]) -> Option<f64> {
        self.lock()
            .get(name)
            .and_then(|f| f.series.get(&owned(labels)).copied())
    }

    /// Every series in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let families = self.lock();
        let mut out = String::new();
        for (name, family) in families.iter() {
            if let Some(help) = family.help {
                let _ = writeln!(out, "# HELP {name} {help}");
            }
            let kind = match family.kind {
                Some(Kind::Counter) => "counter",
                Some(Kind::Gauge) => "gauge",
                None => continue,
            };
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (labels, value) in &family.series {
                out.push_str(name);
                if !labels.is_empty() {
                    out.push('{');
                    for (i, (k, v)) in labels.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        let _ = write!(out, "{k}=\"{}\"", escape(v));
                    }
                    out.push('}');
                }
                let _ = writeln!(out, " {value}");
            }
        }
        out
    }

    fn with(&self, name: &'static str, f: impl FnOnce(&mut Family)) {
        f(self.lock().entry(name).or_default());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<&'static str, Family>> {
        // Each update is a single map operation, so a poisoned lock still guards consistent data.
        self.families.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn owned(labels: &[(&str, &str)]) -> Labels {
    let mut v: Labels = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    v.sort();
    v
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_gauges_render_in_prometheus_text() {
        let m = Metrics::new();
        m.describe(
            "orchard_http_requests_total",
            "HTTP requests by surface and status code.",
        );
        m.inc(
            "orchard_http_requests_total",
            &[("surface", "admin"), ("code", "200")],
        );
        m.add(
            "orchard_http_requests_total",
            &[("code", "200"), ("surface", "admin")],
            2.0,
        );
        m.set("orchard_devices", &[("state", "enrolled")], 12.0);
        m.set("orchard_devices", &[("state", "enrolled")], 13.0);
        m.set("orchard_build_info", &[("version", "1\"x")], 1.0);
        let text = m.render();
        assert!(text.contains(
            "# HELP orchard_http_requests_total HTTP requests by surface and status code.\n"
        ));
        assert!(text.contains("# TYPE orchard_http_requests_total counter\n"));
        assert!(text.contains("orchard_http_requests_total{code=\"200\",surface=\"admin\"} 3\n"));
        assert!(
            text.contains("# TYPE orchard_devices gauge\norchard_devices{state=\"enrolled\"} 13\n")
        );
        assert!(text.contains("orchard_build_info{version=\"1\\\"x\"} 1\n"));
        assert_eq!(
            m.value("orchard_devices", &[("state", "enrolled")]),
            Some(13.0)
        );
    }
}
