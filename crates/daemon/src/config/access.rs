//! `access.conf`: one stanza per `SOURCE` line, with `%include`, `%include_folder` and
//! `%include_keys`. A key-bearing file readable by group or others is refused.
//!
//! Read as fwknopd 2.6.10 reads it (checked against the real one): relative include
//! paths are taken from the working directory (the directory of the including file only
//! as a fallback, with a note); `CMD_EXEC_USER`/`CMD_EXEC_GROUP` must name a user/group
//! of this system (a group name that is only a user's name gives that user's primary
//! group, as fwknopd resolves it); `ACCESS_EXPIRE` is read like fwknopd's
//! `%2d/%2d/%4d` (`3/10/01` is 2001-03-10) and an expired stanza is kept but never
//! matches (a note); a `%include_keys` key that is not base64 skips its stanza (a note).

use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use postern_proto::{DigestType, EncryptionMode, HmacKey, Key, Keys, Protocol};

use super::{boolean, err, lines, number, read, ConfigError, ConfigErrors, Line, Note};

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

/// How a stanza's NAT grants are translated (`FORCE_SNAT`, `FORCE_MASQUERADE`,
/// `FORWARD_ALL`, `DISABLE_DNAT`); see `pipeline::authorize` for what they do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NatOptions {
    /// FORCE_SNAT: SNAT to this address instead of SNAT_TRANSLATE_IP (with ENABLE_IPT_SNAT).
    pub force_snat: Option<IpAddr>,
    /// FORCE_MASQUERADE: MASQUERADE even when SNAT_TRANSLATE_IP is set (with ENABLE_IPT_SNAT).
    pub force_masquerade: bool,
    /// FORWARD_ALL: forward (and DNAT) every protocol and port from the source.
    pub forward_all: bool,
    /// DISABLE_DNAT: open the forward path only; no destination translation.
    pub disable_dnat: bool,
    /// Line and name of the FORCE_SNAT / FORCE_MASQUERADE line (for errors and notes).
    pub snat_at: Option<(usize, String)>,
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
    /// FORCE_SNAT, FORCE_MASQUERADE, FORWARD_ALL, DISABLE_DNAT.
    pub nat: NatOptions,
    /// FLEET_GRANTS (posternd's own): grants of this stanza are applied by every
    /// gateway of the fleet (see `FLEET_REDIS_URL`).
    pub fleet_grants: bool,
    /// CMD_EXEC_USER.
    pub cmd_exec_user: Option<String>,
    /// CMD_EXEC_GROUP.
    pub cmd_exec_group: Option<String>,
    /// ENABLE_CMD_SUDO_EXEC: command messages run as `SUDO_EXE` followed by these
    /// arguments and the command (see [`Stanza::sudo_args`]); `None` when off.
    pub cmd_sudo: Option<Vec<String>>,
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
        if let Some(a) = self.nat.force_snat {
            s.push_str(&format!("{:<28}{a}\n", "FORCE_SNAT"));
        }
        for (on, name) in [
            (self.nat.force_masquerade, "FORCE_MASQUERADE"),
            (self.nat.forward_all, "FORWARD_ALL"),
            (self.nat.disable_dnat, "DISABLE_DNAT"),
        ] {
            if on {
                s.push_str(&format!("{name:<28}Y\n"));
            }
        }
        if let Some(u) = &self.cmd_exec_user {
            s.push_str(&format!("{:<28}{u}\n", "CMD_EXEC_USER"));
        }
        if let Some(g) = &self.cmd_exec_group {
            s.push_str(&format!("{:<28}{g}\n", "CMD_EXEC_GROUP"));
        }
        if let Some(a) = &self.cmd_sudo {
            let args: String = a.iter().map(|x| format!("{x} ")).collect();
            s.push_str(&format!(
                "{:<28}Y (SUDO_EXE {args}COMMAND)\n",
                "ENABLE_CMD_SUDO_EXEC"
            ));
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
    nat: NatOptions,
    fleet_grants: bool,
    cmd_exec_user: Option<String>,
    cmd_exec_group: Option<String>,
    cmd_sudo: bool,
    cmd_sudo_user: Option<String>,
    cmd_sudo_group: Option<String>,
    cycle_open: Option<(String, Line)>,
    cycle_close: Option<(String, Line)>,
    cycle_timer: Option<u64>,
    require_username: Option<String>,
    require_source_address: bool,
    access_expire: Option<u64>,
    /// Why the stanza is skipped (a `%include_keys` key that is not base64).
    skip: Option<String>,
    /// Notes about this stanza's lines.
    notes: Vec<Note>,
    /// One of its lines was an error (reported): the stanza is not finished.
    broken: bool,
}

