//! Certificate chain checking by hand: each signature up to a pinned root, SHA-1 RSA included.
//!
//! General verifiers (webpki) refuse Apple's device chain: "Apple iPhone Device CA" is
//! RSA-1024 with SHA-1 and expired in 2014, yet Apple still issues device identities under it
//! and says to ignore validity dates for it. So this module only checks what matters here:
//! names link, every signature verifies with its issuer's key, issuers are CAs, and (unless
//! told not to) every certificate is within its validity period.

use der::Encode;
use time::OffsetDateTime;
use x509_cert::Certificate;
use x509_cert::ext::pkix::BasicConstraints;

use super::CmsError;
use super::algorithms::signature_digest;
use super::keys::public_key;

/// Deepest chain accepted (leaf, intermediates, root).
const MAX_DEPTH: usize = 8;

/// Whether and when validity dates are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckTime {
    /// Ignore notBefore/notAfter (Apple's guidance for "Apple iPhone Device CA" chains).
    Ignore,
    /// Every certificate in the chain must be valid at this instant (from the injected clock).
    At(OffsetDateTime),
}

/// Checks that `leaf` chains to one of `roots` through `intermediates`, and returns the chain
/// found (leaf first, root last).
///
/// Checks at each step: the issuer's subject equals the certificate's issuer, the certificate's
/// signature (RSA PKCS#1 v1.5 with SHA-1/256/384/512, or ECDSA P-256) verifies with the issuer's
/// key, an intermediate is a CA (basicConstraints), and the dates per `time`.
pub fn verify_chain(
    leaf: &Certificate,
    intermediates: &[Certificate],
    roots: &[Certificate],
    time: CheckTime,
) -> Result<Vec<Certificate>, CmsError> {
    let mut chain = vec![leaf.clone()];
    let mut current = leaf;
    for _ in 0..MAX_DEPTH {
        check_time(current, time)?;
        if roots.contains(current) {
            return Ok(chain);
        }
        if let Some(root) = roots.iter().find(|r| issued(current, r)) {
            check_time(root, time)?;
            chain.push(root.clone());
            return Ok(chain);
        }
        let issuer = intermediates
            .iter()
            .filter(|c| *c != current)
            .find(|c| c.tbs_certificate().subject() == current.tbs_certificate().issuer());
        let Some(issuer) = issuer else {
            return Err(CmsError::Untrusted {
                subject: subject(current),
            });
        };
        if !issued(current, issuer) {
            return Err(CmsError::CertSignature {
                subject: subject(current),
            });
        }
        if !is_ca(issuer) {
            return Err(CmsError::NotCa {
                subject: subject(issuer),
            });
        }
        chain.push(issuer.clone());
        current = issuer;
    }
    Err(CmsError::ChainTooLong)
}

/// True when `issuer` names and signed `cert`.
fn issued(cert: &Certificate, issuer: &Certificate) -> bool {
    cert.tbs_certificate().issuer() == issuer.tbs_certificate().subject()
        && signature_verifies(cert, issuer)
}

fn signature_verifies(cert: &Certificate, issuer: &Certificate) -> bool {
    let Ok(digest) = signature_digest(&cert.signature_algorithm().oid, None) else {
        return false;
    };
    let Ok(tbs) = cert.tbs_certificate().to_der() else {
        return false;
    };
    let Ok(key) = public_key(issuer) else {
        return false;
    };
    key.verify_prehash(digest, &digest.digest(&tbs), cert.signature().raw_bytes())
}

fn is_ca(cert: &Certificate) -> bool {
    matches!(
        cert.tbs_certificate().get_extension::<BasicConstraints>(),
        Ok(Some((_, BasicConstraints { ca: true, .. })))
    )
}

fn check_time(cert: &Certificate, time: CheckTime) -> Result<(), CmsError> {
    let CheckTime::At(now) = time else {
        return Ok(());
    };
    let validity = cert.tbs_certificate().validity();
    let now = now.unix_timestamp();
    let start = i64::try_from(validity.not_before.to_unix_duration().as_secs()).unwrap_or(i64::MAX);
    let end = i64::try_from(validity.not_after.to_unix_duration().as_secs()).unwrap_or(i64::MAX);
    if now < start || now > end {
        return Err(CmsError::Expired {
            subject: subject(cert),
            not_before: validity.not_before.to_string(),
            not_after: validity.not_after.to_string(),
        });
    }
    Ok(())
}

