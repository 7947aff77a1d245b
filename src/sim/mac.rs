//! Simulated Macs: what a real Mac does once it has an enrollment profile. Its own RSA key, a
//! SCEP request with the profile's challenge, `Authenticate` and `TokenUpdate` signed with the
//! issued identity (`Mdm-Signature`), waking on a push from the APNs simulator, and answering
//! commands with realistic results (and an occasional `NotNow`).

use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;

use base64::Engine;
use der::Decode;
use plist::{Dictionary, Value};

use crate::mdm::checkin::{Checkin, DeviceFacts};
use crate::mdm::command::{PushMagic, ReceivedCommand, Report, Status, Udid};
use crate::mdm::profile::ProfileView;
use crate::pki::cms::{self, Certificate, Cipher, DigestAlg, SignerKey};
use crate::pki::scep::{self, CertRepOutcome};

/// One HTTP request a simulated Mac makes; `path` includes the query.
#[derive(Debug, Clone)]
pub struct SimRequest {
    pub method: &'static str,
    pub path: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

/// The answer to a [`SimRequest`].
#[derive(Debug, Clone)]
pub struct SimResponse {
    pub status: u16,
    pub body: Vec<u8>,
}

pub type SimFuture<'a> = Pin<Box<dyn Future<Output = Result<SimResponse, String>> + Send + 'a>>;

/// How a simulated Mac reaches Orchard: HTTPS in the demo, a direct call in tests.
pub trait Transport: Send + Sync {
    fn send(&self, req: SimRequest) -> SimFuture<'_>;
}

/// Why a simulated Mac could not do something.
#[derive(Debug, thiserror::Error)]
pub enum MacError {
    #[error("the enrollment profile is not usable: {0}")]
    Profile(String),
    #[error("SCEP failed: {0}")]
    Scep(String),
    #[error("{what} was answered with HTTP {status}: {body}")]
    Refused {
        what: &'static str,
        status: u16,
        body: String,
    },
    #[error("transport: {0}")]
    Transport(String),
    #[error("the Mac has no identity yet")]
    NotEnrolled,
}

/// How the Mac's SCEP request is made (real clients differ).
#[derive(Debug, Clone, Copy)]
pub struct ScepAlgorithms {
    pub cipher: Cipher,
    pub digest: DigestAlg,
    /// Use a P-256 key instead of RSA 2048.
    pub ec_key: bool,
    /// Send PKIOperation by GET (the message base64 in the query), as older clients do.
    pub by_get: bool,
}

impl Default for ScepAlgorithms {
    /// What a current Mac sends.
    fn default() -> Self {
        ScepAlgorithms {
            cipher: Cipher::Aes256Cbc,
            digest: DigestAlg::Sha256,
            ec_key: false,
            by_get: false,
        }
    }
}

/// A simulated Mac with its identity and MDM session state.
pub struct SimMac {
    pub model: MacModel,
    udid: Udid,
    pub algorithms: ScepAlgorithms,
    identity: Option<(Certificate, SignerKey)>,
    profile: Option<ProfileView>,
    /// The APNs device token (from the APNs simulator, or random).
    pub push_token: Vec<u8>,
    pub push_magic: String,
    /// Statuses this Mac reported, in order (for tests and the demo's summary).
    pub reported: Vec<(String, Status)>,
    /// Sign each message with `Mdm-Signature` (true), or rely on the TLS client certificate.
    pub sign_messages: bool,
}

impl SimMac {
    pub fn new(model: MacModel, push_token: Vec<u8>) -> Result<Self, MacError> {
        let udid = Udid::parse(&model.udid).map_err(|e| MacError::Profile(e.to_string()))?;
        Ok(SimMac {
            model,
            udid,
            algorithms: ScepAlgorithms::default(),
            identity: None,
            profile: None,
            push_token,
            push_magic: uuid::Uuid::new_v4().to_string(),
            reported: Vec::new(),
            sign_messages: true,
        })
    }

