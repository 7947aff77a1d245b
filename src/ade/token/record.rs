//! What the token service keeps: the token record, its keypairs, and the small types they use
//! (token id, Apple ID, which Apple portal, expiry and terms state).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use crate::pki::secret::Sealed;

/// Days before expiry from which a token is shown as "expiring".
pub const EXPIRING_WITHIN_DAYS: i64 = 30;

/// Version of the token and keypair records this build writes.
pub const RECORD_VERSION: u32 = 1;

/// Orchard's id of a server token (a store id; its big-endian bytes are the key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TokenId(pub u64);

impl TokenId {
    pub fn key(self) -> [u8; 8] {
        crate::store::be(self.0)
    }
}

impl fmt::Display for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for TokenId {
    type Err = std::num::ParseIntError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse().map(TokenId)
    }
}

/// The Apple ID (a managed or personal account, e-mail shaped) an admin used to create the token
/// in Apple's portal. Kept for the record: Apple asks for the same account to renew it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppleId(String);

/// Why an Apple ID was refused; the text is shown beside the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppleIdError {
    #[error(
        "Enter the Apple ID you used to create the token in Apple School Manager or Apple Business Manager."
    )]
    Missing,
    #[error(
        "Enter the Apple ID as an e-mail address, like admin@school.example: the account you sign in to Apple School Manager or Apple Business Manager with."
    )]
    Invalid,
}

impl AppleId {
    /// Longest e-mail address (RFC 5321 path limit).
    const MAX_LEN: usize = 254;

    /// Accepts an e-mail-shaped account name: one `@`, a non-empty local part, a domain with a
    /// dot, no spaces or control characters. Surrounding spaces are dropped.
    pub fn parse(input: &str) -> Result<AppleId, AppleIdError> {
        let value = input.trim();
        if value.is_empty() {
            return Err(AppleIdError::Missing);
        }
        if value.len() > Self::MAX_LEN
            || value
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || "<>\"(),;:[]\\".contains(c))
        {
            return Err(AppleIdError::Invalid);
        }
        let (local, domain) = value.split_once('@').ok_or(AppleIdError::Invalid)?;
        let domain_ok = !domain.contains('@')
            && domain.contains('.')
            && domain
                .split('.')
                .all(|label| !label.is_empty() && !label.starts_with('-') && !label.ends_with('-'));
        if local.is_empty() || !domain_ok {
            return Err(AppleIdError::Invalid);
        }
        Ok(AppleId(value.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AppleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which Apple portal the token comes from (`/account` `org_type`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Portal {
    /// `edu`
    AppleSchoolManager,
    /// `org`
    AppleBusinessManager,
    /// anything else Apple may send (`tvprovider`, or nothing on old protocol versions)
    Other(String),
}

impl Portal {
    pub fn from_org_type(org_type: Option<&str>) -> Portal {
        match org_type {
            Some("edu") => Portal::AppleSchoolManager,
            Some("org") => Portal::AppleBusinessManager,
            other => Portal::Other(other.unwrap_or_default().to_string()),
        }
    }

    /// The name an admin knows.
    pub fn label(&self) -> &str {
        match self {
            Portal::AppleSchoolManager => "Apple School Manager",
            Portal::AppleBusinessManager => "Apple Business Manager",
            Portal::Other(_) => "Apple School Manager or Apple Business Manager",
        }
    }
}

/// What `/account` said about the MDM server and organisation the token belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountInfo {
    pub server_name: String,
    pub server_uuid: String,
    pub org_name: String,
    #[serde(default)]
    pub org_email: String,
    #[serde(default)]
    pub admin_id: String,
    pub portal: Portal,
}

/// Whether the organisation has accepted Apple's current terms and conditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Terms {
    Accepted,
    /// Apple answered `T_C_NOT_SIGNED` at this time.
    NotSigned {
        since: OffsetDateTime,
    },
}

/// The state shown on the Tokens page and counted in `orchard_dep_tokens{state}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenState {
    Ok,
    Expiring,
    Expired,
    TermsNotSigned,
}

impl TokenState {
    pub const ALL: [TokenState; 4] = [
        TokenState::Ok,
        TokenState::Expiring,
        TokenState::Expired,
        TokenState::TermsNotSigned,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TokenState::Ok => "ok",
            TokenState::Expiring => "expiring",
            TokenState::Expired => "expired",
            TokenState::TermsNotSigned => "terms_not_signed",
        }
    }
}

