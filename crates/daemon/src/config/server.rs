//! `fwknopd.conf`: server settings, fwknop's directives plus posternd's own
//! (`FIREWALL_TYPE`, `NFT_TABLE`, `NFT_CHAIN`, `NFT_DEFAULT_DROP`, `NFT_EXE`, `NFT_GRANTS`,
//! `FIREWD_ZONE`, `CONTROL_SOCKET`), documented in `doc/configuration.md`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use postern_fw::nftables::{parse_table, Family};

use super::{boolean, err, lines, number, read, ConfigError, Line, Note};

/// Server settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// The file they came from.
    pub file: PathBuf,
    /// Capture interfaces (`any` for all).
    pub interfaces: Vec<String>,
    /// The SPA port (from `PCAP_FILTER udp port N`, or `UDPSERV_PORT` in UDP mode).
    pub spa_port: u16,
    /// Use a UDP socket instead of AF_PACKET.
    pub udp_server: bool,
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

/// Directives accepted with no effect in posternd, and why.
const NO_EFFECT: &[(&str, &str)] = &[
    ("PCAP_DISPATCH_COUNT", "posternd has no pcap polling loop"),
    ("PCAP_LOOP_SLEEP", "posternd has no pcap polling loop"),
    ("MAX_SNIFF_BYTES", "posternd reads whole datagrams"),
    ("UDPSERV_SELECT_TIMEOUT", "posternd has no select loop"),
    ("RULES_CHECK_THRESHOLD", "grants expire in the kernel"),
    (
        "ENABLE_IPT_COMMENT_CHECK",
        "posternd's rules carry the comment 'postern' and are found by it",
    ),
    (
        "ENABLE_FIREWD_COMMENT_CHECK",
        "posternd's firewalld rich rules are found by their exact form",
    ),
    ("LOCALE", "messages are not localised"),
    ("SYSLOG_IDENTITY", "posternd logs as posternd"),
    ("SYSLOG_FACILITY", "posternd logs to the daemon facility"),
    (
        "EXIT_AT_INTF_DOWN",
        "posternd keeps running and logs capture errors",
    ),
    ("ENABLE_RULE_PREPEND", "nftables sets have no rule order"),
    (
        "ENABLE_NAT_DNS",
        "posternd does not resolve host names in NAT requests: a NAT request naming a host is refused",
    ),
    ("GPG_HOME_DIR", "GnuPG is not implemented"),
    ("GPG_EXE", "GnuPG is not implemented"),
    ("SUDO_EXE", "sudo execution is not implemented"),
    ("SNAT_TRANSLATE_IP", "NAT is not implemented"),
    ("TCPSERV_PORT", "the TCP server is not implemented"),
    ("NFQ_INTERFACE", "NFQUEUE capture is not implemented"),
    ("NFQ_PORT", "NFQUEUE capture is not implemented"),
    ("NFQ_TABLE", "NFQUEUE capture is not implemented"),
    ("NFQ_CHAIN", "NFQUEUE capture is not implemented"),
    ("NFQ_QUEUE_NUMBER", "NFQUEUE capture is not implemented"),
    ("NFQ_LOOP_SLEEP", "NFQUEUE capture is not implemented"),
];

/// Prefixes of other firewalls' settings, accepted with no effect.
const NO_EFFECT_PREFIXES: &[&str] = &["FIREWD_", "IPFW_", "PF_"];

