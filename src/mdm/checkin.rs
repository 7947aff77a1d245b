//! Check-in message plists (`PUT /mdm/checkin`): parsing what a device sends, with Apple's key
//! names, and building the same messages for simulated Macs.
//!
//! Apple: <https://developer.apple.com/documentation/devicemanagement/check-in>

use plist::{Dictionary, Value};

use super::command::{ParseError, PushMagic, Udid, parse_dict, string_key, to_xml};

/// Device facts sent with `Authenticate`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeviceFacts {
    pub serial_number: Option<String>,
    pub model: Option<String>,
    pub model_name: Option<String>,
    pub product_name: Option<String>,
    pub os_version: Option<String>,
    pub build_version: Option<String>,
    pub device_name: Option<String>,
}

/// One check-in message.
#[derive(Debug, Clone, PartialEq)]
pub enum Checkin {
    Authenticate {
        udid: Udid,
        topic: String,
        facts: DeviceFacts,
    },
    TokenUpdate {
        udid: Udid,
        topic: String,
        /// The APNs device token.
        token: Vec<u8>,
        push_magic: PushMagic,
        awaiting_configuration: bool,
        /// Set on the user channel; Orchard keeps only the device channel.
        user_id: Option<String>,
    },
    CheckOut {
        udid: Udid,
    },
    SetBootstrapToken {
        udid: Udid,
        /// `None` clears the escrowed token.
        token: Option<Vec<u8>>,
    },
    GetBootstrapToken {
        udid: Udid,
    },
    UserAuthenticate {
        udid: Udid,
    },
    DeclarativeManagement {
        udid: Udid,
    },
    GetToken {
        udid: Udid,
    },
}

/// Longest bootstrap token accepted (Apple's are a few hundred bytes).
const MAX_BOOTSTRAP_TOKEN: usize = 16 * 1024;

impl Checkin {
    /// Apple's `MessageType`.
    pub fn message_type(&self) -> &'static str {
        match self {
            Checkin::Authenticate { .. } => "Authenticate",
            Checkin::TokenUpdate { .. } => "TokenUpdate",
            Checkin::CheckOut { .. } => "CheckOut",
            Checkin::SetBootstrapToken { .. } => "SetBootstrapToken",
            Checkin::GetBootstrapToken { .. } => "GetBootstrapToken",
            Checkin::UserAuthenticate { .. } => "UserAuthenticate",
            Checkin::DeclarativeManagement { .. } => "DeclarativeManagement",
            Checkin::GetToken { .. } => "GetToken",
        }
    }

    pub fn udid(&self) -> &Udid {
        match self {
            Checkin::Authenticate { udid, .. }
            | Checkin::TokenUpdate { udid, .. }
            | Checkin::CheckOut { udid }
            | Checkin::SetBootstrapToken { udid, .. }
            | Checkin::GetBootstrapToken { udid }
            | Checkin::UserAuthenticate { udid }
            | Checkin::DeclarativeManagement { udid }
            | Checkin::GetToken { udid } => udid,
        }
    }

    pub fn parse(bytes: &[u8]) -> Result<Self, ParseError> {
        let d = parse_dict(bytes)?;
        let kind = string_key(&d, "MessageType")?;
        // User enrollment (BYOD) sends EnrollmentID instead of UDID; Orchard only does device
        // enrollment, so a UDID is required.
        let udid = Udid::parse(string_key(&d, "UDID")?)?;
        let opt = |k: &str| d.get(k).and_then(Value::as_string).map(str::to_string);
        Ok(match kind {
            "Authenticate" => Checkin::Authenticate {
                udid,
                topic: string_key(&d, "Topic")?.to_string(),
                facts: DeviceFacts {
                    serial_number: opt("SerialNumber"),
                    model: opt("Model"),
                    model_name: opt("ModelName"),
                    product_name: opt("ProductName"),
                    os_version: opt("OSVersion"),
                    build_version: opt("BuildVersion"),
                    device_name: opt("DeviceName"),
                },
            },
            "TokenUpdate" => {
                let token = match d.get("Token") {
                    Some(Value::Data(t)) if !t.is_empty() && t.len() <= 256 => t.clone(),
                    Some(_) => {
                        return Err(ParseError::Malformed {
                            key: "Token",
                            why: "expected 1 to 256 bytes of data".into(),
                        });
                    }
                    None => return Err(ParseError::Missing("Token")),
                };
                Checkin::TokenUpdate {
                    udid,
                    topic: string_key(&d, "Topic")?.to_string(),
                    token,
                    push_magic: PushMagic::parse(string_key(&d, "PushMagic")?).map_err(|e| {
                        ParseError::Malformed {
                            key: "PushMagic",
                            why: e.to_string(),
                        }
                    })?,
                    awaiting_configuration: d
                        .get("AwaitingConfiguration")
                        .and_then(Value::as_boolean)
                        .unwrap_or(false),
                    user_id: opt("UserID"),
                }
            }
            "CheckOut" => Checkin::CheckOut { udid },
            "SetBootstrapToken" => {
                let token = match d.get("BootstrapToken") {
                    Some(Value::Data(t)) if t.len() <= MAX_BOOTSTRAP_TOKEN => Some(t.clone()),
                    Some(_) => {
                        return Err(ParseError::Malformed {
                            key: "BootstrapToken",
                            why: format!("expected at most {MAX_BOOTSTRAP_TOKEN} bytes of data"),
                        });
                    }
                    None => None,
                };
                Checkin::SetBootstrapToken { udid, token }
            }
            "GetBootstrapToken" => Checkin::GetBootstrapToken { udid },
            "UserAuthenticate" => Checkin::UserAuthenticate { udid },
            "DeclarativeManagement" => Checkin::DeclarativeManagement { udid },
            "GetToken" => Checkin::GetToken { udid },
            other => {
                return Err(ParseError::Unknown {
                    key: "MessageType",
                    value: other.chars().take(40).collect(),
                });
            }
        })
    }

    /// The plist a device sends for this message (simulated Macs, tests).
    pub fn to_plist(&self) -> Vec<u8> {
        let mut d = Dictionary::new();
        d.insert("MessageType".into(), self.message_type().into());
        d.insert("UDID".into(), self.udid().as_str().into());
        let mut put = |k: &str, v: &Option<String>| {
            if let Some(v) = v {
                d.insert(k.into(), v.as_str().into());
            }
        };
        match self {
            Checkin::Authenticate { topic, facts, .. } => {
                put("Topic", &Some(topic.clone()));
                put("SerialNumber", &facts.serial_number);
                put("Model", &facts.model);
                put("ModelName", &facts.model_name);
                put("ProductName", &facts.product_name);
                put("OSVersion", &facts.os_version);
                put("BuildVersion", &facts.build_version);
                put("DeviceName", &facts.device_name);
            }
            Checkin::TokenUpdate {
                topic,
                token,
                push_magic,
                awaiting_configuration,
                user_id,
                ..
            } => {
                put("Topic", &Some(topic.clone()));
                put("PushMagic", &Some(push_magic.as_str().to_string()));
                put("UserID", user_id);
                d.insert("Token".into(), Value::Data(token.clone()));
                d.insert(
                    "AwaitingConfiguration".into(),
                    Value::Boolean(*awaiting_configuration),
                );
            }
            Checkin::SetBootstrapToken { token: Some(t), .. } => {
                d.insert("BootstrapToken".into(), Value::Data(t.clone()));
            }
            _ => {}
        }
        to_xml(&Value::Dictionary(d))
    }
}

