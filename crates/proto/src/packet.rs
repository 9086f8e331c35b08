//! The outer framing: the wire string `W = B || H` (spec sections 3.4, 4, 5).
//!
//! ```text
//!  payload ──► Packet::new_checked ──► replay_key ──► Packet::open(keys) ──► Opened
//!              size, prefix,          SHA-256 of      HMAC (constant time),   SpaMessage,
//!              charset, class         the text        canonical b64, decrypt, digest type,
//!                                                     digest, fields          salt
//! ```
//!
//! `new_checked` needs no key and does no cryptography beyond nothing: it is the cheap
//! filter for junk. `open` is run per candidate stanza and verifies the HMAC before it
//! decrypts anything.

use core::fmt;

use subtle::ConstantTimeEq;

use crate::algo::{DigestType, EncryptionMode};
use crate::b64;
use crate::crypto;
use crate::error::Error;
use crate::keys::Keys;
use crate::message::SpaMessage;
use crate::wire;

/// A received payload that passed the key-independent checks.
#[derive(Debug, Clone, Copy)]
pub struct Packet<'a> {
    text: &'a [u8],
}

/// Replay-cache key of a packet: SHA-256 over the payload text, exactly what fwknopd
/// stores in `digest.cache` (shown as unpadded base64).
///
/// Because [`Packet::open`] accepts only the canonical spelling of a packet (no `=`, no
/// re-added prefix, zero unused base64 bits, exact HMAC text), a message that is
/// accepted at all is accepted under exactly one spelling, so this key is the same for
/// every spelling of one message that could ever get through.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReplayKey(pub [u8; 32]);

impl fmt::Display for ReplayKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&b64::encode(&self.0))
    }
}

impl fmt::Debug for ReplayKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ReplayKey({self})")
    }
}

/// A successfully opened packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// The validated inner message.
    pub message: SpaMessage,
    /// The SPA digest type the sender used (inferred from its length and value).
    pub digest_type: DigestType,
    /// The HMAC type that was verified, if any.
    pub hmac_type: Option<DigestType>,
    /// The encryption mode used.
    pub encryption_mode: EncryptionMode,
    /// The KDF salt the sender chose.
    pub salt: [u8; wire::SALT_LEN],
}

impl<'a> Packet<'a> {
    /// Key-independent checks, in fwknopd's order: size (140..=1500), no re-added
    /// prefix, base64 alphabet only (`=` is refused as non-canonical), and a first
    /// character that a Rijndael packet can have (otherwise a long packet is GnuPG,
    /// which is refused as not supported yet).
    pub fn new_checked(payload: &'a [u8]) -> Result<Packet<'a>, Error> {
        let len = payload.len();
        if len < wire::MIN_PACKET_LEN {
            return Err(Error::PacketTooShort { len });
        }
        if len > wire::MAX_PACKET_LEN {
            return Err(Error::PacketTooLong { len });
        }
        if payload.starts_with(wire::RIJNDAEL_PREFIX.as_bytes())
            || (len > wire::GNUPG_MIN_LEN && payload.starts_with(wire::GNUPG_PREFIX.as_bytes()))
        {
            return Err(Error::PrefixPresent);
        }
        if let Some(&bad) = payload.iter().find(|&&c| !b64::is_alphabet(c)) {
            return Err(if bad == b'=' {
                Error::NonCanonicalBase64
            } else {
                Error::InvalidCharacter
            });
        }
        if !wire::RIJNDAEL_FIRST_CHARS.contains(&payload[0]) {
            return Err(if len >= wire::GNUPG_MIN_LEN {
                Error::GnupgUnsupported
            } else {
                Error::NotRijndael
            });
        }
        Ok(Packet { text: payload })
    }

    /// The payload text.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.text
    }

    /// The replay-cache key (see [`ReplayKey`]).
    pub fn replay_key(&self) -> ReplayKey {
        let h = DigestType::Sha256.hash(self.text);
        let mut k = [0u8; 32];
        k.copy_from_slice(&h);
        ReplayKey(k)
    }

