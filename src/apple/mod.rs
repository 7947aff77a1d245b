//! Clients of Apple's services. Production code talks to Apple's real URLs by default; a base URL
//! setting points them at Orchard's simulators in tests and demos.

pub mod apns;
pub mod dep;
pub mod push_cert;
