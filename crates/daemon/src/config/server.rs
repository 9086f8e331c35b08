//! `fwknopd.conf`: server settings, fwknop's directives plus posternd's own
//! (`FIREWALL_TYPE`, `NFT_TABLE`, `NFT_CHAIN`, `NFT_DEFAULT_DROP`, `NFT_EXE`, `NFT_GRANTS`,
//! `FIREWD_ZONE`, `CONTROL_SOCKET`), documented in `doc/configuration.md`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use postern_fw::nftables::{parse_table, Family};

use super::{err, lines, read, ConfigError, ConfigErrors, Line, Note};

/// Server settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// The file they came from.
    pub file: PathBuf,
    /// Capture interfaces (`any` for all).
    pub interfaces: Vec<String>,
    /// The SPA port (from `PCAP_FILTER udp port N`, or `UDPSERV_PORT` in UDP mode).
    pub spa_port: u16,
    /// `PCAP_FILTER` (or `-P`) compiled; `None`: `udp port <spa_port>`. Read it through
    /// `pipeline::capture::filter`.
    pub pcap_filter: Option<postern_capture::filter::Filter>,
    /// Use a UDP socket instead of AF_PACKET.
    pub udp_server: bool,
    /// `ENABLE_TCP_SERVER` with `TCPSERV_PORT`: the port of the TCP listener that only
    /// accepts (and closes) connections, so that `fwknop -P tcp` can send its packet;
    /// the SPA data itself is still captured.
    pub tcp_server: Option<u16>,
    /// `ENABLE_SPA_OVER_HTTP`: also take SPA data carried in an HTTP GET request.
    pub spa_over_http: bool,
    /// `ENABLE_X_FORWARDED_FOR`: with HTTP, the source of a `-s` (0.0.0.0) request is its
    /// `X-Forwarded-For` address.
    pub x_forwarded_for: bool,
    /// `SUDO_EXE`: sudo, for stanzas with `ENABLE_CMD_SUDO_EXEC`.
    pub sudo_exe: PathBuf,
    /// Read packets from this capture file instead.
    pub pcap_file: Option<PathBuf>,
    /// `ENABLE_SPA_PACKET_AGING` if set (default: on, off with a pcap file).
    pub packet_aging: Option<bool>,
    /// `MAX_SPA_PACKET_AGE`, seconds.
    pub max_packet_age: u64,
    /// `ENABLE_DIGEST_PERSISTENCE`.
    pub digest_persistence: bool,
    /// `FWKNOP_RUN_DIR`.
    pub run_dir: PathBuf,
    /// `DIGEST_FILE`: the replay store.
    pub digest_file: PathBuf,
    /// Whether `DIGEST_FILE` was set explicitly (else `-r` moves it too).
    pub digest_file_set: bool,
    /// `FWKNOP_PID_FILE`.
    pub pid_file: PathBuf,
    /// `CONTROL_SOCKET`: the status/stop/reload socket.
    pub control_socket: PathBuf,
    /// `ACCESS_FILE`.
    pub access_file: PathBuf,
    /// `ACCESS_FOLDER`.
    pub access_folder: Option<PathBuf>,
    /// `FLUSH_IPT_AT_INIT`: remove existing grants at start.
    pub flush_at_init: bool,
    /// `FLUSH_IPT_AT_EXIT`: remove grants at exit.
    pub flush_at_exit: bool,
    /// `NFT_TABLE`.
    pub nft_table: (Family, String),
    /// `NFT_CHAIN`: use the admin's existing input chain.
    pub nft_chain: Option<String>,
    /// `NFT_DEFAULT_DROP`: posternd's own table holds a default-drop input policy.
    pub nft_default_drop: bool,
    /// `NFT_EXE`.
    pub nft_exe: PathBuf,
    /// `NFT_GRANTS`: grants over a persistent netlink socket (`netlink`, default) or by
    /// running nft for each change (`nft`).
    pub nft_netlink: bool,
    /// `CMD_EXEC_TIMEOUT`, seconds.
    pub cmd_exec_timeout: u64,
    /// `MAX_REPLAY_ENTRIES`: cap of the replay store; when full, new packets are refused.
    pub max_replay_entries: usize,
    /// `PRIVILEGE_SEPARATION`: parse packets in an unprivileged worker (when root).
    pub privilege_separation: bool,
    /// `WORKER_USER`: the worker's user (default `postern`, else `nobody`).
    pub worker_user: Option<String>,
    /// `VERBOSE`.
    pub verbose: bool,
    /// `METRICS_TEXTFILE`: where the Prometheus metrics are written (None: nowhere).
    pub metrics_textfile: Option<PathBuf>,
    /// `METRICS_LISTEN`: a loopback address that serves the metrics.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// `SYSLOG_IDENTITY`: the name in log lines.
    pub syslog_identity: String,
    /// `SYSLOG_FACILITY`, as its number.
    pub syslog_facility: u8,
    /// The fleet (`FLEET_REDIS_URL` and friends), when this gateway is part of one.
    pub fleet: Option<FleetConfig>,
    /// `FIREWALL_TYPE` as written (`None`: look at the host, see [`crate::firewall`]).
    pub firewall_type: Option<FirewallType>,
    /// Whether an `NFT_*` layout directive was written (an nftables choice).
    pub nft_set: bool,
    /// The iptables backend's settings (`IPT_INPUT_ACCESS`, `FIREWALL_EXE`).
    pub ipt: postern_fw::iptables::IptConfig,
    /// `FIREWD_ZONE`: the firewalld zone that gets the rich rules (default: firewalld's).
    pub firewd_zone: Option<String>,
    /// `ENABLE_IPT_FORWARDING`: NAT access to hosts behind this gateway (types 2, 4).
    pub nat_forwarding: bool,
    /// `ENABLE_IPT_LOCAL_NAT`: NAT access to this host's own ports (types 5, 6).
    pub nat_local: bool,
    /// `ALERT_*`: access alerts (see [`crate::alert`]).
    pub alerts: crate::alert::AlertConfig,
}

/// `FIREWALL_TYPE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirewallType {
    /// `nftables`.
    Nftables,
    /// `iptables` (fwknopd's default).
    Iptables,
    /// `firewalld`: rich rules with timeouts over D-Bus.
    Firewalld,
}

/// What a gateway does when Redis cannot answer a claim in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnRedisDown {
    /// Refuse new grants (no replay can slip through another gateway).
    Closed,
    /// Go on with the local replay store alone (loudly): a packet captured on its way to
    /// this gateway could then be replayed at another one within its age window.
    Local,
}

/// The fleet settings (`FLEET_*` in fwknopd.conf, posternd's own directives).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetConfig {
    /// `FLEET_REDIS_URL`: `redis://[user@]host:port/db` or `rediss://...`.
    pub url: String,
    /// `FLEET_REDIS_CA_FILE`: the CA that signs the server's certificate (rediss).
    pub ca_file: Option<PathBuf>,
    /// `FLEET_REDIS_PASSWORD_FILE` (0600), read at load time.
    pub password: Option<postern_proto::Key>,
    /// `FLEET_KEY_BASE64`: authenticates every fleet message.
    pub key: postern_proto::Key,
    /// `FLEET_ON_REDIS_DOWN`.
    pub on_down: OnRedisDown,
    /// `FLEET_REDIS_TIMEOUT_MS`: the bound on one round trip (claims, publishing).
    pub timeout_ms: u64,
    /// `FLEET_GATEWAY_NAME`: this gateway's name in messages (default: the host name).
    pub gateway: String,
    /// `FLEET_REDIS_PREFIX`: prefix of every key posternd uses.
    pub prefix: String,
    /// `FLEET_REDIS_WAIT`: replicas that must acknowledge a claim (`WAIT`), 0 for none.
    pub wait_replicas: u64,
}

