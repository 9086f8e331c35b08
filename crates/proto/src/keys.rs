//! Keys as access.conf and the client name them: an encryption key (passphrase text or
//! base64-decoded bytes), the encryption mode, and an optional HMAC key with its type.
//!
//! Key bytes live in [`Zeroizing`] buffers, are never printed (`Debug` is redacted),
//! and are checked once here: lengths fwknop accepts, never truncated (except legacy
//! mode, which fwknop defines by truncation), HMAC key different from the encryption key.

use core::fmt;

use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::algo::{DigestType, EncryptionMode};
use crate::b64;
use crate::error::Error;
use crate::wire;

/// Secret key bytes.
#[derive(Clone)]
pub struct Key(Zeroizing<Vec<u8>>);

impl Key {
    /// The key is the bytes of this text (`KEY`, `--key-rijndael`, `HMAC_KEY`, `--key-hmac`).
    pub fn from_passphrase(text: &str) -> Key {
        Key(Zeroizing::new(text.as_bytes().to_vec()))
    }

    /// The key is the base64-decoded text (`KEY_BASE64`, `--key-base64-rijndael`, ...).
    pub fn from_base64(text: &str) -> Result<Key, Error> {
        b64::decode_key(text).map(|v| Key(Zeroizing::new(v)))
    }

    /// The key is these bytes.
    pub fn from_bytes(bytes: Vec<u8>) -> Key {
        Key(Zeroizing::new(bytes))
    }

    /// The raw key bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Key length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the key is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The key as base64 with padding (what `--key-gen` prints).
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(b64::encode_padded(&self.0))
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key(<{} bytes redacted>)", self.0.len())
    }
}

impl PartialEq for Key {
    /// Constant-time comparison.
    fn eq(&self, other: &Key) -> bool {
        self.0.len() == other.0.len() && bool::from(self.0.ct_eq(&other.0))
    }
}
impl Eq for Key {}

/// An HMAC key and the HMAC type it is used with.
#[derive(Clone, Debug)]
pub struct HmacKey {
    /// The key.
    pub key: Key,
    /// The HMAC algorithm.
    pub digest: DigestType,
}

/// Everything needed to open or seal a packet for one stanza or one server.
#[derive(Clone, Debug)]
pub struct Keys {
    encryption: Key,
    /// The key bytes fed to the KDF (the encryption key, or its legacy-mode form).
    kdf_key: Key,
    mode: EncryptionMode,
    hmac: Option<HmacKey>,
}

impl Keys {
    /// Check and bundle keys.
    ///
    /// Refuses: an encryption key outside 1..=32 bytes (legacy mode: any non-empty key,
    /// cut to 16 bytes as fwknop does), an HMAC key outside 1..=128 bytes, an HMAC key
    /// equal to the encryption key, and legacy mode with HMAC.
    pub fn new(
        encryption: Key,
        mode: EncryptionMode,
        hmac: Option<HmacKey>,
    ) -> Result<Keys, Error> {
        Keys::checked(encryption, mode, hmac, wire::MAX_HMAC_KEY_LEN)
    }

    /// [`Keys::new`] for a server's stanza: the same checks, but HMAC keys of up to
    /// [`wire::MAX_SERVER_HMAC_KEY_LEN`] bytes, as fwknopd takes them from access.conf.
    pub fn for_stanza(
        encryption: Key,
        mode: EncryptionMode,
        hmac: Option<HmacKey>,
    ) -> Result<Keys, Error> {
        Keys::checked(encryption, mode, hmac, wire::MAX_SERVER_HMAC_KEY_LEN)
    }

    fn checked(
        encryption: Key,
        mode: EncryptionMode,
        hmac: Option<HmacKey>,
        max_hmac: usize,
    ) -> Result<Keys, Error> {
        let kdf_key = match mode {
            EncryptionMode::Legacy => {
                if encryption.is_empty() {
                    return Err(Error::InvalidKeyLength { len: 0 });
                }
                let mut k = encryption.as_bytes().to_vec();
                k.truncate(wire::LEGACY_KEY_LEN);
                k.resize(wire::LEGACY_KEY_LEN, b'0');
                Key::from_bytes(k)
            }
            _ => {
                if encryption.is_empty() || encryption.len() > wire::MAX_KEY_LEN {
                    return Err(Error::InvalidKeyLength {
                        len: encryption.len(),
                    });
                }
                encryption.clone()
            }
        };
        if let Some(h) = &hmac {
            if mode == EncryptionMode::Legacy {
                return Err(Error::LegacyWithHmac);
            }
            if h.key.is_empty() || h.key.len() > max_hmac {
                return Err(Error::InvalidHmacKeyLength { len: h.key.len() });
            }
            if h.key == encryption {
                return Err(Error::HmacKeyEqualsEncryptionKey);
            }
        }
        Ok(Keys {
            encryption,
            kdf_key,
            mode,
            hmac,
        })
    }