    pub fn udid(&self) -> Udid {
        self.udid.clone()
    }

    /// The identity certificate SCEP gave this Mac.
    pub fn certificate(&self) -> Option<&Certificate> {
        self.identity.as_ref().map(|(c, _)| c)
    }

    /// Installs a (signed) enrollment profile: SCEP for an identity, then Authenticate and
    /// TokenUpdate, as macOS does.
    pub async fn install_profile(
        &mut self,
        t: &dyn Transport,
        signed: &[u8],
    ) -> Result<(), MacError> {
        let (content, _) =
            cms::verify_attached(signed).map_err(|e| MacError::Profile(e.to_string()))?;
        let view = ProfileView::parse(&content).map_err(|e| MacError::Profile(e.to_string()))?;
        self.scep(t, &view).await?;
        self.profile = Some(view);
        self.authenticate(t).await?;
        self.token_update(t).await
    }

    async fn scep(&mut self, t: &dyn Transport, view: &ProfileView) -> Result<(), MacError> {
        let scep_path = path_of(&view.scep_url);
        let ca = t
            .send(get(&format!("{scep_path}?operation=GetCACert")))
            .await
            .map_err(MacError::Transport)?;
        if ca.status != 200 {
            return Err(refused("GetCACert", &ca));
        }
        let ca_cert = Certificate::from_der(&ca.body).map_err(|e| MacError::Scep(e.to_string()))?;
        let key = if self.algorithms.ec_key {
            ec_key()
        } else {
            SignerKey::Rsa(
                rsa::PrivateKey::new(&mut rand::rng(), 2048)
                    .map_err(|e| MacError::Scep(e.to_string()))?,
            )
        };
        let subject = view
            .subject
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        let subject =
            x509_cert::name::Name::from_str(&subject).map_err(|e| MacError::Scep(e.to_string()))?;
        let now = time::OffsetDateTime::now_utc();
        let req = scep::build_pkcs_req(
            &key,
            &subject,
            &view.challenge,
            &ca_cert,
            self.algorithms.cipher,
            self.algorithms.digest,
            now,
        )
        .map_err(|e| MacError::Scep(e.to_string()))?;
        let request = if self.algorithms.by_get {
            let message = base64::engine::general_purpose::STANDARD.encode(&req.message);
            let message: String =
                url::form_urlencoded::byte_serialize(message.as_bytes()).collect();
            get(&format!(
                "{scep_path}?operation=PKIOperation&message={message}"
            ))
        } else {
            SimRequest {
                method: "POST",
                path: format!("{scep_path}?operation=PKIOperation"),
                headers: vec![("content-type", "application/x-pki-message".into())],
                body: req.message.clone(),
            }
        };
        let rep = t.send(request).await.map_err(MacError::Transport)?;
        if rep.status != 200 {
            return Err(refused("PKIOperation", &rep));
        }
        match scep::parse_cert_rep(&rep.body, &req, &key, &ca_cert)
            .map_err(|e| MacError::Scep(e.to_string()))?
        {
            CertRepOutcome::Issued(cert) => {
                self.identity = Some((*cert, key));
                Ok(())
            }
            CertRepOutcome::Failed(f) => Err(MacError::Scep(format!("the CA refused: {f}"))),
            CertRepOutcome::Pending => {
                Err(MacError::Scep("the CA left the request pending".into()))
            }
        }
    }

    /// Sends `Authenticate` (again).
    pub async fn authenticate(&mut self, t: &dyn Transport) -> Result<(), MacError> {
        let topic = self
            .profile
            .as_ref()
            .map(|p| p.topic.clone())
            .unwrap_or_default();
        let msg = Checkin::Authenticate {
            udid: self.udid(),
            topic,
            facts: self.model.facts(),
        };
        self.checkin(t, &msg.to_plist()).await.map(|_| ())
    }

