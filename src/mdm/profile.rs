//! The enrollment profile (`.mobileconfig`): Orchard's CA as a root payload (when the local CA
//! serves TLS), a SCEP payload with a one-time challenge and a subject unique to the device, and
//! the MDM payload. The caller signs the result (CMS SignedData) so the Mac shows it as verified.
//!
//! Apple: <https://developer.apple.com/documentation/devicemanagement/mdm>,
//! <https://developer.apple.com/documentation/devicemanagement/scep>

use plist::{Dictionary, Value};

use super::command::to_xml;

/// The MIME type Apple requires for a profile served to a device.
pub const CONTENT_TYPE: &str = "application/x-apple-aspen-config";
/// All 13 access-right bits (Apple: "AccessRights", 1..4096).
pub const ACCESS_RIGHTS_ALL: i64 = 8191;
/// The profile's identifier: a renewal replaces the installed profile because it is the same.
pub const PROFILE_IDENTIFIER: &str = "org.orchard.mdm.enrollment";

/// What one enrollment profile contains.
#[derive(Debug, Clone)]
pub struct ProfileSpec<'a> {
    /// `https://host:port` the Mac reaches Orchard at.
    pub base_url: &'a str,
    /// The APNs topic of the push certificate.
    pub topic: &'a str,
    /// The one-time SCEP challenge.
    pub challenge: &'a str,
    /// The SCEP certificate's common name; unique per enrollment.
    pub subject_cn: &'a str,
    /// The school's name (profile organisation and certificate O).
    pub organization: &'a str,
    /// Orchard's local CA (DER), when it signs the TLS certificate the Mac will see.
    pub root_ca_der: Option<&'a [u8]>,
    /// `PayloadRemovalDisallowed`: the admin turned on locked enrollment.
    pub locked: bool,
}

/// Builds the unsigned profile as an XML plist.
pub fn build(spec: &ProfileSpec<'_>) -> Vec<u8> {
    let base = spec.base_url.trim_end_matches('/');
    let mut payloads = Vec::new();

    if let Some(ca) = spec.root_ca_der {
        let mut root = payload(
            "com.apple.security.root",
            &format!("{PROFILE_IDENTIFIER}.root"),
            "Orchard certificate authority",
        );
        root.insert("PayloadContent".into(), Value::Data(ca.to_vec()));
        root.insert("PayloadCertificateFileName".into(), "orchard-ca.cer".into());
        payloads.push(Value::Dictionary(root));
    }

    let scep_uuid = new_uuid();
    let mut scep = payload(
        "com.apple.security.scep",
        &format!("{PROFILE_IDENTIFIER}.scep"),
        "Device identity",
    );
    scep.insert("PayloadUUID".into(), scep_uuid.as_str().into());
    let mut scep_content = Dictionary::new();
    scep_content.insert("URL".into(), format!("{base}/scep").into());
    scep_content.insert("Name".into(), "Orchard".into());
    scep_content.insert("Challenge".into(), spec.challenge.into());
    scep_content.insert("Keysize".into(), 2048.into());
    scep_content.insert("Key Type".into(), "RSA".into());
    // Signing and encryption: the identity signs check-ins and decrypts SCEP replies.
    scep_content.insert("Key Usage".into(), 5.into());
    scep_content.insert(
        "Subject".into(),
        Value::Array(vec![
            rdn("O", spec.organization),
            rdn("CN", spec.subject_cn),
        ]),
    );
    scep.insert("PayloadContent".into(), Value::Dictionary(scep_content));
    payloads.push(Value::Dictionary(scep));

    let mut mdm = payload(
        "com.apple.mdm",
        &format!("{PROFILE_IDENTIFIER}.mdm"),
        "Device management",
    );
    mdm.insert("IdentityCertificateUUID".into(), scep_uuid.into());
    mdm.insert("Topic".into(), spec.topic.into());
    mdm.insert("ServerURL".into(), format!("{base}/mdm/connect").into());
    mdm.insert("CheckInURL".into(), format!("{base}/mdm/checkin").into());
    mdm.insert("SignMessage".into(), true.into());
    mdm.insert("AccessRights".into(), ACCESS_RIGHTS_ALL.into());
    mdm.insert("CheckOutWhenRemoved".into(), true.into());
    mdm.insert(
        "ServerCapabilities".into(),
        Value::Array(vec![
            "com.apple.mdm.per-user-connections".into(),
            "com.apple.mdm.bootstraptoken".into(),
        ]),
    );
    payloads.push(Value::Dictionary(mdm));

    let mut top = Dictionary::new();
    top.insert("PayloadType".into(), "Configuration".into());
    top.insert("PayloadVersion".into(), 1.into());
    top.insert("PayloadIdentifier".into(), PROFILE_IDENTIFIER.into());
    top.insert("PayloadUUID".into(), new_uuid().into());
    top.insert(
        "PayloadDisplayName".into(),
        "Orchard device management".into(),
    );
    top.insert("PayloadOrganization".into(), spec.organization.into());
    top.insert(
        "PayloadDescription".into(),
        format!("Lets {} manage this Mac.", spec.organization).into(),
    );
    top.insert("PayloadScope".into(), "System".into());
    if spec.locked {
        top.insert("PayloadRemovalDisallowed".into(), true.into());
    }
    top.insert("PayloadContent".into(), Value::Array(payloads));
    to_xml(&Value::Dictionary(top))
}