    /// The encryption key as given.
    pub fn encryption_key(&self) -> &Key {
        &self.encryption
    }

    /// The bytes the key derivation uses.
    pub(crate) fn kdf_key(&self) -> &[u8] {
        self.kdf_key.as_bytes()
    }

    /// The encryption mode.
    pub fn mode(&self) -> EncryptionMode {
        self.mode
    }

    /// The HMAC key and type, if HMAC is used.
    pub fn hmac(&self) -> Option<&HmacKey> {
        self.hmac.as_ref()
    }

    /// The HMAC type, if HMAC is used.
    pub fn hmac_type(&self) -> Option<DigestType> {
        self.hmac.as_ref().map(|h| h.digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hk(k: &str) -> Option<HmacKey> {
        Some(HmacKey {
            key: Key::from_passphrase(k),
            digest: DigestType::Sha256,
        })
    }

    #[test]
    fn key_lengths() {
        assert!(Keys::new(Key::from_passphrase("k"), EncryptionMode::Cbc, None).is_ok());
        let k32 = "x".repeat(32);
        assert!(Keys::new(Key::from_passphrase(&k32), EncryptionMode::Cbc, None).is_ok());
        let k33 = "x".repeat(33);
        assert_eq!(
            Keys::new(Key::from_passphrase(&k33), EncryptionMode::Cbc, None).unwrap_err(),
            Error::InvalidKeyLength { len: 33 }
        );
        assert_eq!(
            Keys::new(Key::from_passphrase(""), EncryptionMode::Cbc, None).unwrap_err(),
            Error::InvalidKeyLength { len: 0 }
        );
        let long = Keys::new(Key::from_passphrase(&k33), EncryptionMode::Legacy, None).unwrap();
        assert_eq!(long.kdf_key(), "x".repeat(16).as_bytes());
        let short = Keys::new(Key::from_passphrase("abc"), EncryptionMode::Legacy, None).unwrap();
        assert_eq!(short.kdf_key(), b"abc0000000000000");
    }

    #[test]
    fn hmac_rules() {
        assert_eq!(
            Keys::new(
                Key::from_passphrase("same"),
                EncryptionMode::Cbc,
                hk("same")
            )
            .unwrap_err(),
            Error::HmacKeyEqualsEncryptionKey
        );
        assert_eq!(
            Keys::new(Key::from_passphrase("a"), EncryptionMode::Legacy, hk("b")).unwrap_err(),
            Error::LegacyWithHmac
        );
        assert_eq!(
            Keys::new(Key::from_passphrase("a"), EncryptionMode::Cbc, hk("")).unwrap_err(),
            Error::InvalidHmacKeyLength { len: 0 }
        );
        let long = "h".repeat(129);
        assert!(Keys::new(Key::from_passphrase("a"), EncryptionMode::Cbc, hk(&long)).is_err());
        // fwknopd opens packets with access.conf HMAC keys of up to 136 bytes.
        let k = |n: usize| {
            Keys::for_stanza(
                Key::from_passphrase("a"),
                EncryptionMode::Cbc,
                hk(&"h".repeat(n)),
            )
        };
        assert!(k(129).is_ok() && k(136).is_ok());
        assert_eq!(
            k(137).unwrap_err(),
            Error::InvalidHmacKeyLength { len: 137 }
        );
        assert!(Keys::new(Key::from_passphrase("a"), EncryptionMode::Cbc, hk("b")).is_ok());
    }

    #[test]
    fn debug_never_shows_key() {
        let k = Key::from_passphrase("hunter2");
        assert!(!format!("{k:?}").contains("hunter2"));
    }
}