/// Every access.conf directive name [`apply`] takes (for "did you mean"; a test checks
/// that each of them is taken).
const NAMES: &[&str] = &[
    "SOURCE",
    "DESTINATION",
    "OPEN_PORTS",
    "RESTRICT_PORTS",
    "KEY",
    "KEY_BASE64",
    "HMAC_KEY",
    "HMAC_KEY_BASE64",
    "HMAC_DIGEST_TYPE",
    "ENCRYPTION_MODE",
    "FW_ACCESS_TIMEOUT",
    "MAX_FW_TIMEOUT",
    "ENABLE_CMD_EXEC",
    "ENABLE_CMD_SUDO_EXEC",
    "CMD_EXEC_USER",
    "CMD_EXEC_GROUP",
    "CMD_SUDO_EXEC_USER",
    "CMD_SUDO_EXEC_GROUP",
    "CMD_CYCLE_OPEN",
    "CMD_CYCLE_CLOSE",
    "CMD_CYCLE_TIMER",
    "REQUIRE_USERNAME",
    "REQUIRE_SOURCE",
    "REQUIRE_SOURCE_ADDRESS",
    "ACCESS_EXPIRE",
    "ACCESS_EXPIRE_EPOCH",
    "FORCE_NAT",
    "FORCE_SNAT",
    "FORCE_MASQUERADE",
    "FORWARD_ALL",
    "DISABLE_DNAT",
    "FLEET_GRANTS",
    "%INCLUDE",
    "%INCLUDE_FOLDER",
    "%INCLUDE_KEYS",
];

