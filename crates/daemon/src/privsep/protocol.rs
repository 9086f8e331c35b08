//! The line protocol between the worker and the privileged part: one JSON object per
//! line, worker to parent only, at most [`MAX_LINE`] bytes a line.
//!
//! ```text
//!  worker ──► {"t":"ready","landlock":"enforced","seccomp":"enforced"}      once
//!         ──► {"t":"candidate","hint":0,"src":..,"dst":..,"payload":".."}  per packet
//!                                                   that passed HMAC for stanza `hint`
//!         ──► {"t":"candidate",...,"refused":true}   refused there (≤ 1 per source / 10 s)
//!         ──► {"t":"stats","examined":..,"dropped":..,"refused":{"hmac":3}}  ≤ 10/s
//! ```
//!
//! Nothing the worker says is believed: a candidate is raw bytes that the privileged
//! part runs through the whole pipeline again; counters are bounded numbers with
//! labels from a closed set; the sandbox states are a closed enum. A line that is too
//! long, is not one of these messages, or names an unknown label is a protocol
//! violation: the worker is killed and a new one started. The privileged part never
//! writes to the worker, so a worker that stops reading cannot block it.

use std::collections::BTreeMap;
use std::io::{self, BufRead};
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::daemon::Counters;

/// The largest payload a candidate may carry: an HTTP request with an SPA packet of
/// fwknop's maximum size (the worker forwards nothing longer).
pub const MAX_PAYLOAD: usize = crate::pipeline::decode::MAX_HTTP_REQUEST;

/// The longest line accepted from the worker: a candidate whose payload is
/// [`MAX_PAYLOAD`] bytes that JSON escapes one by one (`\u0001`, six bytes each), with
/// room for the other fields.
pub const MAX_LINE: usize = 6 * MAX_PAYLOAD + 1024;

/// Whether a sandbox layer is in force in the worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sandbox {
    /// Fully enforced.
    Enforced,
    /// Enforced with what the kernel supports (older Landlock ABI).
    Partial,
    /// The kernel does not offer it.
    NotAvailable,
}

impl Sandbox {
    /// As shown in `posternd status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Sandbox::Enforced => "enforced",
            Sandbox::Partial => "partially enforced",
            Sandbox::NotAvailable => "not available",
        }
    }
}

/// A datagram that passed HMAC in the worker, as received: the privileged part decodes,
/// authenticates, decrypts and authorizes it again itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Candidate {
    /// The stanza (index in file order) whose HMAC key matched in the worker.
    pub hint: u32,
    /// Source address and port.
    pub src: SocketAddr,
    /// Destination address and port (unspecified on the UDP-socket intake).
    pub dst: SocketAddr,
    /// The IP protocol it came over (17 UDP, 6 TCP, 1 ICMP, 58 ICMPv6).
    #[serde(default = "udp")]
    pub proto: u8,
    /// Wall-clock second the worker received it (informational: the privileged part
    /// uses its own clock).
    pub received: u64,
    /// The UDP payload, as received (base64 text for any genuine packet).
    pub payload: String,
    /// The worker refused it before authentication (not SPA, HMAC mismatch, no
    /// decryption, a replay in its filter) and forwards it, at most once per source
    /// address every 10 s, only so that the privileged part can log the refusal with
    /// the address and raise a replay alert — after deciding again itself that the
    /// packet is refused. Such a candidate never opens anything.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub refused: bool,
    /// With `refused`: the refusals from this address the worker did not forward since
    /// the last one it did (only ever shown as a count in the log line).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub suppressed: u64,
}

/// A payload as the protocol carries it: byte for byte, every non-ASCII byte as `?`
/// (a genuine SPA packet, and the HTTP request around one, is ASCII; the length, which
/// [`MAX_PAYLOAD`] bounds, stays that of the bytes received).
pub fn ascii(payload: &[u8]) -> String {
    payload
        .iter()
        .map(|&b| if b.is_ascii() { char::from(b) } else { '?' })
        .collect()
}

