//! Algorithm identifiers: digest/HMAC types, encryption modes, message types, with
//! fwknop's numbering and lowercase names, and the hash primitives behind them.

use core::fmt;
use core::str::FromStr;

use hmac::{Hmac, Mac, SimpleHmac};
use sha2::Digest as _;

use crate::error::Error;

/// A hash algorithm, used both for the SPA digest and for the HMAC (fwknop numbers
/// them the same way; 0 means "no HMAC" and is `Option::None` here).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DigestType {
    /// MD5 (id 1).
    Md5,
    /// SHA-1 (id 2).
    Sha1,
    /// SHA-256 (id 3), fwknop's default.
    Sha256,
    /// SHA-384 (id 4).
    Sha384,
    /// SHA-512 (id 5).
    Sha512,
    /// SHA3-256 (id 6).
    Sha3_256,
    /// SHA3-512 (id 7).
    Sha3_512,
}

impl DigestType {
    /// Every type, in fwknop's id order.
    pub const ALL: [DigestType; 7] = [
        DigestType::Md5,
        DigestType::Sha1,
        DigestType::Sha256,
        DigestType::Sha384,
        DigestType::Sha512,
        DigestType::Sha3_256,
        DigestType::Sha3_512,
    ];

    /// fwknop's numeric id.
    pub fn id(self) -> u8 {
        match self {
            DigestType::Md5 => 1,
            DigestType::Sha1 => 2,
            DigestType::Sha256 => 3,
            DigestType::Sha384 => 4,
            DigestType::Sha512 => 5,
            DigestType::Sha3_256 => 6,
            DigestType::Sha3_512 => 7,
        }
    }

    /// Lowercase name as on fwknop's command line.
    pub fn name(self) -> &'static str {
        match self {
            DigestType::Md5 => "md5",
            DigestType::Sha1 => "sha1",
            DigestType::Sha256 => "sha256",
            DigestType::Sha384 => "sha384",
            DigestType::Sha512 => "sha512",
            DigestType::Sha3_256 => "sha3_256",
            DigestType::Sha3_512 => "sha3_512",
        }
    }

    /// fwknop's display name (`SHA256`, `SHA3_256`, ...).
    pub fn display_name(self) -> &'static str {
        match self {
            DigestType::Md5 => "MD5",
            DigestType::Sha1 => "SHA1",
            DigestType::Sha256 => "SHA256",
            DigestType::Sha384 => "SHA384",
            DigestType::Sha512 => "SHA512",
            DigestType::Sha3_256 => "SHA3_256",
            DigestType::Sha3_512 => "SHA3_512",
        }
    }

    /// Raw output length in bytes.
    pub fn output_len(self) -> usize {
        match self {
            DigestType::Md5 => 16,
            DigestType::Sha1 => 20,
            DigestType::Sha256 | DigestType::Sha3_256 => 32,
            DigestType::Sha384 => 48,
            DigestType::Sha512 | DigestType::Sha3_512 => 64,
        }
    }

    /// Length of the output in unpadded base64.
    pub fn b64_len(self) -> usize {
        (self.output_len() * 4).div_ceil(3)
    }

    /// Candidate digest types for an SPA digest of `len` base64 characters, in the
    /// order fwknop tries them.
    pub fn candidates_for_b64_len(len: usize) -> &'static [DigestType] {
        match len {
            22 => &[DigestType::Md5],
            27 => &[DigestType::Sha1],
            43 => &[DigestType::Sha256, DigestType::Sha3_256],
            64 => &[DigestType::Sha384],
            86 => &[DigestType::Sha512, DigestType::Sha3_512],
            _ => &[],
        }
    }

    /// Hash `data`.
    pub fn hash(self, data: &[u8]) -> Vec<u8> {
        match self {
            DigestType::Md5 => md5::Md5::digest(data).to_vec(),
            DigestType::Sha1 => sha1::Sha1::digest(data).to_vec(),
            DigestType::Sha256 => sha2::Sha256::digest(data).to_vec(),
            DigestType::Sha384 => sha2::Sha384::digest(data).to_vec(),
            DigestType::Sha512 => sha2::Sha512::digest(data).to_vec(),
            DigestType::Sha3_256 => sha3::Sha3_256::digest(data).to_vec(),
            DigestType::Sha3_512 => sha3::Sha3_512::digest(data).to_vec(),
        }
    }

    /// RFC 2104 HMAC of the concatenation of `parts` under `key`.
    pub fn hmac(self, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        fn run<M: Mac + hmac::digest::KeyInit>(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
            // `KeyInit::new_from_slice` never fails for HMAC (any key length is valid).
            let mut mac = match <M as hmac::digest::KeyInit>::new_from_slice(key) {
                Ok(m) => m,
                Err(_) => unreachable!("HMAC accepts keys of any length"),
            };
            for p in parts {
                mac.update(p);
            }
            mac.finalize().into_bytes().to_vec()
        }
        match self {
            DigestType::Md5 => run::<Hmac<md5::Md5>>(key, parts),
            DigestType::Sha1 => run::<Hmac<sha1::Sha1>>(key, parts),
            DigestType::Sha256 => run::<Hmac<sha2::Sha256>>(key, parts),
            DigestType::Sha384 => run::<Hmac<sha2::Sha384>>(key, parts),
            DigestType::Sha512 => run::<Hmac<sha2::Sha512>>(key, parts),
            DigestType::Sha3_256 => run::<SimpleHmac<sha3::Sha3_256>>(key, parts),
            DigestType::Sha3_512 => run::<SimpleHmac<sha3::Sha3_512>>(key, parts),
        }
    }
}