/// One server token as stored. The OAuth values are sealed; only the consumer key (which names
/// the MDM server, and is no secret) and the expiry are kept in clear.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenRecord {
    pub version: u32,
    pub id: TokenId,
    pub apple_id: AppleId,
    pub consumer_key: String,
    /// The whole [`crate::apple::dep::ServerToken`] as JSON, sealed.
    pub secrets: Sealed,
    pub access_token_expiry: OffsetDateTime,
    pub account: AccountInfo,
    pub terms: Terms,
    pub added_at: OffsetDateTime,
    #[serde(default)]
    pub renewed_at: Option<OffsetDateTime>,
    // Filled by the sync worker.
    #[serde(default)]
    pub cursor: Option<String>,
    #[serde(default)]
    pub last_full_fetch: Option<OffsetDateTime>,
    #[serde(default)]
    pub last_sync: Option<OffsetDateTime>,
    #[serde(default)]
    pub device_count: u64,
    #[serde(default)]
    pub default_profile: Option<String>,
}

impl TokenRecord {
    /// Whole days left until expiry (negative once expired).
    pub fn days_left(&self, now: OffsetDateTime) -> i64 {
        (self.access_token_expiry - now).whole_days()
    }

    pub fn state(&self, now: OffsetDateTime) -> TokenState {
        if now >= self.access_token_expiry {
            TokenState::Expired
        } else if matches!(self.terms, Terms::NotSigned { .. }) {
            TokenState::TermsNotSigned
        } else if self.access_token_expiry - now <= Duration::days(EXPIRING_WITHIN_DAYS) {
            TokenState::Expiring
        } else {
            TokenState::Ok
        }
    }
}

/// A token keypair as stored: the PKCS#1 private key sealed, the certificate in clear.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredKeypair {
    pub key: Sealed,
    pub cert_pem: String,
    pub created_at: OffsetDateTime,
}

/// The keypairs of one owner: the one its token is encrypted to, and one waiting for a token.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenKeys {
    pub current: Option<StoredKeypair>,
    pub staged: Option<StoredKeypair>,
}

/// Whose keypairs: a token's, or the one offered for the next new token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyOwner {
    NewToken,
    Token(TokenId),
}

impl KeyOwner {
    pub fn key(self) -> Vec<u8> {
        match self {
            // Shorter than any 8-byte token key, so it never collides.
            KeyOwner::NewToken => b"new".to_vec(),
            KeyOwner::Token(id) => id.key().to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apple_ids_are_e_mail_shaped() {
        for ok in [
            "admin@school.example",
            " it.admin+asm@appleid.school.org.uk ",
        ] {
            assert!(AppleId::parse(ok).is_ok(), "{ok}");
        }
        assert_eq!(AppleId::parse("  "), Err(AppleIdError::Missing));
        for bad in [
            "admin",
            "admin@",
            "@school.example",
            "admin@school",
            "admin@@school.example",
            "ad min@school.example",
            "admin@school..example",
            "<admin@school.example>",
        ] {
            assert_eq!(AppleId::parse(bad), Err(AppleIdError::Invalid), "{bad}");
        }
        assert_eq!(
            AppleId::parse(&format!("{}@school.example", "a".repeat(300))),
            Err(AppleIdError::Invalid)
        );
    }

    #[test]
    fn portal_follows_org_type() {
        assert_eq!(
            Portal::from_org_type(Some("edu")).label(),
            "Apple School Manager"
        );
        assert_eq!(
            Portal::from_org_type(Some("org")).label(),
            "Apple Business Manager"
        );
        assert_eq!(Portal::from_org_type(None), Portal::Other(String::new()));
    }
}
