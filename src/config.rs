//! Bootstrap settings: command-line flags, `ORCHARD_*` environment variables and an optional TOML
//! file, resolved into one [`Config`] (flag, then environment, then file, then default).
//!
//! Only what the process needs before the store is open lives here; everything an admin changes at
//! run time lives in the store.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use url::Url;

/// Apple's DEP (device enrollment) API.
/// Days a released device stays listed unless configured otherwise (the seed's upper bound).
pub const DEFAULT_REMOVED_GRACE_DAYS: u16 = 45;

pub const APPLE_DEP_URL: &str = "https://mdmenrollment.apple.com";
/// Apple's push notification service (production).
pub const APPLE_APNS_URL: &str = "https://api.push.apple.com";

const DEFAULT_DATA_DIR: &str = "./orchard-data";
const DEFAULT_LISTEN: &str = "0.0.0.0:8443";
const DEFAULT_IDLE_MINUTES: u32 = 30;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Readable lines for a terminal or journald.
    #[default]
    Human,
    /// One JSON object per line, for log collectors.
    Json,
}

/// The flags of `orchard serve`. Every flag also reads an `ORCHARD_*` environment variable.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServeArgs {
    /// A TOML file with any of the settings below (keys as the flags, with `_` for `-`).
    #[arg(long, env = "ORCHARD_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Where Orchard keeps its database, keys and certificates [default: ./orchard-data].
    #[arg(long, env = "ORCHARD_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address and port to serve HTTPS on [default: 0.0.0.0:8443].
    #[arg(long, env = "ORCHARD_LISTEN", value_name = "ADDR:PORT")]
    pub listen: Option<SocketAddr>,
    /// A host name Macs and browsers use to reach Orchard (repeat for several; the first is the
    /// main one) [default: localhost].
    #[arg(
        long = "hostname",
        env = "ORCHARD_HOSTNAME",
        value_delimiter = ',',
        value_name = "NAME"
    )]
    pub hostnames: Vec<String>,
    /// The address devices and admins use, when it differs from https://HOSTNAME:PORT (for example
    /// behind port forwarding).
    #[arg(long, env = "ORCHARD_PUBLIC_URL", value_name = "URL")]
    pub public_url: Option<Url>,
    /// Your own TLS certificate chain (PEM) instead of the one Orchard makes; needs --tls-key.
    #[arg(
        long,
        env = "ORCHARD_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) for --tls-cert.
    #[arg(
        long,
        env = "ORCHARD_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
    /// Log format [default: human].
    #[arg(long, env = "ORCHARD_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Minutes without activity after which an admin is signed out [default: 30].
    #[arg(long, env = "ORCHARD_SESSION_IDLE_MINUTES", value_name = "MINUTES")]
    pub session_idle_minutes: Option<u32>,
    /// Base URL of Apple's DEP API (change only to talk to a simulator).
    #[arg(long, env = "ORCHARD_DEP_BASE_URL", value_name = "URL")]
    pub dep_base_url: Option<Url>,
    /// Base URL of Apple's push service (change only to talk to a simulator).
    #[arg(long, env = "ORCHARD_APNS_BASE_URL", value_name = "URL")]
    pub apns_base_url: Option<Url>,
    /// Days a device released from Apple School Manager stays listed before Orchard deletes it,
    /// 30 to 45 [default: 45].
    #[arg(long, env = "ORCHARD_REMOVED_GRACE_DAYS", value_name = "DAYS")]
    pub removed_grace_days: Option<u16>,
}

/// The same settings as [`ServeArgs`], read from the TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    data_dir: Option<PathBuf>,
    listen: Option<SocketAddr>,
    hostnames: Option<Vec<String>>,
    public_url: Option<String>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    log_format: Option<LogFormat>,
    session_idle_minutes: Option<u32>,
    dep_base_url: Option<String>,
    apns_base_url: Option<String>,
    removed_grace_days: Option<u16>,
}

/// Orchard's resolved bootstrap settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// At least one; the first is the name used in links.
    pub hostnames: Vec<String>,
    /// Set explicitly; otherwise [`Config::public_url_for`] derives it from the bound port.
    pub public_url: Option<Url>,
    /// Admin-supplied certificate chain and key (PEM), both or neither.
    pub tls_files: Option<(PathBuf, PathBuf)>,
    pub log_format: LogFormat,
    pub session_idle_minutes: u32,
    pub dep_base_url: Url,
    pub apns_base_url: Url,
    /// Roots trusted for the APNs server besides the public ones (an APNs simulator's CA, as
    /// `orchard demo` runs one); empty in production.
    pub apns_extra_roots: Vec<rustls::pki_types::CertificateDer<'static>>,
    /// Days a released device stays listed (30 to 45).
    pub removed_grace_days: u16,
}

