//! `postern decode`: open one packet with access.conf-style keys and print its fields
//! as one JSON object. No policy: the packet's age is not checked.

use std::fmt;
use std::io::Read as _;

use postern_proto::{DigestType, EncryptionMode, HmacKey, Key, Keys};
use serde_json::json;

use crate::cli::DecodeArgs;

/// Why `postern decode` failed: bad arguments, or the check the packet failed.
#[derive(Debug)]
pub enum DecodeError {
    /// A flag is missing or wrong.
    Usage(String),
    /// Standard input could not be read.
    Input(std::io::Error),
    /// The codec refused the keys or the packet.
    Codec(postern_proto::Error),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Usage(s) => f.write_str(s),
            DecodeError::Input(e) => write!(f, "cannot read the packet from standard input: {e}"),
            DecodeError::Codec(e) => write!(f, "{e}"),
        }
    }
}

impl From<postern_proto::Error> for DecodeError {
    fn from(e: postern_proto::Error) -> Self {
        DecodeError::Codec(e)
    }
}

fn keys(a: &DecodeArgs) -> Result<Keys, DecodeError> {
    let enc = match (&a.key_rijndael, &a.key_base64_rijndael) {
        (Some(p), _) => Key::from_passphrase(p),
        (None, Some(b)) => Key::from_base64(b).map_err(|_| {
            DecodeError::Usage("--key-base64-rijndael: key is not valid base64".into())
        })?,
        (None, None) => {
            return Err(DecodeError::Usage(
                "an encryption key is required: add --key-rijndael or --key-base64-rijndael".into(),
            ))
        }
    };
    let mode: EncryptionMode = a
        .encryption_mode
        .parse()
        .map_err(|e| DecodeError::Usage(format!("--encryption-mode: {e}")))?;
    let hmac_key = match (&a.key_hmac, &a.key_base64_hmac) {
        (Some(p), _) => Some(Key::from_passphrase(p)),
        (None, Some(b)) => Some(Key::from_base64(b).map_err(|_| {
            DecodeError::Usage("--key-base64-hmac: key is not valid base64".into())
        })?),
        (None, None) => None,
    };
    let digest = a
        .hmac_digest_type
        .as_deref()
        .map(str::parse::<DigestType>)
        .transpose()
        .map_err(|e| DecodeError::Usage(format!("--hmac-digest-type: {e}")))?;
    let hmac = match (hmac_key, digest) {
        (Some(key), d) => Some(HmacKey {
            key,
            digest: d.unwrap_or(DigestType::Sha256),
        }),
        (None, Some(_)) => {
            return Err(DecodeError::Usage(
                "--hmac-digest-type needs an HMAC key: add --key-hmac or --key-base64-hmac".into(),
            ))
        }
        (None, None) => None,
    };
    Ok(Keys::new(enc, mode, hmac)?)
}

fn packet(a: &DecodeArgs) -> Result<String, DecodeError> {
    match a.packet.as_deref() {
        Some(p) if p != "-" => Ok(p.trim().to_owned()),
        _ => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .map_err(DecodeError::Input)?;
            Ok(s.trim().to_owned())
        }
    }
}

/// Decode and render; the JSON text on success.
pub fn run(a: &DecodeArgs) -> Result<String, DecodeError> {
    let keys = keys(a)?;
    let packet = packet(a)?;
    let o = postern_proto::decode(packet.as_bytes(), &keys)?;
    let m = &o.message;
    let v = json!({
        "random_value": m.random_value.as_str(),
        "username": m.username,
        "timestamp": m.timestamp,
        "version": m.version,
        "message_type": m.message_type.id(),
        "message": m.message,
        "nat_access": m.nat_access,
        "server_auth": m.server_auth,
        "client_timeout": m.client_timeout,
        "digest_type": o.digest_type.name(),
        "hmac_type": o.hmac_type.map(DigestType::name),
        "encryption_mode": o.encryption_mode.name(),
    });
    Ok(v.to_string())
}
