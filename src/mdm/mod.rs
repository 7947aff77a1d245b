//! MDM: check-in messages, the command queue and connect, device identity binding, the
//! enrollment profile and the SCEP service.
//!
//! Layout: plist types in [`checkin`] and [`command`], logic in [`service`].

pub mod auth;
pub mod checkin;
pub mod command;
pub mod enroll;
pub mod http;
pub mod profile;
pub mod runtime;
pub mod scep;
pub mod service;
