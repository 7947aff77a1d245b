//! Orchard: a self-hosted Apple device enrollment appliance.
//!
//! # Layout
//!
//! - [`ade`]: Automated Device Enrollment: server tokens (`ade::token`), the device inventory
//!   (`ade::inventory`) and the sync worker (`ade::sync`).
//! - [`apple`]: Apple's services: the DEP API client (`apple::dep`), the APNs push client
//!   (`apple::apns`) and the MDM push certificate (`apple::push_cert`).
//! - [`clock`]: time as a dependency, so every duration rule is tested without waiting.
//! - [`config`]: bootstrap settings from flags, `ORCHARD_*` environment and an optional TOML file.
//! - [`demo`]: `orchard demo`: Orchard beside a simulated Apple School Manager.
//! - [`http`]: hyper plumbing: TLS listener (HTTP/1.1 + h2), router, body limits, graceful shutdown.
//! - [`mdm`]: check-in, the command queue and connect, identity binding, enrollment profiles, SCEP.
//! - [`metrics`]: counters and gauges for `/metrics`.
//! - [`pki`]: keys, certificates, CMS, sealed secrets.
//! - [`server`]: `orchard serve` as a library: start everything, get the address, stop gracefully.
//! - [`sim`]: simulators of the other side: Apple's DEP service (`sim::dep`), APNs (`sim::apns`),
//!   Macs (`sim::mac`, `sim::fleet`).
//! - [`store`]: sled (or memory) behind one typed API; every record Orchard keeps.
//! - [`web`]: the admin UI framework, accounts, sessions, CSRF, audit log, API keys, error pages.

pub mod ade;
pub mod apple;
pub mod clock;
pub mod config;
pub mod demo;
pub mod http;
pub mod mdm;
pub mod metrics;
pub mod pki;
pub mod server;
pub mod sim;
pub mod store;
pub mod web;
