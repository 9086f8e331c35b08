//! Shared helpers: loading vectors, building keys from access.conf stanza lines.

use std::path::PathBuf;

use postern_proto::{DigestType, EncryptionMode, HmacKey, Key, Keys};
use serde_json::Value;

pub fn testdata(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata")
        .join(name)
}

pub fn jsonl(name: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(testdata(name)).expect("read vectors");
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("vector json"))
        .collect()
}

/// Keys from access.conf-style stanza lines (KEY, KEY_BASE64, HMAC_KEY, HMAC_KEY_BASE64,
/// HMAC_DIGEST_TYPE, ENCRYPTION_MODE).
pub fn keys_from_stanza(lines: &[Value]) -> Keys {
    let mut key = None;
    let mut hmac = None;
    let mut hmac_type = DigestType::Sha256;
    let mut mode = EncryptionMode::Cbc;
    for l in lines {
        let l = l.as_str().unwrap();
        let (name, value) = l.split_once(' ').unwrap();
        match name {
            "KEY" => key = Some(Key::from_passphrase(value)),
            "KEY_BASE64" => key = Some(Key::from_base64(value).unwrap()),
            "HMAC_KEY" => hmac = Some(Key::from_passphrase(value)),
            "HMAC_KEY_BASE64" => hmac = Some(Key::from_base64(value).unwrap()),
            "HMAC_DIGEST_TYPE" => hmac_type = value.parse().unwrap(),
            "ENCRYPTION_MODE" => mode = value.parse().unwrap(),
            _ => {}
        }
    }
    Keys::new(
        key.expect("stanza has a key"),
        mode,
        hmac.map(|key| HmacKey {
            key,
            digest: hmac_type,
        }),
    )
    .unwrap()
}

/// Keys from a positive vector's `keys` object.
pub fn keys_from_vector(k: &Value) -> Keys {
    let enc = match (
        k["encryption_key"].as_str(),
        k["encryption_key_base64"].as_str(),
    ) {
        (Some(p), _) => Key::from_passphrase(p),
        (None, Some(b)) => Key::from_base64(b).unwrap(),
        _ => panic!("vector without key"),
    };
    let hmac = match (k["hmac_key"].as_str(), k["hmac_key_base64"].as_str()) {
        (Some(p), _) => Some(Key::from_passphrase(p)),
        (None, Some(b)) => Some(Key::from_base64(b).unwrap()),
        _ => None,
    };
    let digest = k["hmac_digest_type"]
        .as_str()
        .map(|d| d.parse::<DigestType>().unwrap());
    let mode: EncryptionMode = k["encryption_mode"].as_str().unwrap().parse().unwrap();
    Keys::new(
        enc,
        mode,
        hmac.map(|key| HmacKey {
            key,
            digest: digest.unwrap_or(DigestType::Sha256),
        }),
    )
    .unwrap()
}

pub fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

pub use postern_testkit::have_tool;
