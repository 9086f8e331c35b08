//! `access.conf`: one stanza per `SOURCE` line, with `%include`, `%include_folder` and
//! `%include_keys`. A key-bearing file readable by group or others is refused.

use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use postern_proto::{DigestType, EncryptionMode, HmacKey, Key, Keys, Protocol};

use super::{boolean, err, lines, number, read, ConfigError, Line};

/// An address or network of SOURCE/DESTINATION.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Net {
    /// `ANY`.
    Any,
    /// An address with a prefix length.
    Prefix(IpAddr, u8),
}

impl Net {
    /// Whether `ip` is in this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self, ip) {
            (Net::Any, _) => true,
            (Net::Prefix(IpAddr::V4(n), p), IpAddr::V4(a)) => {
                let mask = if *p == 0 {
                    0
                } else {
                    u32::MAX << (32 - u32::from(*p))
                };
                u32::from(*n) & mask == u32::from(a) & mask
            }
            (Net::Prefix(IpAddr::V6(n), p), IpAddr::V6(a)) => {
                let mask = if *p == 0 {
                    0
                } else {
                    u128::MAX << (128 - u32::from(*p))
                };
                u128::from(*n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }

    /// Parse `ANY`, `a.b.c.d`, `a.b.c.d/NN`, `a.b.c.d/m.m.m.m`, or IPv6 `addr[/NN]`.
    pub fn parse(s: &str) -> Option<Net> {
        if s.eq_ignore_ascii_case("any") {
            return Some(Net::Any);
        }
        let (addr, mask) = match s.split_once('/') {
            Some((a, m)) => (a, Some(m)),
            None => (s, None),
        };
        let ip: IpAddr = addr.parse().ok()?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let prefix = match mask {
            None => max,
            Some(m) if m.contains('.') && ip.is_ipv4() => {
                let bits = u32::from(m.parse::<std::net::Ipv4Addr>().ok()?);
                let ones = bits.leading_ones();
                if bits.checked_shl(ones).unwrap_or(0) != 0 {
                    return None; // not a contiguous mask
                }
                ones as u8
            }
            Some(m) => m.parse::<u8>().ok().filter(|&p| p <= max)?,
        };
        Some(Net::Prefix(ip, prefix))
    }
}

impl std::fmt::Display for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Net::Any => f.write_str("ANY"),
            Net::Prefix(ip, p) => write!(f, "{ip}/{p}"),
        }
    }
}

/// An OPEN_PORTS / RESTRICT_PORTS entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRule {
    /// Protocol.
    pub proto: Protocol,
    /// Port (0..=65535).
    pub port: u16,
}

/// Whether `rules` list exactly this protocol and port.
fn listed(rules: &[PortRule], p: &postern_proto::PortSpec) -> bool {
    rules.iter().any(|r| r.proto == p.proto && r.port == p.port)
}

impl std::fmt::Display for PortRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.proto.name(), self.port)
    }
}

/// A command cycle: run `open`, then `close` after `timer` seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CmdCycle {
    /// CMD_CYCLE_OPEN.
    pub open: String,
    /// CMD_CYCLE_CLOSE (`None` for `NONE`).
    pub close: Option<String>,
    /// CMD_CYCLE_TIMER.
    pub timer: u64,
}

/// One access stanza.
#[derive(Debug, Clone)]
pub struct Stanza {
    /// File of its SOURCE line.
    pub file: PathBuf,
    /// Line of its SOURCE line.
    pub line: usize,
    /// SOURCE.
    pub source: Vec<Net>,
    /// DESTINATION.
    pub destination: Option<Vec<Net>>,
    /// OPEN_PORTS.
    pub open_ports: Option<Vec<PortRule>>,
    /// RESTRICT_PORTS.
    pub restrict_ports: Option<Vec<PortRule>>,
    /// Keys.
    pub keys: Keys,
    /// FW_ACCESS_TIMEOUT.
    pub fw_access_timeout: u64,
    /// MAX_FW_TIMEOUT.
    pub max_fw_timeout: u64,
    /// ENABLE_CMD_EXEC.
    pub enable_cmd_exec: bool,
    /// FORCE_NAT `<ip> <port>`: every accepted request is sent to ip:port.
    pub force_nat: Option<(std::net::IpAddr, u16)>,
    /// FLEET_GRANTS (posternd's own): grants of this stanza are applied by every
    /// gateway of the fleet (see `FLEET_REDIS_URL`).
    pub fleet_grants: bool,
    /// CMD_EXEC_USER.
    pub cmd_exec_user: Option<String>,
    /// CMD_EXEC_GROUP.
    pub cmd_exec_group: Option<String>,
    /// CMD_CYCLE_*.
    pub cmd_cycle: Option<CmdCycle>,
    /// REQUIRE_USERNAME.
    pub require_username: Option<String>,
    /// REQUIRE_SOURCE_ADDRESS.
    pub require_source_address: bool,
    /// ACCESS_EXPIRE / ACCESS_EXPIRE_EPOCH, Unix seconds.
    pub access_expire: Option<u64>,
}

