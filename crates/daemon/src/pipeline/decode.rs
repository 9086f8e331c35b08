//! Stage 1, pure: the key-independent checks (size, prefix, charset, class). The cheap
//! filter that junk never gets past; no cryptography happens here.

use postern_proto::{Error, Packet};

/// Check a payload and give its checked view.
pub fn decode(payload: &[u8]) -> Result<Packet<'_>, Error> {
    Packet::new_checked(payload)
}
