//! Request and response bodies of the DEP API with Apple's JSON names
//! (<https://developer.apple.com/documentation/devicemanagement/device_assignment>). Every struct
//! tolerates unknown fields, so a newer protocol version never breaks a sync.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// `GET /account`: the MDM server and organisation a token belongs to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Account {
    pub server_name: String,
    pub server_uuid: String,
    pub admin_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub facilitator_id: Option<String>,
    pub org_name: String,
    pub org_email: String,
    pub org_phone: String,
    pub org_address: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub org_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub org_id_hash: Option<String>,
    /// `edu` (Apple School Manager), `org` (Apple Business Manager) or `tvprovider`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub org_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub org_version: Option<String>,
    pub urls: Vec<AccountUrl>,
}

impl Account {
    /// The page limits `/account` advertises for `uri`, if any.
    pub fn limit_for(&self, uri: &str) -> Option<PageLimit> {
        self.urls
            .iter()
            .find(|u| u.uri == uri)
            .and_then(|u| u.limit)
    }

    /// Whether the account is Apple School Manager (`org_type` `edu`).
    pub fn is_school(&self) -> bool {
        self.org_type.as_deref() == Some("edu")
    }
}

/// One endpoint listed in `/account` `urls`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AccountUrl {
    pub uri: String,
    pub http_method: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<PageLimit>,
}

/// Page size limits of a paged endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PageLimit {
    pub default: u32,
    pub maximum: u32,
}

/// A device as fetch, sync and details report it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Device {
    pub serial_number: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub color: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub asset_tag: Option<String>,
    /// `iOS`, `iPadOS`, `OSX`, `tvOS`, `visionOS`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
    /// `iPad`, `iPhone`, `iPod`, `Mac`, `AppleTV`, `Vision`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_family: Option<String>,
    /// `empty`, `assigned`, `pushed` or `removed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile_status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile_uuid: Option<String>,
    #[serde(
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub profile_assign_time: Option<OffsetDateTime>,
    #[serde(
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub profile_push_time: Option<OffsetDateTime>,
    #[serde(
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub device_assigned_date: Option<OffsetDateTime>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_assigned_by: Option<String>,
    #[serde(
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub mdm_migration_deadline: Option<OffsetDateTime>,
    /// Sync only: `added`, `modified` or `deleted`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub op_type: Option<String>,
    /// Sync only: when the change happened; the latest one wins for a serial.
    #[serde(
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub op_date: Option<OffsetDateTime>,
    /// Details only: `SUCCESS` or why the device could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_status: Option<String>,
}

/// Body of fetch (`POST /server/devices`) and sync (`POST /devices/sync`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CursorRequest {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// Answer of fetch and sync: one page of devices and the cursor for the next call.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DevicePage {
    pub devices: Vec<Device>,
    pub cursor: String,
    #[serde(
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub fetched_until: Option<OffsetDateTime>,
    pub more_to_follow: bool,
}

/// Body of details, disown and remove: a list of serial numbers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SerialsRequest {
    pub devices: Vec<String>,
}

/// Answer of `POST /devices` (details): the device record per serial.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DeviceDetails {
    pub devices: BTreeMap<String, Device>,
}

/// The per-serial answer of assign, remove, disown and define-with-devices.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DeviceStatus {
    #[serde(rename = "SUCCESS")]
    Success,
    #[serde(rename = "NOT_ACCESSIBLE")]
    NotAccessible,
    #[serde(rename = "FAILED")]
    Failed,
    /// Protocol 9+: Apple is rate-limiting this serial; retry after `retry_after_seconds`.
    #[serde(rename = "THROTTLED")]
    Throttled,
    /// A status newer than this client.
    #[serde(untagged)]
    Other(String),
}

/// Answer of assign (`PUT /profile/devices`), remove and disown.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DeviceStatuses {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile_uuid: Option<String>,
    pub devices: BTreeMap<String, DeviceStatus>,
    /// Protocol 10+: how long to wait before re-sending `THROTTLED` serials.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_seconds: Option<u64>,
}

/// Body of assign: a profile and at most 1000 serials.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AssignRequest {
    pub profile_uuid: String,
    pub devices: Vec<String>,
}

/// Answer of define profile (`POST /profile`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DefinedProfile {
    pub profile_uuid: String,
    pub devices: BTreeMap<String, DeviceStatus>,
}