impl Stanza {
    /// A short name for logs: `file:line`.
    pub fn name(&self) -> String {
        format!(
            "{}:{}",
            self.file.file_name().map_or_else(
                || self.file.display().to_string(),
                |n| n.to_string_lossy().into_owned()
            ),
            self.line
        )
    }

    /// The first of `ports` that RESTRICT_PORTS lists.
    pub fn restricted_port(
        &self,
        ports: &[postern_proto::PortSpec],
    ) -> Option<postern_proto::PortSpec> {
        let r = self.restrict_ports.as_deref()?;
        ports.iter().copied().find(|p| listed(r, p))
    }

    /// The first of `ports` that OPEN_PORTS (when set) does not list.
    pub fn unopened_port(
        &self,
        ports: &[postern_proto::PortSpec],
    ) -> Option<postern_proto::PortSpec> {
        let o = self.open_ports.as_deref()?;
        ports.iter().copied().find(|p| !listed(o, p))
    }

    /// Whether this stanza applies to a packet from `src` to `dst`.
    pub fn matches(&self, src: IpAddr, dst: IpAddr) -> bool {
        self.source.iter().any(|n| n.contains(src))
            && self
                .destination
                .as_ref()
                .is_none_or(|d| dst.is_unspecified() || d.iter().any(|n| n.contains(dst)))
    }

