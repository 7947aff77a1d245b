//! `orchard token inspect --key KEY.pem TOKEN.p7m`: what a downloaded server token holds, as
//! JSON with the secrets masked, so an admin can check a file before uploading it.

use std::path::{Path, PathBuf};

use serde::Serialize;
use time::OffsetDateTime;

use crate::pki::cms;

use super::{TokenError, parse_plaintext, unwrap_file};

/// `orchard token ...`
#[derive(Debug, Clone, clap::Args)]
pub struct TokenArgs {
    #[command(subcommand)]
    pub command: TokenCommand,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum TokenCommand {
    /// Print what a downloaded server token holds, as JSON with the secrets masked.
    Inspect(InspectArgs),
}

/// Runs `orchard token ...` and gives the text to print.
pub fn run_cli(args: &TokenArgs, now: OffsetDateTime) -> Result<String, InspectError> {
    match &args.command {
        TokenCommand::Inspect(inspect) => {
            let out = run(inspect, now)?;
            serde_json::to_string_pretty(&out).map_err(|e| InspectError::Output(e.to_string()))
        }
    }
}

/// `orchard token inspect` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct InspectArgs {
    /// The private key the token was encrypted for (PEM, PKCS#1 or PKCS#8).
    #[arg(long, value_name = "KEY.pem")]
    pub key: PathBuf,
    /// The server token as downloaded from Apple School Manager or Apple Business Manager.
    #[arg(value_name = "TOKEN.p7m")]
    pub token: PathBuf,
}

/// What `inspect` prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Inspection {
    pub consumer_key: String,
    pub consumer_secret: String,
    pub access_token: String,
    pub access_secret: String,
    #[serde(with = "time::serde::rfc3339")]
    pub access_token_expiry: OffsetDateTime,
    pub expired: bool,
    pub days_left: i64,
}

/// Why inspect failed; the message names the file and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error("cannot read {path}: {reason}")]
    Read {
        path: String,
        reason: std::io::Error,
    },
    #[error(
        "{path} is not the token's private key ({reason}): give the RSA private key (PEM) whose public key was uploaded to Apple"
    )]
    Key { path: String, reason: String },
    #[error("{path}: {error}")]
    Token { path: String, error: TokenError },
    #[error("cannot write the answer: {0}")]
    Output(String),
}

/// Reads both files and opens the token.
pub fn run(args: &InspectArgs, now: OffsetDateTime) -> Result<Inspection, InspectError> {
    let key_pem = read(&args.key)?;
    let file = read(&args.token)?;
    let key_path = args.key.display().to_string();
    let key = cms::load_rsa_private_key(&key_pem).map_err(|e| InspectError::Key {
        path: key_path,
        reason: e.to_string(),
    })?;
    inspect(&key, &file, now).map_err(|error| InspectError::Token {
        path: args.token.display().to_string(),
        error,
    })
}

/// Opens `file` with `key` and describes the token inside.
pub fn inspect(
    key: &rsa::PrivateKey,
    file: &[u8],
    now: OffsetDateTime,
) -> Result<Inspection, TokenError> {
    let envelope = unwrap_file(file)?;
    let plain = match cms::decrypt_enveloped_with_key(&envelope, key) {
        Ok(plain) => plain,
        Err(cms::CmsError::NotForUs | cms::CmsError::KeyUnwrap | cms::CmsError::BadPadding) => {
            return Err(TokenError::WrongKey);
        }
        Err(other) => return Err(TokenError::from_format(other)),
    };
    let token = parse_plaintext(&plain)?;
    Ok(Inspection {
        consumer_key: token.consumer_key.clone(),
        consumer_secret: mask(&token.consumer_secret),
        access_token: mask(&token.access_token),
        access_secret: mask(&token.access_secret),
        access_token_expiry: token.access_token_expiry,
        expired: token.is_expired(now),
        days_left: (token.access_token_expiry - now).whole_days(),
    })
}

