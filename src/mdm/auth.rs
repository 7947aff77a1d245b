//! Request authentication for `/mdm/checkin` and `/mdm/connect`: the device's identity comes from
//! the `Mdm-Signature` header (a detached CMS signature over the exact body) or, failing that,
//! from the TLS client certificate, and must chain to Orchard's SCEP CA.
//!
//! Apple: <https://developer.apple.com/documentation/devicemanagement/mdm> (`SignMessage`)

use base64::Engine;
use der::{Decode, Encode};
use sha2::Digest;
use time::OffsetDateTime;

use super::service::{DeviceIdentity, MdmError};
use crate::clock::SharedClock;
use crate::pki::cms::{self, Certificate, CheckTime};

/// Longest `Mdm-Signature` header accepted (a signature with a 4096-bit chain is ~6 KiB).
const MAX_SIGNATURE: usize = 32 * 1024;

/// Finds and checks the identity a device request carries.
#[derive(Clone)]
pub struct Authenticator {
    ca: Certificate,
    clock: SharedClock,
}

impl Authenticator {
    /// `ca` is the SCEP CA certificate that issued every device identity.
    pub fn new(ca: Certificate, clock: SharedClock) -> Self {
        Authenticator { ca, clock }
    }

    /// The identity of a request: from `mdm_signature` (the header's value) if present, else
    /// from the TLS client certificate chain (leaf first). `Ok(None)` when there is neither.
    /// A signature that does not verify, or a certificate Orchard did not issue, is an error.
    pub fn identify(
        &self,
        mdm_signature: Option<&[u8]>,
        body: &[u8],
        tls_chain: &[Vec<u8>],
    ) -> Result<Option<DeviceIdentity>, MdmError> {
        let (leaf, intermediates) = match mdm_signature {
            Some(header) => {
                if header.len() > MAX_SIGNATURE {
                    return Err(MdmError::BadIdentity(
                        "the Mdm-Signature header is too long".into(),
                    ));
                }
                // Some clients fold the base64 over lines; drop whitespace before decoding.
                let compact: Vec<u8> = header
                    .iter()
                    .copied()
                    .filter(|b| !b.is_ascii_whitespace())
                    .collect();
                let der = base64::engine::general_purpose::STANDARD
                    .decode(&compact)
                    .map_err(|e| {
                        MdmError::BadIdentity(format!("Mdm-Signature is not base64: {e}"))
                    })?;
                let v = cms::verify_detached(&der, body)
                    .map_err(|e| MdmError::BadIdentity(e.to_string()))?;
                (v.signer, v.certificates)
            }
            None => match tls_chain.split_first() {
                Some((leaf, rest)) => {
                    let leaf = Certificate::from_der(leaf).map_err(|e| {
                        MdmError::BadIdentity(format!("TLS client certificate: {e}"))
                    })?;
                    let rest = rest
                        .iter()
                        .filter_map(|c| Certificate::from_der(c).ok())
                        .collect();
                    (leaf, rest)
                }
                None => return Ok(None),
            },
        };
        self.check(&leaf, &intermediates).map(Some)
    }

    fn check(
        &self,
        leaf: &Certificate,
        intermediates: &[Certificate],
    ) -> Result<DeviceIdentity, MdmError> {
        let now = self.clock.now();
        cms::verify_chain(
            leaf,
            intermediates,
            std::slice::from_ref(&self.ca),
            CheckTime::At(now),
        )
        .map_err(|e| MdmError::BadIdentity(e.to_string()))?;
        identity_of(leaf)
    }
}

/// The binding key (hex SHA-256 of the DER) and expiry of a certificate.
pub fn identity_of(cert: &Certificate) -> Result<DeviceIdentity, MdmError> {
    let der = cert
        .to_der()
        .map_err(|e| MdmError::BadIdentity(e.to_string()))?;
    let secs = cert
        .tbs_certificate()
        .validity()
        .not_after
        .to_unix_duration()
        .as_secs();
    let not_after = i64::try_from(secs)
        .ok()
        .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
        .ok_or_else(|| MdmError::BadIdentity("the certificate's expiry is out of range".into()))?;
    Ok(DeviceIdentity {
        cert_hash: hex::encode(sha2::Sha256::digest(&der)),
        not_after,
    })
}