/// The access.conf directive closest to a misspelt `name`, if one is close.
fn did_you_mean(name: &str) -> Option<&'static str> {
    super::nearest(name, NAMES.iter().copied())
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
                "no keys found for this stanza: give KEY or KEY_BASE64 (in the stanza or in a %include_keys file)",
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
        let keys = Keys::for_stanza(key, mode, hmac).map_err(|e| {
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
        if let Some((line, directive)) = &self.nat.snat_at {
            if self.force_nat.is_none() && !self.nat.forward_all {
                return Err(ConfigError {
                    file: self.file.clone(),
                    line: *line,
                    directive: directive.clone(),
                    message: "FORCE_SNAT and FORCE_MASQUERADE need FORCE_NAT or FORWARD_ALL in the same stanza (as in fwknopd)".into(),
                });
            }
        }
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
            nat: self.nat,
            cmd_sudo: self.cmd_sudo.then(|| {
                sudo_args(
                    self.cmd_sudo_user.as_deref(),
                    self.cmd_sudo_group.as_deref(),
                    self.cmd_exec_group.is_some(),
                )
            }),
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
            // fwknopd refuses a /0 prefix ("Invalid IP mask"); ANY says it.
            if s.split_once('/').is_some_and(|(_, m)| m == "0") {
                return Err(err(
                    file,
                    l,
                    format!("'{s}': a /0 mask is refused, as fwknopd refuses it (write ANY)"),
                ));
            }
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

/// Read a `%<width>d` as C's `sscanf` does: leading blanks, then a sign and digits,
/// at most `width` characters in all.
fn scan_int(s: &mut &str, width: usize) -> Option<i64> {
    let t = s.trim_start();
    let b = t.as_bytes();
    let mut n = 0;
    if matches!(b.first(), Some(b'+' | b'-')) {
        n = 1;
    }
    let digits_from = n;
    while n < width && n < b.len() && b[n].is_ascii_digit() {
        n += 1;
    }
    if n == digits_from {
        return None;
    }
    let v = t[..n].parse().ok()?;
    *s = &t[n..];
    Some(v)
}

/// `ACCESS_EXPIRE` as fwknopd 2.6 reads it: `sscanf("%2d/%2d/%4d")` (anything after
/// is ignored), month 0 stays January, a year under 100 is 20YY, a year from 100 to
/// 1900 is 1900+YYY, and out-of-range days and months roll over as `mktime` rolls them
/// (`02/30/2030` is March 2nd). Midnight UTC (fwknopd: local time). `Ok(None)`: a date
/// before 1970, which fwknopd treats as no expiry.
fn expire_date(file: &Path, l: &Line) -> Result<Option<u64>, ConfigError> {
    let bad = || err(file, l, format!("'{}' is not a date MM/DD/YYYY", l.value));
    let mut rest = l.value.as_str();
    let m = scan_int(&mut rest, 2).ok_or_else(bad)?;
    rest = rest.strip_prefix('/').ok_or_else(bad)?;
    let d = scan_int(&mut rest, 2).ok_or_else(bad)?;
    rest = rest.strip_prefix('/').ok_or_else(bad)?;
    let y = scan_int(&mut rest, 4).ok_or_else(bad)?;
    let month0 = if m > 0 { m - 1 } else { m };
    let year = if y > 1900 {
        y
    } else if y < 100 {
        y + 2000
    } else {
        y + 1900
    };
    let year = year + month0.div_euclid(12);
    let month = month0.rem_euclid(12) + 1;
    let days = days_from_civil(year, month, 1) + d - 1;
    Ok(u64::try_from(days * 86_400).ok().filter(|t| *t > 0))
}

/// A note for an expiry already past at load time (the stanza stays, never matching).
fn expiry_note(file: &Path, l: &Line, at: u64) -> Option<Note> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    (now >= at).then(|| Note {
        file: file.to_owned(),
        line: l.number,
        text: format!(
            "{} {}: this stanza expired on {} (UTC); it is kept but no packet matches it, as with fwknopd",
            l.name,
            l.value,
            civil_date(at)
        ),
    })
}

/// `YYYY-MM-DD` of Unix seconds.
fn civil_date(t: u64) -> String {
    let z = i64::try_from(t / 86_400).unwrap_or(0) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
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

/// Where an include line's path is: as fwknopd takes it (a relative path from the
/// working directory), else, when nothing is there, relative to the including file's
/// directory (posternd's earlier reading), with a note. Neither: the working-directory
/// path (the caller's error names it).
fn locate(base: &Path, l: &Line, notes: &mut Vec<Note>) -> PathBuf {
    let p = PathBuf::from(&l.value);
    if p.is_absolute() {
        return p;
    }
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    let here = cwd.join(&p);
    if here.exists() {
        return here;
    }
    let beside = base.parent().unwrap_or(Path::new("/")).join(&p);
    if beside.exists() {
        notes.push(Note {
            file: base.to_owned(),
            line: l.number,
            text: format!(
                "{} {}: not in the working directory {} (where fwknopd looks); read {} instead. Write an absolute path",
                l.name.to_ascii_lowercase(),
                l.value,
                cwd.display(),
                beside.display()
            ),
        });
        return beside;
    }
    here
}

/// CMD_EXEC_USER: a user of this system.
fn exec_user(file: &Path, l: &Line) -> Result<String, ConfigError> {
    crate::ids::user(&l.value)
        .map(|_| l.value.clone())
        .ok_or_else(|| {
            err(
                file,
                l,
                format!("'{}' is not a user of this system", l.value),
            )
        })
}

/// CMD_EXEC_GROUP: a group of this system; a name that is no group but a user gives
/// that user's primary group, which is how fwknopd 2.6 resolves it (`CMD_EXEC_GROUP
/// nobody` on Debian, where the group is `nogroup`), with a note.
fn exec_group(file: &Path, l: &Line, notes: &mut Vec<Note>) -> Result<String, ConfigError> {
    if crate::ids::group(&l.value).is_some() {
        return Ok(l.value.clone());
    }
    let u = crate::ids::user(&l.value).ok_or_else(|| {
        err(
            file,
            l,
            format!("'{}' is neither a group nor a user of this system", l.value),
        )
    })?;
    notes.push(Note {
        file: file.to_owned(),
        line: l.number,
        text: format!(
            "CMD_EXEC_GROUP {}: no group of that name; commands run with the primary group of user {} (gid {}), as fwknopd does",
            l.value, l.value, u.gid
        ),
    });
    Ok(l.value.clone())
}

/// The arguments between `SUDO_EXE` and a command, as fwknopd 2.6.10 writes them:
/// `-u USER` when CMD_SUDO_EXEC_USER is set and not root; `-g GROUP` when
/// CMD_SUDO_EXEC_GROUP is set and not root *and CMD_EXEC_GROUP is set* (fwknopd passes
/// the sudo group only then; a configuration that relied on that keeps working).
pub fn sudo_args(user: Option<&str>, group: Option<&str>, exec_group: bool) -> Vec<String> {
    let mut v = Vec::new();
    if let Some(u) = user.filter(|u| *u != "root") {
        v.extend(["-u".to_owned(), u.to_owned()]);
    }
    if let Some(g) = group.filter(|g| *g != "root" && exec_group) {
        v.extend(["-g".to_owned(), g.to_owned()]);
    }
    v
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
        "CMD_EXEC_USER" => d.cmd_exec_user = Some(exec_user(file, l)?),
        "CMD_EXEC_GROUP" => d.cmd_exec_group = Some(exec_group(file, l, &mut d.notes)?),
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
        "ACCESS_EXPIRE" => {
            d.access_expire = expire_date(file, l)?;
            match d.access_expire {
                Some(at) => d.notes.extend(expiry_note(file, l, at)),
                None => d.notes.push(Note {
                    file: file.to_owned(),
                    line: l.number,
                    text: format!(
                        "ACCESS_EXPIRE {}: a date before 1970 means no expiry (as with fwknopd)",
                        l.value
                    ),
                }),
            }
        }
        "ACCESS_EXPIRE_EPOCH" => {
            let at = number(file, l, 0, u64::from(u32::MAX) * 4)?;
            d.access_expire = Some(at);
            d.notes.extend(expiry_note(file, l, at));
        }
        "ENABLE_CMD_SUDO_EXEC" => d.cmd_sudo = boolean(file, l)?,
        "CMD_SUDO_EXEC_USER" => d.cmd_sudo_user = Some(exec_user(file, l)?),
        "CMD_SUDO_EXEC_GROUP" => d.cmd_sudo_group = Some(exec_group(file, l, &mut d.notes)?),
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
        "FORCE_SNAT" => {
            let a = l
                .value
                .parse::<std::net::IpAddr>()
                .ok()
                .filter(|a| !a.is_unspecified() && !a.is_multicast())
                .ok_or_else(|| err(file, l, format!("'{}' is not an address", l.value)))?;
            d.nat.force_snat = Some(a);
            d.nat.snat_at = Some((l.number, l.name.clone()));
        }
        "FORCE_MASQUERADE" => {
            d.nat.force_masquerade = boolean(file, l)?;
            if d.nat.force_masquerade {
                d.nat.snat_at = Some((l.number, l.name.clone()));
            }
        }
        "FORWARD_ALL" => d.nat.forward_all = boolean(file, l)?,
        "DISABLE_DNAT" => d.nat.disable_dnat = boolean(file, l)?,
        n if n.starts_with("GPG_") => {
            return Err(err(file, l, "GnuPG stanzas are not supported yet"))
        }
        _ => {
            let hint = did_you_mean(&l.name)
                .map(|n| format!(" (did you mean {n}?)"))
                .unwrap_or_default();
            return Err(err(file, l, format!("unknown directive{hint}")));
        }
    }
    Ok(())
}

/// Read an access file (and what it includes).
pub fn load(file: &Path) -> Result<Vec<Stanza>, ConfigErrors> {
    load_noted(file).map(|(s, _)| s)
}

/// Read an access file (and what it includes), with the notes about it (fallback
/// include paths, expired stanzas, skipped stanzas, CMD_EXEC_GROUP read as a user).
/// Every error of every file is reported, not only the first.
pub fn load_noted(file: &Path) -> Result<(Vec<Stanza>, Vec<Note>), ConfigErrors> {
    let mut notes = Vec::new();
    let mut errors = Vec::new();
    let s = load_depth(file, 0, &mut notes, &mut errors);
    if errors.is_empty() {
        Ok((s, notes))
    } else {
        Err(ConfigErrors(errors))
    }
}

/// Read every `*.conf` file of a folder, in name order.
pub fn load_folder(dir: &Path, from: &Path, depth: usize) -> Result<Vec<Stanza>, ConfigErrors> {
    load_folder_noted(dir, from, depth, &mut Vec::new())
}

/// [`load_folder`], adding its notes to `notes`.
pub fn load_folder_noted(
    dir: &Path,
    from: &Path,
    depth: usize,
    notes: &mut Vec<Note>,
) -> Result<Vec<Stanza>, ConfigErrors> {
    let mut errors = Vec::new();
    let out = folder(dir, from, depth, notes, &mut errors);
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(ConfigErrors(errors))
    }
}

