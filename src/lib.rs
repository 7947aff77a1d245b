//! Orchard: a self-hosted Apple device enrollment appliance.

pub mod apple; // Apple's services: the DEP API client (`apple::dep`)