    /// Settings as text, keys redacted.
    pub fn dump(&self) -> String {
        let list = |v: &[Net]| {
            v.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let ports = |v: &[PortRule]| {
            v.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let yn = |b: bool| if b { "Y" } else { "N" };
        let mut s = format!("{:<28}{}\n", "SOURCE", list(&self.source));
        if let Some(d) = &self.destination {
            s.push_str(&format!("{:<28}{}\n", "DESTINATION", list(d)));
        }
        if let Some(p) = &self.open_ports {
            s.push_str(&format!("{:<28}{}\n", "OPEN_PORTS", ports(p)));
        }
        if let Some(p) = &self.restrict_ports {
            s.push_str(&format!("{:<28}{}\n", "RESTRICT_PORTS", ports(p)));
        }
        s.push_str(&format!(
            "{:<28}<redacted, {} bytes>\n",
            "KEY",
            self.keys.encryption_key().len()
        ));
        if let Some(h) = self.keys.hmac() {
            s.push_str(&format!(
                "{:<28}<redacted, {} bytes>\n",
                "HMAC_KEY",
                h.key.len()
            ));
            s.push_str(&format!(
                "{:<28}{}\n",
                "HMAC_DIGEST_TYPE",
                h.digest.display_name()
            ));
        }
        s.push_str(&format!(
            "{:<28}{}\n",
            "ENCRYPTION_MODE",
            self.keys.mode().display_name()
        ));
        s.push_str(&format!(
            "{:<28}{}\n",
            "FW_ACCESS_TIMEOUT", self.fw_access_timeout
        ));
        s.push_str(&format!(
            "{:<28}{}\n",
            "MAX_FW_TIMEOUT", self.max_fw_timeout
        ));
        s.push_str(&format!(
            "{:<28}{}\n",
            "ENABLE_CMD_EXEC",
            yn(self.enable_cmd_exec)
        ));
        if self.fleet_grants {
            s.push_str(&format!("{:<28}Y\n", "FLEET_GRANTS"));
        }
        if let Some(u) = &self.cmd_exec_user {
            s.push_str(&format!("{:<28}{u}\n", "CMD_EXEC_USER"));
        }
        if let Some(g) = &self.cmd_exec_group {
            s.push_str(&format!("{:<28}{g}\n", "CMD_EXEC_GROUP"));
        }
        if let Some(c) = &self.cmd_cycle {
            s.push_str(&format!("{:<28}{}\n", "CMD_CYCLE_OPEN", c.open));
            s.push_str(&format!(
                "{:<28}{}\n",
                "CMD_CYCLE_CLOSE",
                c.close.as_deref().unwrap_or("NONE")
            ));
            s.push_str(&format!("{:<28}{}\n", "CMD_CYCLE_TIMER", c.timer));
        }
        if let Some(u) = &self.require_username {
            s.push_str(&format!("{:<28}{u}\n", "REQUIRE_USERNAME"));
        }
        s.push_str(&format!(
            "{:<28}{}\n",
            "REQUIRE_SOURCE_ADDRESS",
            yn(self.require_source_address)
        ));
        if let Some(e) = self.access_expire {
            s.push_str(&format!("{:<28}{e}\n", "ACCESS_EXPIRE_EPOCH"));
        }
        s
    }
}

/// Stanza being read.
#[derive(Default)]
struct Draft {
    file: PathBuf,
    line: usize,
    source: Vec<Net>,
    destination: Option<Vec<Net>>,
    open_ports: Option<Vec<PortRule>>,
    restrict_ports: Option<Vec<PortRule>>,
    key: Option<(Key, Line)>,
    hmac_key: Option<(Key, Line)>,
    hmac_type: Option<(DigestType, Line)>,
    mode: Option<(EncryptionMode, Line)>,
    fw_access_timeout: u64,
    max_fw_timeout: u64,
    enable_cmd_exec: bool,
    force_nat: Option<(std::net::IpAddr, u16)>,
    fleet_grants: bool,
    cmd_exec_user: Option<String>,
    cmd_exec_group: Option<String>,
    cycle_open: Option<(String, Line)>,
    cycle_close: Option<(String, Line)>,
    cycle_timer: Option<u64>,
    require_username: Option<String>,
    require_source_address: bool,
    access_expire: Option<u64>,
}

const KEY_DIRECTIVES: [&str; 5] = [
    "KEY",
    "KEY_BASE64",
    "HMAC_KEY",
    "HMAC_KEY_BASE64",
    "HMAC_DIGEST_TYPE",
];

fn stanza_err(d: &Draft, directive: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        file: d.file.clone(),
        line: d.line,
        directive: directive.into(),
        message: message.into(),
    }
}

impl Draft {
    fn finish(self) -> Result<Stanza, ConfigError> {
        let Some((key, key_line)) = self.key.clone() else {
            return Err(stanza_err(
                &self,
                "SOURCE",
                "stanza has no KEY or KEY_BASE64 (GnuPG stanzas are not supported yet)",
            ));
        };
        let mode = self.mode.as_ref().map_or(EncryptionMode::Cbc, |(m, _)| *m);
        if self.hmac_key.is_none() {
            if let Some((_, l)) = &self.hmac_type {
                return Err(err(
                    &self.file,
                    l,
                    "HMAC_DIGEST_TYPE without HMAC_KEY or HMAC_KEY_BASE64",
                ));
            }
        }
        let hmac = self.hmac_key.clone().map(|(k, _)| HmacKey {
            key: k,
            digest: self
                .hmac_type
                .as_ref()
                .map_or(DigestType::Sha256, |(d, _)| *d),
        });
        let hmac_line = self.hmac_key.as_ref().map(|(_, l)| l.clone());
        let keys = Keys::new(key, mode, hmac).map_err(|e| {
            let line = match e {
                postern_proto::Error::HmacKeyEqualsEncryptionKey
                | postern_proto::Error::InvalidHmacKeyLength { .. } => {
                    hmac_line.clone().unwrap_or(key_line.clone())
                }
                postern_proto::Error::LegacyWithHmac => {
                    self.mode.clone().map_or(key_line.clone(), |(_, l)| l)
                }
                _ => key_line.clone(),
            };
            err(&self.file, &line, e.to_string())
        })?;
        let cmd_cycle = match (self.cycle_open.clone(), self.cycle_close.clone()) {
            (None, None) => None,
            (Some((_, l)), None) => {
                return Err(err(
                    &self.file,
                    &l,
                    "CMD_CYCLE_OPEN needs CMD_CYCLE_CLOSE (or CMD_CYCLE_CLOSE NONE)",
                ))
            }
            (None, Some((_, l))) => {
                return Err(err(
                    &self.file,
                    &l,
                    "CMD_CYCLE_CLOSE without CMD_CYCLE_OPEN",
                ))
            }
            (Some((open, _)), Some((close, l))) => {
                let close = (!close.eq_ignore_ascii_case("NONE")).then_some(close);
                let timer = match (self.cycle_timer, &close) {
                    (Some(t), _) => t,
                    (None, None) => 0,
                    (None, Some(_)) => {
                        return Err(err(&self.file, &l, "CMD_CYCLE_CLOSE needs CMD_CYCLE_TIMER"))
                    }
                };
                Some(CmdCycle { open, close, timer })
            }
        };
        Ok(Stanza {
            file: self.file,
            line: self.line,
            source: self.source,
            destination: self.destination,
            open_ports: self.open_ports,
            restrict_ports: self.restrict_ports,
            keys,
            fw_access_timeout: if self.fw_access_timeout == 0 {
                30
            } else {
                self.fw_access_timeout
            },
            max_fw_timeout: if self.max_fw_timeout == 0 {
                300
            } else {
                self.max_fw_timeout
            },
            enable_cmd_exec: self.enable_cmd_exec,
            fleet_grants: self.fleet_grants,
            force_nat: self.force_nat,
            cmd_exec_user: self.cmd_exec_user,
            cmd_exec_group: self.cmd_exec_group,
            cmd_cycle,
            require_username: self.require_username,
            require_source_address: self.require_source_address,
            access_expire: self.access_expire,
        })
    }
}

fn nets(file: &Path, l: &Line) -> Result<Vec<Net>, ConfigError> {
    l.value
        .split(',')
        .map(str::trim)
        .map(|s| {
            Net::parse(s).ok_or_else(|| {
                err(
                    file,
                    l,
                    format!("'{s}' is not ANY, an address or a network"),
                )
            })
        })
        .collect()
}

fn port_rules(file: &Path, l: &Line) -> Result<Vec<PortRule>, ConfigError> {
    l.value
        .split(',')
        .map(str::trim)
        .map(|s| {
            let bad = || err(file, l, format!("'{s}' is not tcp/PORT or udp/PORT"));
            let (proto, port) = s.split_once('/').ok_or_else(bad)?;
            let proto = match proto.to_ascii_lowercase().as_str() {
                "tcp" => Protocol::Tcp,
                "udp" => Protocol::Udp,
                _ => return Err(bad()),
            };
            Ok(PortRule {
                proto,
                port: port.parse().map_err(|_| bad())?,
            })
        })
        .collect()
}

/// Days since 1970-01-01 of a civil date (proleptic Gregorian).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `MM/DD/YYYY` at 00:00 UTC.
fn expire_date(file: &Path, l: &Line) -> Result<u64, ConfigError> {
    let bad = || err(file, l, format!("'{}' is not a date MM/DD/YYYY", l.value));
    let p: Vec<&str> = l.value.split('/').collect();
    let [m, d, y] = p.as_slice() else {
        return Err(bad());
    };
    let (m, d, y): (i64, i64, i64) = (
        m.parse().map_err(|_| bad())?,
        d.parse().map_err(|_| bad())?,
        y.parse().map_err(|_| bad())?,
    );
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || !(1970..=9999).contains(&y) {
        return Err(bad());
    }
    Ok((days_from_civil(y, m, d) * 86_400) as u64)
}

fn key_value(file: &Path, l: &Line, base64: bool) -> Result<Key, ConfigError> {
    if l.value.contains("__CHANGEME__") {
        return Err(err(
            file,
            l,
            "the key is still __CHANGEME__: generate keys with 'postern --key-gen'",
        ));
    }
    if l.value.is_empty() {
        return Err(err(file, l, "empty key"));
    }
    if base64 {
        Key::from_base64(&l.value).map_err(|_| err(file, l, "not valid base64"))
    } else {
        Ok(Key::from_passphrase(&l.value))
    }
}

fn check_mode(file: &Path) -> Result<(), ConfigError> {
    let meta = std::fs::metadata(file).map_err(|e| ConfigError {
        file: file.to_owned(),
        line: 0,
        directive: String::new(),
        message: format!("cannot read: {e}"),
    })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(ConfigError {
            file: file.to_owned(),
            line: 0,
            directive: String::new(),
            message: format!(
                "holds keys but is accessible by group or others (mode {mode:04o}); run: chmod 600 {}",
                file.display()
            ),
        });
    }
    Ok(())
}