fn subject(cert: &Certificate) -> String {
    cert.tbs_certificate().subject().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::cms::certs::{CertKind, issue_certificate, spki_of};
    use crate::pki::cms::load_certificate;
    use crate::pki::cms::testutil::ca_and_leaf;

    const APPLE: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/testdata/apple-certs"
    );

    fn apple(name: &str) -> Certificate {
        let bytes = std::fs::read(format!("{APPLE}/{name}.pem")).expect("apple cert present");
        load_certificate(&bytes).expect("parses")
    }

    fn apple_chain() -> (Vec<Certificate>, Vec<Certificate>) {
        (
            vec![
                apple("apple-iphone-device-ca"),
                apple("apple-iphone-certification-authority"),
            ],
            vec![apple("apple-root-ca")],
        )
    }

    #[test]
    fn both_real_device_certificates_chain_to_the_apple_root() {
        let (inter, roots) = apple_chain();
        for leaf in [
            "device-cert-signed-by-apple-device-ca-sha1",
            "device-cert-signed-by-apple-device-ca-sha256",
        ] {
            let chain = verify_chain(&apple(leaf), &inter, &roots, CheckTime::Ignore).expect(leaf);
            assert_eq!(chain.len(), 4, "{leaf}");
        }
    }

    #[test]
    fn apple_chain_with_dates_checked_reports_the_expired_ca() {
        let (inter, roots) = apple_chain();
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).expect("time");
        let leaf = apple("device-cert-signed-by-apple-device-ca-sha1");
        let err = verify_chain(&leaf, &inter, &roots, CheckTime::At(now)).expect_err("expired");
        assert!(matches!(err, CmsError::Expired { .. }), "{err:?}");
    }

    #[test]
    fn a_certificate_not_from_apple_is_untrusted() {
        let (inter, roots) = apple_chain();
        let dep = load_certificate(
            &std::fs::read(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../shared/testdata/apple-dep/synthetic/dep_cert.pem"
            ))
            .expect("file"),
        )
        .expect("cert");
        let err = verify_chain(&dep, &inter, &roots, CheckTime::Ignore).expect_err("untrusted");
        assert!(matches!(err, CmsError::Untrusted { .. }), "{err:?}");
        // Without the intermediates even a real device certificate is untrusted.
        let leaf = apple("device-cert-signed-by-apple-device-ca-sha256");
        assert!(matches!(
            verify_chain(&leaf, &[], &roots, CheckTime::Ignore),
            Err(CmsError::Untrusted { .. })
        ));
    }

    #[test]
    fn a_forged_signature_under_the_right_name_fails() {
        // A CA with the same name as the real issuer but another key.
        let (ca, _ca_key, leaf, _) = ca_and_leaf("CN=Test CA", "CN=leaf");
        let (impostor, _, _, _) = ca_and_leaf("CN=Test CA", "CN=other");
        assert!(verify_chain(&leaf, &[], std::slice::from_ref(&ca), CheckTime::Ignore).is_ok());
        assert!(matches!(
            verify_chain(
                &leaf,
                &[],
                std::slice::from_ref(&impostor),
                CheckTime::Ignore
            ),
            Err(CmsError::Untrusted { .. })
        ));
        assert!(matches!(
            verify_chain(&leaf, &[impostor], &[], CheckTime::Ignore),
            Err(CmsError::CertSignature { .. })
        ));
    }

    #[test]
    fn a_leaf_cannot_act_as_an_issuer_and_dates_are_checked() {
        let (ca, _, leaf, leaf_key) = ca_and_leaf("CN=Root", "CN=Leaf");
        let spec = crate::pki::cms::testutil::spec("CN=Grandchild", CertKind::ClientIdentity);
        let grandchild =
            issue_certificate(&spec, &spki_of(&leaf_key).expect("spki"), &leaf, &leaf_key)
                .expect("issue");
        assert!(matches!(
            verify_chain(
                &grandchild,
                std::slice::from_ref(&leaf),
                std::slice::from_ref(&ca),
                CheckTime::Ignore
            ),
            Err(CmsError::NotCa { .. })
        ));
        let now = OffsetDateTime::from_unix_timestamp(1_900_000_000).expect("time");
        let ok = verify_chain(&leaf, &[], std::slice::from_ref(&ca), CheckTime::At(now));
        assert!(ok.is_ok(), "{ok:?}");
        let later = OffsetDateTime::from_unix_timestamp(4_000_000_000).expect("time");
        assert!(matches!(
            verify_chain(&leaf, &[], std::slice::from_ref(&ca), CheckTime::At(later)),
            Err(CmsError::Expired { .. })
        ));
    }
}