fn udp() -> u8 {
    postern_capture::frame::UDP
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Candidate {
    /// The datagram as received (the payload's bytes as they came).
    pub fn datagram(&self) -> postern_capture::Datagram {
        postern_capture::Datagram {
            src: self.src,
            dst: self.dst,
            proto: self.proto,
            payload: self.payload.as_bytes().to_vec(),
        }
    }
}

/// Counters reported by the worker.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Datagrams examined.
    pub examined: u64,
    /// Datagrams lost before examination.
    pub dropped: u64,
    /// Refusals by reason.
    pub refused: BTreeMap<Label, u64>,
}

/// One message from the worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum FromWorker {
    /// Sockets open, privileges dropped, sandbox in place.
    Ready {
        /// Landlock.
        landlock: Sandbox,
        /// The worker's own seccomp filter.
        seccomp: Sandbox,
    },
    /// A packet to re-derive.
    Candidate(Candidate),
    /// Counters.
    Stats(Stats),
}

/// A counter label from the closed set below (a refusal reason or a junk stage).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Label(pub &'static str);

/// Every label a counter may carry.
pub const LABELS: [&str; 27] = [
    "size",
    "prefix",
    "base64",
    "classify",
    "hmac",
    "decrypt",
    "digest",
    "fields",
    "config",
    "encode",
    "replay",
    "replay_store",
    "replay_store_full",
    "no_stanza",
    "stanza_expired",
    "age",
    "before_start",
    "require_source_address",
    "username",
    "nat",
    "command_not_enabled",
    "port_restricted",
    "port_not_open",
    "bad_allow_address",
    "cycle_identity",
    "worker_mismatch",
    "other",
];

impl Label {
    /// The label for a name, `other` when it is not one of [`LABELS`].
    pub fn of(name: &str) -> Label {
        Label(LABELS.into_iter().find(|k| *k == name).unwrap_or("other"))
    }
}

impl Serialize for Label {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0)
    }
}

impl<'de> Deserialize<'de> for Label {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Label, D::Error> {
        let s = <&str>::deserialize(d)?;
        LABELS
            .into_iter()
            .find(|k| *k == s)
            .map(Label)
            .ok_or_else(|| serde::de::Error::custom("unknown counter label"))
    }
}

impl Stats {
    /// From the worker's counters.
    pub fn from_counters(c: &Counters) -> Stats {
        Stats {
            examined: c.examined,
            dropped: c.dropped,
            refused: c.refused.iter().map(|(k, n)| (Label::of(k), *n)).collect(),
        }
    }

    /// Into counters (labels are already from the closed set).
    pub fn to_counters(&self) -> Counters {
        Counters {
            examined: self.examined,
            dropped: self.dropped,
            refused: self.refused.iter().map(|(k, n)| (k.0, *n)).collect(),
            ..Counters::default()
        }
    }
}

/// Why a line from the worker was refused (the worker is then replaced).
#[derive(Debug)]
#[non_exhaustive]
pub enum Violation {
    /// A line longer than [`MAX_LINE`].
    TooLong,
    /// Not one of the messages.
    Malformed(String),
    /// A candidate payload longer than [`MAX_PAYLOAD`].
    PayloadTooLong,
    /// Reading the pipe failed.
    Io(io::Error),
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Violation::TooLong => write!(f, "a line longer than {MAX_LINE} bytes"),
            Violation::Malformed(e) => write!(f, "an unreadable message ({e})"),
            Violation::PayloadTooLong => write!(f, "a payload longer than {MAX_PAYLOAD} bytes"),
            Violation::Io(e) => write!(f, "a read error ({e})"),
        }
    }
}

/// One line as sent.
pub fn encode(m: &FromWorker) -> String {
    let mut s = serde_json::to_string(m).unwrap_or_default();
    s.push('\n');
    s
}

/// Parse one line (without its newline).
pub fn decode(line: &[u8]) -> Result<FromWorker, Violation> {
    if line.len() > MAX_LINE {
        return Err(Violation::TooLong);
    }
    let m: FromWorker =
        serde_json::from_slice(line).map_err(|e| Violation::Malformed(e.to_string()))?;
    if let FromWorker::Candidate(c) = &m {
        if c.payload.len() > MAX_PAYLOAD {
            return Err(Violation::PayloadTooLong);
        }
    }
    Ok(m)
}

