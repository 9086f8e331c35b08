//! postern-proto: the fwknop 2.6 Single Packet Authorization wire format, sans I/O.
//!
//! It encodes and decodes SPA packets byte-compatibly with fwknop 2.6.10: the inner
//! message ([`SpaMessage`]), the SPA digest, Rijndael with OpenSSL's salted key
//! derivation in every mode fwknop has, the HMAC trailer, and the outer base64 framing.
//! It opens no socket or file, reads no clock and draws no randomness: time, keys, salt
//! and random values are parameters, so the whole codec is testable from bytes alone.
//!
//! ```text
//!  encode:  SpaMessage ─► "rand:user:ts:ver:type:msg[:nat][:auth][:timeout]" ─► ":digest"
//!           ─► AES-256 (EVP_BytesToKey/MD5 key+iv, PKCS#7) ─► "Salted__"‖salt‖ct ─► base64
//!           ─► drop "U2FsdGVkX1" ─► append base64(HMAC(prefix+body))
//!  decode:  Packet::new_checked (size, prefix, charset, class) ─► replay_key
//!           ─► Packet::open(keys): HMAC first, constant time ─► canonical base64
//!           ─► decrypt ─► digest ─► strict field validation ─► Opened
//! ```
//!
//! What it does not do: policy (age, ports, usernames), replay bookkeeping, GnuPG
//! (recognised and refused with [`Error::GnupgUnsupported`]).
//!
//! IPv6: an access or command message may name an IPv6 allow address
//! (`2001:db8::1,tcp/22`). This is a postern extension: fwknopd 2.6 only parses IPv4
//! there and will refuse such a packet.

#![forbid(unsafe_code)]

pub mod algo;
pub mod b64;
mod crypto;
pub mod error;
pub mod keys;
pub mod message;
pub mod packet;
pub mod wire;

pub use algo::{DigestType, EncryptionMode, MessageType};
pub use error::{Error, Field, Stage};
pub use keys::{HmacKey, Key, Keys};
pub use message::{NatTarget, PortSpec, Protocol, RandomValue, Request, SpaMessage};
pub use packet::{decode, encode, seal, Opened, Packet, ReplayKey, Sealed};

/// Decode arbitrary bytes with fixed keys and discard the result: the fuzzing entry
/// point. Must never panic.
#[doc(hidden)]
pub fn fuzz_decode(data: &[u8]) {
    use std::sync::OnceLock;
    static KEYS: OnceLock<Vec<Keys>> = OnceLock::new();
    let keys = KEYS.get_or_init(|| {
        let mut v = Vec::new();
        for mode in EncryptionMode::ALL {
            let hmac = (mode != EncryptionMode::Legacy).then(|| HmacKey {
                key: Key::from_passphrase("fuzz-hmac-key"),
                digest: DigestType::Sha256,
            });
            if let Ok(k) = Keys::new(Key::from_passphrase("fuzz-key"), mode, hmac) {
                v.push(k);
            }
            if let Ok(k) = Keys::new(Key::from_passphrase("fuzz-key"), mode, None) {
                v.push(k);
            }
        }
        v
    });
    if let Ok(p) = Packet::new_checked(data) {
        let _ = p.replay_key();
        for k in keys {
            let _ = p.open(k);
        }
    }
    // The inner parsers must be total on their own too.
    if let Ok(s) = core::str::from_utf8(data) {
        if let Ok(m) = SpaMessage::parse(s) {
            let again = m.encode();
            if let Ok(e) = again {
                assert_eq!(
                    SpaMessage::parse(&e).ok().as_ref(),
                    Some(&m),
                    "parse/emit round trip"
                );
            }
        }
        let _ = message::parse_nat(s);
        let _ = message::parse_allow_ip(s);
    }
}
