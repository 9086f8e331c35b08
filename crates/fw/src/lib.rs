//! postern-fw: the firewall side. A [`Grant`] is a value (source address, protocol,
//! port, timeout); a [`Firewall`] backend turns it into kernel state.
//!
//! ```text
//!  Grant { 198.18.1.2, tcp, 22, 30 s } ──► nftables: add element inet postern allow4
//!                                             { 198.18.1.2 . tcp . 22 timeout 30s }
//! ```
//!
//! The nftables backend keeps grants in named sets with per-element timeouts, so the
//! kernel closes access on time even if the daemon is gone; the iptables backend does the
//! same with ipset entries, the firewalld backend with rich rules that firewalld removes on
//! time ([`firewalld`]). This crate does not decide anything: what to open is the daemon's
//! business.

#![forbid(unsafe_code)]

pub mod firewalld;
pub mod iptables;
pub mod memory;
pub mod netlink;
pub mod nftables;

use core::fmt;
use std::net::IpAddr;
use std::time::Duration;

pub use postern_proto::Protocol;

/// One opening: `source` may reach `proto/port` for `timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Grant {
    /// Address allowed in.
    pub source: IpAddr,
    /// Protocol.
    pub proto: Protocol,
    /// Destination port (with NAT: the port the source connects to on this host).
    pub port: u16,
    /// How long it stays open.
    pub timeout: Duration,
    /// NAT access: where connections to `port` are sent instead.
    pub nat: Option<Nat>,
}

/// A NAT opening (fwknop's NAT access messages): the source's connections to the
/// grant's port are translated (DNAT) to `to:to_port`.
///
/// ```text
///  source ─► this host:port ──DNAT──► to:to_port      (forwarded, or local with `local`)
///            [FORWARD_ALL: every port ──DNAT──► to]    [DISABLE_DNAT: no DNAT, routed]
///  forwarded connections leave with source `snat` (SNAT address or MASQUERADE), if any
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Nat {
    /// The address connections are sent to.
    pub to: IpAddr,
    /// The port there.
    pub to_port: u16,
    /// Local NAT (`--nat-local`): `to` is this host, reached through its input path;
    /// otherwise `to` is behind this gateway and the forward path is opened.
    pub local: bool,
    /// Forwarded NAT only (`ENABLE_IPT_SNAT`): the source address the forwarded
    /// connections leave with; `None` leaves it as it is.
    pub snat: Option<Snat>,
    /// Forwarded NAT only (`FORWARD_ALL`): every protocol and port from the source is
    /// forwarded (and, with `dnat`, translated to `to` keeping its port), not only the
    /// grant's port.
    pub all: bool,
    /// Whether destinations are translated (`false` with `DISABLE_DNAT`: the source
    /// reaches `to` by routing through this host, and only the forward path is opened).
    pub dnat: bool,
}

impl Nat {
    /// A plain DNAT opening (no SNAT, one port, DNAT on).
    pub fn to(to: IpAddr, to_port: u16, local: bool) -> Nat {
        Nat {
            to,
            to_port,
            local,
            snat: None,
            all: false,
            dnat: true,
        }
    }

    /// What it adds to a plain DNAT, for logs: `, SNAT to 198.18.9.1, every port, no DNAT`.
    pub fn extras(&self) -> String {
        let mut s = String::new();
        match self.snat {
            Some(Snat::To(a)) => s.push_str(&format!(", SNAT to {a}")),
            Some(Snat::Masquerade) => s.push_str(", MASQUERADE"),
            None => {}
        }
        if self.all {
            s.push_str(", every protocol and port (FORWARD_ALL)");
        }
        if !self.dnat {
            s.push_str(", no DNAT (DISABLE_DNAT)");
        }
        s
    }
}

/// How forwarded NAT connections are source-translated (`ENABLE_IPT_SNAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Snat {
    /// SNAT to this address (`SNAT_TRANSLATE_IP`, or a stanza's `FORCE_SNAT`).
    To(IpAddr),
    /// MASQUERADE: the address of the interface the connection leaves by (no
    /// `SNAT_TRANSLATE_IP`, or a stanza's `FORCE_MASQUERADE`).
    Masquerade,
}

impl fmt::Display for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} -> {}/{} for {}s",
            self.source,
            self.proto.name(),
            self.port,
            self.timeout.as_secs()
        )?;
        if let Some(n) = &self.nat {
            write!(f, " (NAT to {}:{}{})", n.to, n.to_port, n.extras())?;
        }
        Ok(())
    }
}