impl FromStr for DigestType {
    type Err = Error;
    /// Case-insensitive; accepts `sha3_256` and `sha3-256` spellings.
    fn from_str(s: &str) -> Result<Self, Error> {
        let lower = s.trim().to_ascii_lowercase().replace('-', "_");
        DigestType::ALL
            .into_iter()
            .find(|d| d.name() == lower)
            .ok_or(Error::UnknownDigestType)
    }
}

impl fmt::Display for DigestType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Rijndael encryption mode. Not signalled on the wire: both ends must agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum EncryptionMode {
    /// AES-ECB (id 1).
    Ecb,
    /// AES-CBC (id 2), the default.
    #[default]
    Cbc,
    /// AES-CFB with 128-bit feedback (id 3).
    Cfb,
    /// AES-OFB (id 5).
    Ofb,
    /// AES-CTR with a 128-bit big-endian counter (id 6).
    Ctr,
    /// Pre-2.5 fwknop: CBC with the key `'0'`-padded or truncated to 16 bytes (id 8).
    Legacy,
}

impl EncryptionMode {
    /// Every mode.
    pub const ALL: [EncryptionMode; 6] = [
        EncryptionMode::Ecb,
        EncryptionMode::Cbc,
        EncryptionMode::Cfb,
        EncryptionMode::Ofb,
        EncryptionMode::Ctr,
        EncryptionMode::Legacy,
    ];

    /// fwknop's numeric id.
    pub fn id(self) -> u8 {
        match self {
            EncryptionMode::Ecb => 1,
            EncryptionMode::Cbc => 2,
            EncryptionMode::Cfb => 3,
            EncryptionMode::Ofb => 5,
            EncryptionMode::Ctr => 6,
            EncryptionMode::Legacy => 8,
        }
    }

    /// fwknop's display name (`CBC`, `legacy`, ...).
    pub fn display_name(self) -> &'static str {
        match self {
            EncryptionMode::Legacy => "legacy",
            EncryptionMode::Ecb => "ECB",
            EncryptionMode::Cbc => "CBC",
            EncryptionMode::Cfb => "CFB",
            EncryptionMode::Ofb => "OFB",
            EncryptionMode::Ctr => "CTR",
        }
    }

    /// Lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            EncryptionMode::Ecb => "ecb",
            EncryptionMode::Cbc => "cbc",
            EncryptionMode::Cfb => "cfb",
            EncryptionMode::Ofb => "ofb",
            EncryptionMode::Ctr => "ctr",
            EncryptionMode::Legacy => "legacy",
        }
    }
}

impl FromStr for EncryptionMode {
    type Err = Error;
    /// Case-insensitive. `pcbc` is refused with its own error; `asymmetric` (GnuPG)
    /// is refused as not supported yet.
    fn from_str(s: &str) -> Result<Self, Error> {
        let lower = s.trim().to_ascii_lowercase();
        match lower.as_str() {
            "pcbc" => Err(Error::PcbcUnsupported),
            "asymmetric" | "gpg" | "gnupg" => Err(Error::GnupgUnsupported),
            _ => EncryptionMode::ALL
                .into_iter()
                .find(|m| m.name() == lower)
                .ok_or(Error::UnknownEncryptionMode),
        }
    }
}

