//! `--key-gen` / `postern keygen`: a random Rijndael key and HMAC key, printed as
//! fwknop prints them (`KEY_BASE64: ...`, `HMAC_KEY_BASE64: ...`), from the OS CSPRNG.

use std::path::Path;

use postern_proto::{wire, DigestType, Key};
use zeroize::Zeroizing;

use crate::knock::random;
use crate::plan::Fail;

/// Default HMAC key length for a type: fwknop's for the types it has defaults for,
/// and twice the output length for SHA3 (fwknop has none and fails there).
pub fn default_hmac_key_len(d: DigestType) -> usize {
    match d {
        DigestType::Md5 => 16,
        DigestType::Sha1 => 20,
        DigestType::Sha256 | DigestType::Sha3_256 => 64,
        DigestType::Sha384 | DigestType::Sha512 | DigestType::Sha3_512 => 128,
    }
}

/// A generated key pair, base64 with padding as printed.
#[derive(Debug, Clone)]
pub struct Generated {
    /// `KEY_BASE64`.
    pub key: Zeroizing<String>,
    /// `HMAC_KEY_BASE64`.
    pub hmac: Zeroizing<String>,
}

impl Generated {
    /// The two lines fwknop prints (`KEY_BASE64: ...`, `HMAC_KEY_BASE64: ...`).
    pub fn lines(&self) -> Zeroizing<String> {
        Zeroizing::new(format!(
            "KEY_BASE64: {}\nHMAC_KEY_BASE64: {}",
            self.key.as_str(),
            self.hmac.as_str()
        ))
    }
}

/// Generate a key pair (an encryption key of `key_len` bytes, default 32, and an HMAC
/// key of `hmac_key_len` bytes, default by HMAC type), never equal to each other.
pub fn generate_pair(
    key_len: Option<usize>,
    hmac_key_len: Option<usize>,
    digest: DigestType,
) -> Result<Generated, Fail> {
    let key_len = key_len.unwrap_or(wire::MAX_KEY_LEN);
    if !(1..=wire::MAX_KEY_LEN).contains(&key_len) {
        return Err(Fail(format!("--key-len: {key_len} is out of range (1-32)")));
    }
    let hmac_len = hmac_key_len.unwrap_or_else(|| default_hmac_key_len(digest));
    if !(1..=wire::MAX_HMAC_KEY_LEN).contains(&hmac_len) {
        return Err(Fail(format!(
            "--hmac-key-len: {hmac_len} is out of range (1-128)"
        )));
    }
    let mut k = Zeroizing::new(vec![0u8; key_len]);
    let mut h = Zeroizing::new(vec![0u8; hmac_len]);
    loop {
        random(&mut k);
        random(&mut h);
        if k[..] != h[..] {
            break;
        }
    }
    Ok(Generated {
        key: Key::from_bytes(k.to_vec()).to_base64(),
        hmac: Key::from_bytes(h.to_vec()).to_base64(),
    })
}

/// Generate and render the two lines.
pub fn generate(
    key_len: Option<usize>,
    hmac_key_len: Option<usize>,
    digest: DigestType,
) -> Result<Zeroizing<String>, Fail> {
    generate_pair(key_len, hmac_key_len, digest).map(|g| g.lines())
}

/// Write the keys to a new file readable by its owner only.
pub fn write_file(path: &Path, text: &str) -> Result<(), Fail> {
    crate::args::write_private(path, &format!("{text}\n"), false).map_err(|e| {
        Fail(format!(
            "-K/--key-gen-file: cannot write '{}': {e}",
            path.display()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths() {
        for d in DigestType::ALL {
            let out = generate(None, None, d).unwrap();
            let mut lines = out.lines();
            let k = lines.next().unwrap().strip_prefix("KEY_BASE64: ").unwrap();
            let h = lines
                .next()
                .unwrap()
                .strip_prefix("HMAC_KEY_BASE64: ")
                .unwrap();
            assert_eq!(Key::from_base64(k).unwrap().len(), 32);
            assert_eq!(Key::from_base64(h).unwrap().len(), default_hmac_key_len(d));
        }
        assert!(generate(Some(33), None, DigestType::Sha256).is_err());
        assert!(generate(None, Some(129), DigestType::Sha256).is_err());
        assert!(generate(Some(0), None, DigestType::Sha256).is_err());
    }
}
