//! Rijndael as fwknop uses it: OpenSSL's `EVP_BytesToKey` (MD5, one round) turns key
//! and salt into an AES-256 key and IV; the plaintext is always PKCS#7-padded, in every
//! mode (on decryption, legacy mode also takes the unpadded block-aligned messages of
//! fwknop 2.0 clients); the result is framed as `Salted__ || salt || ciphertext`.
//!
//! No randomness is made here: the salt is a parameter.

use aes::cipher::block_padding::NoPadding;
use aes::cipher::{
    AsyncStreamCipher, BlockDecryptMut, BlockEncryptMut, KeyInit, KeyIvInit, StreamCipher,
};
use aes::Aes256;
use md5::{Digest, Md5};
use zeroize::Zeroizing;

use crate::algo::EncryptionMode;
use crate::error::Error;
use crate::wire::{BLOCK_LEN, SALTED_MAGIC, SALT_LEN};

/// AES key and IV derived from a passphrase and salt.
pub(crate) struct Derived {
    pub(crate) key: Zeroizing<[u8; 32]>,
    pub(crate) iv: Zeroizing<[u8; 16]>,
}

/// OpenSSL `EVP_BytesToKey(MD5, count=1)`: D0 = MD5(pw||salt), Di = MD5(Di-1||pw||salt).
pub(crate) fn derive(pw: &[u8], salt: &[u8; SALT_LEN]) -> Derived {
    let mut out = Zeroizing::new([0u8; 48]);
    let mut prev: Option<[u8; 16]> = None;
    for chunk in out.chunks_mut(16) {
        let mut h = Md5::new();
        if let Some(p) = prev {
            h.update(p);
        }
        h.update(pw);
        h.update(salt);
        let d: [u8; 16] = h.finalize().into();
        chunk.copy_from_slice(&d);
        prev = Some(d);
    }
    let mut key = Zeroizing::new([0u8; 32]);
    let mut iv = Zeroizing::new([0u8; 16]);
    key.copy_from_slice(&out[..32]);
    iv.copy_from_slice(&out[32..]);
    Derived { key, iv }
}

/// Encrypt `plaintext` and frame it as `Salted__ || salt || ciphertext`.
pub(crate) fn seal(
    mode: EncryptionMode,
    pw: &[u8],
    salt: &[u8; SALT_LEN],
    plaintext: &[u8],
) -> Vec<u8> {
    let d = derive(pw, salt);
    let pad = BLOCK_LEN - plaintext.len() % BLOCK_LEN;
    let mut buf = Zeroizing::new(Vec::with_capacity(plaintext.len() + pad));
    buf.extend_from_slice(plaintext);
    buf.resize(plaintext.len() + pad, pad as u8);
    let len = buf.len();
    let key = (&*d.key).into();
    let iv = (&*d.iv).into();
    match mode {
        EncryptionMode::Cbc | EncryptionMode::Legacy => {
            let _ = cbc::Encryptor::<Aes256>::new(key, iv)
                .encrypt_padded_mut::<NoPadding>(&mut buf, len);
        }
        EncryptionMode::Ecb => {
            let _ =
                ecb::Encryptor::<Aes256>::new(key).encrypt_padded_mut::<NoPadding>(&mut buf, len);
        }
        EncryptionMode::Cfb => cfb_mode::Encryptor::<Aes256>::new(key, iv).encrypt(&mut buf),
        EncryptionMode::Ofb => ofb::Ofb::<Aes256>::new(key, iv).apply_keystream(&mut buf),
        EncryptionMode::Ctr => ctr::Ctr128BE::<Aes256>::new(key, iv).apply_keystream(&mut buf),
    }
    let mut out = Vec::with_capacity(16 + len);
    out.extend_from_slice(SALTED_MAGIC);
    out.extend_from_slice(salt);
    out.extend_from_slice(&buf);
    out
}

/// The salt of a framed ciphertext, after checking the frame.
pub(crate) fn salt_of(framed: &[u8]) -> Result<[u8; SALT_LEN], Error> {
    let body = framed.len().checked_sub(16).ok_or(Error::BadCiphertext)?;
    if body == 0 || body % BLOCK_LEN != 0 || &framed[..8] != SALTED_MAGIC {
        return Err(Error::BadCiphertext);
    }
    let mut salt = [0u8; SALT_LEN];
    salt.copy_from_slice(&framed[8..16]);
    Ok(salt)
}