    /// Sends `TokenUpdate` with this Mac's push token and magic.
    pub async fn token_update(&mut self, t: &dyn Transport) -> Result<(), MacError> {
        let topic = self
            .profile
            .as_ref()
            .map(|p| p.topic.clone())
            .unwrap_or_default();
        let msg = Checkin::TokenUpdate {
            udid: self.udid(),
            topic,
            token: self.push_token.clone(),
            push_magic: PushMagic::parse(&self.push_magic)
                .map_err(|e| MacError::Profile(e.to_string()))?,
            awaiting_configuration: false,
            user_id: None,
        };
        self.checkin(t, &msg.to_plist()).await.map(|_| ())
    }

    /// Sends a check-in body, signed; returns the answer body.
    pub async fn checkin(&self, t: &dyn Transport, body: &[u8]) -> Result<Vec<u8>, MacError> {
        let path = self
            .profile
            .as_ref()
            .map(|p| path_of(&p.checkin_url))
            .unwrap_or_else(|| "/mdm/checkin".into());
        let r = self
            .signed_put(t, &path, "application/x-apple-aspen-mdm-checkin", body)
            .await?;
        if r.status != 200 {
            return Err(refused("check-in", &r));
        }
        Ok(r.body)
    }

    /// One MDM session, as after a push: `Idle`, then each command in turn until the server
    /// has no more. Returns how many commands were answered.
    pub async fn session(&mut self, t: &dyn Transport) -> Result<usize, MacError> {
        let path = self
            .profile
            .as_ref()
            .map(|p| path_of(&p.server_url))
            .unwrap_or_else(|| "/mdm/connect".into());
        let udid = self.udid();
        let mut body = Report::build(&udid, Status::Idle, None, Dictionary::new());
        let mut answered = 0;
        // A server that never runs dry must not keep a simulated Mac forever.
        for _ in 0..1000 {
            let r = self
                .signed_put(t, &path, "application/x-apple-aspen-mdm", &body)
                .await?;
            if r.status != 200 {
                return Err(refused("connect", &r));
            }
            if r.body.is_empty() {
                break;
            }
            let cmd =
                ReceivedCommand::parse(&r.body).map_err(|e| MacError::Profile(e.to_string()))?;
            let (status, extra) = self.model.answer(&cmd);
            self.reported.push((cmd.request_type.clone(), status));
            answered += 1;
            body = Report::build(&udid, status, Some(&cmd.uuid), extra);
        }
        Ok(answered)
    }

    /// PUTs `body` with an `Mdm-Signature` made with this Mac's identity.
    pub async fn signed_put(
        &self,
        t: &dyn Transport,
        path: &str,
        content_type: &'static str,
        body: &[u8],
    ) -> Result<SimResponse, MacError> {
        let mut headers = vec![("content-type", content_type.to_string())];
        if self.sign_messages {
            headers.push(("mdm-signature", self.sign(body)?));
        }
        t.send(SimRequest {
            method: "PUT",
            path: path.to_string(),
            headers,
            body: body.to_vec(),
        })
        .await
        .map_err(MacError::Transport)
    }

    /// The identity as DER (certificate, PKCS#8 key), for a TLS client certificate.
    pub fn identity_der(&self) -> Result<(Vec<u8>, Vec<u8>), MacError> {
        use der::Encode;
        let (cert, key) = self.identity.as_ref().ok_or(MacError::NotEnrolled)?;
        let cert = cert.to_der().map_err(|e| MacError::Scep(e.to_string()))?;
        let key = key
            .to_pkcs8_der()
            .map_err(|e| MacError::Scep(e.to_string()))?;
        Ok((cert, key))
    }

    /// The `Mdm-Signature` header value for `body`: a detached CMS signature, base64.
    pub fn sign(&self, body: &[u8]) -> Result<String, MacError> {
        let (cert, key) = self.identity.as_ref().ok_or(MacError::NotEnrolled)?;
        let sig = cms::sign_detached(body, cert, key).map_err(|e| MacError::Scep(e.to_string()))?;
        Ok(base64::engine::general_purpose::STANDARD.encode(sig))
    }

