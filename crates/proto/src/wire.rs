//! Wire constants of the fwknop 2.6 SPA format, in one place: prefixes, size limits,
//! field limits and the default port. Nothing here computes anything.

/// Default UDP port SPA packets are sent to.
pub const DEFAULT_PORT: u16 = 62201;

/// Base64 of `Salted__`'s first 60 bits; stripped by the client, restored by the server.
pub const RIJNDAEL_PREFIX: &str = "U2FsdGVkX1";
/// First two base64 characters of every GnuPG SPA message; stripped like the above.
pub const GNUPG_PREFIX: &str = "hQ";
/// OpenSSL's salted-file magic that starts every Rijndael ciphertext.
pub const SALTED_MAGIC: &[u8; 8] = b"Salted__";
/// Salt length in bytes.
pub const SALT_LEN: usize = 8;
/// AES block length.
pub const BLOCK_LEN: usize = 16;

/// Smallest payload fwknopd accepts (also the smallest packet a real client can make).
pub const MIN_PACKET_LEN: usize = 140;
/// Largest payload fwknopd accepts.
pub const MAX_PACKET_LEN: usize = 1500;
/// Payloads of this length or more are classified as GnuPG by fwknop, so a client must
/// keep Rijndael packets shorter.
pub const GNUPG_MIN_LEN: usize = 400;

/// The decrypted plaintext must be at least this long ...
pub const MIN_PLAINTEXT_LEN: usize = 36;
/// ... and shorter than this.
pub const MAX_PLAINTEXT_LEN: usize = 1500;

/// Characters in the random value.
pub const RANDOM_VALUE_LEN: usize = 16;
/// Longest base64 username field the decoder takes.
pub const MAX_USERNAME_B64: usize = 64;
/// Longest username the encoder takes (bytes).
pub const MAX_USERNAME_LEN: usize = 63;
/// Longest timestamp field.
pub const MAX_TIMESTAMP_LEN: usize = 12;
/// Longest version field.
pub const MAX_VERSION_LEN: usize = 8;
/// Longest base64 message, NAT or server-auth field the decoder takes.
pub const MAX_B64_FIELD: usize = 256;
/// Encoder limit for the raw message string (bytes, exclusive).
pub const MAX_MESSAGE_LEN: usize = 256;
/// Encoder limit for the raw NAT string (bytes, exclusive).
pub const MAX_NAT_LEN: usize = 128;
/// Encoder limit for the raw server-auth string (bytes, exclusive).
pub const MAX_SERVER_AUTH_LEN: usize = 64;
/// Longest host in a NAT string.
pub const MAX_NAT_HOST_LEN: usize = 70;
/// Largest client timeout the decoder accepts (seconds).
pub const MAX_CLIENT_TIMEOUT: u32 = 65536;
/// Protocol version every fwknop 2.5/2.6 client sends.
pub const PROTOCOL_VERSION: &str = "3.0.0";

/// Longest encryption key (bytes) AES-256 with the OpenSSL KDF takes in fwknop.
pub const MAX_KEY_LEN: usize = 32;
/// Legacy mode pads (with `'0'`) or truncates the key to this length.
pub const LEGACY_KEY_LEN: usize = 16;
/// Longest HMAC key libfko accepts.
pub const MAX_HMAC_KEY_LEN: usize = 128;
/// Longest HMAC key fwknopd 2.6.10 opens packets with (an access.conf key; its client
/// refuses more than [`MAX_HMAC_KEY_LEN`]). Measured against the real fwknopd: 136
/// bytes are accepted for every HMAC type, 137 give "Invalid HMAC key length".
pub const MAX_SERVER_HMAC_KEY_LEN: usize = 136;

/// Characters that can start a Rijndael wire packet: the 11th base64 character of
/// `Salted__ || salt` carries four one-bits of `_` and two bits of salt.
pub const RIJNDAEL_FIRST_CHARS: &[u8; 4] = b"89+/";
