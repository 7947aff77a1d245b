//! Orchard: a self-hosted Apple device enrollment appliance.
//!
//! # Layout
//!
//! - [`apple`]: Apple's services: the DEP API client (`apple::dep`), the APNs push client
//!   (`apple::apns`) and the MDM push certificate (`apple::push_cert`).
//! - [`clock`]: time as a dependency, so every duration rule is tested without waiting.
//! - [`metrics`]: counters and gauges for `/metrics`.
//! - [`pki`]: keys, certificates, CMS, sealed secrets.
//! - [`sim`]: simulators of the other side: Apple's DEP service (`sim::dep`), APNs (`sim::apns`).
//! - [`store`]: sled (or memory) behind one typed API; every record Orchard keeps.

pub mod apple;
pub mod clock;
pub mod metrics;
pub mod pki;
pub mod sim;
pub mod store;