/// How posternd treats a directive.
#[derive(Clone, Copy)]
pub enum Kind {
    /// Implemented: the value is parsed and used.
    Set(fn(&mut Draft, &Line) -> Result<(), String>),
    /// Accepted with a note that it has no effect here, and why.
    NoEffect(&'static str),
    /// Accepted when `N`; refused when `Y`, and why.
    RefusedWhenOn(&'static str),
    /// Refused whatever its value, and why.
    Refused(&'static str),
}

/// One `fwknopd.conf` directive: the single definition that drives parsing, `-D`,
/// `--check-config` and the reference table in `doc/configuration.md`.
#[derive(Clone, Copy)]
pub struct Directive {
    /// The name (a name ending in `*` covers every directive with that prefix).
    pub name: &'static str,
    /// Other spellings with the same meaning.
    pub aliases: &'static [&'static str],
    /// The default, as text (empty: none).
    pub default: &'static str,
    /// What it does in posternd.
    pub doc: &'static str,
    /// How it is treated.
    pub kind: Kind,
    /// Its effective value, for `-D`.
    pub show: Option<fn(&ServerConfig) -> String>,
}

const fn set(
    name: &'static str,
    default: &'static str,
    doc: &'static str,
    f: fn(&mut Draft, &Line) -> Result<(), String>,
) -> Directive {
    Directive {
        name,
        aliases: &[],
        default,
        doc,
        kind: Kind::Set(f),
        show: None,
    }
}

const fn no_effect(name: &'static str, why: &'static str) -> Directive {
    Directive {
        name,
        aliases: &[],
        default: "",
        doc: why,
        kind: Kind::NoEffect(why),
        show: None,
    }
}

const fn refused_when_on(name: &'static str, why: &'static str) -> Directive {
    Directive {
        name,
        aliases: &[],
        default: "N",
        doc: why,
        kind: Kind::RefusedWhenOn(why),
        show: None,
    }
}

impl Directive {
    const fn aka(mut self, aliases: &'static [&'static str]) -> Self {
        self.aliases = aliases;
        self
    }

    const fn show(mut self, f: fn(&ServerConfig) -> String) -> Self {
        self.show = Some(f);
        self
    }

    /// Whether `name` is this directive.
    pub fn is(&self, name: &str) -> bool {
        match self.name.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => self.name == name || self.aliases.contains(&name),
        }
    }

    /// How it is treated, in a word (for the reference table).
    pub fn status(&self) -> &'static str {
        match self.kind {
            Kind::Set(_) => "implemented",
            Kind::NoEffect(_) => "no effect",
            Kind::RefusedWhenOn(_) => "refused when Y",
            Kind::Refused(_) => "refused",
        }
    }
}

/// The settings while `fwknopd.conf` is read.
pub struct Draft {
    c: ServerConfig,
    fleet: FleetDraft,
    /// Path directives as written (they may name each other).
    paths: HashMap<&'static str, String>,
    udpserv_port: Option<u16>,
    tcp_server: bool,
    tcpserv_port: Option<u16>,
    notes: Vec<Note>,
}

impl Draft {
    fn note(&mut self, l: &Line, text: String) {
        self.notes.push(Note {
            file: self.c.file.clone(),
            line: l.number,
            text,
        });
    }

    fn path(&mut self, name: &'static str, l: &Line) -> Result<(), String> {
        if !l.value.starts_with('/') {
            return Err(format!(
                "'{}' is not an absolute path (fwknopd needs one too)",
                l.value
            ));
        }
        self.paths.insert(name, l.value.clone());
        Ok(())
    }
}

fn yes(l: &Line) -> Result<bool, String> {
    super::yes_no(&l.value)
}

fn num(l: &Line, min: u64, max: u64) -> Result<u64, String> {
    super::in_range(&l.value, min, max)
}

fn yn(b: bool) -> String {
    if b { "Y" } else { "N" }.into()
}

fn access(l: &Line) -> Result<postern_fw::iptables::Access, String> {
    postern_fw::iptables::Access::parse(&l.value)
}

/// An `ALERT_*` directive, parsed by [`crate::alert`].
fn alert(d: &mut Draft, l: &Line) -> Result<(), String> {
    crate::alert::directive(&mut d.c.alerts, &l.name, &l.value)
        .unwrap_or_else(|| Err(format!("{} is not an alert directive", l.name)))
}

/// Another firewall's directive: no effect, and why.
const OTHER_FIREWALL: &str =
    "another firewall's setting (posternd's backends are nftables, iptables and firewalld)";
const NO_PCAP_LOOP: &str = "posternd has no pcap polling loop";
const NO_NFQ: &str = "NFQUEUE capture is not implemented; posternd's AF_PACKET capture sees dropped packets without it";