/// Why a firewall change failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The firewall tool could not be run (missing binary, no permission).
    Spawn(String),
    /// The firewall refused the change; the text is its own message.
    Refused(String),
    /// The configuration names something that does not exist or cannot be used.
    Config(String),
    /// The firewall service does not answer (firewalld not running, no system bus);
    /// nothing was changed. The text names the service and says why.
    Unavailable(String),
    /// Part of the base posternd installed is gone from the kernel (found by
    /// [`Firewall::intact`]); the text says which part.
    Missing(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Spawn(s) => write!(f, "cannot run the firewall tool: {s}"),
            Error::Refused(s) => write!(f, "the firewall refused the change: {s}"),
            Error::Config(s) => write!(f, "firewall configuration: {s}"),
            Error::Unavailable(s) => write!(f, "{s}"),
            Error::Missing(s) => write!(f, "{s}"),
        }
    }
}

impl std::error::Error for Error {}

/// One opening as the kernel holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    /// Address allowed in.
    pub source: IpAddr,
    /// Protocol.
    pub proto: Protocol,
    /// Destination port.
    pub port: u16,
    /// Time left, as the kernel counts it.
    pub left: Duration,
}

/// A firewall backend. Every backend keeps its openings where the kernel expires them
/// by itself (nftables set elements, ipset entries with timeouts; firewalld rich rules
/// with timeouts, which firewalld removes), so access closes on time even if posternd is
/// gone.
pub trait Firewall: Send {
    /// Install the base (tables, sets, chains, jump rules). With `flush`, existing
    /// grants are removed. Installing it again repairs it (and keeps grants otherwise).
    fn setup(&mut self, flush: bool) -> Result<(), Error>;
    /// Open (or refresh) these grants, all or nothing.
    fn apply(&mut self, grants: &[Grant]) -> Result<(), Error>;
    /// Close these openings now (their timeouts are ignored).
    fn revoke(&mut self, grants: &[Grant]) -> Result<(), Error>;
    /// What the kernel holds now.
    fn list(&mut self) -> Result<Vec<Held>, Error>;
    /// Whether the base this backend installed is still in the kernel; an error says
    /// what is missing (an `nft flush ruleset`, an `iptables -F`, a firewalld reload take
    /// it away). Cheap enough to be asked every second.
    fn intact(&mut self) -> Result<(), Error> {
        self.list().map(|_| ())
    }
    /// At exit with `FLUSH_*_AT_EXIT`: remove what this backend installed; a backend
    /// whose base holds the host's default-drop policy keeps it (only the grants go),
    /// so the host stays closed.
    fn shutdown(&mut self) -> Result<(), Error>;
    /// A short description for logs and status.
    fn describe(&self) -> String;
    /// Whether this backend can open NAT grants (checked at `--check-config`).
    fn supports_nat(&self) -> bool {
        false
    }
    /// Whether this backend, as configured, can do `f` (checked at `--check-config`).
    fn supports(&self, f: Feature) -> Support {
        match f {
            Feature::Nat if self.supports_nat() => Support::Yes,
            Feature::Output => Support::NoEffect("this backend adds no output rules".into()),
            _ => Support::No("this backend cannot do it".into()),
        }
    }
    /// Remove what is past its deadline where the kernel cannot expire it by itself
    /// (plain iptables rules, when ipset is unavailable); `now` is Unix time. Called
    /// about every second; the number of rules removed. Backends whose openings expire in
    /// the kernel do nothing.
    fn expire(&mut self, now: u64) -> Result<usize, Error> {
        let _ = now;
        Ok(0)
    }
}

/// A kind of opening that a backend may or may not be able to make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Feature {
    /// NAT access (DNAT, forwarding).
    Nat,
    /// Source translation of forwarded NAT connections (`ENABLE_IPT_SNAT`).
    Snat,
    /// Accepting the replies of openings in the output path (`ENABLE_IPT_OUTPUT`).
    Output,
}

/// Whether a backend can do a [`Feature`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Support {
    /// Yes.
    Yes,
    /// It is accepted but changes nothing on this backend; the text says why.
    NoEffect(String),
    /// It cannot; the text says why.
    No(String),
}

/// Which backend, with its settings (from fwknopd.conf's `FIREWALL_TYPE` and the
/// backend's own directives).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Config {
    /// nftables sets with per-element timeouts.
    Nftables(nftables::NftConfig),
    /// iptables/ip6tables chains in fwknop's layout, openings in ipset sets with timeouts.
    Iptables(Box<iptables::IptConfig>),
    /// firewalld over D-Bus: rich rules with timeouts in one zone.
    Firewalld(firewalld::FirewalldConfig),
}

/// Build the backend a configuration names (touches nothing yet).
pub fn open(c: &Config) -> Result<Box<dyn Firewall>, Error> {
    Ok(match c {
        Config::Nftables(n) => Box::new(nftables::Nftables::new(n.clone())?),
        Config::Iptables(i) => Box::new(iptables::Iptables::new((**i).clone())?),
        Config::Firewalld(c) => Box::new(firewalld::Firewalld::new(c.clone())?),
    })
}