    /// Gives this Mac another Mac's identity (to test that Orchard refuses it).
    pub fn steal_identity_of(&mut self, other: &SimMac) {
        self.identity = other.identity.clone();
        self.profile = other.profile.clone();
    }
}

fn get(path: &str) -> SimRequest {
    SimRequest {
        method: "GET",
        path: path.to_string(),
        headers: Vec::new(),
        body: Vec::new(),
    }
}

fn refused(what: &'static str, r: &SimResponse) -> MacError {
    MacError::Refused {
        what,
        status: r.status,
        body: String::from_utf8_lossy(&r.body).chars().take(300).collect(),
    }
}

/// The path (and query) of a URL from a profile; the transport knows the host.
fn path_of(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => match u.query() {
            Some(q) => format!("{}?{q}", u.path()),
            None => u.path().to_string(),
        },
        Err(_) => url.to_string(),
    }
}

fn ec_key() -> SignerKey {
    loop {
        let bytes: [u8; 32] = rand::random();
        if let Ok(k) = p256::ecdsa::SigningKey::from_slice(&bytes) {
            return SignerKey::P256(k);
        }
    }
}

/// The hardware and software a simulated Mac reports.
#[derive(Debug, Clone)]
pub struct MacModel {
    pub serial: String,
    pub udid: String,
    pub model: &'static str,
    pub model_name: &'static str,
    pub os_version: &'static str,
    pub build_version: &'static str,
    pub device_name: String,
    /// Answer every `n`th command with NotNow the first time it arrives (0: never).
    pub not_now_every: u32,
    /// Installed profile identifiers (changed by InstallProfile / RemoveProfile).
    pub profiles: Vec<String>,
    answered: u32,
    not_now_given: Vec<String>,
}

const MODELS: &[(&str, &str)] = &[
    ("Mac16,10", "Mac mini"),
    ("Mac15,12", "MacBook Air"),
    ("Mac16,1", "MacBook Pro"),
    ("Mac15,13", "MacBook Air"),
];

impl MacModel {
    /// The `n`th simulated Mac: stable serial number, UDID and model.
    pub fn numbered(n: u32) -> Self {
        let (model, model_name) = MODELS[n as usize % MODELS.len()];
        MacModel {
            serial: format!("ORCHSIM{n:05}"),
            udid: format!(
                "0000{:04X}-{:016X}",
                0x6000 + (n % 0x1000),
                0x5A1E_0000_0000 + u64::from(n)
            ),
            model,
            model_name,
            os_version: "15.4",
            build_version: "24E263",
            device_name: format!("{model_name} {n}"),
            not_now_every: 5,
            profiles: Vec::new(),
            answered: 0,
            not_now_given: Vec::new(),
        }
    }

    /// The `n`th simulated Mac with another serial number (one Apple School Manager lists).
    pub fn with_serial(n: u32, serial: &str) -> Self {
        MacModel {
            serial: serial.to_string(),
            ..MacModel::numbered(n)
        }
    }

    pub fn facts(&self) -> DeviceFacts {
        DeviceFacts {
            serial_number: Some(self.serial.clone()),
            model: Some(self.model.into()),
            model_name: Some(self.model_name.into()),
            product_name: Some(self.model.into()),
            os_version: Some(self.os_version.into()),
            build_version: Some(self.build_version.into()),
            device_name: Some(self.device_name.clone()),
        }
    }