/// Every `fwknopd.conf` directive posternd knows, fwknop 2.6's and its own.
pub static DIRECTIVES: &[Directive] = &[
    // Intake.
    set("PCAP_INTF", "any", "capture interfaces, comma or space separated; `any` = all (fwknopd: `eth0`). `-i` overrides", |d, l| {
        d.c.interfaces = l.value.split([',', ' ']).filter(|s| !s.is_empty()).map(str::to_owned).collect();
        if d.c.interfaces.is_empty() {
            return Err("no interface given".into());
        }
        Ok(())
    }).show(|c| c.interfaces.join(",")),
    set("PCAP_FILTER", "udp port 62201", "which packets are SPA candidates (`-P` overrides), compiled into posternd's own kernel BPF filter: the pcap-filter forms fwknopd users write — `udp`, `tcp`, `icmp`, `icmp6`, `[udp|tcp] [src|dst] port N`, `[udp|tcp] [src|dst] portrange A-B`, `[src|dst] host ADDR`, `[src|dst] net CIDR`, `ip`, `ip6`, with `and`, `or`, `not` and parentheses, as libpcap reads them; anything else is refused. SPA data is taken from the UDP datagrams, TCP segments and ICMP messages it admits. With the UDP-socket intake it has no effect (UDPSERV_PORT)", |d, l| {
        let f = postern_capture::filter::compile(&l.value).map_err(|e| e.to_string())?;
        if let Some(port) = f.single_udp_port() {
            d.c.spa_port = port;
        }
        d.c.pcap_filter = Some(f);
        Ok(())
    }).show(|c| c.pcap_filter.as_ref().map_or_else(|| format!("udp port {}", c.spa_port), |f| f.text().to_owned())),
    set("PCAP_FILE", "", "process a capture file and exit (`--pcap-file`)", |d, l| {
        d.c.pcap_file = Some(PathBuf::from(&l.value));
        Ok(())
    }).show(|c| c.pcap_file.as_ref().map(|p| p.display().to_string()).unwrap_or_default()),
    set("ENABLE_UDP_SERVER", "N", "receive on a UDP socket (IPv4 and IPv6) instead of AF_PACKET (`-U`)", |d, l| {
        d.c.udp_server = yes(l)?;
        Ok(())
    }).show(|c| yn(c.udp_server)),
    set("UDPSERV_PORT", "62201", "the UDP socket's port (with `ENABLE_UDP_SERVER`)", |d, l| {
        d.udpserv_port = Some(num(l, 1, 65535)? as u16);
        Ok(())
    }),
    set("PCAP_DISPATCH_COUNT", "", "checked (a number from 0 to 1000000) and unused: posternd has no pcap polling loop", |d, l| {
        num(l, 0, 1_000_000)?;
        d.note(l, format!("{} has no effect: {NO_PCAP_LOOP}", l.name));
        Ok(())
    }),
    set("PCAP_LOOP_SLEEP", "", "checked (microseconds, a number) and unused: posternd has no pcap polling loop", |d, l| {
        num(l, 0, 100_000_000)?;
        d.note(l, format!("{} has no effect: {NO_PCAP_LOOP}", l.name));
        Ok(())
    }),
    set("MAX_SNIFF_BYTES", "", "checked (a number) and unused: posternd reads whole datagrams", |d, l| {
        num(l, 1, 1_000_000)?;
        d.note(l, format!("{} has no effect: posternd reads whole datagrams", l.name));
        Ok(())
    }),
    no_effect("UDPSERV_SELECT_TIMEOUT", "posternd has no select loop"),
    no_effect("EXIT_AT_INTF_DOWN", "posternd keeps running and logs capture errors"),
    refused_when_on("ENABLE_PCAP_PROMISC", "promiscuous capture is not supported (and not needed for SPA to this host)"),
    refused_when_on("ENABLE_PCAP_ANY_DIRECTION", "posternd only processes packets sent to this host"),
    set("ENABLE_SPA_OVER_HTTP", "N", "also take SPA data sent in an HTTP request (`fwknop -P http`, or through a proxy with `-H`): `GET /DATA` or `GET http://HOST/DATA` with a `User-Agent: Fwknop` header, as fwknopd 2.6 takes it. The filter must admit the web server's TCP port (`PCAP_FILTER udp port 62201 or tcp port 80`); a web server (or proxy) must accept the connection", |d, l| {
        d.c.spa_over_http = yes(l)?;
        Ok(())
    }).show(|c| yn(c.spa_over_http)),
    set("ENABLE_X_FORWARDED_FOR", "N", "with ENABLE_SPA_OVER_HTTP: a request whose SPA packet asks for its source (`fwknop -s`, 0.0.0.0) is granted to the first address of its `X-Forwarded-For` header instead (for clients behind an HTTP proxy); anyone who can send HTTP can write that header: turn it on only behind a proxy you trust", |d, l| {
        d.c.x_forwarded_for = yes(l)?;
        Ok(())
    }).show(|c| yn(c.x_forwarded_for)),
    set("ENABLE_TCP_SERVER", "N", "listen on TCPSERV_PORT and accept (then close at once, never reading or writing) TCP connections, so that `fwknop -P tcp` can complete its handshake and send; the SPA data is still captured (the default filter then also admits `tcp dst port TCPSERV_PORT`), and a default-drop base posternd installs accepts that port. The port answers scans: use it only where UDP cannot pass", |d, l| {
        d.tcp_server = yes(l)?;
        Ok(())
    }).show(|c| yn(c.tcp_server.is_some())),
    set("TCPSERV_PORT", "62201", "the TCP server's port (with ENABLE_TCP_SERVER)", |d, l| {
        d.tcpserv_port = Some(num(l, 1, 65535)? as u16);
        Ok(())
    }).show(|c| c.tcp_server.map(|p| p.to_string()).unwrap_or_default()),
    refused_when_on("ENABLE_NFQ_CAPTURE", NO_NFQ),
    no_effect("NFQ_*", NO_NFQ),
    // Packets.
    set("ENABLE_SPA_PACKET_AGING", "Y (N with a capture file)", "refuse packets whose timestamp is more than MAX_SPA_PACKET_AGE from now", |d, l| {
        d.c.packet_aging = Some(yes(l)?);
        Ok(())
    }).show(|c| yn(c.aging())),
    set("MAX_SPA_PACKET_AGE", "120", "seconds, 1–100000", |d, l| {
        d.c.max_packet_age = num(l, 1, 100_000)?;
        Ok(())
    }).show(|c| c.max_packet_age.to_string()),
    set("ENABLE_DIGEST_PERSISTENCE", "Y", "keep the replay store on disk", |d, l| {
        d.c.digest_persistence = yes(l)?;
        Ok(())
    }).show(|c| yn(c.digest_persistence)),
    set("MAX_REPLAY_ENTRIES", "100000", "posternd: cap of the replay store; when full, new packets are refused (see *Faults, limits and the clock*)", |d, l| {
        d.c.max_replay_entries = num(l, 100, 100_000_000)? as usize;
        Ok(())
    }).show(|c| c.max_replay_entries.to_string()),
    Directive {
        name: "DIGEST_DB_FILE",
        aliases: &[],
        default: "",
        doc: "the gdbm digest store is not supported; use DIGEST_FILE",
        kind: Kind::Refused("the gdbm digest store is not supported; use DIGEST_FILE"),
        show: None,
    },
    // Files.
    set("FWKNOP_RUN_DIR", "/run/postern", "pid file and control socket (`-r`; with `-r` the replay store moves there too unless `DIGEST_FILE` is set)", |d, l| d.path("FWKNOP_RUN_DIR", l))
        .show(|c| c.run_dir.display().to_string()),
    set("FWKNOP_CONF_DIR", "directory of fwknopd.conf", "base of the default `ACCESS_FILE`", |d, l| d.path("FWKNOP_CONF_DIR", l)),
    set("DIGEST_FILE", "/var/lib/postern/digest.cache", "replay store in fwknop's `digest.cache` format (`-d`); it must survive a reboot, hence not in `/run` (fwknopd: in the run dir)", |d, l| d.path("DIGEST_FILE", l))
        .show(|c| c.digest_file.display().to_string()),
    set("FWKNOP_PID_FILE", "$FWKNOP_RUN_DIR/posternd.pid", "the pid file (`-p`)", |d, l| d.path("FWKNOP_PID_FILE", l))
        .show(|c| c.pid_file.display().to_string()),
    set("CONTROL_SOCKET", "$FWKNOP_RUN_DIR/posternd.sock", "posternd: the status/stop/reload socket (mode 0600)", |d, l| d.path("CONTROL_SOCKET", l))
        .show(|c| c.control_socket.display().to_string()),
    set("ACCESS_FILE", "$FWKNOP_CONF_DIR/access.conf", "the access stanzas (`-a`)", |d, l| d.path("ACCESS_FILE", l))
        .show(|c| c.access_file.display().to_string()),
    set("ACCESS_FOLDER", "", "adds every `*.conf` file of this folder as access stanzas", |d, l| d.path("ACCESS_FOLDER", l))
        .show(|c| c.access_folder.as_ref().map(|p| p.display().to_string()).unwrap_or_default()),
    // The firewall.
    set("FIREWALL_TYPE", "chosen from the host", "`nftables`, `iptables` or `firewalld`; unset: posternd looks at the host (see *Which backend*)", |d, l| {
        d.c.firewall_type = Some(match l.value.to_ascii_lowercase().as_str() {
            "nftables" | "nft" => FirewallType::Nftables,
            "iptables" => FirewallType::Iptables,
            "firewalld" => FirewallType::Firewalld,
            _ => return Err(format!("unknown firewall '{}' (expected iptables, nftables or firewalld)", l.value)),
        });
        Ok(())
    }).show(|c| match c.firewall_type {
        Some(FirewallType::Nftables) => "nftables".into(),
        Some(FirewallType::Iptables) => "iptables".into(),
        Some(FirewallType::Firewalld) => "firewalld".into(),
        None => "(not set: chosen from the host at start, see --check-config)".into(),
    }),
    set("FLUSH_IPT_AT_INIT", "Y", "remove existing grants at start", |d, l| {
        d.c.flush_at_init = yes(l)?;
        Ok(())
    }).aka(&["FLUSH_NFT_AT_INIT", "FLUSH_FIREWD_AT_INIT"]).show(|c| yn(c.flush_at_init)),
    set("FLUSH_IPT_AT_EXIT", "Y", "remove grants at exit (see *At exit*)", |d, l| {
        d.c.flush_at_exit = yes(l)?;
        Ok(())
    }).aka(&["FLUSH_NFT_AT_EXIT", "FLUSH_FIREWD_AT_EXIT"]).show(|c| yn(c.flush_at_exit)),
    set("FIREWALL_EXE", "iptables", "the iptables binary (`ip6tables` is found next to it)", |d, l| {
        let p = PathBuf::from(&l.value);
        let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        d.c.ipt.ip6tables = p.with_file_name(name.replacen("iptables", "ip6tables", 1));
        d.c.ipt.iptables = p;
        Ok(())
    }).show(|c| c.ipt.iptables.display().to_string()),
    set("IPT_INPUT_ACCESS", "ACCEPT, filter, INPUT, 1, FWKNOP_INPUT, 1", "iptables: where the FWKNOP_INPUT chain is jumped to, as fwknopd parses it", |d, l| {
        d.c.ipt.input = access(l)?;
        Ok(())
    }),
    set("IPT_FORWARD_ACCESS", "ACCEPT, filter, FORWARD, 1, FWKNOP_FORWARD, 1", "iptables NAT access: the FWKNOP_FORWARD chain", |d, l| {
        d.c.ipt.forward = access(l)?;
        Ok(())
    }),
    set("IPT_DNAT_ACCESS", "DNAT, nat, PREROUTING, 1, FWKNOP_PREROUTING, 1", "iptables NAT access: the FWKNOP_PREROUTING chain", |d, l| {
        d.c.ipt.dnat = access(l)?;
        Ok(())
    }),
    set("IPT_OUTPUT_ACCESS", "ACCEPT, filter, OUTPUT, 1, FWKNOP_OUTPUT, 1", "iptables with `ENABLE_IPT_OUTPUT`: the FWKNOP_OUTPUT chain", |d, l| {
        d.c.ipt.output_access = access(l)?;
        Ok(())
    }),
    set("IPT_SNAT_ACCESS", "SNAT, nat, POSTROUTING, 1, FWKNOP_POSTROUTING, 1", "iptables with `ENABLE_IPT_SNAT` and `SNAT_TRANSLATE_IP`: the FWKNOP_POSTROUTING chain (SNAT)", |d, l| {
        d.c.ipt.snat_access = access(l)?;
        Ok(())
    }),
    set("IPT_MASQUERADE_ACCESS", "MASQUERADE, nat, POSTROUTING, 1, FWKNOP_MASQUERADE, 1", "iptables with `ENABLE_IPT_SNAT`: the FWKNOP_MASQUERADE chain", |d, l| {
        d.c.ipt.masquerade_access = access(l)?;
        Ok(())
    }),
    set("ENABLE_IPT_FORWARDING", "N", "NAT access to hosts behind this gateway (`fwknop -N host,port`): DNAT plus a forward opening, expiring with the grant", |d, l| {
        d.c.nat_forwarding = yes(l)?;
        Ok(())
    }).aka(&["ENABLE_NFT_FORWARDING"]).show(|c| yn(c.nat_forwarding)),
    set("ENABLE_IPT_LOCAL_NAT", "N", "NAT access to this host's own ports (`fwknop --nat-local`)", |d, l| {
        d.c.nat_local = yes(l)?;
        Ok(())
    }).aka(&["ENABLE_NFT_LOCAL_NAT"]).show(|c| yn(c.nat_local)),
    set("ENABLE_IPT_SNAT", "N", "with `ENABLE_IPT_FORWARDING`: forwarded NAT connections leave with source `SNAT_TRANSLATE_IP` (SNAT) or, without it, the outgoing interface's address (MASQUERADE; fwknopd's `--to-ports` quirk that rewrites every source port to the grant's port is not copied); a stanza's `FORCE_SNAT`/`FORCE_MASQUERADE` override it. nftables too: maps and sets in a `postrouting` chain of posternd's table", |d, l| {
        d.c.ipt.snat = yes(l)?;
        Ok(())
    }).aka(&["ENABLE_NFT_SNAT"]).show(|c| yn(c.ipt.snat)),
    set("SNAT_TRANSLATE_IP", "", "with `ENABLE_IPT_SNAT`: the address SNAT gives forwarded NAT connections (without it: MASQUERADE)", |d, l| {
        let a: std::net::IpAddr = l.value.parse().map_err(|_| format!("'{}' is not an address", l.value))?;
        if a.is_unspecified() || a.is_multicast() {
            return Err(format!("{a} cannot be a source address"));
        }
        d.c.ipt.snat_translate = Some(a);
        Ok(())
    }).show(|c| c.ipt.snat_translate.map(|a| a.to_string()).unwrap_or_default()),
    set("ENABLE_IPT_OUTPUT", "N", "iptables: every opening also accepts its replies in FWKNOP_OUTPUT (`-d SRC --sport PORT`), for hosts whose OUTPUT policy drops; no effect on nftables and firewalld (noted by `--check-config`)", |d, l| {
        d.c.ipt.output = yes(l)?;
        Ok(())
    }).show(|c| yn(c.ipt.output)),
    set("IPT_USE_IPSET", "auto", "posternd, iptables: `auto` keeps openings in ipset sets with kernel timeouts where `ipset create` works, else as plain rules with fwknopd's `_exp_<deadline>` comment that posternd removes when due (and, at start, by their deadline); `Y` requires ipset; `N` always uses plain rules. `posternd status` says which is in use", |d, l| {
        use postern_fw::iptables::UseIpset;
        d.c.ipt.use_ipset = match l.value.to_ascii_lowercase().as_str() {
            "auto" => UseIpset::Auto,
            v => match super::yes_no(v) {
                Ok(true) => UseIpset::Yes,
                Ok(false) => UseIpset::No,
                Err(_) => return Err(format!("'{}' is not auto, Y or N", l.value)),
            },
        };
        Ok(())
    }).show(|c| match c.ipt.use_ipset {
        postern_fw::iptables::UseIpset::Auto => "auto".into(),
        postern_fw::iptables::UseIpset::Yes => "Y".into(),
        postern_fw::iptables::UseIpset::No => "N".into(),
    }),
    no_effect("ENABLE_IPT_COMMENT_CHECK", "posternd's rules carry the comment 'postern' and are found by it"),
    no_effect("ENABLE_RULE_PREPEND", "grants are set elements, which have no order"),
    refused_when_on("ENABLE_DESTINATION_RULE", "destination-specific grants are not implemented in posternd yet"),
    no_effect("ENABLE_NAT_DNS", "posternd does not resolve host names in NAT requests: a NAT request naming a host is refused"),
    set("NFT_TABLE", "inet postern", "posternd: `[inet|ip|ip6] NAME`, posternd's own table, or with `NFT_CHAIN` the admin's", |d, l| {
        d.c.nft_set = true;
        d.c.nft_table = parse_table(&l.value).map_err(|e| e.to_string())?;
        Ok(())
    }).show(|c| {
        let fam = match c.nft_table.0 {
            Family::Inet => "inet",
            Family::Ip => "ip",
            Family::Ip6 => "ip6",
        };
        format!("{fam} {}", c.nft_table.1)
    }),
    set("NFT_CHAIN", "", "posternd: use the admin's existing input chain in `NFT_TABLE`", |d, l| {
        d.c.nft_set = true;
        parse_table(&format!("inet {}", l.value)).map_err(|e| e.to_string())?;
        d.c.nft_chain = Some(l.value.clone());
        Ok(())
    }).show(|c| c.nft_chain.clone().unwrap_or_default()),
    set("NFT_DEFAULT_DROP", "N", "posternd, own table only: install the host's input policy (drop; loopback, established/related, IPv6 neighbour discovery and, with the UDP-socket intake, the SPA port accepted)", |d, l| {
        d.c.nft_set = true;
        d.c.nft_default_drop = yes(l)?;
        Ok(())
    }).show(|c| yn(c.nft_default_drop)),
    set("NFT_EXE", "nft", "posternd: the nft binary (installs and removes the base table)", |d, l| {
        d.c.nft_exe = PathBuf::from(&l.value);
        Ok(())
    }).show(|c| c.nft_exe.display().to_string()),
    set("NFT_GRANTS", "netlink", "posternd: how grants reach the kernel: `netlink` (one persistent nfnetlink socket, one batch per group of grants) or `nft` (an `nft -f -` run per change)", |d, l| {
        d.c.nft_netlink = match l.value.to_ascii_lowercase().as_str() {
            "netlink" => true,
            "nft" => false,
            _ => return Err(format!("'{}' is not netlink or nft", l.value)),
        };
        Ok(())
    }).show(|c| if c.nft_netlink { "netlink" } else { "nft" }.into()),
    set("FIREWD_ZONE", "firewalld's default zone", "posternd, `FIREWALL_TYPE firewalld`: the zone that gets posternd's rich rules; setting it alone chooses firewalld", |d, l| {
        postern_fw::firewalld::check_zone(&l.value).map_err(|e| e.to_string())?;
        d.c.firewd_zone = Some(l.value.clone());
        Ok(())
    }).show(|c| c.firewd_zone.clone().unwrap_or_default()),
    no_effect("ENABLE_FIREWD_COMMENT_CHECK", "posternd's firewalld rich rules are found by their exact form"),
    refused_when_on("ENABLE_FIREWD_FORWARDING", "NAT access is not implemented on the firewalld backend (use FIREWALL_TYPE nftables or iptables)"),
    refused_when_on("ENABLE_FIREWD_LOCAL_NAT", "NAT access is not implemented on the firewalld backend (use FIREWALL_TYPE nftables or iptables)"),
    refused_when_on("ENABLE_FIREWD_SNAT", "SNAT is not implemented on the firewalld backend"),
    refused_when_on("ENABLE_FIREWD_OUTPUT", "OUTPUT rules are not implemented on the firewalld backend"),
    no_effect("FIREWD_*", "posternd's firewalld backend adds rich rules to FIREWD_ZONE, no direct rules in chains"),
    no_effect("IPFW_*", OTHER_FIREWALL),
    no_effect("FLUSH_IPFW_AT_*", OTHER_FIREWALL),
    no_effect("PF_*", OTHER_FIREWALL),
    // Commands.
    set("CMD_EXEC_TIMEOUT", "5", "seconds before a command (ENABLE_CMD_EXEC, cycles) is killed with its process group", |d, l| {
        d.c.cmd_exec_timeout = num(l, 1, 3600)?;
        Ok(())
    }).show(|c| c.cmd_exec_timeout.to_string()),
    no_effect("ENABLE_EXTERNAL_CMDS", "fwknopd 2.6 does not implement external commands either (use ENABLE_CMD_EXEC or CMD_CYCLE_OPEN in access.conf)"),
    no_effect("EXTERNAL_CMD_*", "fwknopd 2.6 does not implement external commands either"),
    no_effect("ENABLE_EXT_CMD_PREFIX", "fwknopd 2.6 does not implement external commands either"),
    no_effect("EXT_CMD_PREFIX", "fwknopd 2.6 does not implement external commands either"),
    set("SUDO_EXE", "/usr/bin/sudo", "sudo, which runs the commands of stanzas with ENABLE_CMD_SUDO_EXEC (`sudo -u CMD_SUDO_EXEC_USER -g CMD_SUDO_EXEC_GROUP COMMAND`)", |d, l| {
        d.c.sudo_exe = PathBuf::from(&l.value);
        Ok(())
    }).show(|c| c.sudo_exe.display().to_string()),
    no_effect("GPG_HOME_DIR", "GnuPG is not implemented"),
    no_effect("GPG_EXE", "GnuPG is not implemented"),
    // The process.
    set("PRIVILEGE_SEPARATION", "Y", "posternd: when started as root, parse packets in an unprivileged, sandboxed worker", |d, l| {
        d.c.privilege_separation = yes(l)?;
        Ok(())
    }).show(|c| yn(c.privilege_separation)),
    set("WORKER_USER", "postern if that user exists, else nobody", "posternd: the worker's user (must not be root)", |d, l| {
        if crate::ids::user(&l.value).is_none_or(|u| u.uid == 0) {
            return Err(format!("'{}' is not a non-root user of this system", l.value));
        }
        d.c.worker_user = Some(l.value.clone());
        Ok(())
    }).show(|c| c.worker_user.clone().unwrap_or_default()),
    set("VERBOSE", "N", "log every decision (a number or Y/N)", |d, l| {
        d.c.verbose = match l.value.parse::<u32>() {
            Ok(v) => v > 0,
            Err(_) => yes(l)?,
        };
        Ok(())
    }).show(|c| yn(c.verbose)),
    set("SYSLOG_IDENTITY", "posternd", "the name in every log line (syslog tag)", |d, l| {
        if l.value.is_empty() || l.value.len() > 48 || !l.value.chars().all(|c| c.is_ascii_graphic() && c != '[' && c != ':') {
            return Err(format!("'{}' is not a syslog tag (up to 48 printable characters, no ':' or '[')", l.value));
        }
        d.c.syslog_identity = l.value.clone();
        Ok(())
    }).show(|c| c.syslog_identity.clone()),
    set("SYSLOG_FACILITY", "LOG_DAEMON", "syslog facility: `LOG_DAEMON`, `LOG_AUTH`, `LOG_AUTHPRIV`, `LOG_USER`, `LOG_LOCAL0`…`LOG_LOCAL7` (the `LOG_` may be left out)", |d, l| {
        d.c.syslog_facility = crate::log::facility(&l.value).ok_or_else(|| {
            format!("'{}' is not a syslog facility (LOG_DAEMON, LOG_AUTH, LOG_AUTHPRIV, LOG_USER, LOG_LOCAL0 to LOG_LOCAL7)", l.value)
        })?;
        Ok(())
    }).show(|c| crate::log::facility_name(c.syslog_facility)),
    no_effect("LOCALE", "messages are not localised"),
    // Access alerts (see *Access alerts*).
    set("ALERT_EMAIL_ADDRESSES", "", "posternd: alert recipients, comma or space separated; e-mail goes through ALERT_SMTP_URL if set, else ALERT_SENDMAIL_CMD", alert).aka(&["EMAIL_ADDRESSES"]),
    set("ALERT_EMAIL_FROM", "posternd@<host name>", "posternd: the From: address of alert e-mail", alert),
    set("ALERT_SENDMAIL_CMD", "/usr/sbin/sendmail -t -i", "posternd: the local mail submission command (absolute path and arguments, run as argv, never a shell)", alert),
    set("ALERT_SMTP_URL", "", "posternd: an SMTP relay: `smtp://host:port`, `smtp+starttls://host:port` (STARTTLS required), `smtps://host:port`", alert),
    set("ALERT_SMTP_AUTH_FILE", "", "posternd: `user:password` (or two lines) for the relay, in a file of mode 0600", alert),
    set("ALERT_SMTP_CA_FILE", "the system's roots", "posternd: the only CAs trusted for the relay's certificate (PEM)", alert),
    set("ALERT_WEBHOOK_URL", "", "posternd: `http://` or `https://` URL that gets a JSON POST of each alert, signed (`X-Postern-Signature: sha256=...`)", alert),
    set("ALERT_WEBHOOK_KEY_FILE", "", "posternd: the 0600 file whose contents key the webhook's HMAC-SHA256 signature (required with a webhook)", alert),
    set("ALERT_WEBHOOK_CA_FILE", "the system's roots", "posternd: the only CAs trusted for an https webhook", alert),
    set("ALERT_COMMAND", "", "posternd: an argv hook (absolute path; no shell) that gets each alert as JSON on standard input and POSTERN_* variables", alert),
    set("ALERT_TIMEOUT", "10", "posternd: seconds one alert delivery may take (1–300)", alert),
    // Metrics.
    set("METRICS_TEXTFILE", "/var/lib/prometheus/node-exporter/posternd.prom if that directory exists", "posternd: Prometheus metrics written there every 5 s (atomically, mode 0644) for node_exporter's textfile collector; `none` for no file", |d, l| {
        d.c.metrics_textfile = if l.value.eq_ignore_ascii_case("none") {
            None
        } else if l.value.starts_with('/') {
            Some(PathBuf::from(&l.value))
        } else {
            return Err(format!("'{}' is not an absolute path or none", l.value));
        };
        Ok(())
    }).show(|c| c.metrics_textfile.as_ref().map_or_else(|| "none".into(), |p| p.display().to_string())),
    set("METRICS_LISTEN", "", "posternd: also serve the metrics over HTTP on this loopback address and port (`127.0.0.1:9469`, `[::1]:9469`); other addresses are refused, so that the host stays dark", |d, l| {
        let a: std::net::SocketAddr = l.value.parse().map_err(|_| format!("'{}' is not an address:port", l.value))?;
        if !a.ip().is_loopback() || a.port() == 0 {
            return Err(format!("{a} is not a loopback address with a port (posternd never listens where the network can see it)"));
        }
        d.c.metrics_listen = Some(a);
        Ok(())
    }).show(|c| c.metrics_listen.map(|a| a.to_string()).unwrap_or_default()),
    // Fleets.
    set("FLEET_REDIS_URL", "", "posternd: `redis://[user@]host:port/db` or `rediss://...`; this gateway shares its replay window and grants with the others on it (see *Gateway fleets*)", |d, l| {
        let u = l.value.as_str();
        if !(u.starts_with("redis://") || u.starts_with("rediss://")) {
            return Err("expected redis://[user@]host:port/db or rediss://...".into());
        }
        d.fleet.url = Some((l.value.clone(), l.number));
        Ok(())
    }).show(|c| c.fleet.as_ref().map(|f| f.url.clone()).unwrap_or_default()),
    set("FLEET_REDIS_CA_FILE", "", "posternd: the CA that signs the Redis server's certificate (rediss)", |d, l| {
        d.fleet.ca_file = Some(PathBuf::from(&l.value));
        Ok(())
    }),
    set("FLEET_REDIS_PASSWORD_FILE", "", "posternd: the Redis password, in a file of mode 0600", |d, l| {
        let p = PathBuf::from(&l.value);
        let text = read(&p).map_err(|e| e.to_string())?;
        private(&p)?;
        let pw = text.lines().next().unwrap_or("").trim().to_owned();
        if pw.is_empty() {
            return Err(format!("{} holds no password", p.display()));
        }
        d.fleet.password = Some(postern_proto::Key::from_bytes(pw.into_bytes()));
        Ok(())
    }),
    set("FLEET_KEY_BASE64", "", "posternd: the key that authenticates every fleet message (every gateway the same; fwknopd.conf must then be 0600)", |d, l| {
        let k = postern_proto::Key::from_base64(&l.value).map_err(|e| format!("not base64: {e}"))?;
        if k.len() < 32 {
            return Err("the fleet key must be at least 32 bytes (postern --key-gen prints one)".into());
        }
        d.fleet.key = Some(k);
        private(&d.c.file)
    }),
    set("FLEET_ON_REDIS_DOWN", "closed", "posternd: `closed` (refuse new grants) or `local` (go on with the local replay store alone, loudly)", |d, l| {
        d.fleet.on_down = Some(match l.value.to_ascii_lowercase().as_str() {
            "closed" => OnRedisDown::Closed,
            "local" => OnRedisDown::Local,
            _ => return Err(format!("'{}' is not closed or local", l.value)),
        });
        Ok(())
    }),
    set("FLEET_REDIS_TIMEOUT_MS", "25", "posternd: the bound on one Redis round trip, 1–5000 ms", |d, l| {
        d.fleet.timeout_ms = Some(num(l, 1, 5000)?);
        Ok(())
    }),
    set("FLEET_GATEWAY_NAME", "the host name", "posternd: this gateway's name in fleet messages", |d, l| {
        d.fleet.gateway = Some(l.value.clone());
        Ok(())
    }),
    set("FLEET_REDIS_PREFIX", "postern", "posternd: prefix of every Redis key posternd uses", |d, l| {
        d.fleet.prefix = Some(l.value.clone());
        Ok(())
    }),
    set("FLEET_REDIS_WAIT", "0", "posternd: replicas that must acknowledge a claim (`WAIT`), 0–16", |d, l| {
        d.fleet.wait_replicas = Some(num(l, 0, 16)?);
        Ok(())
    }),
];