/// Features posternd does not have: refused when turned on.
const REFUSED_WHEN_ON: &[(&str, &str)] = &[
    ("ENABLE_PCAP_PROMISC", "promiscuous capture is not supported (and not needed for SPA to this host)"),
    ("ENABLE_PCAP_ANY_DIRECTION", "posternd only processes packets sent to this host"),
    ("ENABLE_SPA_OVER_HTTP", "SPA over HTTP is not implemented in posternd yet"),
    ("ENABLE_X_FORWARDED_FOR", "SPA over HTTP is not implemented in posternd yet"),
    ("ENABLE_TCP_SERVER", "the TCP server is not implemented in posternd yet"),
    ("ENABLE_NFQ_CAPTURE", "NFQUEUE capture is not implemented; posternd's AF_PACKET capture sees dropped packets without it"),
    ("ENABLE_IPT_SNAT", "SNAT for NAT access is not implemented in posternd yet"),
    ("ENABLE_IPT_OUTPUT", "OUTPUT rules are not implemented in posternd yet"),
    ("ENABLE_DESTINATION_RULE", "destination-specific grants are not implemented in posternd yet"),
    ("ENABLE_FIREWD_FORWARDING", "NAT access is not implemented on the firewalld backend (use FIREWALL_TYPE nftables)"),
    ("ENABLE_FIREWD_LOCAL_NAT", "NAT access is not implemented on the firewalld backend (use FIREWALL_TYPE nftables)"),
    ("ENABLE_FIREWD_SNAT", "SNAT is not implemented on the firewalld backend"),
    ("ENABLE_FIREWD_OUTPUT", "OUTPUT rules are not implemented on the firewalld backend"),
];

/// Parse `udp port N` / `udp dst port N`.
fn filter_port(s: &str) -> Option<u16> {
    let w: Vec<&str> = s.split_whitespace().collect();
    let n = match w.as_slice() {
        ["udp", "port", n] | ["udp", "dst", "port", n] => n,
        _ => return None,
    };
    n.parse().ok().filter(|&p| p > 0)
}

/// Replace a leading `$NAME` by that directive's value.
fn substitute(
    file: &Path,
    l: &Line,
    vars: &HashMap<String, String>,
) -> Result<String, ConfigError> {
    let Some(rest) = l.value.strip_prefix('$') else {
        return Ok(l.value.clone());
    };
    let end = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(rest.len());
    let (name, tail) = rest.split_at(end);
    let base = vars
        .get(name)
        .ok_or_else(|| err(file, l, format!("${name} is not set before this line")))?;
    Ok(format!("{base}{tail}"))
}

/// Read `fwknopd.conf`. A missing file gives the defaults only if it is the default path.
pub fn load(file: &Path) -> Result<(ServerConfig, Vec<Note>), ConfigError> {
    let text = read(file)?;
    parse(&text, file)
}