/// Keeps the `XX_` prefix and the length, nothing of the value.
fn mask(secret: &str) -> String {
    let prefix: String = secret.chars().take(3).collect();
    format!("{prefix}… (masked, {} characters)", secret.chars().count())
}

fn read(path: &Path) -> Result<Vec<u8>, InspectError> {
    let meta = std::fs::metadata(path).map_err(|reason| InspectError::Read {
        path: path.display().to_string(),
        reason,
    })?;
    if meta.len() > super::MAX_UPLOAD as u64 {
        return Err(InspectError::Token {
            path: path.display().to_string(),
            error: TokenError::TooLarge {
                size: usize::try_from(meta.len()).unwrap_or(usize::MAX),
            },
        });
    }
    std::fs::read(path).map_err(|reason| InspectError::Read {
        path: path.display().to_string(),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use time::macros::datetime;

    fn synthetic(name: &str) -> PathBuf {
        let rel = format!("shared/testdata/apple-dep/synthetic/{name}");
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .ancestors()
            .map(|dir| dir.join(&rel))
            .find(|path| path.exists())
            .unwrap_or_else(|| panic!("test data {rel} not found above the crate"))
    }

    fn args(key: PathBuf, token: PathBuf) -> InspectArgs {
        InspectArgs { key, token }
    }

    #[test]
    fn prints_the_consumer_key_and_expiry_and_masks_the_secrets() {
        let now = datetime!(2026-11-27 00:00 UTC);
        for name in [
            "token_des3_ber_smime.p7m",
            "token_aes128_der_smime.p7m",
            "token_aes256_ber_smime.p7m",
        ] {
            let out = run(&args(synthetic("dep_key.pem"), synthetic(name)), now).unwrap();
            assert!(out.consumer_key.starts_with("CK_48dd68d1"), "{name}");
            assert_eq!(out.access_token_expiry, datetime!(2035-01-01 00:00 UTC));
            assert!(!out.expired);
            let json = run_cli(
                &TokenArgs {
                    command: TokenCommand::Inspect(args(synthetic("dep_key.pem"), synthetic(name))),
                },
                now,
            )
            .unwrap();
            assert!(
                json.contains("\"access_token_expiry\": \"2035-01-01T00:00:00Z\""),
                "{json}"
            );
            for secret in ["CS_34c7b2b5", "AT_92769683", "AS_c31afd7a"] {
                assert!(!json.contains(secret), "{name} shows {secret}");
            }
        }
    }

    #[test]
    fn any_other_file_gives_a_clear_error() {
        let now = datetime!(2026-11-27 00:00 UTC);
        let token = synthetic("token_aes128_der_smime.p7m");
        let key = synthetic("dep_key.pem");
        let err = run(&args(key.clone(), synthetic("dep_cert.pem")), now).unwrap_err();
        assert!(err.to_string().contains("certificate"), "{err}");
        let err = run(&args(key.clone(), synthetic("token.json")), now).unwrap_err();
        assert!(err.to_string().contains("not a server token"), "{err}");
        let err = run(&args(synthetic("dep_cert.pem"), token.clone()), now).unwrap_err();
        assert!(matches!(err, InspectError::Key { .. }), "{err}");
        let err = run(&args(key.clone(), PathBuf::from("/nonexistent.p7m")), now).unwrap_err();
        assert!(matches!(err, InspectError::Read { .. }), "{err}");

        let mut truncated = tempfile::NamedTempFile::new().unwrap();
        let bytes = std::fs::read(&token).unwrap();
        truncated.write_all(&bytes[..bytes.len() / 2]).unwrap();
        let err = run(&args(key, truncated.path().to_path_buf()), now).unwrap_err();
        assert!(err.to_string().contains("damaged"), "{err}");

        let mut other_key = tempfile::NamedTempFile::new().unwrap();
        let pair = crate::pki::token_keypair::TokenKeypair::generate(now).unwrap();
        other_key
            .write_all(pair.key_pem().unwrap().as_bytes())
            .unwrap();
        let err = run(&args(other_key.path().to_path_buf(), token), now).unwrap_err();
        assert!(err.to_string().contains("public key"), "{err}");
    }
}
