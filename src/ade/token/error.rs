//! The token service's one error type. `Display` is the sentence an admin reads: what went wrong
//! and what to do. Apple's codes only appear in the detail.

use crate::apple::dep::{DepError, TokenError as TokenFormatError};
use crate::pki::cms::CmsError;

use super::record::{AppleIdError, TokenId};

const PORTAL: &str = "Apple School Manager or Apple Business Manager";

/// Which form field an error belongs to, so the page can show it beside that field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    AppleId,
    File,
    Confirm,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("{0}")]
    AppleId(AppleIdError),
    #[error("Choose the server token file (.p7m) that {PORTAL} downloaded for you.")]
    NoFile,
    #[error(
        "The file is {size} bytes; a server token is a few kilobytes. Choose the .p7m file that {PORTAL} downloaded."
    )]
    TooLarge { size: usize },
    #[error(
        "This file is a certificate (the public key you give Apple), not the server token. Upload the file ending in .p7m that {PORTAL} downloads after you save the MDM server."
    )]
    Certificate,
    #[error(
        "This file is not a server token. Upload the file ending in .p7m that {PORTAL} downloaded, without opening or changing it."
    )]
    NotAToken { detail: String },
    #[error(
        "This server token file is damaged or incomplete. Download the token again from {PORTAL} and upload the new file."
    )]
    Damaged { detail: String },
    #[error(
        "Orchard has no public key waiting for a token. Download your public key (step 1), upload it to the MDM server in {PORTAL}, then upload the token Apple gives you."
    )]
    NoKey,
    #[error(
        "This token was encrypted for a public key that Orchard does not hold (another MDM server, or an older key). In {PORTAL}, edit the MDM server, upload the public key from this page, download a new token and upload it here."
    )]
    WrongKey,
    #[error(
        "The file opens but does not hold a valid server token. Download the token again from {PORTAL}."
    )]
    BadContent(TokenFormatError),
    #[error(
        "This server token expired on {expiry}. In {PORTAL}, download a new token for this MDM server and upload it here."
    )]
    Expired { expiry: String },
    #[error(
        "This token belongs to the MDM server \"{server_name}\", which Orchard already has. Open that token and choose Renew to upload it there."
    )]
    AlreadyAdded { id: TokenId, server_name: String },
    #[error(
        "This token belongs to another MDM server (\"{uploaded}\") than this one (\"{current}\"). Upload the token of \"{current}\", or confirm that \"{current}\" should be replaced."
    )]
    OtherServer { current: String, uploaded: String },
    #[error("To replace the token, type the server name \"{expected}\" exactly.")]
    ConfirmMismatch { expected: String },
    #[error("There is no server token with id {0}.")]
    NotFound(TokenId),
    #[error("{}", .0.admin_message())]
    Apple(DepError),
    #[error("Orchard could not read or write its own data: {0}. See the server log.")]
    Internal(String),
}

impl TokenError {
    /// The form field this error is about, if any.
    pub fn field(&self) -> Option<Field> {
        match self {
            TokenError::AppleId(_) => Some(Field::AppleId),
            TokenError::NoFile
            | TokenError::TooLarge { .. }
            | TokenError::Certificate
            | TokenError::NotAToken { .. }
            | TokenError::Damaged { .. }
            | TokenError::WrongKey
            | TokenError::BadContent(_)
            | TokenError::Expired { .. } => Some(Field::File),
            TokenError::ConfirmMismatch { .. } => Some(Field::Confirm),
            _ => None,
        }
    }

    /// A technical detail an admin may pass on (Apple's code, the parser's complaint).
    pub fn detail(&self) -> Option<String> {
        match self {
            TokenError::NotAToken { detail } | TokenError::Damaged { detail } => {
                Some(detail.clone())
            }
            TokenError::BadContent(e) => Some(e.to_string()),
            TokenError::Apple(e) => Some(e.to_string()),
            _ => None,
        }
    }

    /// Maps a CMS failure that does not depend on the key (the file itself is wrong).
    pub(crate) fn from_format(e: CmsError) -> TokenError {
        match e {
            CmsError::PemNotSmime { label } if label.contains("CERTIFICATE") => {
                TokenError::Certificate
            }
            CmsError::PemNotSmime { .. }
            | CmsError::NotSmime(_)
            | CmsError::WrongContentType { .. } => TokenError::NotAToken {
                detail: e.to_string(),
            },
            other => TokenError::Damaged {
                detail: other.to_string(),
            },
        }
    }
}

macro_rules! internal {
    ($($t:ty),*) => {$(
        impl From<$t> for TokenError {
            fn from(e: $t) -> Self {
                TokenError::Internal(e.to_string())
            }
        }
    )*};
}
internal!(
    crate::store::StoreError,
    crate::pki::secret::SecretError,
    crate::pki::token_keypair::KeypairError
);