    /// Verify the HMAC (if `keys` has one) in constant time, then decrypt, check the
    /// digest and parse every field. Does not look at the timestamp: age is policy.
    pub fn open(&self, keys: &Keys) -> Result<Opened, Error> {
        let data = match keys.hmac() {
            Some(h) => {
                let n = h.digest.b64_len();
                if self.text.len() <= n {
                    return Err(Error::HmacMismatch);
                }
                let (data, tag) = self.text.split_at(self.text.len() - n);
                let mac = h
                    .digest
                    .hmac(h.key.as_bytes(), &[wire::RIJNDAEL_PREFIX.as_bytes(), data]);
                let expected = b64::encode(&mac);
                if !bool::from(expected.as_bytes().ct_eq(tag)) {
                    return Err(Error::HmacMismatch);
                }
                data
            }
            None => self.text,
        };
        let mut full = Vec::with_capacity(wire::RIJNDAEL_PREFIX.len() + data.len());
        full.extend_from_slice(wire::RIJNDAEL_PREFIX.as_bytes());
        full.extend_from_slice(data);
        // Framing before spelling: a length that cannot hold `Salted__`, salt and whole
        // blocks is a truncated or padded-out packet, not a respelling.
        let decoded_len = full.len() * 3 / 4;
        if full.len() % 4 == 1 || decoded_len < 32 || (decoded_len - 16) % wire::BLOCK_LEN != 0 {
            return Err(Error::BadCiphertext);
        }
        let framed = b64::decode_canonical(&full)?;
        let salt = crypto::salt_of(&framed)?;
        let plain = crypto::open(keys.mode(), keys.kdf_key(), &framed)?;
        let (message, digest_type) = parse_plaintext(&plain)?;
        Ok(Opened {
            message,
            digest_type,
            hmac_type: keys.hmac_type(),
            encryption_mode: keys.mode(),
            salt,
        })
    }
}

/// Check the decrypted text and split it into the message and its digest.
fn parse_plaintext(plain: &[u8]) -> Result<(SpaMessage, DigestType), Error> {
    if plain.len() < wire::MIN_PLAINTEXT_LEN
        || plain.len() >= wire::MAX_PLAINTEXT_LEN
        || !plain.iter().all(|b| (0x20..=0x7e).contains(b))
    {
        return Err(Error::DecryptionFailed);
    }
    let rv = wire::RANDOM_VALUE_LEN;
    if !plain[..rv].iter().all(u8::is_ascii_digit) || plain[rv] != b':' {
        return Err(Error::BadRandomValue);
    }
    // All bytes are printable ASCII, so this is valid UTF-8.
    let text = core::str::from_utf8(plain).map_err(|_| Error::DecryptionFailed)?;
    let (encoded, digest) = text.rsplit_once(':').ok_or(Error::BadDigestLength)?;
    let candidates = DigestType::candidates_for_b64_len(digest.len());
    if candidates.is_empty() {
        return Err(Error::BadDigestLength);
    }
    let digest_type = candidates
        .iter()
        .copied()
        .find(|d| b64::encode(&d.hash(encoded.as_bytes())) == digest)
        .ok_or(Error::DigestMismatch)?;
    Ok((SpaMessage::parse(encoded)?, digest_type))
}

/// Check the packet's framing and open it with `keys` (see [`Packet::open`]).
pub fn decode(payload: &[u8], keys: &Keys) -> Result<Opened, Error> {
    Packet::new_checked(payload)?.open(keys)
}

/// A packet built by [`seal`], with the intermediate values `--test` output shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// The `:`-joined encoded message, without digest.
    pub encoded: String,
    /// The SPA digest (unpadded base64).
    pub digest: String,
    /// The HMAC trailer (unpadded base64), if HMAC is used.
    pub hmac: Option<String>,
    /// The wire string: what goes into the datagram.
    pub wire: String,
}

/// Build the packet for `message`, exactly as the fwknop client does for the same
/// random value, timestamp and salt.
///
/// Refuses anything fwknop could not decode, including Rijndael packets of 400
/// characters or more (spec 5.5).
pub fn seal(
    message: &SpaMessage,
    keys: &Keys,
    digest_type: DigestType,
    salt: [u8; wire::SALT_LEN],
) -> Result<Sealed, Error> {
    let encoded = message.encode()?;
    let digest = b64::encode(&digest_type.hash(encoded.as_bytes()));
    let plain = zeroize::Zeroizing::new(format!("{encoded}:{digest}"));
    let framed = crypto::seal(keys.mode(), keys.kdf_key(), &salt, plain.as_bytes());
    let full = b64::encode(&framed);
    let mut wire_text = full[wire::RIJNDAEL_PREFIX.len()..].to_owned();
    let hmac = keys
        .hmac()
        .map(|h| b64::encode(&h.digest.hmac(h.key.as_bytes(), &[full.as_bytes()])));
    if let Some(h) = &hmac {
        wire_text.push_str(h);
    }
    if wire_text.len() >= wire::GNUPG_MIN_LEN {
        return Err(Error::PacketTooLongForFwknop {
            len: wire_text.len(),
        });
    }
    Ok(Sealed {
        encoded,
        digest,
        hmac,
        wire: wire_text,
    })
}

/// The wire string for `message` (see [`seal`]).
pub fn encode(
    message: &SpaMessage,
    keys: &Keys,
    digest_type: DigestType,
    salt: [u8; wire::SALT_LEN],
) -> Result<String, Error> {
    seal(message, keys, digest_type, salt).map(|s| s.wire)
}