/// An enrollment profile (reference §6). Unset options are left out so Apple applies its defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Profile {
    /// Required; an empty name is left out, which Apple answers with `CONFIG_NAME_REQUIRED`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub profile_name: String,
    /// Required: the enrollment URL the device posts its MachineInfo to.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_pairing: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_supervised: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_mandatory: Option<bool>,
    /// Apple's default is `true`; `false` requires `is_supervised` (else `FLAGS_INVALID`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_mdm_removable: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub await_device_configured: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auto_advance_setup: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_multi_user: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_return_to_service: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub do_not_use_profile_from_backup: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub department: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub support_phone_number: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub support_email_address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub org_magic: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub anchor_certs: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub supervising_host_certs: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub skip_setup_items: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub configuration_web_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Serials to assign in the same call.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<String>,
    /// Only in answers of get profile.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile_uuid: Option<String>,
}

/// Answer of `GET /session`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct SessionResponse {
    pub auth_session_token: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_real_shaped_answers() {
        let account: Account = serde_json::from_str(include_str!(
            "../../../tests/fixtures/apple-dep/micromdm/account_response.json"
        ))
        .unwrap();
        assert_eq!(account.server_uuid, "6666ED66666666666666666666666666");
        assert_eq!(account.org_type.as_deref(), Some("org"));
        assert!(!account.is_school());
        assert_eq!(
            account.limit_for("/server/devices"),
            Some(PageLimit {
                default: 1000,
                maximum: 5000
            })
        );
        assert_eq!(account.limit_for("/account"), None);

        let page: DevicePage = serde_json::from_str(include_str!(
            "../../../tests/fixtures/apple-dep/micromdm/device_response.json"
        ))
        .unwrap();
        assert_eq!(page.devices.len(), 1);
        assert_eq!(page.devices[0].serial_number, "C02T0HL0GGC0");
        assert_eq!(page.devices[0].device_family.as_deref(), Some("Mac"));
        assert!(page.devices[0].profile_assign_time.is_some());
        assert!(!page.more_to_follow);
        assert!(page.cursor.starts_with("MDow"));

        let empty: DevicePage = serde_json::from_str(include_str!(
            "../../../tests/fixtures/apple-dep/micromdm/empty_sync_response.json"
        ))
        .unwrap();
        assert!(empty.devices.is_empty());

        let details: DeviceDetails = serde_json::from_str(include_str!(
            "../../../tests/fixtures/apple-dep/micromdm/device_details_response.json"
        ))
        .unwrap();
        assert_eq!(
            details.devices["C02T0HL0GGC0"].response_status.as_deref(),
            Some("SUCCESS")
        );

        let profile: Profile = serde_json::from_str(include_str!(
            "../../../tests/fixtures/apple-dep/micromdm/fetch_profile_response.json"
        ))
        .unwrap();
        assert_eq!(profile.skip_setup_items, ["AppleID", "Android"]);
        assert_eq!(profile.await_device_configured, Some(true));

        let example: Profile = serde_json::from_str(include_str!(
            "../../../tests/fixtures/apple-dep/nanodep-dep-profile.example.json"
        ))
        .unwrap();
        assert_eq!(example.devices, ["SERIAL1", "SERIAL2"]);
        assert_eq!(example.is_mdm_removable, Some(true));
    }

    #[test]
    fn tolerates_unknown_fields_and_statuses() {
        let s: DeviceStatuses = serde_json::from_str(
            r#"{"profile_uuid":"P","devices":{"A":"SUCCESS","B":"THROTTLED","C":"SOMETHING_NEW"},"retry_after_seconds":30,"new_field":1}"#,
        )
        .unwrap();
        assert_eq!(s.devices["A"], DeviceStatus::Success);
        assert_eq!(s.devices["B"], DeviceStatus::Throttled);
        assert_eq!(s.devices["C"], DeviceStatus::Other("SOMETHING_NEW".into()));
        assert_eq!(s.retry_after_seconds, Some(30));
    }

    #[test]
    fn profile_leaves_unset_options_out() {
        let p = Profile {
            profile_name: "Macs".into(),
            url: "https://orchard.example/enroll".into(),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_string(&p).unwrap(),
            r#"{"profile_name":"Macs","url":"https://orchard.example/enroll"}"#
        );
    }
}
