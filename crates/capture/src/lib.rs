//! postern-capture: getting SPA payloads off the wire.
//!
//! ```text
//!  AF_PACKET socket (+ kernel BPF: UDP to the SPA port) ─┐
//!  UDP socket on the SPA port ───────────────────────────┼─► Datagram { src, dst, payload }
//!  pcap file (offline) ──────────────────────────────────┘
//! ```
//!
//! The AF_PACKET path sees packets before the firewall drops them, without a listening
//! socket and without libpcap. The frame parser is pure and total (fuzzed); the only
//! `unsafe` code of the workspace is the few syscalls in [`afpacket`], behind a safe API.
//! Nothing here decodes SPA: payloads are handed on as bytes.

#[allow(unsafe_code)]
pub mod afpacket;
pub mod frame;
pub mod pcapfile;
pub mod udp;

pub use frame::Datagram;
