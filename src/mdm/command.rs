//! MDM command plists: the identifier newtypes (`Udid`, `CommandUuid`, `PushMagic`), the commands
//! Orchard sends (with Apple's key names) and the device's report on `PUT /mdm/connect`.
//!
//! Apple: <https://developer.apple.com/documentation/devicemanagement/commands-and-queries>

use plist::{Dictionary, Value};
use serde::{Deserialize, Serialize};

/// Why a plist or identifier from a device was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("the body is not a property list: {0}")]
    NotPlist(String),
    #[error("the key {0} is missing")]
    Missing(&'static str),
    #[error("the key {key} is malformed: {why}")]
    Malformed { key: &'static str, why: String },
    #[error("unknown {key} {value:?}")]
    Unknown { key: &'static str, value: String },
}

/// A device's UDID (Macs: the hardware UUID, 36 characters; older devices: 40 hex digits).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Udid(String);

impl Udid {
    /// Accepts 1 to 64 ASCII letters, digits and `-`, which covers every UDID format Apple uses
    /// and keeps the value safe as a store key and in a URL path.
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if ok {
            Ok(Udid(s.to_string()))
        } else {
            Err(ParseError::Malformed {
                key: "UDID",
                why: "expected 1 to 64 letters, digits or dashes".into(),
            })
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Udid {
    type Error = ParseError;
    fn try_from(s: String) -> Result<Self, ParseError> {
        Udid::parse(&s)
    }
}
impl From<Udid> for String {
    fn from(u: Udid) -> String {
        u.0
    }
}
impl std::fmt::Display for Udid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The UUID naming one queued command; the device echoes it in its report.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CommandUuid(String);

impl CommandUuid {
    pub fn new() -> Self {
        CommandUuid(uuid::Uuid::new_v4().to_string().to_uppercase())
    }
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        uuid::Uuid::parse_str(s)
            .map(|u| CommandUuid(u.to_string().to_uppercase()))
            .map_err(|e| ParseError::Malformed {
                key: "CommandUUID",
                why: e.to_string(),
            })
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
impl Default for CommandUuid {
    fn default() -> Self {
        Self::new()
    }
}
impl TryFrom<String> for CommandUuid {
    type Error = ParseError;
    fn try_from(s: String) -> Result<Self, ParseError> {
        CommandUuid::parse(&s)
    }
}
impl From<CommandUuid> for String {
    fn from(u: CommandUuid) -> String {
        u.0
    }
}
impl std::fmt::Display for CommandUuid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The `PushMagic` string from `TokenUpdate` (shared with the APNs client, which sends it back).
pub use crate::apple::apns::PushMagic;

/// The queries Orchard asks for in `DeviceInformation` by default.
pub const DEFAULT_QUERIES: &[&str] = &[
    "DeviceName",
    "OSVersion",
    "BuildVersion",
    "ModelName",
    "Model",
    "ProductName",
    "SerialNumber",
    "DeviceCapacity",
    "AvailableDeviceCapacity",
    "WiFiMAC",
    "EthernetMACs",
    "IsSupervised",
    "IsActivationLockEnabled",
    "SystemIntegrityProtectionEnabled",
];

/// A command Orchard can queue for a device, with its parameters.
/// Apple: <https://developer.apple.com/documentation/devicemanagement/commands-and-queries>
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "request_type")]
pub enum Command {
    DeviceInformation {
        queries: Vec<String>,
    },
    SecurityInfo,
    ProfileList,
    InstalledApplicationList,
    /// `payload` is the profile as it goes to the device (usually CMS-signed).
    InstallProfile {
        payload: Vec<u8>,
    },
    RemoveProfile {
        identifier: String,
    },
    RestartDevice,
    ShutDownDevice,
    /// macOS requires a six-digit PIN; the message shows on the lock screen.
    DeviceLock {
        pin: String,
        message: String,
    },
    /// `pin` is used by Intel Macs without a T2 chip; Apple silicon ignores it.
    EraseDevice {
        pin: Option<String>,
    },
    DeviceConfigured,
    AccountConfiguration {
        skip_primary_setup_account_creation: bool,
        set_primary_setup_account_as_regular_user: bool,
    },
    /// `Settings` with the `DeviceName` item.
    SetDeviceName {
        name: String,
    },
}

impl Command {
    /// Apple's `RequestType` for this command.
    pub fn request_type(&self) -> &'static str {
        match self {
            Command::DeviceInformation { .. } => "DeviceInformation",
            Command::SecurityInfo => "SecurityInfo",
            Command::ProfileList => "ProfileList",
            Command::InstalledApplicationList => "InstalledApplicationList",
            Command::InstallProfile { .. } => "InstallProfile",
            Command::RemoveProfile { .. } => "RemoveProfile",
            Command::RestartDevice => "RestartDevice",
            Command::ShutDownDevice => "ShutDownDevice",
            Command::DeviceLock { .. } => "DeviceLock",
            Command::EraseDevice { .. } => "EraseDevice",
            Command::DeviceConfigured => "DeviceConfigured",
            Command::AccountConfiguration { .. } => "AccountConfiguration",
            Command::SetDeviceName { .. } => "Settings",
        }
    }

    /// The default `DeviceInformation` query set.
    pub fn device_information() -> Self {
        Command::DeviceInformation {
            queries: DEFAULT_QUERIES.iter().map(|q| q.to_string()).collect(),
        }
    }

    /// Checks the parameters a person typed, before anything is queued.
    pub fn validate(&self) -> Result<(), ParseError> {
        let bad = |key: &'static str, why: &str| {
            Err(ParseError::Malformed {
                key,
                why: why.into(),
            })
        };
        let six_digits = |pin: &str| pin.len() == 6 && pin.bytes().all(|b| b.is_ascii_digit());
        match self {
            Command::DeviceLock { pin, .. } | Command::EraseDevice { pin: Some(pin) }
                if !six_digits(pin) =>
            {
                bad("PIN", "a Mac needs a PIN of exactly six digits")
            }
            Command::DeviceLock { message, .. } if message.chars().count() > 200 => {
                bad("Message", "at most 200 characters")
            }
            Command::SetDeviceName { name }
                if name.trim().is_empty() || name.trim().chars().count() > 63 =>
            {
                bad("DeviceName", "a device name has 1 to 63 characters")
            }
            Command::RemoveProfile { identifier }
                if identifier.trim().is_empty() || identifier.len() > 255 =>
            {
                bad("Identifier", "a profile identifier has 1 to 255 characters")
            }
            Command::DeviceInformation { queries } if queries.is_empty() => {
                Err(ParseError::Missing("Queries"))
            }
            Command::InstallProfile { payload } if payload.is_empty() => {
                Err(ParseError::Missing("Payload"))
            }
            _ => Ok(()),
        }
    }

    /// The plist the device receives: `{CommandUUID, Command: {RequestType, ...}}`.
    pub fn to_plist(&self, uuid: &CommandUuid) -> Vec<u8> {
        let mut cmd = Dictionary::new();
        cmd.insert("RequestType".into(), self.request_type().into());
        match self {
            Command::DeviceInformation { queries } => {
                let qs = queries.iter().map(|q| Value::from(q.as_str())).collect();
                cmd.insert("Queries".into(), Value::Array(qs));
            }
            Command::InstallProfile { payload } => {
                cmd.insert("Payload".into(), Value::Data(payload.clone()));
            }
            Command::RemoveProfile { identifier } => {
                cmd.insert("Identifier".into(), identifier.as_str().into());
            }
            Command::DeviceLock { pin, message } => {
                cmd.insert("PIN".into(), pin.as_str().into());
                if !message.is_empty() {
                    cmd.insert("Message".into(), message.as_str().into());
                }
            }
            Command::EraseDevice { pin } => {
                if let Some(pin) = pin {
                    cmd.insert("PIN".into(), pin.as_str().into());
                }
            }
            Command::AccountConfiguration {
                skip_primary_setup_account_creation,
                set_primary_setup_account_as_regular_user,
            } => {
                cmd.insert(
                    "SkipPrimarySetupAccountCreation".into(),
                    (*skip_primary_setup_account_creation).into(),
                );
                cmd.insert(
                    "SetPrimarySetupAccountAsRegularUser".into(),
                    (*set_primary_setup_account_as_regular_user).into(),
                );
            }
            Command::SetDeviceName { name } => {
                let mut item = Dictionary::new();
                item.insert("Item".into(), "DeviceName".into());
                item.insert("DeviceName".into(), name.trim().into());
                cmd.insert(
                    "Settings".into(),
                    Value::Array(vec![Value::Dictionary(item)]),
                );
            }
            Command::SecurityInfo
            | Command::ProfileList
            | Command::InstalledApplicationList
            | Command::RestartDevice
            | Command::ShutDownDevice
            | Command::DeviceConfigured => {}
        }
        let mut top = Dictionary::new();
        top.insert("CommandUUID".into(), uuid.as_str().into());
        top.insert("Command".into(), Value::Dictionary(cmd));
        to_xml(&Value::Dictionary(top))
    }
}

/// Serialises a plist value as XML. Writing into a `Vec` cannot fail for a `Value`.
pub fn to_xml(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    // Invariant: the writer is a Vec and the value is a well-formed plist tree.
    let _ = v.to_writer_xml(&mut out);
    out
}

/// A command as a device reads it from the connect response (used by the simulated Macs).
#[derive(Debug, Clone)]
pub struct ReceivedCommand {
    pub uuid: CommandUuid,
    pub request_type: String,
    pub body: Dictionary,
}

impl ReceivedCommand {
    pub fn parse(bytes: &[u8]) -> Result<Self, ParseError> {
        let top = parse_dict(bytes)?;
        let uuid = CommandUuid::parse(string_key(&top, "CommandUUID")?)?;
        let body = top
            .get("Command")
            .and_then(Value::as_dictionary)
            .ok_or(ParseError::Missing("Command"))?
            .clone();
        let request_type = string_key(&body, "RequestType")?.to_string();
        Ok(ReceivedCommand {
            uuid,
            request_type,
            body,
        })
    }
}

/// `Status` of a report on the connect endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    Idle,
    Acknowledged,
    Error,
    CommandFormatError,
    NotNow,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Idle => "Idle",
            Status::Acknowledged => "Acknowledged",
            Status::Error => "Error",
            Status::CommandFormatError => "CommandFormatError",
            Status::NotNow => "NotNow",
        }
    }
    fn parse(s: &str) -> Result<Self, ParseError> {
        Ok(match s {
            "Idle" => Status::Idle,
            "Acknowledged" => Status::Acknowledged,
            "Error" => Status::Error,
            "CommandFormatError" => Status::CommandFormatError,
            "NotNow" => Status::NotNow,
            other => {
                return Err(ParseError::Unknown {
                    key: "Status",
                    value: other.chars().take(40).collect(),
                });
            }
        })
    }
}