    /// How this Mac answers `cmd`: the status and the result keys of its report.
    pub fn answer(&mut self, cmd: &ReceivedCommand) -> (Status, Dictionary) {
        self.answered += 1;
        let uuid = cmd.uuid.to_string();
        // A Mac that is busy (screen locked, user in a full-screen app) says NotNow; it runs the
        // command when asked again later.
        if self.not_now_every > 0
            && self.answered.is_multiple_of(self.not_now_every)
            && !self.not_now_given.contains(&uuid)
        {
            self.not_now_given.push(uuid);
            return (Status::NotNow, Dictionary::new());
        }
        let mut out = Dictionary::new();
        match cmd.request_type.as_str() {
            "DeviceInformation" => {
                let queries: Vec<String> = cmd
                    .body
                    .get("Queries")
                    .and_then(Value::as_array)
                    .map(|q| {
                        q.iter()
                            .filter_map(Value::as_string)
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default();
                let mut responses = Dictionary::new();
                for q in queries {
                    if let Some(v) = self.query(&q) {
                        responses.insert(q, v);
                    }
                }
                out.insert("QueryResponses".into(), Value::Dictionary(responses));
            }
            "SecurityInfo" => {
                let mut s = Dictionary::new();
                s.insert("FDE_Enabled".into(), true.into());
                s.insert("SystemIntegrityProtectionEnabled".into(), true.into());
                s.insert("IsRecoveryLockEnabled".into(), false.into());
                let mut fw = Dictionary::new();
                fw.insert("FirewallEnabled".into(), true.into());
                fw.insert("BlockAllIncoming".into(), false.into());
                fw.insert("StealthMode".into(), false.into());
                s.insert("FirewallSettings".into(), Value::Dictionary(fw));
                let mut boot = Dictionary::new();
                boot.insert("SecureBootLevel".into(), "full".into());
                boot.insert("ExternalBootLevel".into(), "disallowed".into());
                s.insert("SecureBoot".into(), Value::Dictionary(boot));
                out.insert("SecurityInfo".into(), Value::Dictionary(s));
            }
            "ProfileList" => {
                let list = self
                    .profiles
                    .iter()
                    .map(|id| {
                        let mut p = Dictionary::new();
                        p.insert("PayloadIdentifier".into(), id.as_str().into());
                        p.insert("PayloadDisplayName".into(), id.as_str().into());
                        p.insert("PayloadRemovalDisallowed".into(), false.into());
                        p.insert("IsManaged".into(), true.into());
                        Value::Dictionary(p)
                    })
                    .collect();
                out.insert("ProfileList".into(), Value::Array(list));
            }
            "InstalledApplicationList" => {
                let apps = [
                    ("Safari", "com.apple.Safari", "18.4"),
                    ("Keynote", "com.apple.iWork.Keynote", "14.3"),
                    ("Google Chrome", "com.google.Chrome", "135.0.7049.85"),
                    ("Microsoft Word", "com.microsoft.Word", "16.95"),
                ];
                let list = apps
                    .iter()
                    .map(|(name, id, v)| {
                        let mut a = Dictionary::new();
                        a.insert("Name".into(), (*name).into());
                        a.insert("Identifier".into(), (*id).into());
                        a.insert("ShortVersion".into(), (*v).into());
                        a.insert("BundleSize".into(), 250_000_000.into());
                        Value::Dictionary(a)
                    })
                    .collect();
                out.insert("InstalledApplicationList".into(), Value::Array(list));
            }
            "InstallProfile" => {
                // The simulated Mac records the profile as installed; its identifier is not
                // read out of the (signed) payload.
                let id = format!("profile.{}", self.profiles.len() + 1);
                self.profiles.push(id);
            }
            "RemoveProfile" => {
                let id = cmd.body.get("Identifier").and_then(Value::as_string);
                let before = self.profiles.len();
                self.profiles.retain(|p| Some(p.as_str()) != id);
                if self.profiles.len() == before {
                    return (
                        Status::Error,
                        error_chain(
                            12003,
                            "MCProfileErrorDomain",
                            "The profile is not installed.",
                        ),
                    );
                }
            }
            "Settings" => {
                let name = cmd
                    .body
                    .get("Settings")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_dictionary)
                    .find(|s| s.get("Item").and_then(Value::as_string) == Some("DeviceName"))
                    .and_then(|s| s.get("DeviceName"))
                    .and_then(Value::as_string);
                if let Some(n) = name {
                    self.device_name = n.to_string();
                }
            }
            "DeviceLock"
            | "EraseDevice"
            | "RestartDevice"
            | "ShutDownDevice"
            | "DeviceConfigured"
            | "AccountConfiguration" => {}
            _ => {
                return (
                    Status::Error,
                    error_chain(12021, "MCMDMErrorDomain", "The command is not supported."),
                );
            }
        }
        (Status::Acknowledged, out)
    }

    fn query(&self, q: &str) -> Option<Value> {
        Some(match q {
            "DeviceName" => self.device_name.as_str().into(),
            "OSVersion" => self.os_version.into(),
            "BuildVersion" => self.build_version.into(),
            "ModelName" => self.model_name.into(),
            "Model" | "ProductName" => self.model.into(),
            "SerialNumber" => self.serial.as_str().into(),
            "UDID" => self.udid.as_str().into(),
            "DeviceCapacity" => Value::Real(494.38),
            "AvailableDeviceCapacity" => Value::Real(312.02),
            "WiFiMAC" => "a4:83:e7:12:34:56".into(),
            "EthernetMACs" => Value::Array(vec!["a4:83:e7:12:34:57".into()]),
            "IsSupervised" => false.into(),
            "IsActivationLockEnabled" => false.into(),
            "SystemIntegrityProtectionEnabled" => true.into(),
            _ => return None,
        })
    }
}

fn error_chain(code: i64, domain: &str, text: &str) -> Dictionary {
    let mut e = Dictionary::new();
    e.insert("ErrorCode".into(), code.into());
    e.insert("ErrorDomain".into(), domain.into());
    e.insert("LocalizedDescription".into(), text.into());
    e.insert("USEnglishDescription".into(), text.into());
    let mut d = Dictionary::new();
    d.insert(
        "ErrorChain".into(),
        Value::Array(vec![Value::Dictionary(e)]),
    );
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mdm::command::{Command, CommandUuid};

    fn received(c: &Command) -> ReceivedCommand {
        ReceivedCommand::parse(&c.to_plist(&CommandUuid::new())).unwrap()
    }

    #[test]
    fn answers_device_information_with_the_queried_keys() {
        let mut mac = MacModel::numbered(3);
        mac.not_now_every = 0;
        let (status, out) = mac.answer(&received(&Command::device_information()));
        assert_eq!(status, Status::Acknowledged);
        let r = out.get("QueryResponses").unwrap().as_dictionary().unwrap();
        assert_eq!(
            r.get("SerialNumber").and_then(Value::as_string),
            Some("ORCHSIM00003")
        );
        assert!(r.get("OSVersion").is_some());
    }

    #[test]
    fn says_not_now_once_then_runs_the_command() {
        let mut mac = MacModel::numbered(1);
        mac.not_now_every = 1;
        let cmd = received(&Command::SecurityInfo);
        assert_eq!(mac.answer(&cmd).0, Status::NotNow);
        assert_eq!(mac.answer(&cmd).0, Status::Acknowledged);
    }

    #[test]
    fn renaming_changes_the_reported_name() {
        let mut mac = MacModel::numbered(1);
        mac.not_now_every = 0;
        mac.answer(&received(&Command::SetDeviceName {
            name: "Lab 9".into(),
        }));
        assert_eq!(mac.device_name, "Lab 9");
        let (status, _) = mac.answer(&received(&Command::RemoveProfile {
            identifier: "nope".into(),
        }));
        assert_eq!(status, Status::Error);
    }

    #[test]
    fn numbered_macs_have_valid_distinct_identities() {
        let a = MacModel::numbered(1);
        let b = MacModel::numbered(2);
        assert_ne!(a.udid, b.udid);
        assert!(crate::mdm::command::Udid::parse(&a.udid).is_ok());
    }
}
