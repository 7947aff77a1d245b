//! Secrets at rest: one AES-256-GCM key in the data directory (mode 0600) seals every secret the
//! store keeps (DEP OAuth secrets, private keys, the push key, bootstrap tokens).

use std::fmt;
use std::io::Write;
use std::path::Path;

use base64::engine::general_purpose::STANDARD;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

/// File name of the key inside the data directory.
pub const KEY_FILE: &str = "secret.key";

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("the secret key file {path} could not be read or written: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("the secret key file {0} is damaged (it must hold 32 bytes); restore it from a backup")]
    BadKey(String),
    #[error("a stored secret could not be decrypted: it was sealed with another key or is damaged")]
    Open,
    #[error("the system random number generator failed")]
    Random,
}

/// The data directory's sealing key.
pub struct SecretKey {
    key: LessSafeKey,
    rng: SystemRandom,
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

/// A sealed secret: a random nonce and the ciphertext with its tag. Serialises as base64.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealed(#[serde(with = "b64")] Vec<u8>);

impl fmt::Debug for Sealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sealed({} bytes)", self.0.len())
    }
}

impl SecretKey {
    /// Loads `dir/secret.key`, creating it (mode 0600) on first start.
    pub fn load_or_create(dir: &Path) -> Result<SecretKey, SecretError> {
        let path = dir.join(KEY_FILE);
        let io = |source| SecretError::Io {
            path: path.display().to_string(),
            source,
        };
        match std::fs::read(&path) {
            Ok(bytes) => SecretKey::from_bytes(&bytes)
                .ok_or_else(|| SecretError::BadKey(path.display().to_string())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let rng = SystemRandom::new();
                let mut bytes = [0u8; 32];
                rng.fill(&mut bytes).map_err(|_| SecretError::Random)?;
                let mut options = std::fs::OpenOptions::new();
                options.write(true).create_new(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                let mut file = options.open(&path).map_err(io)?;
                file.write_all(&bytes).map_err(io)?;
                file.sync_all().map_err(io)?;
                SecretKey::from_bytes(&bytes)
                    .ok_or_else(|| SecretError::BadKey(path.display().to_string()))
            }
            Err(e) => Err(io(e)),
        }
    }

    /// A random key that lives only in memory, for tests and simulators.
    pub fn ephemeral() -> SecretKey {
        let mut bytes = [0u8; 32];
        // The OS generator does not fail on the platforms Orchard supports; a zero key would only
        // weaken a throwaway test key, never a data directory's.
        let _ = SystemRandom::new().fill(&mut bytes);
        SecretKey::from_bytes(&bytes).unwrap_or_else(|| unreachable!("32 bytes is an AES-256 key"))
    }

    fn from_bytes(bytes: &[u8]) -> Option<SecretKey> {
        let unbound = UnboundKey::new(&AES_256_GCM, bytes).ok()?;
        Some(SecretKey {
            key: LessSafeKey::new(unbound),
            rng: SystemRandom::new(),
        })
    }

    pub fn seal(&self, plaintext: &[u8]) -> Result<Sealed, SecretError> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).map_err(|_| SecretError::Random)?;
        let mut buf = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut buf)
            .map_err(|_| SecretError::Random)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        Ok(Sealed(out))
    }

    pub fn open(&self, sealed: &Sealed) -> Result<Vec<u8>, SecretError> {
        if sealed.0.len() < NONCE_LEN {
            return Err(SecretError::Open);
        }
        let (nonce, body) = sealed.0.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SecretError::Open)?;
        let mut buf = body.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::empty(), &mut buf)
            .map_err(|_| SecretError::Open)?;
        Ok(plain.to_vec())
    }

    /// Seals UTF-8 text (a convenience for OAuth secrets and PEM keys).
    pub fn seal_str(&self, text: &str) -> Result<Sealed, SecretError> {
        self.seal(text.as_bytes())
    }

    pub fn open_string(&self, sealed: &Sealed) -> Result<String, SecretError> {
        String::from_utf8(self.open(sealed)?).map_err(|_| SecretError::Open)
    }
}

mod b64 {
    use super::STANDARD;
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        STANDARD.decode(text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_then_open_round_trips_and_hides_the_plaintext() {
        let key = SecretKey::ephemeral();
        let sealed = key.seal(b"CS_consumer_secret").unwrap();
        let json = serde_json::to_string(&sealed).unwrap();
        assert!(!json.contains("CS_consumer_secret"));
        let back: Sealed = serde_json::from_str(&json).unwrap();
        assert_eq!(key.open(&back).unwrap(), b"CS_consumer_secret");
        assert!(!format!("{sealed:?}").contains("CS_"));
    }

    #[test]
    fn another_key_or_a_tampered_secret_does_not_open() {
        let key = SecretKey::ephemeral();
        let mut sealed = key.seal(b"secret").unwrap();
        assert!(matches!(
            SecretKey::ephemeral().open(&sealed),
            Err(SecretError::Open)
        ));
        let last = sealed.0.len() - 1;
        sealed.0[last] ^= 1;
        assert!(matches!(key.open(&sealed), Err(SecretError::Open)));
        assert!(matches!(
            key.open(&Sealed(vec![1, 2])),
            Err(SecretError::Open)
        ));
    }

    #[test]
    fn key_file_is_created_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let sealed = SecretKey::load_or_create(dir.path())
            .unwrap()
            .seal(b"x")
            .unwrap();
        let again = SecretKey::load_or_create(dir.path()).unwrap();
        assert_eq!(again.open(&sealed).unwrap(), b"x");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn a_damaged_key_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(KEY_FILE), b"short").unwrap();
        assert!(matches!(
            SecretKey::load_or_create(dir.path()),
            Err(SecretError::BadKey(_))
        ));
    }
}
