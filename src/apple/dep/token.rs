//! The ADE server token: the four OAuth 1.0a values and their expiry that Apple School Manager /
//! Apple Business Manager hands out inside the `.p7m`, parsed from the decrypted inner text
//! (`-----BEGIN MESSAGE-----` JSON `-----END MESSAGE-----`) with every field checked.

use time::OffsetDateTime;

const BEGIN: &str = "-----BEGIN MESSAGE-----";
const END: &str = "-----END MESSAGE-----";
/// Longest OAuth value accepted; Apple's are ~130 characters.
const MAX_VALUE_LEN: usize = 1024;
/// Largest decrypted message accepted.
const MAX_MESSAGE_LEN: usize = 64 * 1024;

/// The server token of one MDM server in ABM/ASM. Secrets are masked in `Debug`; store it sealed.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ServerToken {
    pub consumer_key: String,
    pub consumer_secret: String,
    pub access_token: String,
    pub access_secret: String,
    #[serde(with = "time::serde::rfc3339")]
    pub access_token_expiry: OffsetDateTime,
}

impl std::fmt::Debug for ServerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerToken")
            .field("consumer_key", &self.consumer_key)
            .field("consumer_secret", &"***")
            .field("access_token", &"***")
            .field("access_secret", &"***")
            .field("access_token_expiry", &self.access_token_expiry)
            .finish()
    }
}

/// Why the decrypted token text is not a usable server token. Each message tells an admin what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error(
        "the decrypted token has no -----BEGIN MESSAGE----- / -----END MESSAGE----- block: it is not an Apple server token; download the token again from Apple School Manager or Apple Business Manager"
    )]
    NoMessage,
    #[error("the server token is too large to be an Apple server token")]
    TooLarge,
    #[error(
        "the server token's JSON cannot be read ({0}); download the token again from Apple School Manager or Apple Business Manager"
    )]
    Json(String),
    #[error(
        "the server token's field {field} is invalid: {reason}; download the token again from Apple School Manager or Apple Business Manager"
    )]
    Field {
        field: &'static str,
        reason: &'static str,
    },
}

#[derive(serde::Deserialize)]
struct RawToken {
    consumer_key: Option<String>,
    consumer_secret: Option<String>,
    access_token: Option<String>,
    access_secret: Option<String>,
    access_token_expiry: Option<String>,
}

impl ServerToken {
    /// Parses the decrypted CMS content: MIME headers (ignored), then the JSON between the
    /// `BEGIN MESSAGE` and `END MESSAGE` markers (line breaks inside the block are dropped).
    pub fn from_message(text: &str) -> Result<Self, TokenError> {
        if text.len() > MAX_MESSAGE_LEN {
            return Err(TokenError::TooLarge);
        }
        let start = text.find(BEGIN).ok_or(TokenError::NoMessage)?;
        let body = &text[start + BEGIN.len()..];
        let end = body.find(END).ok_or(TokenError::NoMessage)?;
        let json: String = body[..end].lines().map(str::trim).collect();
        Self::from_json(&json)
    }

    /// Parses the token JSON itself and checks every field.
    pub fn from_json(json: &str) -> Result<Self, TokenError> {
        if json.len() > MAX_MESSAGE_LEN {
            return Err(TokenError::TooLarge);
        }
        let raw: RawToken = serde_json::from_str(json)
            .map_err(|e| TokenError::Json(e.to_string().chars().take(120).collect::<String>()))?;
        let consumer_key = check_value("consumer_key", "CK_", raw.consumer_key)?;
        let consumer_secret = check_value("consumer_secret", "CS_", raw.consumer_secret)?;
        let access_token = check_value("access_token", "AT_", raw.access_token)?;
        let access_secret = check_value("access_secret", "AS_", raw.access_secret)?;
        let expiry = raw.access_token_expiry.ok_or(TokenError::Field {
            field: "access_token_expiry",
            reason: "it is missing",
        })?;
        let access_token_expiry =
            OffsetDateTime::parse(&expiry, &time::format_description::well_known::Rfc3339)
                .map_err(|_| TokenError::Field {
                    field: "access_token_expiry",
                    reason: "it is not an RFC 3339 date",
                })?;
        Ok(ServerToken {
            consumer_key,
            consumer_secret,
            access_token,
            access_secret,
            access_token_expiry,
        })
    }