impl fmt::Display for EncryptionMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// SPA message type, fwknop's numbering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    /// 0: run a command on the server.
    Command,
    /// 1: open ports.
    Access,
    /// 2: open ports and forward (DNAT) to an internal host.
    NatAccess,
    /// 3: open ports for a client-chosen time.
    ClientTimeoutAccess,
    /// 4: NAT access for a client-chosen time.
    ClientTimeoutNatAccess,
    /// 5: DNAT to a port on the server itself.
    LocalNatAccess,
    /// 6: local NAT access for a client-chosen time.
    ClientTimeoutLocalNatAccess,
}

impl MessageType {
    /// Every type, in id order.
    pub const ALL: [MessageType; 7] = [
        MessageType::Command,
        MessageType::Access,
        MessageType::NatAccess,
        MessageType::ClientTimeoutAccess,
        MessageType::ClientTimeoutNatAccess,
        MessageType::LocalNatAccess,
        MessageType::ClientTimeoutLocalNatAccess,
    ];

    /// fwknop's numeric id.
    pub fn id(self) -> u8 {
        match self {
            MessageType::Command => 0,
            MessageType::Access => 1,
            MessageType::NatAccess => 2,
            MessageType::ClientTimeoutAccess => 3,
            MessageType::ClientTimeoutNatAccess => 4,
            MessageType::LocalNatAccess => 5,
            MessageType::ClientTimeoutLocalNatAccess => 6,
        }
    }

    /// The type with this id.
    pub fn from_id(id: u8) -> Option<Self> {
        MessageType::ALL.get(usize::from(id)).copied()
    }

    /// fwknop's display name (as in `fwknop --test` output).
    pub fn description(self) -> &'static str {
        match self {
            MessageType::Command => "Command msg",
            MessageType::Access => "Access msg",
            MessageType::NatAccess => "NAT access msg",
            MessageType::ClientTimeoutAccess => "Client timeout access msg",
            MessageType::ClientTimeoutNatAccess => "Client timeout NAT access msg",
            MessageType::LocalNatAccess => "Local NAT access msg",
            MessageType::ClientTimeoutLocalNatAccess => "Client timeout local NAT access msg",
        }
    }

    /// Whether the message carries a NAT field.
    pub fn has_nat(self) -> bool {
        matches!(
            self,
            MessageType::NatAccess
                | MessageType::ClientTimeoutNatAccess
                | MessageType::LocalNatAccess
                | MessageType::ClientTimeoutLocalNatAccess
        )
    }

    /// Whether the message carries a client timeout field.
    pub fn has_timeout(self) -> bool {
        matches!(
            self,
            MessageType::ClientTimeoutAccess
                | MessageType::ClientTimeoutNatAccess
                | MessageType::ClientTimeoutLocalNatAccess
        )
    }

    /// Whether this is a local (DNAT to the server itself) NAT type.
    pub fn is_local_nat(self) -> bool {
        matches!(
            self,
            MessageType::LocalNatAccess | MessageType::ClientTimeoutLocalNatAccess
        )
    }

    /// The type the encoder sends for this type and a client timeout, as fwknop does:
    /// a positive timeout selects the client-timeout variant, zero the plain one;
    /// command messages never carry a timeout.
    pub fn with_timeout(self, timeout: u32) -> Self {
        use MessageType::*;
        match (self, timeout > 0) {
            (Command, _) => Command,
            (Access | ClientTimeoutAccess, true) => ClientTimeoutAccess,
            (Access | ClientTimeoutAccess, false) => Access,
            (NatAccess | ClientTimeoutNatAccess, true) => ClientTimeoutNatAccess,
            (NatAccess | ClientTimeoutNatAccess, false) => NatAccess,
            (LocalNatAccess | ClientTimeoutLocalNatAccess, true) => ClientTimeoutLocalNatAccess,
            (LocalNatAccess | ClientTimeoutLocalNatAccess, false) => LocalNatAccess,
        }
    }
}