fn folder(
    dir: &Path,
    from: &Path,
    depth: usize,
    notes: &mut Vec<Note>,
    errors: &mut Vec<ConfigError>,
) -> Vec<Stanza> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            errors.push(ConfigError {
                file: from.to_owned(),
                line: 0,
                directive: "%include_folder".into(),
                message: format!("cannot read folder {}: {e}", dir.display()),
            });
            return Vec::new();
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "conf") && p.is_file())
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        out.extend(load_depth(&f, depth + 1, notes, errors));
    }
    out
}

const MAX_INCLUDE_DEPTH: usize = 3;

fn load_depth(
    file: &Path,
    depth: usize,
    notes: &mut Vec<Note>,
    errors: &mut Vec<ConfigError>,
) -> Vec<Stanza> {
    let text = match read(file) {
        Ok(t) => t,
        Err(e) => {
            errors.push(e);
            return Vec::new();
        }
    };
    if lines(&text)
        .iter()
        .any(|l| KEY_DIRECTIVES.contains(&l.name.as_str()))
    {
        if let Err(e) = check_mode(file) {
            errors.push(e);
            return Vec::new();
        }
    }
    parse_noted(&text, file, depth, notes, errors)
}

/// A finished draft into `out` (or, when it is to be skipped, only its note; a draft
/// with an error in one of its lines gives nothing more: that error says it).
fn close(d: Draft, out: &mut Vec<Stanza>, notes: &mut Vec<Note>, errors: &mut Vec<ConfigError>) {
    let mut d = d;
    notes.append(&mut d.notes);
    if d.broken {
        return;
    }
    if let Some(why) = d.skip.take() {
        notes.push(Note {
            file: d.file.clone(),
            line: d.line,
            text: format!("SOURCE: this stanza is skipped: {why}"),
        });
        return;
    }
    match d.finish() {
        Ok(s) => out.push(s),
        Err(e) => errors.push(e),
    }
}