/// The directive named `name` (or one of its aliases).
pub fn directive(name: &str) -> Option<&'static Directive> {
    DIRECTIVES
        .iter()
        .find(|d| !d.name.ends_with('*') && d.is(name))
        .or_else(|| DIRECTIVES.iter().find(|d| d.is(name)))
}

/// The known directive closest to a misspelt `name`, if one is close.
pub fn did_you_mean(name: &str) -> Option<&'static str> {
    let names = DIRECTIVES
        .iter()
        .flat_map(|d| std::iter::once(d.name).chain(d.aliases.iter().copied()))
        .filter(|n| !n.ends_with('*'));
    super::nearest(name, names)
}

/// Expand every `$NAME` in a value by that directive's value, as fwknopd does (the
/// directive may be set before or after the line; `$FWKNOP_RUN_DIR` and
/// `$FWKNOP_CONF_DIR` have defaults). An unknown name is an error.
fn expand(value: &str, vars: &HashMap<String, String>, depth: usize) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = value;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let end = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        let name = &after[..end];
        if name.is_empty() {
            out.push('$');
        } else {
            let v = vars
                .get(name)
                .ok_or_else(|| format!("${name} is not set in this file"))?;
            if v.contains('$') {
                if depth >= 8 {
                    return Err(format!("${name} refers to itself"));
                }
                out.push_str(&expand(v, vars, depth + 1)?);
            } else {
                out.push_str(v);
            }
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Read `fwknopd.conf`. A missing file gives the defaults only if it is the default path.
pub fn load(file: &Path) -> Result<(ServerConfig, Vec<Note>), ConfigErrors> {
    let text = read(file)?;
    parse(&text, file)
}

/// Parse `fwknopd.conf` text, reporting every error in it.
pub fn parse(text: &str, file: &Path) -> Result<(ServerConfig, Vec<Note>), ConfigErrors> {
    let conf_dir = file
        .parent()
        .map_or_else(|| PathBuf::from("/etc/postern"), Path::to_path_buf);
    let all = lines(text);
    let mut vars: HashMap<String, String> = HashMap::new();
    vars.insert("FWKNOP_RUN_DIR".into(), "/run/postern".into());
    vars.insert("FWKNOP_CONF_DIR".into(), conf_dir.display().to_string());
    for l in &all {
        vars.insert(l.name.clone(), l.value.clone());
    }
    let mut d = Draft {
        c: ServerConfig::defaults(file),
        fleet: FleetDraft::default(),
        paths: HashMap::new(),
        udpserv_port: None,
        tcp_server: false,
        tcpserv_port: None,
        notes: Vec::new(),
    };
    let mut errors = Vec::new();
    for l in all {
        let fail = |message: String| err(file, &l, message);
        let value = match expand(&l.value, &vars, 0) {
            Ok(v) => v,
            Err(m) => {
                errors.push(fail(m));
                continue;
            }
        };
        let l = Line { value, ..l };
        let Some(directive) = directive(&l.name) else {
            let hint = did_you_mean(&l.name)
                .map(|n| format!(" (did you mean {n}?)"))
                .unwrap_or_default();
            errors.push(err(file, &l, format!("unknown directive{hint}")));
            continue;
        };
        let result = match directive.kind {
            Kind::Set(f) => f(&mut d, &l),
            Kind::NoEffect(why) => {
                d.note(&l, format!("{} has no effect: {why}", l.name));
                Ok(())
            }
            Kind::RefusedWhenOn(why) => match yes(&l) {
                Ok(true) => Err(why.to_owned()),
                other => other.map(|_| ()),
            },
            Kind::Refused(why) => Err(why.to_owned()),
        };
        if let Err(m) = result {
            errors.push(err(file, &l, m));
        }
    }
    let Draft {
        mut c,
        fleet,
        paths,
        udpserv_port,
        tcp_server,
        tcpserv_port,
        notes,
    } = d;
    c.tcp_server = tcp_server.then(|| tcpserv_port.unwrap_or(postern_proto::wire::DEFAULT_PORT));
    if c.nft_chain.is_some() && c.nft_default_drop {
        errors.push(ConfigError {
            file: file.to_owned(),
            line: 0,
            directive: "NFT_DEFAULT_DROP".into(),
            message: "applies only to posternd's own table; with NFT_CHAIN the admin's chain holds the policy".into(),
        });
    }
    if c.udp_server {
        if let Some(p) = udpserv_port {
            c.spa_port = p;
        }
    }
    let run_dir = PathBuf::from(
        paths
            .get("FWKNOP_RUN_DIR")
            .map_or("/run/postern", String::as_str),
    );
    let conf = paths
        .get("FWKNOP_CONF_DIR")
        .map_or_else(|| conf_dir.clone(), PathBuf::from);
    // The replay store must survive a reboot (a packet captured just before one would
    // otherwise be replayable after it), so it lives in /var/lib, not in the run dir.
    c.digest_file_set = paths.contains_key("DIGEST_FILE");
    c.digest_file = paths.get("DIGEST_FILE").map_or_else(
        || PathBuf::from("/var/lib/postern/digest.cache"),
        PathBuf::from,
    );
    c.pid_file = paths
        .get("FWKNOP_PID_FILE")
        .map_or_else(|| run_dir.join("posternd.pid"), PathBuf::from);
    c.control_socket = paths
        .get("CONTROL_SOCKET")
        .map_or_else(|| run_dir.join("posternd.sock"), PathBuf::from);
    c.access_file = paths
        .get("ACCESS_FILE")
        .map_or_else(|| conf.join("access.conf"), PathBuf::from);
    c.access_folder = paths.get("ACCESS_FOLDER").map(PathBuf::from);
    c.run_dir = run_dir;
    match fleet.finish(file) {
        Ok(f) => c.fleet = f,
        Err(e) => errors.push(e),
    }
    if let Err((directive, message)) = crate::alert::finish(&c.alerts) {
        let (file, directive) = (file.to_owned(), directive.into());
        errors.push(ConfigError {
            file,
            line: 0,
            directive,
            message,
        });
    }
    if errors.is_empty() {
        Ok((c, notes))
    } else {
        Err(ConfigErrors(errors))
    }
}

/// The reference table of `fwknopd.conf` directives, in Markdown, as
/// `doc/configuration.md` holds it (a test keeps the two equal).
pub fn reference_table() -> String {
    let cell = |s: &str| s.replace('|', "\\|");
    let mut out = String::from("| Directive | Default | posternd |\n|---|---|---|\n");
    for d in DIRECTIVES {
        let mut name = format!("`{}`", d.name);
        if !d.aliases.is_empty() {
            let a: Vec<String> = d.aliases.iter().map(|a| format!("`{a}`")).collect();
            name.push_str(&format!(" (also {})", a.join(", ")));
        }
        let default = if d.default.is_empty() {
            "—".to_owned()
        } else {
            format!("`{}`", cell(d.default))
        };
        let doc = match d.kind {
            Kind::Set(_) => cell(d.doc),
            _ => format!("*{}*: {}", d.status(), cell(d.doc)),
        };
        out.push_str(&format!("| {name} | {default} | {doc} |\n"));
    }
    out
}

/// The `FLEET_*` lines as read, before they are checked together.
#[derive(Default)]
struct FleetDraft {
    url: Option<(String, usize)>,
    ca_file: Option<PathBuf>,
    password: Option<postern_proto::Key>,
    key: Option<postern_proto::Key>,
    on_down: Option<OnRedisDown>,
    timeout_ms: Option<u64>,
    gateway: Option<String>,
    prefix: Option<String>,
    wait_replicas: Option<u64>,
}

impl FleetDraft {
    fn finish(self, file: &Path) -> Result<Option<FleetConfig>, ConfigError> {
        let whole = |directive: &str, message: &str| ConfigError {
            file: file.to_owned(),
            line: 0,
            directive: directive.into(),
            message: message.into(),
        };
        let Some((url, line)) = self.url else {
            if self.key.is_some() || self.password.is_some() || self.on_down.is_some() {
                return Err(whole(
                    "FLEET_REDIS_URL",
                    "FLEET_* settings without FLEET_REDIS_URL",
                ));
            }
            return Ok(None);
        };
        let key = self.key.ok_or_else(|| ConfigError {
            file: file.to_owned(),
            line,
            directive: "FLEET_REDIS_URL".into(),
            message: "a fleet needs FLEET_KEY_BASE64 (every gateway the same key)".into(),
        })?;
        let gateway = self.gateway.unwrap_or_else(|| {
            nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| "posternd".into())
        });
        Ok(Some(FleetConfig {
            url,
            ca_file: self.ca_file,
            password: self.password,
            key,
            on_down: self.on_down.unwrap_or(OnRedisDown::Closed),
            timeout_ms: self.timeout_ms.unwrap_or(25),
            gateway,
            prefix: self.prefix.unwrap_or_else(|| "postern".into()),
            wait_replicas: self.wait_replicas.unwrap_or(0),
        }))
    }
}