/// A setting that cannot be used, said so an operator can fix it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the configuration file {path}: {source}")]
    ReadFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the configuration file {path} is not valid: {message}")]
    ParseFile { path: PathBuf, message: String },
    #[error("invalid setting {name}: {message}")]
    Invalid { name: &'static str, message: String },
}

impl Config {
    /// Resolves flags and environment (already merged by clap) with the optional TOML file.
    pub fn resolve(args: ServeArgs) -> Result<Config, ConfigError> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileSettings::default(),
        };
        let hostnames = if !args.hostnames.is_empty() {
            args.hostnames
        } else {
            file.hostnames.unwrap_or_default()
        };
        let hostnames = if hostnames.is_empty() {
            vec!["localhost".to_string()]
        } else {
            hostnames
        };
        for name in &hostnames {
            check_hostname(name)?;
        }
        let tls_files = match (
            args.tls_cert.or(file.tls_cert),
            args.tls_key.or(file.tls_key),
        ) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => {
                return Err(ConfigError::Invalid {
                    name: "tls_cert/tls_key",
                    message: "give both the certificate and the key, or neither".into(),
                });
            }
        };
        let public_url = match args.public_url {
            Some(url) => Some(url),
            None => file_url("public_url", file.public_url)?,
        };
        if let Some(url) = &public_url {
            check_base_url("public_url", url)?;
        }
        let dep_base_url = match args.dep_base_url {
            Some(url) => url,
            None => file_url("dep_base_url", file.dep_base_url)?
                .unwrap_or_else(|| default_url(APPLE_DEP_URL)),
        };
        check_base_url("dep_base_url", &dep_base_url)?;
        let apns_base_url = match args.apns_base_url {
            Some(url) => url,
            None => file_url("apns_base_url", file.apns_base_url)?
                .unwrap_or_else(|| default_url(APPLE_APNS_URL)),
        };
        check_base_url("apns_base_url", &apns_base_url)?;
        let session_idle_minutes = args
            .session_idle_minutes
            .or(file.session_idle_minutes)
            .unwrap_or(DEFAULT_IDLE_MINUTES);
        if !(1..=24 * 60).contains(&session_idle_minutes) {
            return Err(ConfigError::Invalid {
                name: "session_idle_minutes",
                message: "must be between 1 and 1440".into(),
            });
        }
        let removed_grace_days = args
            .removed_grace_days
            .or(file.removed_grace_days)
            .unwrap_or(DEFAULT_REMOVED_GRACE_DAYS);
        if !(30..=45).contains(&removed_grace_days) {
            return Err(ConfigError::Invalid {
                name: "removed_grace_days",
                message: "must be between 30 and 45".into(),
            });
        }
        Ok(Config {
            removed_grace_days,
            data_dir: args
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            listen: args.listen.or(file.listen).unwrap_or_else(default_listen),
            hostnames,
            public_url,
            tls_files,
            log_format: args.log_format.or(file.log_format).unwrap_or_default(),
            session_idle_minutes,
            dep_base_url,
            apns_base_url,
            apns_extra_roots: Vec::new(),
        })
    }

    /// A configuration for tests and `orchard demo`: loopback on a free port, `localhost`.
    pub fn for_data_dir(data_dir: &Path) -> Config {
        Config {
            data_dir: data_dir.to_path_buf(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            hostnames: vec!["localhost".to_string()],
            public_url: None,
            tls_files: None,
            log_format: LogFormat::Human,
            session_idle_minutes: DEFAULT_IDLE_MINUTES,
            dep_base_url: default_url(APPLE_DEP_URL),
            apns_base_url: default_url(APPLE_APNS_URL),
            apns_extra_roots: Vec::new(),
            removed_grace_days: DEFAULT_REMOVED_GRACE_DAYS,
        }
    }

    /// The URL devices and admins use: the explicit `public_url`, or `https://HOSTNAME:PORT` with
    /// the port actually bound (which differs from `listen` when that asked for port 0).
    pub fn public_url_for(&self, bound: SocketAddr) -> Url {
        if let Some(url) = &self.public_url {
            return url.clone();
        }
        let host = &self.hostnames[0];
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.clone()
        };
        let text = if bound.port() == 443 {
            format!("https://{host}/")
        } else {
            format!("https://{host}:{}/", bound.port())
        };
        // The host was checked in `resolve`; a failure here would be a bug, so fall back loudly.
        Url::parse(&text).unwrap_or_else(|_| default_url("https://localhost/"))
    }
}