/// The reply to `GetBootstrapToken` when a token is escrowed.
pub fn bootstrap_token_reply(token: &[u8]) -> Vec<u8> {
    let mut d = Dictionary::new();
    d.insert("BootstrapToken".into(), Value::Data(token.to_vec()));
    to_xml(&Value::Dictionary(d))
}

#[cfg(test)]
mod tests {
    use super::*;

    const AUTHENTICATE: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
	<key>BuildVersion</key>
	<string>24E263</string>
	<key>MessageType</key>
	<string>Authenticate</string>
	<key>Model</key>
	<string>Mac16,10</string>
	<key>ModelName</key>
	<string>Mac mini</string>
	<key>OSVersion</key>
	<string>15.4</string>
	<key>ProductName</key>
	<string>Mac16,10</string>
	<key>SerialNumber</key>
	<string>C02XK0AAJGH5</string>
	<key>Topic</key>
	<string>com.apple.mgmt.External.a1b2c3d4-0000-1111-2222-333344445555</string>
	<key>UDID</key>
	<string>A1B2C3D4-1111-2222-3333-444455556666</string>
</dict>
</plist>"#;

    #[test]
    fn parses_a_mac_authenticate() {
        let c = Checkin::parse(AUTHENTICATE.as_bytes()).unwrap();
        let Checkin::Authenticate { udid, topic, facts } = c else {
            panic!("not Authenticate")
        };
        assert_eq!(udid.as_str(), "A1B2C3D4-1111-2222-3333-444455556666");
        assert!(topic.starts_with("com.apple.mgmt.External."));
        assert_eq!(facts.serial_number.as_deref(), Some("C02XK0AAJGH5"));
        assert_eq!(facts.os_version.as_deref(), Some("15.4"));
    }

    #[test]
    fn token_update_round_trips() {
        let m = Checkin::TokenUpdate {
            udid: Udid::parse("U-1").unwrap(),
            topic: "com.apple.mgmt.External.x".into(),
            token: vec![1, 2, 3, 4],
            push_magic: PushMagic::parse("magic-1").unwrap(),
            awaiting_configuration: true,
            user_id: None,
        };
        assert_eq!(Checkin::parse(&m.to_plist()).unwrap(), m);
    }

    #[test]
    fn refuses_unknown_types_and_missing_keys() {
        let bad = AUTHENTICATE.replace("<string>Authenticate</string>", "<string>Bogus</string>");
        assert!(matches!(
            Checkin::parse(bad.as_bytes()),
            Err(ParseError::Unknown {
                key: "MessageType",
                ..
            })
        ));
        let no_udid = AUTHENTICATE.replace("<key>UDID</key>", "<key>NotUDID</key>");
        assert_eq!(
            Checkin::parse(no_udid.as_bytes()).unwrap_err(),
            ParseError::Missing("UDID")
        );
        let mut d = Dictionary::new();
        d.insert("MessageType".into(), "TokenUpdate".into());
        d.insert("UDID".into(), "U-1".into());
        d.insert("Topic".into(), "t".into());
        d.insert("PushMagic".into(), "m".into());
        assert_eq!(
            Checkin::parse(&to_xml(&Value::Dictionary(d))).unwrap_err(),
            ParseError::Missing("Token")
        );
        assert!(Checkin::parse(b"").is_err());
    }
}
