//! Stage 0: intake. One [`Source`] trait over the AF_PACKET sockets and the UDP socket,
//! one reader loop per source ([`start`]), each handing every datagram to a sink as
//! soon as `recv` returns (no queue, no thread hand-off per packet). Sockets are opened
//! (which needs CAP_NET_RAW) before privileges are dropped and read afterwards.
//!
//! ```text
//!  PacketSocket (per interface) ─┐
//!  UdpIntake ────────────────────┴─► reader thread ─► sink(Datagram)
//!  TcpServer (ENABLE_TCP_SERVER) ──► accept thread: accept, close (no byte read)
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use postern_capture::afpacket::PacketSocket;
use postern_capture::filter::Filter;
use postern_capture::tcp::TcpServer;
use postern_capture::udp::UdpIntake;
use postern_capture::Datagram;

use crate::config::Config;
use crate::log;

/// Receive buffer asked for each capture socket: a flood queues in the kernel for a
/// moment instead of being dropped while the reader is briefly descheduled.
pub const RECEIVE_BUFFER: usize = 8 << 20;

/// A socket SPA packets come from.
pub trait Source: Send + Sync {
    /// The next datagram (blocks).
    fn recv(&self, buf: &mut [u8]) -> std::io::Result<Datagram>;
    /// Datagrams the kernel dropped since the last call (AF_PACKET resets its counter
    /// when read; the UDP socket reports a running total, turned into a delta here).
    fn drops(&self) -> u64;
    /// For log lines.
    fn name(&self) -> String;
}

impl Source for PacketSocket {
    fn recv(&self, buf: &mut [u8]) -> std::io::Result<Datagram> {
        PacketSocket::recv(self, buf)
    }
    fn drops(&self) -> u64 {
        self.stats().map_or(0, |s| u64::from(s.drops))
    }
    fn name(&self) -> String {
        format!("capture on {}", self.iface)
    }
}

/// The UDP socket with its last drop total.
struct Udp {
    socket: UdpIntake,
    seen: AtomicU64,
}

impl Source for Udp {
    fn recv(&self, buf: &mut [u8]) -> std::io::Result<Datagram> {
        self.socket.recv(buf)
    }
    fn drops(&self) -> u64 {
        let total = self.socket.drops();
        total.saturating_sub(self.seen.swap(total, Ordering::Relaxed))
    }
    fn name(&self) -> String {
        "UDP intake".into()
    }
}

/// The capture sockets, open but not yet read.
pub struct Intake {
    /// What is read, for the log and status.
    pub desc: String,
    sources: Vec<Arc<dyn Source>>,
    tcp: Option<TcpServer>,
}

/// The capture filter: `-P`/`--pcap-filter` if given, else `udp port <spa_port>`, with
/// `or tcp dst port <TCPSERV_PORT>` when the TCP server is on (what AF_PACKET attaches
/// in the kernel and what a pcap file is read through).
pub fn filter(config: &Config) -> Filter {
    let s = &config.server;
    if let Some(f) = &s.pcap_filter {
        return f.clone();
    }
    match s.tcp_server {
        Some(t) => postern_capture::filter::compile(&format!(
            "udp port {} or tcp dst port {t}",
            s.spa_port.max(1)
        ))
        .unwrap_or_else(|_| Filter::udp_port(s.spa_port)),
        None => Filter::udp_port(s.spa_port),
    }
}

/// What the configuration's intake is, in words (computed the same way by both parts).
pub fn describe(config: &Config) -> String {
    let port = config.server.spa_port;
    let mut d = if config.server.udp_server {
        format!("UDP socket on port {port}")
    } else {
        format!(
            "AF_PACKET on {} ({})",
            config.server.interfaces.join(","),
            filter(config)
        )
    };
    if let Some(t) = config.server.tcp_server {
        d.push_str(&format!(", TCP server on port {t}"));
    }
    d
}

/// Open the capture sockets the configuration asks for.
pub fn open(config: &Config) -> std::io::Result<Intake> {
    let port = config.server.spa_port;
    let context = |what: String| {
        move |e: std::io::Error| std::io::Error::new(e.kind(), format!("{what}: {e}"))
    };
    let mut sources: Vec<Arc<dyn Source>> = Vec::new();
    if config.server.udp_server {
        let socket =
            UdpIntake::bind(port).map_err(context(format!("cannot bind UDP port {port}")))?;
        if let Err(e) = socket.set_receive_buffer(RECEIVE_BUFFER) {
            log::warn(&format!(
                "UDP intake: cannot enlarge the receive buffer: {e}"
            ));
        }
        sources.push(Arc::new(Udp {
            socket,
            seen: AtomicU64::new(0),
        }));
    } else {
        let filter = filter(config);
        for iface in &config.server.interfaces {
            let s = PacketSocket::open_filtered(iface, &filter).map_err(context(format!(
                "cannot capture on interface '{iface}' (AF_PACKET needs CAP_NET_RAW)"
            )))?;
            if let Err(e) = s.set_receive_buffer(RECEIVE_BUFFER) {
                log::warn(&format!(
                    "capture on {iface}: cannot enlarge the receive buffer: {e}"
                ));
            }
            sources.push(Arc::new(s));
        }
    }
    let tcp = match config.server.tcp_server {
        Some(t) => Some(TcpServer::bind(t).map_err(context(format!(
            "cannot listen on TCP port {t} (ENABLE_TCP_SERVER)"
        )))?),
        None => None,
    };
    Ok(Intake {
        desc: describe(config),
        sources,
        tcp,
    })
}

/// What a reader thread does with each datagram.
pub type Sink = Arc<dyn Fn(Datagram) + Send + Sync>;

/// The sources being read, kept for their kernel drop counters.
#[derive(Default, Clone)]
pub struct Reading {
    sources: Vec<Arc<dyn Source>>,
}

impl Reading {
    /// Datagrams the kernel dropped since the last call, over every source.
    pub fn drops(&self) -> u64 {
        self.sources.iter().map(|s| s.drops()).sum()
    }
}

/// Start one reader thread per source handing datagrams to `sink`.
pub fn start(intake: Intake, sink: &Sink) -> Reading {
    if let Some(server) = intake.tcp {
        std::thread::spawn(move || loop {
            if let Err(e) = server.accept_and_close() {
                // Out of descriptors or memory, or the peer left before the accept.
                log::warn(&format!("TCP server on port {}: {e}", server.port()));
                std::thread::sleep(Duration::from_millis(100));
            }
        });
    }
    for s in &intake.sources {
        let (s, sink) = (s.clone(), sink.clone());
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            loop {
                match s.recv(&mut buf) {
                    Ok(d) => sink(d),
                    Err(e) => {
                        log::error(&format!("{}: {e}", s.name()));
                        std::thread::sleep(Duration::from_secs(1));
                    }
                }
            }
        });
    }
    Reading {
        sources: intake.sources,
    }
}
