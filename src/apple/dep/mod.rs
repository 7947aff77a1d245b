//! Apple's ADE Device Assignment ("DEP") API: the server-token format, OAuth 1.0a `/session`,
//! a client for every endpoint with Apple's error codes and retry policy, and the typed bodies.
//! <https://developer.apple.com/documentation/devicemanagement/device_assignment>

pub mod client;
pub mod error;
pub mod oauth;
pub mod token;
pub mod types;

pub use client::{APPLE_BASE_URL, Client, ClientOptions, MAX_SERIALS, RetryPolicy};
pub use error::{DepError, Endpoint, ProfileField};
pub use token::{ServerToken, TokenError};
pub use types::{
    Account, DefinedProfile, Device, DeviceDetails, DevicePage, DeviceStatus, DeviceStatuses,
    Profile,
};