/// A file holding a secret must be readable by its owner only.
fn private(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .permissions()
        .mode()
        & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "{} holds a secret but is accessible by group or others (mode {mode:04o}); run: chmod 600 {}",
            path.display(),
            path.display()
        ));
    }
    Ok(())
}

impl ServerConfig {
    /// Whether the age check applies.
    pub fn aging(&self) -> bool {
        self.packet_aging.unwrap_or(self.pcap_file.is_none())
    }

    /// The effective settings, one line per directive that has a value (`-D`): the
    /// paths really used, defaults included.
    pub fn dump(&self) -> String {
        let mut s = format!("[{}]\n", self.file.display());
        for d in DIRECTIVES {
            if let Some(show) = d.show {
                let v = show(self);
                if !v.is_empty() {
                    s.push_str(&format!("{:<28}{v}\n", d.name));
                }
            }
        }
        s.push_str(&self.alerts.dump());
        s
    }

    /// The ports posternd itself listens on, which a default-drop base it installs must
    /// accept: the UDP-socket intake's SPA port, the TCP server's port.
    pub fn listening_ports(&self) -> Vec<(postern_fw::Protocol, u16)> {
        let mut v = Vec::new();
        if self.udp_server {
            v.push((postern_fw::Protocol::Udp, self.spa_port));
        }
        if let Some(t) = self.tcp_server {
            v.push((postern_fw::Protocol::Tcp, t));
        }
        v
    }