/// Check the frame, decrypt and strictly remove the PKCS#7 padding.
pub(crate) fn open(
    mode: EncryptionMode,
    pw: &[u8],
    framed: &[u8],
) -> Result<Zeroizing<Vec<u8>>, Error> {
    let salt = salt_of(framed)?;
    let d = derive(pw, &salt);
    let mut buf = Zeroizing::new(framed[16..].to_vec());
    let key = (&*d.key).into();
    let iv = (&*d.iv).into();
    match mode {
        EncryptionMode::Cbc | EncryptionMode::Legacy => {
            cbc::Decryptor::<Aes256>::new(key, iv)
                .decrypt_padded_mut::<NoPadding>(&mut buf)
                .map_err(|_| Error::BadCiphertext)?;
        }
        EncryptionMode::Ecb => {
            ecb::Decryptor::<Aes256>::new(key)
                .decrypt_padded_mut::<NoPadding>(&mut buf)
                .map_err(|_| Error::BadCiphertext)?;
        }
        EncryptionMode::Cfb => cfb_mode::Decryptor::<Aes256>::new(key, iv).decrypt(&mut buf),
        EncryptionMode::Ofb => ofb::Ofb::<Aes256>::new(key, iv).apply_keystream(&mut buf),
        EncryptionMode::Ctr => ctr::Ctr128BE::<Aes256>::new(key, iv).apply_keystream(&mut buf),
    }
    let n = usize::from(*buf.last().ok_or(Error::BadCiphertext)?);
    if mode == EncryptionMode::Legacy && n > BLOCK_LEN {
        // fwknop 2.0 clients (the legacy-IV mode; the Android 4.1.2 app among them) add no
        // padding to a message that fills its last block exactly, and fwknopd strips only
        // what looks like padding. A last byte above 16 cannot be a pad length: the whole
        // buffer is the message. Every other mode and case stays strict PKCS#7.
        return Ok(buf);
    }
    if n == 0 || n > BLOCK_LEN || buf[buf.len() - n..].iter().any(|&b| usize::from(b) != n) {
        return Err(Error::DecryptionFailed);
    }
    let keep = buf.len() - n;
    buf.truncate(keep);
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn kdf_matches_vector_access_tcp22_nohmac() {
        // From shared/vectors: key "fwknop-test-key-1", salt e18a00f0f39ff5b8.
        let salt = [0xe1, 0x8a, 0x00, 0xf0, 0xf3, 0x9f, 0xf5, 0xb8];
        let d = derive(b"fwknop-test-key-1", &salt);
        assert_eq!(
            hex(&*d.key),
            "5cfa73f56b2a39ab014c4d077a02375a967f2f5d2f78f88e2acac39c6bc11576"
        );
        assert_eq!(hex(&*d.iv), "fcf74ef1caa016dee871d91a8d2819bd");
    }

    /// fwknop 2.0 clients (legacy IV; the Android 4.1.2 app) send a message that fills
    /// its last block without padding: legacy mode takes it, every other mode does not.
    #[test]
    fn legacy_takes_an_unpadded_block_aligned_message() {
        let pt = b"0123456789abcdef0123456789ABCDEF";
        for mode in EncryptionMode::ALL {
            let mut framed = seal(mode, b"k", &[7; 8], pt);
            // The same message without its padding block (CBC/ECB: drop the last block).
            if matches!(
                mode,
                EncryptionMode::Cbc | EncryptionMode::Legacy | EncryptionMode::Ecb
            ) {
                framed.truncate(framed.len() - 16);
                let got = open(mode, b"k", &framed);
                if mode == EncryptionMode::Legacy {
                    assert_eq!(&*got.unwrap(), &pt[..]);
                } else {
                    assert!(got.is_err(), "{mode} stays strict");
                }
            }
        }
        // A last byte that could be a pad length is still checked as padding.
        let mut bad = seal(
            EncryptionMode::Legacy,
            b"k",
            &[7; 8],
            b"0123456789abcde\x05",
        );
        bad.truncate(bad.len() - 16);
        assert!(open(EncryptionMode::Legacy, b"k", &bad).is_err());
    }

    #[test]
    fn every_mode_round_trips_and_pads_always() {
        for mode in EncryptionMode::ALL {
            for len in [0usize, 1, 15, 16, 17, 100] {
                let pt: Vec<u8> = (0..len as u8).collect();
                let framed = seal(mode, b"k", &[7; 8], &pt);
                assert_eq!((framed.len() - 16) % 16, 0);
                assert!(framed.len() - 16 > len, "padding always added");
                assert_eq!(&*open(mode, b"k", &framed).unwrap(), &pt[..], "{mode}");
            }
        }
    }

    #[test]
    fn bad_frames() {
        assert_eq!(
            salt_of(b"Salted__12345678").unwrap_err(),
            Error::BadCiphertext
        );
        let mut f = seal(EncryptionMode::Cbc, b"k", &[1; 8], b"hello");
        f[0] = b'X';
        assert_eq!(salt_of(&f).unwrap_err(), Error::BadCiphertext);
        let f = seal(EncryptionMode::Cbc, b"k", &[1; 8], b"hello");
        assert!(open(EncryptionMode::Cbc, b"k", &f[..f.len() - 1]).is_err());
    }
}
