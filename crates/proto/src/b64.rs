//! Base64 as fwknop spells it: the standard alphabet with every `=` removed.
//!
//! Decoding is strict: only the canonical spelling of a byte string is accepted (no
//! `=`, zero unused bits in the last character, no impossible lengths). That is what
//! closes fwknop's respelling replay (spec section 8, item 7).

use base64::alphabet::STANDARD;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;

use crate::error::Error;

const STRICT: GeneralPurpose = GeneralPurpose::new(
    &STANDARD,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::RequireNone)
        .with_decode_allow_trailing_bits(false),
);

const KEYS: GeneralPurpose = GeneralPurpose::new(
    &STANDARD,
    GeneralPurposeConfig::new()
        .with_encode_padding(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// Encode without padding.
pub fn encode(bytes: &[u8]) -> String {
    STRICT.encode(bytes)
}

/// Encode with `=` padding, the way `--key-gen` prints keys.
pub fn encode_padded(bytes: &[u8]) -> String {
    KEYS.encode(bytes)
}

/// Whether `c` is in the base64 alphabet (`=` excluded).
pub fn is_alphabet(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'+' || c == b'/'
}

/// Decode the one canonical spelling; anything else is [`Error::NonCanonicalBase64`]
/// (or [`Error::InvalidCharacter`] for bytes outside the alphabet).
pub fn decode_canonical(text: &[u8]) -> Result<Vec<u8>, Error> {
    if let Some(&bad) = text.iter().find(|&&c| !is_alphabet(c)) {
        return Err(if bad == b'=' {
            Error::NonCanonicalBase64
        } else {
            Error::InvalidCharacter
        });
    }
    STRICT.decode(text).map_err(|_| Error::NonCanonicalBase64)
}

/// Decode a key from a config file or command line: padding optional, whitespace
/// around it ignored.
pub fn decode_key(text: &str) -> Result<Vec<u8>, Error> {
    KEYS.decode(text.trim().as_bytes())
        .map_err(|_| Error::InvalidKeyBase64)
}

/// Decode a key the way fwknop 2.6's client reads `KEY_BASE64`, `HMAC_KEY_BASE64`
/// and `--key-base64-*`: every character must be in the alphabet or `=`; decoding
/// stops at the first `=` (so any padding, or none, is accepted); a final group of
/// two or three characters gives one or two bytes and a lone last character is
/// dropped. The result may be empty; callers check the length.
pub fn decode_key_fwknop(text: &str) -> Result<Vec<u8>, Error> {
    let bytes = text.as_bytes();
    if bytes.iter().any(|&c| !(is_alphabet(c) || c == b'=')) {
        return Err(Error::InvalidKeyBase64);
    }
    let data = bytes.split(|&c| c == b'=').next().unwrap_or_default();
    let sextet = |c: u8| -> u32 {
        u32::from(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            _ => 63,
        })
    };
    let mut out = Vec::with_capacity(data.len() * 3 / 4);
    for group in data.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in group.iter().enumerate() {
            n |= sextet(c) << (18 - 6 * i);
        }
        let take = group.len().saturating_sub(1);
        out.extend_from_slice(&n.to_be_bytes()[1..=take]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_decode_as_fwknop_does() {
        assert_eq!(decode_key_fwknop("QUJDRA==").unwrap(), b"ABCD");
        assert_eq!(decode_key_fwknop("QUJDRA===").unwrap(), b"ABCD");
        assert_eq!(decode_key_fwknop("QUJDRA").unwrap(), b"ABCD");
        assert_eq!(decode_key_fwknop("QUJDRA==QUJD").unwrap(), b"ABCD");
        assert_eq!(decode_key_fwknop("QUJDR").unwrap(), b"ABC");
        assert_eq!(decode_key_fwknop("QUJDRAx").unwrap(), b"ABCD\x0c");
        assert_eq!(decode_key_fwknop("QU=JD").unwrap(), b"A");
        assert_eq!(decode_key_fwknop("//8").unwrap(), b"\xff\xff");
        assert_eq!(decode_key_fwknop("Q").unwrap(), b"");
        assert_eq!(decode_key_fwknop("====").unwrap(), b"");
        for bad in ["QUJD RA==", "-_-_", "QUJD.RA", "QUJDRA==\\", "!!!!"] {
            assert_eq!(
                decode_key_fwknop(bad),
                Err(Error::InvalidKeyBase64),
                "{bad}"
            );
        }
        for n in 1..64u8 {
            let data: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37)).collect();
            assert_eq!(decode_key_fwknop(&encode_padded(&data)).unwrap(), data);
            assert_eq!(decode_key_fwknop(&encode(&data)).unwrap(), data);
        }
    }

    #[test]
    fn canonical_round_trip_and_respellings_refused() {
        for n in 0..40u8 {
            let data: Vec<u8> = (0..n).collect();
            let text = encode(&data);
            assert_eq!(decode_canonical(text.as_bytes()).unwrap(), data);
            let padded = encode_padded(&data);
            if padded != text {
                assert_eq!(
                    decode_canonical(padded.as_bytes()),
                    Err(Error::NonCanonicalBase64)
                );
            }
        }
        // "QQ" is the canonical spelling of "A"; "QR" differs only in unused bits.
        assert_eq!(decode_canonical(b"QQ").unwrap(), b"A");
        assert_eq!(decode_canonical(b"QR"), Err(Error::NonCanonicalBase64));
        assert_eq!(decode_canonical(b"Q"), Err(Error::NonCanonicalBase64));
        assert_eq!(decode_canonical(b"Q*"), Err(Error::InvalidCharacter));
    }

    #[test]
    fn keys_accept_padding_or_none() {
        assert_eq!(decode_key("QQ==").unwrap(), b"A");
        assert_eq!(decode_key(" QQ ").unwrap(), b"A");
        assert_eq!(decode_key("!!"), Err(Error::InvalidKeyBase64));
    }
}