fn resolve(base: &Path, rel: &str) -> PathBuf {
    let p = PathBuf::from(rel);
    if p.is_absolute() {
        p
    } else {
        base.parent().unwrap_or(Path::new("/")).join(p)
    }
}

/// Apply one directive line to the current draft.
fn apply(d: &mut Draft, file: &Path, l: &Line) -> Result<(), ConfigError> {
    match l.name.as_str() {
        "DESTINATION" => d.destination = Some(nets(file, l)?),
        "OPEN_PORTS" => d.open_ports = Some(port_rules(file, l)?),
        "RESTRICT_PORTS" => d.restrict_ports = Some(port_rules(file, l)?),
        "KEY" => d.key = Some((key_value(file, l, false)?, l.clone())),
        "KEY_BASE64" => d.key = Some((key_value(file, l, true)?, l.clone())),
        "HMAC_KEY" => d.hmac_key = Some((key_value(file, l, false)?, l.clone())),
        "HMAC_KEY_BASE64" => d.hmac_key = Some((key_value(file, l, true)?, l.clone())),
        "HMAC_DIGEST_TYPE" => {
            d.hmac_type = Some((
                l.value
                    .parse()
                    .map_err(|e: postern_proto::Error| err(file, l, e.to_string()))?,
                l.clone(),
            ))
        }
        "ENCRYPTION_MODE" => {
            d.mode = Some((
                l.value
                    .parse()
                    .map_err(|e: postern_proto::Error| err(file, l, e.to_string()))?,
                l.clone(),
            ))
        }
        "FW_ACCESS_TIMEOUT" => d.fw_access_timeout = number(file, l, 0, 8_388_608)?,
        "MAX_FW_TIMEOUT" => d.max_fw_timeout = number(file, l, 0, 8_388_608)?,
        "ENABLE_CMD_EXEC" => d.enable_cmd_exec = boolean(file, l)?,
        "FLEET_GRANTS" => d.fleet_grants = boolean(file, l)?,
        "CMD_EXEC_USER" => d.cmd_exec_user = Some(l.value.clone()),
        "CMD_EXEC_GROUP" => d.cmd_exec_group = Some(l.value.clone()),
        "CMD_CYCLE_OPEN" | "CMD_CYCLE_CLOSE" => {
            if l.value.is_empty() || l.value.len() >= 256 {
                return Err(err(file, l, "command must be 1 to 255 characters"));
            }
            if l.name == "CMD_CYCLE_OPEN" {
                d.cycle_open = Some((l.value.clone(), l.clone()));
            } else {
                d.cycle_close = Some((l.value.clone(), l.clone()));
            }
        }
        "CMD_CYCLE_TIMER" => d.cycle_timer = Some(number(file, l, 1, 8_388_608)?),
        "REQUIRE_USERNAME" => d.require_username = Some(l.value.clone()),
        "REQUIRE_SOURCE_ADDRESS" | "REQUIRE_SOURCE" => d.require_source_address = boolean(file, l)?,
        "ACCESS_EXPIRE" => d.access_expire = Some(expire_date(file, l)?),
        "ACCESS_EXPIRE_EPOCH" => {
            d.access_expire = Some(number(file, l, 0, u64::from(u32::MAX) * 4)?)
        }
        "ENABLE_CMD_SUDO_EXEC" => {
            if boolean(file, l)? {
                return Err(err(
                    file,
                    l,
                    "sudo execution is not implemented in posternd yet (use CMD_EXEC_USER)",
                ));
            }
        }
        "CMD_SUDO_EXEC_USER" | "CMD_SUDO_EXEC_GROUP" => return Err(err(
            file,
            l,
            "sudo execution is not implemented in posternd yet (use CMD_EXEC_USER/CMD_EXEC_GROUP)",
        )),
        "FORCE_NAT" => {
            let w: Vec<&str> = l.value.split_whitespace().collect();
            let parsed = match w.as_slice() {
                [ip, port] => ip
                    .parse::<std::net::IpAddr>()
                    .ok()
                    .zip(port.parse::<u16>().ok().filter(|p| *p > 0)),
                _ => None,
            };
            d.force_nat =
                Some(parsed.ok_or_else(|| {
                    err(file, l, format!("'{}' is not '<address> <port>'", l.value))
                })?);
        }
        "FORCE_SNAT" | "FORCE_MASQUERADE" | "FORWARD_ALL" | "DISABLE_DNAT" => {
            if l.value.eq_ignore_ascii_case("n") {
                return Ok(());
            }
            return Err(err(
                file,
                l,
                "SNAT, MASQUERADE, FORWARD_ALL and DISABLE_DNAT are not implemented in posternd yet (DNAT NAT access is)",
            ));
        }
        n if n.starts_with("GPG_") => {
            return Err(err(file, l, "GnuPG stanzas are not supported yet"))
        }
        _ => return Err(err(file, l, "unknown directive")),
    }
    Ok(())
}