/// Parse `fwknopd.conf` text.
pub fn parse(text: &str, file: &Path) -> Result<(ServerConfig, Vec<Note>), ConfigError> {
    let conf_dir = file
        .parent()
        .map_or_else(|| PathBuf::from("/etc/postern"), Path::to_path_buf);
    let mut vars: HashMap<String, String> = HashMap::new();
    vars.insert("FWKNOP_RUN_DIR".into(), "/run/postern".into());
    vars.insert("FWKNOP_CONF_DIR".into(), conf_dir.display().to_string());
    let mut notes = Vec::new();
    let mut c = ServerConfig {
        file: file.to_owned(),
        interfaces: vec!["any".into()],
        spa_port: postern_proto::wire::DEFAULT_PORT,
        udp_server: false,
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
        fleet: None,
        firewall_type: None,
        nft_set: false,
        ipt: postern_fw::iptables::IptConfig::default(),
        firewd_zone: None,
        nat_forwarding: false,
        nat_local: false,
    };
    let mut fleet = FleetDraft::default();
    let mut set: HashMap<&'static str, String> = HashMap::new();
    let mut udpserv_port = None;
    for l in lines(text) {
        let value = substitute(file, &l, &vars)?;
        let l = Line { value, ..l };
        let name = l.name.as_str();
        if let Some((_, why)) = NO_EFFECT.iter().find(|(n, _)| *n == name) {
            notes.push(Note {
                file: file.to_owned(),
                line: l.number,
                text: format!("{name} has no effect: {why}"),
            });
            continue;
        }
        if NO_EFFECT_PREFIXES.iter().any(|p| name.starts_with(p))
            && !name.starts_with("ENABLE_")
            && name != "FIREWD_ZONE"
        {
            let why = if name.starts_with("FIREWD_") {
                "posternd's firewalld backend adds rich rules to FIREWD_ZONE, no direct rules in chains"
            } else {
                "another firewall's setting"
            };
            notes.push(Note {
                file: file.to_owned(),
                line: l.number,
                text: format!("{name} has no effect: {why}"),
            });
            continue;
        }
        if let Some((_, why)) = REFUSED_WHEN_ON.iter().find(|(n, _)| *n == name) {
            if boolean(file, &l)? {
                return Err(err(file, &l, *why));
            }
            continue;
        }
        match name {
            "PCAP_INTF" => {
                c.interfaces = l
                    .value
                    .split([',', ' '])
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect();
                if c.interfaces.is_empty() {
                    return Err(err(file, &l, "no interface given"));
                }
            }
            "PCAP_FILTER" => {
                c.spa_port = filter_port(&l.value).ok_or_else(|| {
                    err(file, &l, format!("'{}' is not supported: posternd builds its own kernel filter and takes only 'udp port N'", l.value))
                })?;
            }
            "PCAP_FILE" => c.pcap_file = Some(PathBuf::from(&l.value)),
            "ENABLE_UDP_SERVER" => c.udp_server = boolean(file, &l)?,
            "UDPSERV_PORT" => udpserv_port = Some(number(file, &l, 1, 65535)? as u16),
            "ENABLE_SPA_PACKET_AGING" => c.packet_aging = Some(boolean(file, &l)?),
            "MAX_SPA_PACKET_AGE" => c.max_packet_age = number(file, &l, 1, 100_000)?,
            "ENABLE_DIGEST_PERSISTENCE" => c.digest_persistence = boolean(file, &l)?,
            "FLUSH_IPT_AT_INIT" | "FLUSH_NFT_AT_INIT" | "FLUSH_FIREWD_AT_INIT" => {
                c.flush_at_init = boolean(file, &l)?
            }
            "FLUSH_IPT_AT_EXIT" | "FLUSH_NFT_AT_EXIT" | "FLUSH_FIREWD_AT_EXIT" => {
                c.flush_at_exit = boolean(file, &l)?
            }
            "FIREWD_ZONE" => {
                postern_fw::firewalld::check_zone(&l.value)
                    .map_err(|e| err(file, &l, e.to_string()))?;
                c.firewd_zone = Some(l.value.clone());
            }
            "FIREWALL_TYPE" => match l.value.to_ascii_lowercase().as_str() {
                "nftables" | "nft" => c.firewall_type = Some(FirewallType::Nftables),
                "iptables" => c.firewall_type = Some(FirewallType::Iptables),
                "firewalld" => c.firewall_type = Some(FirewallType::Firewalld),
                _ => {
                    return Err(err(
                        file,
                        &l,
                        format!(
                            "unknown firewall '{}' (expected iptables, nftables or firewalld)",
                            l.value
                        ),
                    ))
                }
            },
            "IPT_FORWARD_ACCESS" => {
                c.ipt.forward =
                    postern_fw::iptables::Access::parse(&l.value).map_err(|e| err(file, &l, e))?;
            }
            "IPT_DNAT_ACCESS" => {
                c.ipt.dnat =
                    postern_fw::iptables::Access::parse(&l.value).map_err(|e| err(file, &l, e))?;
            }
            "IPT_OUTPUT_ACCESS" | "IPT_SNAT_ACCESS" | "IPT_MASQUERADE_ACCESS" => {
                postern_fw::iptables::Access::parse(&l.value).map_err(|e| err(file, &l, e))?;
                notes.push(Note {
                    file: file.to_owned(),
                    line: l.number,
                    text: format!("{name} has no effect: OUTPUT, SNAT and MASQUERADE rules are not implemented in posternd yet"),
                });
                continue;
            }
            "ENABLE_IPT_FORWARDING" | "ENABLE_NFT_FORWARDING" => {
                c.nat_forwarding = boolean(file, &l)?
            }
            "ENABLE_IPT_LOCAL_NAT" | "ENABLE_NFT_LOCAL_NAT" => c.nat_local = boolean(file, &l)?,
            "IPT_INPUT_ACCESS" => {
                c.ipt.input =
                    postern_fw::iptables::Access::parse(&l.value).map_err(|e| err(file, &l, e))?;
            }
            "FIREWALL_EXE" => {
                let p = PathBuf::from(&l.value);
                let name = p
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                c.ipt.ip6tables = p.with_file_name(name.replacen("iptables", "ip6tables", 1));
                c.ipt.iptables = p;
            }
            "NFT_TABLE" => {
                c.nft_set = true;
                c.nft_table = parse_table(&l.value).map_err(|e| err(file, &l, e.to_string()))?
            }
            "NFT_CHAIN" => {
                c.nft_set = true;
                parse_table(&format!("inet {}", l.value))
                    .map_err(|e| err(file, &l, e.to_string()))?;
                c.nft_chain = Some(l.value.clone());
            }
            "NFT_DEFAULT_DROP" => {
                c.nft_set = true;
                c.nft_default_drop = boolean(file, &l)?
            }
            "NFT_EXE" => c.nft_exe = PathBuf::from(&l.value),
            "NFT_GRANTS" => {
                c.nft_netlink = match l.value.to_ascii_lowercase().as_str() {
                    "netlink" => true,
                    "nft" => false,
                    _ => {
                        return Err(err(
                            file,
                            &l,
                            format!("'{}' is not netlink or nft", l.value),
                        ))
                    }
                }
            }
            "CMD_EXEC_TIMEOUT" => c.cmd_exec_timeout = number(file, &l, 1, 3600)?,
            "PRIVILEGE_SEPARATION" => c.privilege_separation = boolean(file, &l)?,
            "WORKER_USER" => {
                if crate::ids::user(&l.value).is_none_or(|u| u.uid == 0) {
                    return Err(err(
                        file,
                        &l,
                        format!("'{}' is not a non-root user of this system", l.value),
                    ));
                }
                c.worker_user = Some(l.value.clone());
            }
            "MAX_REPLAY_ENTRIES" => {
                c.max_replay_entries = number(file, &l, 100, 100_000_000)? as usize
            }
            "VERBOSE" => {
                c.verbose = l
                    .value
                    .parse::<u32>()
                    .map(|v| v > 0)
                    .or_else(|_| boolean(file, &l))?
            }
            "FLEET_REDIS_URL" => {
                let u = l.value.as_str();
                if !(u.starts_with("redis://") || u.starts_with("rediss://")) {
                    return Err(err(
                        file,
                        &l,
                        "expected redis://[user@]host:port/db or rediss://...",
                    ));
                }
                fleet.url = Some((l.value.clone(), l.number));
            }
            "FLEET_REDIS_CA_FILE" => fleet.ca_file = Some(PathBuf::from(&l.value)),
            "FLEET_REDIS_PASSWORD_FILE" => {
                let p = PathBuf::from(&l.value);
                let text = read(&p).map_err(|e| err(file, &l, e.to_string()))?;
                private(&p).map_err(|m| err(file, &l, m))?;
                let pw = text.lines().next().unwrap_or("").trim().to_owned();
                if pw.is_empty() {
                    return Err(err(file, &l, format!("{} holds no password", p.display())));
                }
                fleet.password = Some(postern_proto::Key::from_bytes(pw.into_bytes()));
            }
            "FLEET_KEY_BASE64" => {
                let k = postern_proto::Key::from_base64(&l.value)
                    .map_err(|e| err(file, &l, format!("not base64: {e}")))?;
                if k.len() < 32 {
                    return Err(err(
                        file,
                        &l,
                        "the fleet key must be at least 32 bytes (postern --key-gen prints one)",
                    ));
                }
                fleet.key = Some(k);
                private(file).map_err(|m| err(file, &l, m))?;
            }
            "FLEET_ON_REDIS_DOWN" => {
                fleet.on_down = Some(match l.value.to_ascii_lowercase().as_str() {
                    "closed" => OnRedisDown::Closed,
                    "local" => OnRedisDown::Local,
                    _ => {
                        return Err(err(
                            file,
                            &l,
                            format!("'{}' is not closed or local", l.value),
                        ))
                    }
                })
            }
            "FLEET_REDIS_TIMEOUT_MS" => fleet.timeout_ms = Some(number(file, &l, 1, 5000)?),
            "FLEET_GATEWAY_NAME" => fleet.gateway = Some(l.value.clone()),
            "FLEET_REDIS_PREFIX" => fleet.prefix = Some(l.value.clone()),
            "FLEET_REDIS_WAIT" => fleet.wait_replicas = Some(number(file, &l, 0, 16)?),
            "FWKNOP_RUN_DIR" | "FWKNOP_CONF_DIR" | "DIGEST_FILE" | "FWKNOP_PID_FILE"
            | "ACCESS_FILE" | "ACCESS_FOLDER" | "CONTROL_SOCKET" => {}
            "DIGEST_DB_FILE" => {
                return Err(err(
                    file,
                    &l,
                    "the gdbm digest store is not supported; use DIGEST_FILE",
                ))
            }
            _ => return Err(err(file, &l, "unknown directive")),
        }
        let key: &'static str = match name {
            "FWKNOP_RUN_DIR" => "FWKNOP_RUN_DIR",
            "FWKNOP_CONF_DIR" => "FWKNOP_CONF_DIR",
            "DIGEST_FILE" => "DIGEST_FILE",
            "FWKNOP_PID_FILE" => "FWKNOP_PID_FILE",
            "ACCESS_FILE" => "ACCESS_FILE",
            "ACCESS_FOLDER" => "ACCESS_FOLDER",
            "CONTROL_SOCKET" => "CONTROL_SOCKET",
            _ => "",
        };
        if !key.is_empty() {
            set.insert(key, l.value.clone());
        }
        vars.insert(l.name.clone(), l.value.clone());
    }
    if c.nft_chain.is_some() && c.nft_default_drop {
        return Err(ConfigError {
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
        set.get("FWKNOP_RUN_DIR")
            .map_or("/run/postern", String::as_str),
    );
    let conf = PathBuf::from(
        set.get("FWKNOP_CONF_DIR")
            .cloned()
            .unwrap_or_else(|| conf_dir.display().to_string()),
    );
    // The replay store must survive a reboot (a packet captured just before one would
    // otherwise be replayable after it), so it lives in /var/lib, not in the run dir.
    c.digest_file_set = set.contains_key("DIGEST_FILE");
    c.digest_file = set.get("DIGEST_FILE").map_or_else(
        || PathBuf::from("/var/lib/postern/digest.cache"),
        PathBuf::from,
    );
    c.pid_file = set
        .get("FWKNOP_PID_FILE")
        .map_or_else(|| run_dir.join("posternd.pid"), PathBuf::from);
    c.control_socket = set
        .get("CONTROL_SOCKET")
        .map_or_else(|| run_dir.join("posternd.sock"), PathBuf::from);
    c.access_file = set
        .get("ACCESS_FILE")
        .map_or_else(|| conf.join("access.conf"), PathBuf::from);
    c.access_folder = set.get("ACCESS_FOLDER").map(PathBuf::from);
    c.run_dir = run_dir;
    c.fleet = fleet.finish(file)?;
    Ok((c, notes))
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

    /// Settings as text.
    pub fn dump(&self) -> String {
        let yn = |b: bool| if b { "Y" } else { "N" };
        let mut s = String::new();
        s.push_str(&format!("[{}]\n", self.file.display()));
        s.push_str(&format!(
            "{:<28}{}\n",
            "PCAP_INTF",
            self.interfaces.join(",")
        ));
        s.push_str(&format!(
            "{:<28}udp port {}\n",
            "PCAP_FILTER", self.spa_port
        ));
        s.push_str(&format!(
            "{:<28}{}\n",
            "ENABLE_UDP_SERVER",
            yn(self.udp_server)
        ));
        if let Some(p) = &self.pcap_file {
            s.push_str(&format!("{:<28}{}\n", "PCAP_FILE", p.display()));
        }
        s.push_str(&format!(
            "{:<28}{}\n",
            "ENABLE_SPA_PACKET_AGING",
            yn(self.aging())
        ));
        s.push_str(&format!(
            "{:<28}{}\n",
            "MAX_SPA_PACKET_AGE", self.max_packet_age
        ));
        s.push_str(&format!(
            "{:<28}{}\n",
            "ENABLE_DIGEST_PERSISTENCE",
            yn(self.digest_persistence)
        ));
        s.push_str(&format!(
            "{:<28}{}\n",
            "FWKNOP_RUN_DIR",
            self.run_dir.display()
        ));
        s.push_str(&format!(
            "{:<28}{}\n",
            "DIGEST_FILE",
            self.digest_file.display()
        ));
        s.push_str(&format!(
            "{:<28}{}\n",
            "FWKNOP_PID_FILE",
            self.pid_file.display()
        ));
        s.push_str(&format!(
            "{:<28}{}\n",
            "CONTROL_SOCKET",
            self.control_socket.display()
        ));
        s.push_str(&format!(
            "{:<28}{}\n",
            "ACCESS_FILE",
            self.access_file.display()
        ));
        if let Some(f) = &self.access_folder {
            s.push_str(&format!("{:<28}{}\n", "ACCESS_FOLDER", f.display()));
        }
        s.push_str(&format!(
            "{:<28}{}\n",
            "FLUSH_IPT_AT_INIT",
            yn(self.flush_at_init)
        ));
        s.push_str(&format!(
            "{:<28}{}\n",
            "FLUSH_IPT_AT_EXIT",
            yn(self.flush_at_exit)
        ));
        s.push_str(&format!(
            "{:<28}{}\n",
            "FIREWALL_TYPE",
            match self.firewall_type {
                Some(FirewallType::Nftables) => "nftables",
                Some(FirewallType::Iptables) => "iptables",
                Some(FirewallType::Firewalld) => "firewalld",
                None => "(not set: chosen from the host at start, see --check-config)",
            }
        ));
        let fam = match self.nft_table.0 {
            Family::Inet => "inet",
            Family::Ip => "ip",
            Family::Ip6 => "ip6",
        };
        s.push_str(&format!("{:<28}{fam} {}\n", "NFT_TABLE", self.nft_table.1));
        if let Some(c) = &self.nft_chain {
            s.push_str(&format!("{:<28}{c}\n", "NFT_CHAIN"));
        }
        s.push_str(&format!(
            "{:<28}{}\n",
            "NFT_DEFAULT_DROP",
            yn(self.nft_default_drop)
        ));
        s.push_str(&format!("{:<28}{}\n", "NFT_EXE", self.nft_exe.display()));
        s.push_str(&format!(
            "{:<28}{}\n",
            "NFT_GRANTS",
            if self.nft_netlink { "netlink" } else { "nft" }
        ));
        s.push_str(&format!(
            "{:<28}{}\n",
            "CMD_EXEC_TIMEOUT", self.cmd_exec_timeout
        ));
        s.push_str(&format!(
            "{:<28}{}\n",
            "MAX_REPLAY_ENTRIES", self.max_replay_entries
        ));
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<(ServerConfig, Vec<Note>), ConfigError> {
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
        assert!(p("ENABLE_SPA_OVER_HTTP Y\n")
            .unwrap_err()
            .to_string()
            .contains("ENABLE_SPA_OVER_HTTP: SPA over HTTP"));
        assert!(p("ENABLE_SPA_OVER_HTTP N\n").is_ok());
        assert!(p("PCAP_FILTER tcp port 1\n").is_err());
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
        assert_eq!(notes.len(), 3);
        assert_eq!(notes[0].to_string(), "/etc/postern/fwknopd.conf:1: PCAP_LOOP_SLEEP has no effect: posternd has no pcap polling loop");
    }
}