    /// The defaults, before `file` is read.
    fn defaults(file: &Path) -> ServerConfig {
        ServerConfig {
            file: file.to_owned(),
            interfaces: vec!["any".into()],
            spa_port: postern_proto::wire::DEFAULT_PORT,
            pcap_filter: None,
            udp_server: false,
            tcp_server: None,
            spa_over_http: false,
            x_forwarded_for: false,
            sudo_exe: PathBuf::from("/usr/bin/sudo"),
            pcap_file: None,
            packet_aging: None,
            max_packet_age: 120,
            digest_persistence: true,
            run_dir: PathBuf::new(),
            digest_file: PathBuf::new(),
            digest_file_set: false,
            pid_file: PathBuf::new(),
            control_socket: PathBuf::new(),
            access_file: PathBuf::new(),
            access_folder: None,
            flush_at_init: true,
            flush_at_exit: true,
            nft_table: (Family::Inet, "postern".into()),
            nft_chain: None,
            nft_default_drop: false,
            nft_exe: PathBuf::from("nft"),
            nft_netlink: true,
            cmd_exec_timeout: 5,
            max_replay_entries: 100_000,
            privilege_separation: true,
            worker_user: None,
            verbose: false,
            metrics_textfile: crate::metrics::default_textfile(),
            metrics_listen: None,
            syslog_identity: "posternd".into(),
            syslog_facility: crate::log::DAEMON,
            fleet: None,
            firewall_type: None,
            nft_set: false,
            ipt: postern_fw::iptables::IptConfig::default(),
            firewd_zone: None,
            nat_forwarding: false,
            nat_local: false,
            alerts: crate::alert::AlertConfig::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<(ServerConfig, Vec<Note>), ConfigErrors> {
        parse(text, Path::new("/etc/postern/fwknopd.conf"))
    }

    #[test]
    fn defaults_and_substitution() {
        let (c, notes) = p("# all defaults\n").unwrap();
        assert_eq!(c.spa_port, 62201);
        assert_eq!(c.digest_file, Path::new("/var/lib/postern/digest.cache"));
        assert_eq!(c.access_file, Path::new("/etc/postern/access.conf"));
        assert!(notes.is_empty());
        let (c, _) = p("FWKNOP_RUN_DIR /tmp/x\nDIGEST_FILE $FWKNOP_RUN_DIR/d.cache ; comment\nPCAP_FILTER udp port 5000\n").unwrap();
        assert_eq!(c.digest_file, Path::new("/tmp/x/d.cache"));
        assert_eq!(c.spa_port, 5000);
        let (c, _) = p("ENABLE_UDP_SERVER Y\nUDPSERV_PORT 6000\n").unwrap();
        assert_eq!(c.spa_port, 6000);
    }

    #[test]
    fn errors_name_line_and_directive() {
        assert_eq!(
            p("\nBOGUS 1\n").unwrap_err().to_string(),
            "/etc/postern/fwknopd.conf:2: BOGUS: unknown directive"
        );
        assert_eq!(
            p("MAX_SPA_PACKET_AGE 0\n").unwrap_err().to_string(),
            "/etc/postern/fwknopd.conf:1: MAX_SPA_PACKET_AGE: '0' is not a number from 1 to 100000"
        );
        assert!(p("ENABLE_PCAP_PROMISC Y\n")
            .unwrap_err()
            .to_string()
            .contains("ENABLE_PCAP_PROMISC: promiscuous capture"));
        assert!(p("ENABLE_PCAP_PROMISC N\n").is_ok());
        assert!(p("PCAP_FILTER sctp port 1\n").is_err());
        assert!(p("TCPSERV_PORT 0\n").is_err());
        let (c, _) = p("ENABLE_TCP_SERVER Y\n").unwrap();
        assert_eq!(c.tcp_server, Some(62201));
        let (c, _) = p("TCPSERV_PORT 443\nENABLE_TCP_SERVER Y\n").unwrap();
        assert_eq!(c.tcp_server, Some(443));
        let (c, _) = p("TCPSERV_PORT 443\n").unwrap();
        assert_eq!(c.tcp_server, None);
        assert!(p("NFT_TABLE inet a b c\n").is_err());
        assert!(p("NFT_TABLE inet a$b\n").is_err());
        assert!(p("DIGEST_FILE $NOPE/x\n").is_err());
        assert!(p("NFT_CHAIN input\nNFT_DEFAULT_DROP Y\n").is_err());
        assert!(p("FIREWALL_TYPE iptables\n").is_ok());
        assert!(p("FIREWALL_TYPE ipchains\n").is_err());
        assert_eq!(
            p("\nIPT_INPUT_ACCESS ACCEPT, filter, INPUT, 1, FWKNOP_INPUT\n")
                .unwrap_err()
                .to_string()
                .split(": '")
                .next()
                .unwrap(),
            "/etc/postern/fwknopd.conf:2: IPT_INPUT_ACCESS"
        );
        assert!(p("IPT_FORWARD_ACCESS ACCEPT, filter, FORWARD\n").is_err());
        assert!(
            p("FLEET_KEY_BASE64 QUJD\n").is_err(),
            "a fleet key without a URL"
        );
    }

    #[test]
    fn no_effect_directives_are_noted() {
        let (c, notes) = p("PCAP_LOOP_SLEEP 100000\nIPT_INPUT_ACCESS ACCEPT, filter, INPUT, 2, FWKNOP_INPUT, 1\nFIREWD_INPUT_ACCESS x\nIPT_SNAT_ACCESS SNAT, nat, POSTROUTING, 1, FWKNOP_POSTROUTING, 1\nIPT_DNAT_ACCESS DNAT, nat, PREROUTING, 2, FWKNOP_PREROUTING, 1\n").unwrap();
        assert_eq!(c.ipt.dnat.jump_position, 2);
        assert_eq!(c.ipt.input.jump_position, 2);
        // IPT_SNAT_ACCESS is implemented (no note).
        assert_eq!(notes.len(), 2);
        assert_eq!(notes[0].to_string(), "/etc/postern/fwknopd.conf:1: PCAP_LOOP_SLEEP has no effect: posternd has no pcap polling loop");
    }

    #[test]
    fn every_error_in_one_run_with_did_you_mean() {
        let e = p("PCAP_INTFF eth0\nMAX_SPA_PACKET_AGE x\nFWKNOP_RUN_DIR run\nOK_NOT_A_THING 1\nENABLE_PCAP_PROMISC Y\n")
            .unwrap_err();
        let lines: Vec<String> = e.0.iter().map(ToString::to_string).collect();
        assert_eq!(lines.len(), 5, "{lines:#?}");
        assert_eq!(
            lines[0],
            "/etc/postern/fwknopd.conf:1: PCAP_INTFF: unknown directive (did you mean PCAP_INTF?)"
        );
        assert!(lines[1].starts_with("/etc/postern/fwknopd.conf:2: MAX_SPA_PACKET_AGE:"));
        assert!(lines[2].contains(":3: FWKNOP_RUN_DIR: 'run' is not an absolute path"));
        assert_eq!(
            lines[3],
            "/etc/postern/fwknopd.conf:4: OK_NOT_A_THING: unknown directive"
        );
        assert!(lines[4].contains(":5: ENABLE_PCAP_PROMISC:"));
        assert_eq!(
            did_you_mean("ENABLE_DIGEST_PERSISTANCE"),
            Some("ENABLE_DIGEST_PERSISTENCE")
        );
        assert_eq!(did_you_mean("FLUSH_NFT_AT_INTI"), Some("FLUSH_NFT_AT_INIT"));
    }

    #[test]
    fn variables_expand_anywhere_and_may_be_set_later() {
        let (c, _) = p("DIGEST_FILE $FWKNOP_RUN_DIR/x/$FWKNOP_RUN_DIR.cache\nFWKNOP_RUN_DIR /tmp/r\nFWKNOP_PID_FILE $FWKNOP_RUN_DIR/p\n").unwrap();
        assert_eq!(c.digest_file, Path::new("/tmp/r/x//tmp/r.cache"));
        assert_eq!(c.pid_file, Path::new("/tmp/r/p"));
        let (c, _) = p("CONTROL_SOCKET $FWKNOP_RUN_DIR/s\n").unwrap();
        assert_eq!(c.control_socket, Path::new("/run/postern/s"));
        assert!(p("FWKNOP_RUN_DIR $FWKNOP_PID_FILE\nFWKNOP_PID_FILE $FWKNOP_RUN_DIR\n").is_err());
        assert!(p("PCAP_DISPATCH_COUNT many\n").is_err());
        assert_eq!(p("PCAP_DISPATCH_COUNT 100\n").unwrap().1.len(), 1);
    }

    #[test]
    fn syslog_naming_and_external_commands() {
        let (c, notes) = p("SYSLOG_IDENTITY knockd\nSYSLOG_FACILITY LOG_LOCAL3\nENABLE_EXTERNAL_CMDS N\nEXTERNAL_CMD_OPEN x\n").unwrap();
        assert_eq!(c.syslog_identity, "knockd");
        assert_eq!(c.syslog_facility, 19);
        assert_eq!(notes.len(), 2);
        assert!(p("SYSLOG_FACILITY LOG_NOPE\n").is_err());
        assert!(p("SYSLOG_IDENTITY a:b\n").is_err());
        let dump = c.dump();
        assert!(
            dump.contains("SYSLOG_FACILITY             LOG_LOCAL3\n"),
            "{dump}"
        );
        assert!(
            dump.contains("DIGEST_FILE                 /var/lib/postern/digest.cache\n"),
            "{dump}"
        );
    }

    #[test]
    fn every_directive_is_defined_once_and_documented() {
        let mut seen = std::collections::HashSet::new();
        for d in DIRECTIVES {
            for n in std::iter::once(&d.name).chain(d.aliases) {
                assert!(seen.insert(*n), "{n} is defined twice");
            }
            assert!(!d.doc.is_empty(), "{} has no doc", d.name);
        }
        let doc = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../doc/configuration.md"
        ))
        .unwrap();
        let begin =
            "<!-- directives: generated by `posternd --directives-table`, do not edit -->\n";
        let start = doc.find(begin).expect("the marker in doc/configuration.md") + begin.len();
        let end = start + doc[start..].find("<!-- end of directives -->").unwrap();
        assert!(
            doc[start..end] == reference_table(),
            "doc/configuration.md's directive table is stale: run ./target/debug/posternd --directives-table and paste it between the markers"
        );
    }
}