/// Read an access file (and what it includes).
pub fn load(file: &Path) -> Result<Vec<Stanza>, ConfigError> {
    load_depth(file, 0)
}

/// Read every `*.conf` file of a folder, in name order.
pub fn load_folder(dir: &Path, from: &Path, depth: usize) -> Result<Vec<Stanza>, ConfigError> {
    let entries = std::fs::read_dir(dir).map_err(|e| ConfigError {
        file: from.to_owned(),
        line: 0,
        directive: "%include_folder".into(),
        message: format!("cannot read folder {}: {e}", dir.display()),
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "conf") && p.is_file())
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        out.extend(load_depth(&f, depth + 1)?);
    }
    Ok(out)
}

const MAX_INCLUDE_DEPTH: usize = 3;

fn load_depth(file: &Path, depth: usize) -> Result<Vec<Stanza>, ConfigError> {
    let text = read(file)?;
    if lines(&text)
        .iter()
        .any(|l| KEY_DIRECTIVES.contains(&l.name.as_str()))
    {
        check_mode(file)?;
    }
    parse_text(&text, file, depth)
}

/// Parse access.conf text as if read from `file` (includes are resolved relative to
/// it and read from disk). Total: any text gives stanzas or an error.
pub fn parse_text(text: &str, file: &Path, depth: usize) -> Result<Vec<Stanza>, ConfigError> {
    let ls = lines(text);
    let mut out = Vec::new();
    let mut draft: Option<Draft> = None;
    for l in ls {
        match l.name.as_str() {
            "SOURCE" => {
                if let Some(d) = draft.take() {
                    out.push(d.finish()?);
                }
                draft = Some(Draft {
                    file: file.to_owned(),
                    line: l.number,
                    source: nets(file, &l)?,
                    ..Draft::default()
                });
            }
            "%INCLUDE" | "%INCLUDE_FOLDER" => {
                if depth >= MAX_INCLUDE_DEPTH {
                    return Err(err(
                        file,
                        &l,
                        "includes nested too deeply (at most 3 levels)",
                    ));
                }
                if let Some(d) = draft.take() {
                    out.push(d.finish()?);
                }
                let target = resolve(file, &l.value);
                if l.name == "%INCLUDE" {
                    if !target.is_file() {
                        return Err(err(file, &l, format!("no file {}", target.display())));
                    }
                    out.extend(load_depth(&target, depth + 1)?);
                } else {
                    out.extend(load_folder(&target, file, depth)?);
                }
            }
            "%INCLUDE_KEYS" => {
                let Some(d) = draft.as_mut() else {
                    return Err(err(file, &l, "%include_keys must be inside a stanza"));
                };
                let target = resolve(file, &l.value);
                // A file a user may own: read safely, and the error names this line.
                let keys_text = read(&target)
                    .map_err(|e| err(file, &l, format!("{}: {}", target.display(), e.message)))?;
                check_mode(&target)?;
                for kl in lines(&keys_text) {
                    if KEY_DIRECTIVES.contains(&kl.name.as_str()) {
                        apply(d, &target, &kl)?;
                    } else {
                        return Err(err(&target, &kl, "only KEY, KEY_BASE64, HMAC_KEY, HMAC_KEY_BASE64 and HMAC_DIGEST_TYPE may appear in a %include_keys file"));
                    }
                }
            }
            _ => {
                let Some(d) = draft.as_mut() else {
                    return Err(err(
                        file,
                        &l,
                        "outside any stanza (a stanza starts with SOURCE)",
                    ));
                };
                apply(d, file, &l)?;
            }
        }
    }
    if let Some(d) = draft.take() {
        out.push(d.finish()?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("posternd-access-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        p
    }

    #[test]
    fn nets() {
        assert!(Net::parse("ANY")
            .unwrap()
            .contains("2001:db8::1".parse().unwrap()));
        let n = Net::parse("198.18.0.0/15").unwrap();
        assert!(n.contains("198.19.255.1".parse().unwrap()));
        assert!(!n.contains("198.20.0.1".parse().unwrap()));
        let m = Net::parse("10.0.0.0/255.255.0.0").unwrap();
        assert_eq!(m, Net::Prefix("10.0.0.0".parse().unwrap(), 16));
        assert!(Net::parse("10.0.0.0/255.0.255.0").is_none());
        assert!(Net::parse("10.0.0.0/33").is_none());
        assert!(Net::parse("2001:db8::/32")
            .unwrap()
            .contains("2001:db8:1::5".parse().unwrap()));
        assert!(!Net::parse("10.0.0.1")
            .unwrap()
            .contains("2001:db8::1".parse().unwrap()));
    }

    #[test]
    fn stanzas_includes_and_errors() {
        let d = tmp("a");
        write(&d, "keys.inc", "KEY inc-key\nHMAC_KEY inc-hmac\n");
        write(
            &d,
            "more.conf",
            "SOURCE 198.18.0.0/15\nKEY k2\nOPEN_PORTS tcp/22, UDP/53\n",
        );
        let main = write(
            &d,
            "access.conf",
            "# comment\nSOURCE ANY\n%include_keys keys.inc\nREQUIRE_USERNAME alice\nFW_ACCESS_TIMEOUT 0\n%include more.conf\nSOURCE: 10.0.0.1\nKEY_BASE64 QUJD\nACCESS_EXPIRE 01/02/2030\n",
        );
        let s = load(&main).unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].keys.encryption_key().as_bytes(), b"inc-key");
        assert_eq!(s[0].fw_access_timeout, 30, "0 falls back to the default");
        assert_eq!(s[1].open_ports.as_ref().unwrap()[1].proto, Protocol::Udp);
        assert_eq!(s[2].keys.encryption_key().as_bytes(), b"ABC");
        assert_eq!(s[2].access_expire, Some(1_893_542_400));
        assert_eq!(s[2].line, 7);

        let bad = |text: &str| {
            let p = write(&d, "bad.conf", text);
            load(&p).unwrap_err().to_string()
        };
        let f = d.join("bad.conf").display().to_string();
        assert_eq!(
            bad("SOURCE ANY\nKEY k\nBOGUS 1\n"),
            format!("{f}:3: BOGUS: unknown directive")
        );
        assert_eq!(
            bad("KEY k\n"),
            format!("{f}:1: KEY: outside any stanza (a stanza starts with SOURCE)")
        );
        assert_eq!(bad("SOURCE ANY\nOPEN_PORTS tcp/22\n"), format!("{f}:1: SOURCE: stanza has no KEY or KEY_BASE64 (GnuPG stanzas are not supported yet)"));
        assert_eq!(
            bad("SOURCE ANY\nKEY same\nHMAC_KEY same\n"),
            format!("{f}:3: HMAC_KEY: hmac key must differ from the encryption key")
        );
        assert!(bad("SOURCE ANY\nKEY_BASE64 __CHANGEME__\n")
            .contains(":2: KEY_BASE64: the key is still __CHANGEME__"));
        assert!(bad("SOURCE ANY\nKEY k\nENCRYPTION_MODE pcbc\n")
            .contains(":3: ENCRYPTION_MODE: encryption mode pcbc is not supported"));
        assert!(bad("SOURCE 10.0.0.300\nKEY k\n").contains(":1: SOURCE: '10.0.0.300' is not ANY"));
        assert!(bad("SOURCE ANY\nKEY k\nGPG_DECRYPT_ID x\n")
            .contains("GnuPG stanzas are not supported yet"));
        assert!(bad("SOURCE ANY\nKEY k\nCMD_CYCLE_OPEN /bin/true\n")
            .contains("CMD_CYCLE_OPEN needs CMD_CYCLE_CLOSE"));
        assert!(bad("SOURCE ANY\nKEY k\n%include nope.conf\n").contains(":3: %INCLUDE: no file"));
        // A key-bearing file readable by others is refused, with the chmod to run.
        let p = write(&d, "open.conf", "SOURCE ANY\nKEY k\n");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = load(&p).unwrap_err().to_string();
        assert!(
            e.contains("mode 0644") && e.contains(&format!("chmod 600 {}", p.display())),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn include_loops_are_bounded() {
        let d = tmp("loop");
        let p = write(&d, "loop.conf", "%include loop.conf\n");
        assert!(load(&p)
            .unwrap_err()
            .to_string()
            .contains("nested too deeply"));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn civil_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
    }
}
