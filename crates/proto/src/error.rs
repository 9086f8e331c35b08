//! The codec's error type: one variant per check, grouped into the pipeline [`Stage`]
//! at which it fails.
//!
//! Messages name the check that failed and never carry key material, HMACs or
//! plaintext; where a value helps (a length, a limit) it is a number that an attacker
//! already knows because it is visible on the wire.

use core::fmt;

/// The processing stage a packet was rejected at, in pipeline order.
///
/// The daemon counts refusals per stage; tests compare against the stages named in
/// `shared/vectors/negative.jsonl`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Stage {
    /// Payload length outside the accepted range.
    Size,
    /// Payload that arrives with the `U2FsdGVkX1`/`hQ` prefix still on it.
    Prefix,
    /// A byte outside the base64 alphabet, `=`, or base64 that is not canonical.
    Base64,
    /// Not a Rijndael packet (GnuPG, or an impossible first character).
    Classify,
    /// HMAC trailer missing or wrong.
    Hmac,
    /// Ciphertext framing, padding or the decrypted text is not an SPA message.
    Decrypt,
    /// The SPA digest inside the message does not match.
    Digest,
    /// A field of the decrypted message is malformed.
    Fields,
    /// Keys or parameters given to the codec are unusable (configuration error).
    Config,
    /// A message could not be encoded (encode side only).
    Encode,
}

impl Stage {
    /// A short lowercase name, stable for logs and counters.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Size => "size",
            Stage::Prefix => "prefix",
            Stage::Base64 => "base64",
            Stage::Classify => "classify",
            Stage::Hmac => "hmac",
            Stage::Decrypt => "decrypt",
            Stage::Digest => "digest",
            Stage::Fields => "fields",
            Stage::Config => "config",
            Stage::Encode => "encode",
        }
    }
}

/// Which field of the inner message failed validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Field {
    /// The 16-digit random value.
    RandomValue,
    /// The base64 username.
    Username,
    /// The decimal timestamp.
    Timestamp,
    /// The protocol version text.
    Version,
    /// The message type number.
    MessageType,
    /// The base64 access or command string (its encoding or length).
    Message,
    /// The allow address at the start of the message.
    AllowIp,
    /// A `proto/port` entry of an access message.
    Access,
    /// The command of a command message.
    Command,
    /// The NAT access field.
    NatAccess,
    /// The server auth field.
    ServerAuth,
    /// The client timeout field.
    ClientTimeout,
    /// The number of `:`-separated fields.
    FieldCount,
}

impl Field {
    /// Lowercase name used in error messages.
    pub fn name(self) -> &'static str {
        match self {
            Field::RandomValue => "random value",
            Field::Username => "username",
            Field::Timestamp => "timestamp",
            Field::Version => "version",
            Field::MessageType => "message type",
            Field::Message => "message",
            Field::AllowIp => "allow ip",
            Field::Access => "access",
            Field::Command => "command",
            Field::NatAccess => "nat access",
            Field::ServerAuth => "server auth",
            Field::ClientTimeout => "client timeout",
            Field::FieldCount => "field count",
        }
    }
}

/// Everything the codec can refuse, one variant per check.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The payload is shorter than the smallest possible SPA packet (140 bytes).
    PacketTooShort {
        /// Received length.
        len: usize,
    },
    /// The payload is longer than the largest accepted SPA packet (1500 bytes).
    PacketTooLong {
        /// Received length.
        len: usize,
    },
    /// The payload still carries the `U2FsdGVkX1` (or `hQ`) prefix that clients strip;
    /// fwknop refuses these because they would let a captured packet be replayed.
    PrefixPresent,
    /// A byte outside the base64 alphabet `A-Z a-z 0-9 + /`.
    InvalidCharacter,
    /// Base64 that decodes but is not the one canonical spelling: `=` padding,
    /// non-zero unused bits in the last character, or an impossible length.
    NonCanonicalBase64,
    /// A GnuPG-mode packet: recognised, not supported yet.
    GnupgUnsupported,
    /// The first character cannot start a Rijndael SPA packet.
    NotRijndael,
    /// The HMAC trailer does not match (wrong key, tampered, truncated or missing).
    HmacMismatch,
    /// The ciphertext is not `Salted__`, salt and a whole number of AES blocks.
    BadCiphertext,
    /// Decryption produced no valid SPA plaintext (wrong key or mode, bad padding,
    /// non-printable bytes).
    DecryptionFailed,
    /// The decrypted text does not start with 16 digits and `:` (fwknop's "right key"
    /// check; counted with the field errors).
    BadRandomValue,
    /// The SPA digest has a length that matches no digest type.
    BadDigestLength,
    /// The SPA digest does not match the message.
    DigestMismatch,
    /// A field of the decrypted message failed validation.
    BadField {
        /// Which field.
        field: Field,
        /// Which rule it broke (static text, never the value).
        why: &'static str,
    },
    /// An encryption key of a length the mode cannot use (1..=32 bytes).
    InvalidKeyLength {
        /// Given length.
        len: usize,
    },
    /// An HMAC key longer than fwknop accepts (128 bytes; 136 for a server's stanza,
    /// see [`crate::Keys::for_stanza`]), or empty.
    InvalidHmacKeyLength {
        /// Given length.
        len: usize,
    },
    /// The HMAC key is the same as the encryption key.
    HmacKeyEqualsEncryptionKey,
    /// Legacy mode cannot be combined with HMAC.
    LegacyWithHmac,
    /// A key given as base64 does not decode.
    InvalidKeyBase64,
    /// An unknown encryption mode name.
    UnknownEncryptionMode,
    /// PCBC mode: fwknop never implemented it correctly; refused.
    PcbcUnsupported,
    /// An unknown digest or HMAC type name.
    UnknownDigestType,
    /// The encoded Rijndael packet would be 400 characters or more, which fwknop
    /// classifies as GnuPG and cannot decode.
    PacketTooLongForFwknop {
        /// Length the packet would have.
        len: usize,
    },
}