fn payload(kind: &str, identifier: &str, name: &str) -> Dictionary {
    let mut d = Dictionary::new();
    d.insert("PayloadType".into(), kind.into());
    d.insert("PayloadVersion".into(), 1.into());
    d.insert("PayloadIdentifier".into(), identifier.into());
    d.insert("PayloadUUID".into(), new_uuid().into());
    d.insert("PayloadDisplayName".into(), name.into());
    d
}

/// One relative distinguished name in the SCEP `Subject` array-of-arrays form.
fn rdn(oid: &str, value: &str) -> Value {
    Value::Array(vec![Value::Array(vec![oid.into(), value.into()])])
}

fn new_uuid() -> String {
    uuid::Uuid::new_v4().to_string().to_uppercase()
}

/// What a device reads from an (unsigned) enrollment profile: enough for a simulated Mac.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileView {
    pub scep_url: String,
    pub challenge: String,
    pub subject: Vec<(String, String)>,
    pub topic: String,
    pub server_url: String,
    pub checkin_url: String,
    pub sign_message: bool,
    pub root_ca_der: Option<Vec<u8>>,
}

impl ProfileView {
    /// Reads the plist of an enrollment profile (the content of the signed profile).
    pub fn parse(bytes: &[u8]) -> Result<Self, super::command::ParseError> {
        use super::command::{ParseError, parse_dict, string_key};
        let top = parse_dict(bytes)?;
        let payloads = top
            .get("PayloadContent")
            .and_then(Value::as_array)
            .ok_or(ParseError::Missing("PayloadContent"))?;
        let find = |kind: &str| {
            payloads
                .iter()
                .filter_map(Value::as_dictionary)
                .find(|p| p.get("PayloadType").and_then(Value::as_string) == Some(kind))
        };
        let scep = find("com.apple.security.scep")
            .and_then(|p| p.get("PayloadContent"))
            .and_then(Value::as_dictionary)
            .ok_or(ParseError::Missing("com.apple.security.scep"))?;
        let mdm = find("com.apple.mdm").ok_or(ParseError::Missing("com.apple.mdm"))?;
        let subject = scep
            .get("Subject")
            .and_then(Value::as_array)
            .map(|rdns| {
                rdns.iter()
                    .filter_map(Value::as_array)
                    .flatten()
                    .filter_map(Value::as_array)
                    .filter_map(|pair| match pair.as_slice() {
                        [Value::String(k), Value::String(v)] => Some((k.clone(), v.clone())),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(ProfileView {
            scep_url: string_key(scep, "URL")?.to_string(),
            challenge: string_key(scep, "Challenge")?.to_string(),
            subject,
            topic: string_key(mdm, "Topic")?.to_string(),
            server_url: string_key(mdm, "ServerURL")?.to_string(),
            checkin_url: string_key(mdm, "CheckInURL")?.to_string(),
            sign_message: mdm
                .get("SignMessage")
                .and_then(Value::as_boolean)
                .unwrap_or(false),
            root_ca_der: find("com.apple.security.root")
                .and_then(|p| p.get("PayloadContent"))
                .and_then(Value::as_data)
                .map(<[u8]>::to_vec),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec<'a>(ca: Option<&'a [u8]>, locked: bool) -> ProfileSpec<'a> {
        ProfileSpec {
            base_url: "https://orchard.school.example:8443/",
            topic: "com.apple.mgmt.External.abc",
            challenge: "chal-1",
            subject_cn: "orchard-device-1",
            organization: "Hill School",
            root_ca_der: ca,
            locked,
        }
    }

    #[test]
    fn profile_has_the_payloads_apple_requires() {
        let bytes = build(&spec(Some(b"ca-der"), false));
        let v = ProfileView::parse(&bytes).unwrap();
        assert_eq!(v.scep_url, "https://orchard.school.example:8443/scep");
        assert_eq!(
            v.server_url,
            "https://orchard.school.example:8443/mdm/connect"
        );
        assert_eq!(
            v.checkin_url,
            "https://orchard.school.example:8443/mdm/checkin"
        );
        assert_eq!(v.challenge, "chal-1");
        assert!(v.sign_message);
        assert_eq!(v.root_ca_der.as_deref(), Some(&b"ca-der"[..]));
        assert!(
            v.subject
                .contains(&("CN".into(), "orchard-device-1".into()))
        );

        let top: Dictionary = plist::from_bytes(&bytes).unwrap();
        assert!(top.get("PayloadRemovalDisallowed").is_none());
        let payloads = top.get("PayloadContent").unwrap().as_array().unwrap();
        let scep = payloads[1].as_dictionary().unwrap();
        let mdm = payloads[2].as_dictionary().unwrap();
        assert_eq!(
            mdm.get("IdentityCertificateUUID"),
            scep.get("PayloadUUID"),
            "the MDM payload must name the SCEP payload"
        );
        assert_eq!(
            mdm.get("AccessRights").and_then(Value::as_signed_integer),
            Some(8191)
        );
        assert_eq!(
            mdm.get("CheckOutWhenRemoved").and_then(Value::as_boolean),
            Some(true)
        );
        let caps = mdm.get("ServerCapabilities").unwrap().as_array().unwrap();
        assert!(caps.contains(&Value::from("com.apple.mdm.bootstraptoken")));
    }

    #[test]
    fn locked_profile_cannot_be_removed_and_no_ca_without_local_tls() {
        let bytes = build(&spec(None, true));
        let top: Dictionary = plist::from_bytes(&bytes).unwrap();
        assert_eq!(
            top.get("PayloadRemovalDisallowed")
                .and_then(Value::as_boolean),
            Some(true)
        );
        assert_eq!(ProfileView::parse(&bytes).unwrap().root_ca_der, None);
    }
}
