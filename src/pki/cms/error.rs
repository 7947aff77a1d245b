//! The one error type of `pki::cms`, worded for the person who has to act on it.

/// Everything that can go wrong reading, checking or making CMS messages.
///
/// The `Display` text is a sentence for a person (an admin reading the UI, or a log reader).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CmsError {
    /// A PEM block (for example a certificate) was given where an S/MIME `.p7m` was expected.
    #[error(
        "this file is a PEM \"{label}\" block, not an encrypted server token: upload the .p7m file \
         downloaded from Apple School Manager or Apple Business Manager"
    )]
    PemNotSmime {
        /// The PEM label found (`CERTIFICATE`, `RSA PRIVATE KEY`, ...).
        label: String,
    },
    /// The text is not an S/MIME message of type `application/pkcs7-mime`.
    #[error(
        "this file is not an S/MIME encrypted message ({0}): upload the .p7m file exactly as \
         downloaded"
    )]
    NotSmime(String),
    /// The base64 body of an S/MIME message does not decode.
    #[error("the body of the S/MIME message is not valid base64 ({0}): the file is damaged")]
    Base64(String),
    /// The ASN.1 structure does not parse: truncated, corrupted or not CMS at all.
    #[error("the CMS message is damaged or cut short ({0})")]
    Malformed(String),
    /// The CMS content type is not the one this operation handles.
    #[error("expected a CMS {expected} message but this one is {found}")]
    WrongContentType {
        /// What the caller asked for.
        expected: &'static str,
        /// The content type found (a name or an OID).
        found: String,
    },
    /// No recipient of the envelope matches our certificate.
    #[error(
        "this message was encrypted for a different certificate than ours: upload the current \
         public key to Apple and download a new token"
    )]
    NotForUs,
    /// RSA unwrapping of the content-encryption key failed.
    #[error(
        "our private key cannot open this message: the private key does not belong to the \
         certificate it was encrypted for"
    )]
    KeyUnwrap,
    /// Decrypted content has invalid PKCS#7 padding.
    #[error("the decrypted content is invalid (bad padding): wrong key or a damaged file")]
    BadPadding,
    /// The envelope carries no encrypted content (detached content is not supported).
    #[error("the encrypted message carries no content")]
    NoContent,
    /// An algorithm Orchard does not implement.
    #[error("unsupported {what} algorithm {oid}")]
    Unsupported {
        /// Which role the algorithm plays (cipher, digest, signature, key transport).
        what: &'static str,
        /// Its object identifier.
        oid: String,
    },
    /// A private key could not be read.
    #[error("cannot read the private key: {0}")]
    Key(String),
    /// A certificate could not be read.
    #[error("cannot read the certificate: {0}")]
    Certificate(String),
    /// The signed message has no `SignerInfo`.
    #[error("the signed message has no signer")]
    NoSigner,
    /// The signer's certificate is not included in the message.
    #[error("the signed message does not include the signer's certificate")]
    SignerCertMissing,
    /// Signed attributes lack a mandatory attribute.
    #[error("the signed attributes lack the {0} attribute")]
    MissingAttribute(&'static str),
    /// The `messageDigest` attribute does not match the content.
    #[error("the content does not match its signature: it was changed after signing")]
    DigestMismatch,
    /// The `contentType` attribute differs from the encapsulated content type.
    #[error("the signed content type attribute does not match the content")]
    ContentTypeMismatch,
    /// The signature value does not verify with the signer's public key.
    #[error("the signature is not valid for the signer's certificate")]
    BadSignature,
    /// `verify_detached` got a message with content, or `verify_attached` one without.
    #[error("{0}")]
    ContentPresence(&'static str),
    /// A certificate's issuer is not among the given intermediates or roots.
    #[error("the certificate \"{subject}\" was not issued by a trusted authority")]
    Untrusted {
        /// Subject of the certificate whose issuer is unknown.
        subject: String,
    },
    /// A certificate's signature does not verify with its issuer's key.
    #[error("the certificate \"{subject}\" has a signature its issuer did not make")]
    CertSignature {
        /// Subject of the certificate with the bad signature.
        subject: String,
    },
    /// An issuing certificate is not a certificate authority.
    #[error("the certificate \"{subject}\" is not allowed to issue certificates")]
    NotCa {
        /// Subject of the issuer that is not a CA.
        subject: String,
    },
    /// A certificate is outside its validity period.
    #[error(
        "the certificate \"{subject}\" is not valid at this time (valid {not_before} to {not_after})"
    )]
    Expired {
        /// Subject of the certificate.
        subject: String,
        /// Start of validity.
        not_before: String,
        /// End of validity.
        not_after: String,
    },
    /// The chain is longer than any real chain.
    #[error("the certificate chain is too long")]
    ChainTooLong,
    /// Building a message failed (a bug or an unusable key/certificate).
    #[error("cannot build the CMS message: {0}")]
    Build(String),
}

impl From<der::Error> for CmsError {
    fn from(e: der::Error) -> Self {
        CmsError::Malformed(e.to_string())
    }
}
