//! Simulators of the other side, for tests, benchmarks and the demo; never used by production paths.

pub mod apns;
pub mod dep;
pub mod fleet;
pub mod mac;