/// Parse access.conf text as if read from `file` (includes are resolved relative to
/// it and read from disk). Total: any text gives stanzas or its first error.
pub fn parse_text(text: &str, file: &Path, depth: usize) -> Result<Vec<Stanza>, ConfigError> {
    let mut errors = Vec::new();
    let out = parse_noted(text, file, depth, &mut Vec::new(), &mut errors);
    match errors.into_iter().next() {
        None => Ok(out),
        Some(e) => Err(e),
    }
}

/// [`parse_text`], adding its notes to `notes` and every error to `errors`.
fn parse_noted(
    text: &str,
    file: &Path,
    depth: usize,
    notes: &mut Vec<Note>,
    errors: &mut Vec<ConfigError>,
) -> Vec<Stanza> {
    let ls = lines(text);
    let mut out = Vec::new();
    let mut draft: Option<Draft> = None;
    for l in ls {
        // An error in a stanza's line marks the stanza, and reading goes on.
        let mut fail = |draft: &mut Option<Draft>, e: ConfigError| {
            if let Some(d) = draft.as_mut() {
                d.broken = true;
            }
            errors.push(e);
        };
        match l.name.as_str() {
            "SOURCE" => {
                if let Some(d) = draft.take() {
                    close(d, &mut out, notes, errors);
                }
                let (source, broken) = match nets(file, &l) {
                    Ok(n) => (n, false),
                    Err(e) => {
                        errors.push(e);
                        (Vec::new(), true)
                    }
                };
                draft = Some(Draft {
                    file: file.to_owned(),
                    line: l.number,
                    source,
                    broken,
                    ..Draft::default()
                });
            }
            "%INCLUDE" | "%INCLUDE_FOLDER" => {
                if depth >= MAX_INCLUDE_DEPTH {
                    fail(
                        &mut draft,
                        err(file, &l, "includes nested too deeply (at most 3 levels)"),
                    );
                    continue;
                }
                if let Some(d) = draft.take() {
                    close(d, &mut out, notes, errors);
                }
                let target = locate(file, &l, notes);
                if l.name == "%INCLUDE" {
                    if !target.is_file() {
                        errors.push(err(file, &l, format!("no file {}", target.display())));
                        continue;
                    }
                    out.extend(load_depth(&target, depth + 1, notes, errors));
                } else {
                    out.extend(folder(&target, file, depth, notes, errors));
                }
            }
            "%INCLUDE_KEYS" => {
                let Some(d) = draft.as_mut() else {
                    errors.push(err(file, &l, "%include_keys must be inside a stanza"));
                    continue;
                };
                let target = locate(file, &l, &mut d.notes);
                // A file a user may own: read safely, and the error names this line.
                let keys_text = match read(&target) {
                    Ok(t) => t,
                    Err(e) => {
                        fail(
                            &mut draft,
                            err(file, &l, format!("{}: {}", target.display(), e.message)),
                        );
                        continue;
                    }
                };
                if let Err(e) = check_mode(&target) {
                    fail(&mut draft, e);
                    continue;
                }
                let Some(d) = draft.as_mut() else { continue };
                for kl in lines(&keys_text) {
                    let base64 = kl.name == "KEY_BASE64" || kl.name == "HMAC_KEY_BASE64";
                    if base64 && Key::from_base64(&kl.value).is_err() {
                        // fwknopd skips such a key (and then the stanza, if it has no key
                        // left); posternd skips the stanza at once, so that a damaged HMAC
                        // key never leaves a stanza that takes packets without HMAC.
                        d.skip.get_or_insert(format!(
                            "{}:{}: {} is not valid base64",
                            target.display(),
                            kl.number,
                            kl.name
                        ));
                    } else if KEY_DIRECTIVES.contains(&kl.name.as_str()) {
                        if let Err(e) = apply(d, &target, &kl) {
                            d.broken = true;
                            errors.push(e);
                        }
                    } else {
                        d.broken = true;
                        errors.push(err(&target, &kl, "only KEY, KEY_BASE64, HMAC_KEY, HMAC_KEY_BASE64 and HMAC_DIGEST_TYPE may appear in a %include_keys file"));
                    }
                }
            }
            _ => {
                let Some(d) = draft.as_mut() else {
                    errors.push(err(
                        file,
                        &l,
                        "outside any stanza (a stanza starts with SOURCE)",
                    ));
                    continue;
                };
                if let Err(e) = apply(d, file, &l) {
                    fail(&mut draft, e);
                }
            }
        }
    }
    if let Some(d) = draft.take() {
        close(d, &mut out, notes, errors);
    }
    out
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
    fn every_name_is_taken_and_misspellings_are_named() {
        for n in NAMES
            .iter()
            .filter(|n| !n.starts_with('%') && **n != "SOURCE")
        {
            let l = Line {
                number: 1,
                name: (*n).to_owned(),
                value: "x".into(),
            };
            let e = apply(&mut Draft::default(), Path::new("/a.conf"), &l);
            assert!(
                !e.as_ref()
                    .is_err_and(|e| e.message.starts_with("unknown directive")),
                "{n}: {e:?}"
            );
        }
        assert_eq!(did_you_mean("OPEN_PORT"), Some("OPEN_PORTS"));
        assert_eq!(did_you_mean("HMAC_KEY_BASE46"), Some("HMAC_KEY_BASE64"));
        assert_eq!(did_you_mean("COMPLETELY_ELSE"), None);
    }

    #[test]
    fn every_error_of_a_file_in_one_run() {
        let dir = tmp("all-errors");
        let f = write(
            &dir,
            "access.conf",
            "SOURCE ANY\nKEY_BASE64 __CHANGEME__\nHMAC_KEY_BASE64 __CHANGEME__\nOPEN_PORT tcp/22\n\nSOURCE 10.0.0.300\nKEY k\n\nSOURCE ANY\nKEY k2\nFW_ACCESS_TIMEOUT soon\n",
        );
        let e = load(&f).unwrap_err();
        let all: Vec<String> = e.0.iter().map(ToString::to_string).collect();
        let fs = f.display();
        assert_eq!(all.len(), 5, "{all:#?}");
        assert!(
            all[0].starts_with(&format!(
                "{fs}:2: KEY_BASE64: the key is still __CHANGEME__"
            )),
            "{all:#?}"
        );
        assert!(
            all[1].starts_with(&format!("{fs}:3: HMAC_KEY_BASE64:")),
            "{all:#?}"
        );
        assert_eq!(
            all[2],
            format!("{fs}:4: OPEN_PORT: unknown directive (did you mean OPEN_PORTS?)")
        );
        assert!(all[3].starts_with(&format!("{fs}:6: SOURCE:")), "{all:#?}");
        assert!(
            all[4].starts_with(&format!("{fs}:11: FW_ACCESS_TIMEOUT:")),
            "{all:#?}"
        );
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
        assert_eq!(bad("SOURCE ANY\nOPEN_PORTS tcp/22\n"), format!("{f}:1: SOURCE: no keys found for this stanza: give KEY or KEY_BASE64 (in the stanza or in a %include_keys file)"));
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

    /// ACCESS_EXPIRE values, with what the real fwknopd 2.6.10 made of each (its `-D`).
    #[test]
    fn expire_dates_as_fwknopd_reads_them() {
        let d = |v: &str| {
            let l = Line {
                number: 1,
                name: "ACCESS_EXPIRE".into(),
                value: v.into(),
            };
            expire_date(Path::new("a.conf"), &l).map(|t| t.map(civil_date))
        };
        for (v, want) in [
            ("3/10/01", "2001-03-10"),
            ("03/10/2001", "2001-03-10"),
            ("12/31/2030", "2030-12-31"),
            ("1/1/30", "2030-01-01"),
            ("13/01/2030", "2031-01-01"),
            ("12/31/99", "2099-12-31"),
            ("02/30/2030", "2030-03-02"),
            ("12/31/2030 junk", "2030-12-31"),
            ("12/31/203", "2103-12-31"),
            ("00/10/2030", "2030-01-10"),
            ("12/31/20300", "2030-12-31"),
        ] {
            assert_eq!(d(v).unwrap().as_deref(), Some(want), "{v}");
        }
        assert_eq!(d("1/1/1969").unwrap(), None, "before 1970: no expiry");
        for v in ["2030-01-01", "abc", "", "12/31", "12 /31/2030"] {
            assert!(d(v).is_err(), "{v}");
        }
    }

    #[test]
    fn fwknopd_semantics() {
        let d = tmp("sem");
        let load_text = |name: &str, text: &str| {
            let p = write(&d, name, text);
            load_noted(&p)
        };
        // An expired stanza is kept (it never matches), with a note; no refusal to start.
        let (s, notes) =
            load_text("exp.conf", "SOURCE ANY\nKEY k1\nACCESS_EXPIRE 3/10/01\n").unwrap();
        assert_eq!(s[0].access_expire, Some(984_182_400));
        assert!(notes[0].text.contains("expired on 2001-03-10"), "{notes:?}");
        // /0 masks are refused as fwknopd refuses them; ANY is the way to say it.
        let e = load_text("zero.conf", "SOURCE 0.0.0.0/0\nKEY k1\n").unwrap_err();
        assert!(e.to_string().contains("a /0 mask is refused"), "{e}");
        assert!(load_text("zero6.conf", "SOURCE ANY\nDESTINATION ::/0\nKEY k1\n").is_err());
        assert!(load_text("mask.conf", "SOURCE 0.0.0.0/0.0.0.0\nKEY k1\n").is_ok());
        // CMD_EXEC_USER / CMD_EXEC_GROUP must exist; a user's name as the group gives
        // that user's primary group, with a note.
        let e = load_text(
            "u.conf",
            "SOURCE ANY\nKEY k1\nCMD_EXEC_USER no-such-user-x\n",
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .ends_with(":3: CMD_EXEC_USER: 'no-such-user-x' is not a user of this system"),
            "{e}"
        );
        let e = load_text(
            "g.conf",
            "SOURCE ANY\nKEY k1\nCMD_EXEC_GROUP no-such-group-x\n",
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("is neither a group nor a user"),
            "{e}"
        );
        let (_, notes) = load_text("g2.conf", "SOURCE ANY\nKEY k1\nCMD_EXEC_GROUP root\n").unwrap();
        assert!(notes.is_empty(), "a real group: no note");
        if crate::ids::group("nobody").is_none() && crate::ids::user("nobody").is_some() {
            let (s, notes) =
                load_text("g3.conf", "SOURCE ANY\nKEY k1\nCMD_EXEC_GROUP nobody\n").unwrap();
            assert_eq!(s[0].cmd_exec_group.as_deref(), Some("nobody"));
            assert!(
                notes[0].text.contains("primary group of user nobody"),
                "{notes:?}"
            );
        }
        // A %include_keys key that is not base64 skips its stanza (a note), the others stay.
        write(
            &d,
            "bad.keys",
            "KEY_BASE64 QUJD\nHMAC_KEY_BASE64 not*base64\n",
        );
        let (s, notes) = load_text(
            "k.conf",
            &format!(
                "SOURCE 198.18.0.1\n%include_keys {}\nSOURCE ANY\nKEY k2\n",
                d.join("bad.keys").display()
            ),
        )
        .unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].line, 3);
        assert!(
            notes[0].text.contains("skipped")
                && notes[0]
                    .text
                    .contains("bad.keys:2: HMAC_KEY_BASE64 is not valid base64"),
            "{notes:?}"
        );
        // A relative include found only next to the including file: read, with a note.
        write(&d, "beside-only.inc.conf", "SOURCE ANY\nKEY k3\n");
        let (s, notes) = load_text("inc.conf", "%include beside-only.inc.conf\n").unwrap();
        assert_eq!(s.len(), 1);
        assert!(
            notes[0].text.contains("not in the working directory"),
            "{notes:?}"
        );
        // HMAC keys of up to 136 bytes, as fwknopd opens packets with them.
        let k = |n: usize| format!("SOURCE ANY\nKEY k1\nHMAC_KEY {}\n", "h".repeat(n));
        assert!(load_text("h136.conf", &k(136)).is_ok());
        assert!(load_text("h137.conf", &k(137)).is_err());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn nat_translation_directives() {
        let f = Path::new("/etc/postern/access.conf");
        let s = parse_text(
            "SOURCE ANY\nKEY k\nFORCE_NAT 198.18.2.2 55000\nFORCE_SNAT 198.18.9.9\nFORWARD_ALL Y\nDISABLE_DNAT y\n\
             SOURCE ANY\nKEY k2\nFORWARD_ALL Y\nFORCE_MASQUERADE Y\n",
            f,
            0,
        )
        .unwrap();
        assert_eq!(s[0].nat.force_snat, Some("198.18.9.9".parse().unwrap()));
        assert!(s[0].nat.forward_all && s[0].nat.disable_dnat && !s[0].nat.force_masquerade);
        assert_eq!(s[0].nat.snat_at, Some((4, "FORCE_SNAT".into())));
        assert!(s[1].nat.force_masquerade);
        assert!(s[0]
            .dump()
            .contains("FORCE_SNAT                  198.18.9.9\n"));
        let bad = |t: &str| parse_text(t, f, 0).unwrap_err().to_string();
        assert_eq!(
            bad("SOURCE ANY\nKEY k\nFORCE_MASQUERADE Y\n"),
            "/etc/postern/access.conf:3: FORCE_MASQUERADE: FORCE_SNAT and FORCE_MASQUERADE need FORCE_NAT or FORWARD_ALL in the same stanza (as in fwknopd)"
        );
        assert!(bad("SOURCE ANY\nKEY k\nFORCE_SNAT nowhere\n")
            .contains(":3: FORCE_SNAT: 'nowhere' is not an address"));
        assert!(bad("SOURCE ANY\nKEY k\nFORWARD_ALL maybe\n")
            .contains(":3: FORWARD_ALL: expected Y or N"));
        // FORCE_MASQUERADE N asks for nothing.
        assert!(parse_text("SOURCE ANY\nKEY k\nFORCE_MASQUERADE N\n", f, 0).is_ok());
    }

    #[test]
    fn civil_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
    }
}
