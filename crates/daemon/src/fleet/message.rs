//! A fleet grant message: what one gateway opened, for the others to open too. Redis is
//! not trusted with access: every message is authenticated with the fleet key
//! (HMAC-SHA256 over the exact JSON text), carries its origin, deadline and a nonce,
//! and the receiving gateway's privileged part checks it against its own access.conf
//! before applying anything.

use std::net::IpAddr;

use hmac::{Hmac, Mac as _};
use postern_proto::PortSpec;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// The longest message text accepted from the stream.
pub const MAX_MESSAGE: usize = 2048;

/// One grant, as published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantMessage {
    /// Format version (1).
    pub v: u32,
    /// The gateway that opened it.
    pub origin: String,
    /// The address it opened for.
    pub source: IpAddr,
    /// What it opened (`tcp/22`).
    pub ports: Vec<String>,
    /// When it closes: Unix time in milliseconds (gateways' clocks must agree, NTP).
    pub deadline_ms: u64,
    /// The origin's stanza (file:line there), for the log.
    pub stanza: String,
    /// Random, per message: a message already applied is not applied again.
    pub nonce: String,
}

/// Why a message from the stream is not applied.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rejected {
    /// Too long, not JSON of this shape, or a port that does not parse.
    Malformed,
    /// The signature does not match the fleet key.
    Signature,
}

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Rejected::Malformed => "malformed",
            Rejected::Signature => "not signed with the fleet key",
        })
    }
}

type HmacSha256 = Hmac<Sha256>;

fn mac(key: &[u8], text: &str) -> HmacSha256 {
    let mut m = <HmacSha256 as hmac::Mac>::new_from_slice(key).unwrap_or_else(|_| {
        // HMAC takes keys of any length.
        <HmacSha256 as hmac::Mac>::new_from_slice(&[0u8; 32]).unwrap_or_else(|_| unreachable!())
    });
    m.update(text.as_bytes());
    m
}

impl GrantMessage {
    /// The message text and its signature (base64).
    pub fn seal(&self, key: &[u8]) -> (String, String) {
        use base64::Engine as _;
        let text = serde_json::to_string(self).unwrap_or_default();
        let sig = mac(key, &text).finalize().into_bytes();
        (text, base64::engine::general_purpose::STANDARD.encode(sig))
    }

    /// Check the signature (constant time) before parsing anything, then parse.
    pub fn open(text: &str, sig: &str, key: &[u8]) -> Result<GrantMessage, Rejected> {
        use base64::Engine as _;
        if text.len() > MAX_MESSAGE || sig.len() > 128 {
            return Err(Rejected::Malformed);
        }
        let sig = base64::engine::general_purpose::STANDARD
            .decode(sig)
            .map_err(|_| Rejected::Signature)?;
        mac(key, text)
            .verify_slice(&sig)
            .map_err(|_| Rejected::Signature)?;
        let m: GrantMessage = serde_json::from_str(text).map_err(|_| Rejected::Malformed)?;
        if m.v != 1 || m.ports.is_empty() || m.ports.len() > 64 || m.origin.len() > 255 {
            return Err(Rejected::Malformed);
        }
        m.port_specs().map_err(|_| Rejected::Malformed)?;
        Ok(m)
    }

    /// The ports, parsed.
    pub fn port_specs(&self) -> Result<Vec<PortSpec>, postern_proto::Error> {
        self.ports.iter().map(|p| PortSpec::parse(p)).collect()
    }
}

/// A fresh nonce.
pub fn nonce() -> String {
    use base64::Engine as _;
    let mut b = [0u8; 16];
    let _ = getrandom::getrandom(&mut b);
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg() -> GrantMessage {
        GrantMessage {
            v: 1,
            origin: "gw-a".into(),
            source: "198.18.40.100".parse().unwrap(),
            ports: vec!["tcp/22".into()],
            deadline_ms: 5000,
            stanza: "access.conf:1".into(),
            nonce: nonce(),
        }
    }

    #[test]
    fn sealed_messages_open_only_with_the_key_and_unchanged() {
        let key = [7u8; 32];
        let (text, sig) = msg().seal(&key);
        assert_eq!(
            GrantMessage::open(&text, &sig, &key).unwrap(),
            msg_with(&text)
        );
        assert_eq!(
            GrantMessage::open(&text, &sig, &[8u8; 32]),
            Err(Rejected::Signature)
        );
        let forged = text.replace("tcp/22", "tcp/23");
        assert_eq!(
            GrantMessage::open(&forged, &sig, &key),
            Err(Rejected::Signature)
        );
        assert!(GrantMessage::open(&text, "!!", &key).is_err());
        let big = "x".repeat(MAX_MESSAGE + 1);
        assert_eq!(
            GrantMessage::open(&big, &sig, &key),
            Err(Rejected::Malformed)
        );
        // Signed but not a valid message: still refused.
        let odd = r#"{"v":1,"origin":"a","source":"1.2.3.4","ports":["icmp/1"],"deadline_ms":1,"stanza":"","nonce":""}"#;
        let sig = {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.encode(mac(&key, odd).finalize().into_bytes())
        };
        assert_eq!(
            GrantMessage::open(odd, &sig, &key),
            Err(Rejected::Malformed)
        );
    }

    fn msg_with(text: &str) -> GrantMessage {
        serde_json::from_str(text).unwrap()
    }
}