/// A device's report on `PUT /mdm/connect`.
/// Apple: <https://developer.apple.com/documentation/devicemanagement/implementing-device-management/sending-mdm-commands-to-a-device>
#[derive(Debug, Clone)]
pub struct Report {
    pub udid: Udid,
    pub status: Status,
    /// Absent only for `Idle`.
    pub command_uuid: Option<CommandUuid>,
    /// `ErrorChain` entries as "domain code: description".
    pub errors: Vec<String>,
    /// The whole report, kept as the command's result.
    pub body: Dictionary,
}

impl Report {
    pub fn parse(bytes: &[u8]) -> Result<Self, ParseError> {
        let body = parse_dict(bytes)?;
        let udid = Udid::parse(string_key(&body, "UDID")?)?;
        let status = Status::parse(string_key(&body, "Status")?)?;
        let command_uuid = match body.get("CommandUUID") {
            Some(Value::String(s)) => Some(CommandUuid::parse(s)?),
            Some(_) => {
                return Err(ParseError::Malformed {
                    key: "CommandUUID",
                    why: "not a string".into(),
                });
            }
            None if status != Status::Idle => return Err(ParseError::Missing("CommandUUID")),
            None => None,
        };
        let errors = body
            .get("ErrorChain")
            .and_then(Value::as_array)
            .map(|chain| {
                chain
                    .iter()
                    .take(16)
                    .filter_map(Value::as_dictionary)
                    .map(|e| {
                        let domain = e.get("ErrorDomain").and_then(Value::as_string);
                        let code = e
                            .get("ErrorCode")
                            .and_then(Value::as_signed_integer)
                            .unwrap_or_default();
                        let text = e
                            .get("USEnglishDescription")
                            .or_else(|| e.get("LocalizedDescription"))
                            .and_then(Value::as_string);
                        format!(
                            "{} {}: {}",
                            domain.unwrap_or("unknown"),
                            code,
                            text.unwrap_or("")
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(Report {
            udid,
            status,
            command_uuid,
            errors,
            body,
        })
    }

    /// Builds a report as a device sends it (simulated Macs, tests).
    pub fn build(
        udid: &Udid,
        status: Status,
        uuid: Option<&CommandUuid>,
        extra: Dictionary,
    ) -> Vec<u8> {
        let mut d = extra;
        d.insert("UDID".into(), udid.as_str().into());
        d.insert("Status".into(), status.as_str().into());
        if let Some(u) = uuid {
            d.insert("CommandUUID".into(), u.as_str().into());
        }
        to_xml(&Value::Dictionary(d))
    }
}

pub(crate) fn parse_dict(bytes: &[u8]) -> Result<Dictionary, ParseError> {
    let v: Value = plist::from_bytes(bytes).map_err(|e| ParseError::NotPlist(e.to_string()))?;
    v.into_dictionary()
        .ok_or_else(|| ParseError::NotPlist("the top level is not a dictionary".into()))
}

pub(crate) fn string_key<'a>(d: &'a Dictionary, key: &'static str) -> Result<&'a str, ParseError> {
    match d.get(key) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(ParseError::Malformed {
            key,
            why: "not a string".into(),
        }),
        None => Err(ParseError::Missing(key)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udid_accepts_apple_formats_and_refuses_others() {
        assert!(Udid::parse("0000FE00-5FA3D6F2A1B2C3D4").is_ok());
        assert!(Udid::parse("A1B2C3D4-1111-2222-3333-444455556666").is_ok());
        assert!(Udid::parse("").is_err());
        assert!(Udid::parse("../etc").is_err());
        assert!(Udid::parse(&"A".repeat(65)).is_err());
    }

    #[test]
    fn command_plist_round_trips_through_a_device_parse() {
        let uuid = CommandUuid::new();
        let cmd = Command::DeviceLock {
            pin: "123456".into(),
            message: "Return to the library".into(),
        };
        let got = ReceivedCommand::parse(&cmd.to_plist(&uuid)).unwrap();
        assert_eq!(got.uuid, uuid);
        assert_eq!(got.request_type, "DeviceLock");
        assert_eq!(
            got.body.get("PIN").and_then(Value::as_string),
            Some("123456")
        );
        let name = Command::SetDeviceName {
            name: " Lab 3 ".into(),
        };
        let got = ReceivedCommand::parse(&name.to_plist(&uuid)).unwrap();
        assert_eq!(got.request_type, "Settings");
        let item = got.body.get("Settings").and_then(Value::as_array).unwrap()[0]
            .as_dictionary()
            .unwrap();
        assert_eq!(
            item.get("DeviceName").and_then(Value::as_string),
            Some("Lab 3")
        );
    }

    #[test]
    fn validate_refuses_bad_parameters() {
        let lock = |pin: &str| Command::DeviceLock {
            pin: pin.into(),
            message: String::new(),
        };
        assert!(lock("123456").validate().is_ok());
        assert!(lock("12345").validate().is_err());
        assert!(lock("12345a").validate().is_err());
        assert!(
            Command::SetDeviceName { name: "  ".into() }
                .validate()
                .is_err()
        );
        assert!(
            Command::InstallProfile { payload: vec![] }
                .validate()
                .is_err()
        );
    }

    #[test]
    fn report_parse_requires_uuid_except_for_idle() {
        let udid = Udid::parse("UDID-1").unwrap();
        let idle = Report::build(&udid, Status::Idle, None, Dictionary::new());
        let r = Report::parse(&idle).unwrap();
        assert_eq!(r.status, Status::Idle);
        assert!(r.command_uuid.is_none());
        let ack = Report::build(&udid, Status::Acknowledged, None, Dictionary::new());
        assert_eq!(
            Report::parse(&ack).unwrap_err(),
            ParseError::Missing("CommandUUID")
        );
        assert!(matches!(
            Report::parse(b"not a plist"),
            Err(ParseError::NotPlist(_))
        ));
        let mut bad = Dictionary::new();
        bad.insert("UDID".into(), "U".into());
        bad.insert("Status".into(), "Bogus".into());
        assert!(matches!(
            Report::parse(&to_xml(&Value::Dictionary(bad))),
            Err(ParseError::Unknown { key: "Status", .. })
        ));
    }

    #[test]
    fn report_keeps_the_error_chain() {
        let udid = Udid::parse("UDID-1").unwrap();
        let mut e = Dictionary::new();
        e.insert("ErrorDomain".into(), "MCMDMErrorDomain".into());
        e.insert("ErrorCode".into(), 12021.into());
        e.insert("USEnglishDescription".into(), "Unknown command".into());
        let mut extra = Dictionary::new();
        extra.insert(
            "ErrorChain".into(),
            Value::Array(vec![Value::Dictionary(e)]),
        );
        let body = Report::build(&udid, Status::Error, Some(&CommandUuid::new()), extra);
        let r = Report::parse(&body).unwrap();
        assert_eq!(r.errors, vec!["MCMDMErrorDomain 12021: Unknown command"]);
    }
}