    /// The token JSON as Apple writes it (secrets included: only for writing a token file).
    pub fn to_json(&self) -> String {
        // Serializing plain strings and a valid date cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The decrypted `.p7m` content Apple's portal produces for this token.
    pub fn to_message(&self) -> String {
        format!(
            "Content-Type: text/plain;charset=UTF-8\r\nContent-Transfer-Encoding: 7bit\r\n\r\n{BEGIN}\r\n{}\r\n{END}\r\n",
            self.to_json()
        )
    }

    /// Whether the token can no longer be used at `now`.
    pub fn is_expired(&self, now: OffsetDateTime) -> bool {
        now >= self.access_token_expiry
    }
}

fn check_value(
    field: &'static str,
    prefix: &str,
    value: Option<String>,
) -> Result<String, TokenError> {
    let value = value.ok_or(TokenError::Field {
        field,
        reason: "it is missing",
    })?;
    let invalid = |reason| TokenError::Field { field, reason };
    if value.is_empty() {
        return Err(invalid("it is empty"));
    }
    if value.len() > MAX_VALUE_LEN {
        return Err(invalid("it is too long"));
    }
    if !value.starts_with(prefix) {
        return Err(invalid("it does not start with Apple's prefix"));
    }
    if value.len() == prefix.len() {
        return Err(invalid("it holds only Apple's prefix"));
    }
    if !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid("it contains spaces or control characters"));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    const INNER: &str = include_str!("../../../tests/fixtures/apple-dep/token_inner_plaintext.txt");
    const JSON: &str = include_str!("../../../tests/fixtures/apple-dep/token.json");

    #[test]
    fn parses_the_synthetic_token() {
        let t = ServerToken::from_message(INNER).unwrap();
        assert!(t.consumer_key.starts_with("CK_48dd68d1"));
        assert!(t.access_secret.starts_with("AS_c31afd7a"));
        assert_eq!(
            t.access_token_expiry,
            time::macros::datetime!(2035-01-01 00:00:00 UTC)
        );
        assert_eq!(t, ServerToken::from_json(JSON).unwrap());
        assert_eq!(ServerToken::from_message(&t.to_message()).unwrap(), t);
        assert!(!t.is_expired(time::macros::datetime!(2034-12-31 23:59:59 UTC)));
        assert!(t.is_expired(time::macros::datetime!(2035-01-01 00:00:00 UTC)));
    }

    #[test]
    fn debug_masks_secrets() {
        let t = ServerToken::from_json(JSON).unwrap();
        let shown = format!("{t:?}");
        assert!(shown.contains("CK_48dd"));
        assert!(!shown.contains("CS_"));
        assert!(!shown.contains("AT_"));
        assert!(!shown.contains("AS_"));
    }

    #[test]
    fn message_with_wrapped_lines() {
        let wrapped = INNER.replace("\",\"consumer_secret", "\",\r\n\"consumer_secret");
        assert!(ServerToken::from_message(&wrapped).is_ok());
    }

    #[test]
    fn refuses_bad_tokens() {
        assert_eq!(
            ServerToken::from_message("-----BEGIN CERTIFICATE-----\nMIIB\n"),
            Err(TokenError::NoMessage)
        );
        assert_eq!(
            ServerToken::from_message(&INNER.replace(END, "")),
            Err(TokenError::NoMessage)
        );
        assert!(matches!(
            ServerToken::from_message(&INNER.replace("}", "")),
            Err(TokenError::Json(_))
        ));
        let field = |json: String| match ServerToken::from_json(&json) {
            Err(TokenError::Field { field, .. }) => field,
            other => panic!("expected a field error, got {other:?}"),
        };
        assert_eq!(field(JSON.replace("\"CK_", "\"XX_")), "consumer_key");
        assert_eq!(field(JSON.replace("\"CS_", "\"")), "consumer_secret");
        assert_eq!(field(JSON.replace("\"AT_", "\"AT_ ")), "access_token");
        assert_eq!(
            field(JSON.replace("access_secret", "other_secret")),
            "access_secret"
        );
        assert_eq!(
            field(JSON.replace("2035-01-01T00:00:00Z", "tomorrow")),
            "access_token_expiry"
        );
        assert_eq!(
            field(r#"{"consumer_key":"CK_","consumer_secret":"CS_1","access_token":"AT_1","access_secret":"AS_1","access_token_expiry":"2035-01-01T00:00:00Z"}"#.into()),
            "consumer_key"
        );
        assert_eq!(
            ServerToken::from_message(&"x".repeat(MAX_MESSAGE_LEN + 1)),
            Err(TokenError::TooLarge)
        );
        for e in [
            TokenError::NoMessage,
            TokenError::Json("x".into()),
            TokenError::Field {
                field: "consumer_key",
                reason: "it is empty",
            },
        ] {
            assert!(e.to_string().len() > 30);
        }
    }
}