/// Read the next line into `buf` (cleared first), never holding more than
/// [`MAX_LINE`] bytes. `Ok(false)` at end of input.
pub fn read_line(r: &mut impl BufRead, buf: &mut Vec<u8>) -> Result<bool, Violation> {
    buf.clear();
    loop {
        let chunk = match r.fill_buf() {
            Ok(c) => c,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Violation::Io(e)),
        };
        if chunk.is_empty() {
            return Ok(!buf.is_empty());
        }
        let (take, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (i, true),
            None => (chunk.len(), false),
        };
        if buf.len() + take > MAX_LINE {
            return Err(Violation::TooLong);
        }
        buf.extend_from_slice(&chunk[..take]);
        r.consume(take + usize::from(done));
        if done {
            return Ok(true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        let msgs = [
            FromWorker::Ready {
                landlock: Sandbox::Enforced,
                seccomp: Sandbox::NotAvailable,
            },
            FromWorker::Candidate(Candidate {
                hint: 2,
                src: "198.18.1.2:4000".parse().unwrap(),
                dst: "[2001:db8::1]:62201".parse().unwrap(),
                proto: 6,
                received: 7,
                payload: "abc".into(),
                refused: false,
                suppressed: 0,
            }),
            FromWorker::Stats(Stats {
                examined: 5,
                dropped: 1,
                refused: [(Label::of("hmac"), 4)].into_iter().collect(),
            }),
        ];
        for m in msgs {
            let line = encode(&m);
            assert!(line.ends_with('\n') && line.len() < MAX_LINE);
            assert_eq!(decode(line.trim_end().as_bytes()).unwrap(), m);
        }
    }

    #[test]
    fn hostile_lines_are_violations() {
        for line in [
            &b""[..],
            b"{}",
            b"null",
            br#"{"t":"decided","key":"x"}"#,
            br#"{"t":"stats","examined":1,"dropped":0,"refused":{"granted ok":1}}"#,
            br#"{"t":"ready","landlock":"yes please","seccomp":"enforced"}"#,
            br#"{"t":"candidate","hint":0,"src":"1.2.3.4","dst":"1.2.3.4:1","received":0,"payload":""}"#,
            br#"{"t":"stats","examined":-1,"dropped":0,"refused":{}}"#,
        ] {
            assert!(decode(line).is_err(), "{}", String::from_utf8_lossy(line));
        }
        let big = format!(
            r#"{{"t":"candidate","hint":0,"src":"1.2.3.4:1","dst":"1.2.3.4:2","received":0,"payload":"{}"}}"#,
            "A".repeat(MAX_PAYLOAD + 1)
        );
        assert!(matches!(
            decode(big.as_bytes()),
            Err(Violation::PayloadTooLong)
        ));
    }

    /// The worst payload the worker may forward (every byte escaped by JSON, or not
    /// ASCII) makes a line the privileged part takes.
    #[test]
    fn the_largest_candidate_fits_a_line() {
        for byte in [1u8, 0xff, b'"', b'A'] {
            let c = Candidate {
                hint: u32::MAX,
                src: "[2001:db8::1:2:3:4]:65535".parse().unwrap(),
                dst: "[2001:db8::1:2:3:5]:65535".parse().unwrap(),
                proto: 58,
                received: u64::MAX,
                payload: ascii(&vec![byte; MAX_PAYLOAD]),
                refused: true,
                suppressed: u64::MAX,
            };
            let line = encode(&FromWorker::Candidate(c.clone()));
            let m = decode(line.trim_end().as_bytes()).unwrap();
            assert_eq!(m, FromWorker::Candidate(c), "byte {byte:#x}");
        }
    }

    #[test]
    fn lines_are_bounded() {
        let mut buf = Vec::new();
        let text = format!("short\n{}\nnext\n", "x".repeat(MAX_LINE + 1));
        let mut r = io::BufReader::with_capacity(64, text.as_bytes());
        assert!(read_line(&mut r, &mut buf).unwrap());
        assert_eq!(buf, b"short");
        assert!(matches!(
            read_line(&mut r, &mut buf),
            Err(Violation::TooLong)
        ));
        assert!(buf.len() <= MAX_LINE);
        // An endless line without a newline never grows past the limit either.
        let mut endless = io::BufReader::new(io::repeat(b'a'));
        assert!(matches!(
            read_line(&mut endless, &mut buf),
            Err(Violation::TooLong)
        ));
        let mut empty = io::BufReader::new(&b""[..]);
        assert!(!read_line(&mut empty, &mut buf).unwrap());
    }
}