fn read_file(path: &Path) -> Result<FileSettings, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
        path: path.to_path_buf(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::ParseFile {
        path: path.to_path_buf(),
        message: e.message().to_string(),
    })
}

fn file_url(name: &'static str, text: Option<String>) -> Result<Option<Url>, ConfigError> {
    text.map(|t| {
        Url::parse(&t).map_err(|e| ConfigError::Invalid {
            name,
            message: format!("{t:?} is not a URL ({e})"),
        })
    })
    .transpose()
}

fn check_hostname(name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && (name.parse::<std::net::IpAddr>().is_ok()
            || name.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            }));
    if ok {
        Ok(())
    } else {
        Err(ConfigError::Invalid {
            name: "hostname",
            message: format!("{name:?} is not a host name or IP address"),
        })
    }
}

fn check_base_url(name: &'static str, url: &Url) -> Result<(), ConfigError> {
    if !matches!(url.scheme(), "https" | "http") || url.host_str().is_none() {
        return Err(ConfigError::Invalid {
            name,
            message: format!("{url} must be an http(s) URL with a host"),
        });
    }
    Ok(())
}

fn default_url(text: &str) -> Url {
    // Compile-time constants that are valid URLs; covered by the tests below.
    Url::parse(text).unwrap_or_else(|_| unreachable!("constant URL {text} is valid"))
}

fn default_listen() -> SocketAddr {
    DEFAULT_LISTEN
        .parse()
        .unwrap_or_else(|_| unreachable!("constant address is valid"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_point_at_apple() {
        let c = Config::resolve(ServeArgs::default()).unwrap();
        assert_eq!(c.dep_base_url.as_str(), "https://mdmenrollment.apple.com/");
        assert_eq!(c.apns_base_url.as_str(), "https://api.push.apple.com/");
        assert_eq!(c.listen, "0.0.0.0:8443".parse().unwrap());
        assert_eq!(c.data_dir, PathBuf::from("./orchard-data"));
        assert_eq!(c.hostnames, vec!["localhost"]);
        assert_eq!(c.session_idle_minutes, 30);
    }

    #[test]
    fn flags_win_over_file_and_file_over_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("orchard.toml");
        std::fs::write(
            &path,
            "data_dir = \"/var/lib/orchard\"\nlisten = \"127.0.0.1:9443\"\nhostnames = [\"mdm.school.example\"]\nlog_format = \"json\"\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(path),
            listen: Some("127.0.0.1:10443".parse().unwrap()),
            ..ServeArgs::default()
        };
        let c = Config::resolve(args).unwrap();
        assert_eq!(c.listen, "127.0.0.1:10443".parse().unwrap());
        assert_eq!(c.data_dir, PathBuf::from("/var/lib/orchard"));
        assert_eq!(c.hostnames, vec!["mdm.school.example"]);
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(
            c.public_url_for("0.0.0.0:10443".parse().unwrap()).as_str(),
            "https://mdm.school.example:10443/"
        );
    }

    #[test]
    fn bad_settings_are_refused_with_the_setting_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "listen = 12\n").unwrap();
        let err = Config::resolve(ServeArgs {
            config: Some(path.clone()),
            ..ServeArgs::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("bad.toml"), "{err}");

        std::fs::write(&path, "colour = \"blue\"\n").unwrap();
        let err = Config::resolve(ServeArgs {
            config: Some(path),
            ..ServeArgs::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("colour"), "{err}");

        let err = Config::resolve(ServeArgs {
            hostnames: vec!["not a host".into()],
            ..ServeArgs::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("hostname"), "{err}");

        let err = Config::resolve(ServeArgs {
            dep_base_url: Some(Url::parse("ftp://x.example").unwrap()),
            ..ServeArgs::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("dep_base_url"), "{err}");

        let err = Config::resolve(ServeArgs {
            config: Some(dir.path().join("missing.toml")),
            ..ServeArgs::default()
        })
        .unwrap_err();
        assert!(matches!(err, ConfigError::ReadFile { .. }));
    }

    #[test]
    fn public_url_uses_the_bound_port_unless_set() {
        let c = Config::for_data_dir(Path::new("/tmp/x"));
        assert_eq!(
            c.public_url_for("127.0.0.1:41234".parse().unwrap())
                .as_str(),
            "https://localhost:41234/"
        );
        let mut c = c;
        c.public_url = Some(Url::parse("https://orchard.school.example/").unwrap());
        assert_eq!(
            c.public_url_for("127.0.0.1:41234".parse().unwrap())
                .as_str(),
            "https://orchard.school.example/"
        );
    }
}