impl Error {
    /// The pipeline stage this error belongs to.
    pub fn stage(&self) -> Stage {
        match self {
            Error::PacketTooShort { .. } | Error::PacketTooLong { .. } => Stage::Size,
            Error::PrefixPresent => Stage::Prefix,
            Error::InvalidCharacter | Error::NonCanonicalBase64 => Stage::Base64,
            Error::GnupgUnsupported | Error::NotRijndael => Stage::Classify,
            Error::HmacMismatch => Stage::Hmac,
            Error::BadCiphertext | Error::DecryptionFailed => Stage::Decrypt,
            Error::BadDigestLength | Error::DigestMismatch => Stage::Digest,
            Error::BadRandomValue | Error::BadField { .. } => Stage::Fields,
            Error::InvalidKeyLength { .. }
            | Error::InvalidHmacKeyLength { .. }
            | Error::HmacKeyEqualsEncryptionKey
            | Error::LegacyWithHmac
            | Error::InvalidKeyBase64
            | Error::UnknownEncryptionMode
            | Error::PcbcUnsupported
            | Error::UnknownDigestType => Stage::Config,
            Error::PacketTooLongForFwknop { .. } => Stage::Encode,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::PacketTooShort { len } => {
                write!(f, "packet too short ({len} bytes, minimum 140)")
            }
            Error::PacketTooLong { len } => {
                write!(f, "packet too long ({len} bytes, maximum 1500)")
            }
            Error::PrefixPresent => f.write_str("packet carries the encryption prefix (replay attempt)"),
            Error::InvalidCharacter => f.write_str("invalid base64 character"),
            Error::NonCanonicalBase64 => f.write_str("non-canonical base64"),
            Error::GnupgUnsupported => f.write_str("GnuPG mode is not supported yet"),
            Error::NotRijndael => f.write_str("not a Rijndael SPA packet (bad first character)"),
            Error::HmacMismatch => f.write_str("hmac mismatch"),
            Error::BadCiphertext => f.write_str("decryption failed: malformed ciphertext"),
            Error::DecryptionFailed => f.write_str("decryption failed"),
            Error::BadRandomValue => f.write_str("bad random value"),
            Error::BadDigestLength => f.write_str("bad digest length"),
            Error::DigestMismatch => f.write_str("digest mismatch"),
            Error::BadField { field, why } => write!(f, "bad {}: {why}", field.name()),
            Error::InvalidKeyLength { len } => {
                write!(f, "invalid encryption key length {len} (must be 1 to 32 bytes)")
            }
            Error::InvalidHmacKeyLength { len } => {
                write!(
                    f,
                    "invalid hmac key length {len} (must be 1 to 128 bytes; 136 in an access.conf stanza, as fwknopd takes)"
                )
            }
            Error::HmacKeyEqualsEncryptionKey => {
                f.write_str("hmac key must differ from the encryption key")
            }
            Error::LegacyWithHmac => f.write_str("legacy encryption mode cannot be used with hmac"),
            Error::InvalidKeyBase64 => f.write_str("key is not valid base64"),
            Error::UnknownEncryptionMode => f.write_str(
                "unknown encryption mode (expected cbc, ecb, cfb, ofb, ctr or legacy)",
            ),
            Error::PcbcUnsupported => f.write_str(
                "encryption mode pcbc is not supported (fwknop never implemented it correctly)",
            ),
            Error::UnknownDigestType => f.write_str(
                "unknown digest type (expected md5, sha1, sha256, sha384, sha512, sha3_256 or sha3_512)",
            ),
            Error::PacketTooLongForFwknop { len } => write!(
                f,
                "SPA packet would be {len} characters; fwknop cannot decode Rijndael packets of 400 or more (shorten the message or use a shorter digest/hmac)"
            ),
        }
    }
}

impl std::error::Error for Error {}

/// Shorthand for a field error.
pub(crate) fn field(field: Field, why: &'static str) -> Error {
    Error::BadField { field, why }
}
