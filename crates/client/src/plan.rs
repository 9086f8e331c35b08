//! From merged settings to a checked knock plan. Every value is validated here, and
//! every error names the flag (or the rc file, line and variable) it came from.

use std::fmt;
use std::net::IpAddr;

use postern_proto::message::{parse_allow_ip, parse_nat};
use postern_proto::{wire, DigestType, EncryptionMode, PortSpec};

use crate::settings::{Origin, Setting, Settings};

/// A user-facing error: one line, naming what to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fail(pub String);

impl fmt::Display for Fail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Fail {}

/// Build a [`Fail`] naming where a value came from.
pub fn bad(origin: &Origin, msg: impl fmt::Display) -> Fail {
    Fail(format!("{origin}: {msg}"))
}

/// How the SPA packet travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// One UDP datagram (default).
    Udp,
    /// A TCP connection carrying the packet.
    Tcp,
    /// An HTTP GET request carrying the packet in its path.
    Http,
    /// One UDP datagram built by hand on a raw socket (root).
    UdpRaw,
    /// One TCP segment (ACK, no connection) built by hand on a raw socket (root).
    TcpRaw,
    /// One ICMP message carrying the packet, on a raw socket (root).
    Icmp,
}

impl Transport {
    /// Whether the packet is built with its IP header on a raw socket.
    pub fn is_raw(self) -> bool {
        matches!(
            self,
            Transport::UdpRaw | Transport::TcpRaw | Transport::Icmp
        )
    }

    /// The name fwknop uses.
    pub fn name(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Http => "http",
            Transport::UdpRaw => "udpraw",
            Transport::TcpRaw => "tcpraw",
            Transport::Icmp => "icmp",
        }
    }
}

/// Which address the server should open access for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Allow {
    /// This address.
    Ip(IpAddr),
    /// The packet's source address (`0.0.0.0`).
    Source,
    /// Ask a web service for our public address.
    Resolve {
        /// The URL to ask.
        url: String,
    },
}

/// What the packet asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ask {
    /// Open these ports.
    Access(Vec<PortSpec>),
    /// Run this command.
    Command(String),
}

/// NAT requested.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Nat {
    /// No NAT.
    None,
    /// Forward to an internal host (`-N`).
    Forward {
        /// Host.
        host: String,
        /// Port.
        port: u16,
    },
    /// Forward to a port on the server itself (`--nat-local`).
    Local {
        /// Host (the -N host, or the server name).
        host: String,
        /// Port.
        port: u16,
    },
}

/// Where a key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// Passphrase text.
    Text(String, Origin),
    /// Base64 text.
    Base64(String, Origin),
    /// A `<server>: <key>` file.
    File(String, Origin),
    /// Not configured: read from stdin or prompt.
    Ask,
}

/// Which port the NAT request forwards to on the server side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatPort {
    /// Keep the -A port.
    Same,
    /// This port.
    Fixed(u16),
    /// A random port.
    Random,
}

/// A checked knock.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Server name or address (`-D`).
    pub server: Option<String>,
    /// Destination port, unless random.
    pub port: Option<u16>,
    /// Pick a random destination port.
    pub rand_port: bool,
    /// Transport.
    pub transport: Transport,
    /// Source port.
    pub source_port: Option<u16>,
    /// Allow address.
    pub allow: Allow,
    /// Access or command.
    pub ask: Ask,
    /// NAT.
    pub nat: Nat,
    /// NAT port replacement.
    pub nat_port: NatPort,
    /// Client timeout (0 = server default).
    pub fw_timeout: u32,
    /// Username, if set.
    pub user: Option<(String, Origin)>,
    /// Seconds added to the timestamp.
    pub time_offset: i64,
    /// SPA digest.
    pub digest: DigestType,
    /// Encryption mode.
    pub mode: EncryptionMode,
    /// Encryption key.
    pub key: KeySource,
    /// HMAC key (None: no HMAC).
    pub hmac_key: Option<KeySource>,
    /// HMAC type.
    pub hmac_digest: DigestType,
    /// HTTP User-Agent.
    pub user_agent: String,
    /// Resolve the server to IPv4 only.
    pub server_ipv4_only: bool,
    /// Verbose output.
    pub verbose: bool,
    /// Do not save args.
    pub no_save_args: bool,
    /// `-H`: the HTTP proxy and its port (the server port when none is given).
    pub http_proxy: Option<(String, Option<u16>)>,
    /// `-Q`: the source address of raw packets.
    pub spoof_source: Option<std::net::Ipv4Addr>,
    /// `--icmp-type` and `--icmp-code` for `-P icmp`.
    pub icmp: (u8, u8),
}

/// What only the command line can say (no rc variable).
#[derive(Debug, Clone, Default)]
pub struct CommandLine {
    /// `-C`.
    pub server_cmd: Option<String>,
    /// `-T`.
    pub test: bool,
    /// `--stdin`/`--fd`: keys that are not configured are read there, not prompted for.
    pub keys_from_fd: bool,
    /// `-H`.
    pub http_proxy: Option<String>,
    /// `--icmp-type`.
    pub icmp_type: Option<String>,
    /// `--icmp-code`.
    pub icmp_code: Option<String>,
}

/// The default URL `-R` asks, fwknop's own.
pub const DEFAULT_RESOLVE_URL: &str = "https://www.cipherdyne.org/cgi-bin/myip";
/// User-Agent sent with `-P http` and `-R`: fwknopd 2.6 requires it to start `Fwknop`.
pub const DEFAULT_USER_AGENT: &str = "Fwknop/2.6.10";

/// A `Y`/`N` value. fwknop takes only `Y` as yes and anything else as no; postern
/// refuses what is neither, rather than read `yes` as no.
pub fn boolean(s: &Setting) -> Result<bool, Fail> {
    match s.value.as_str() {
        "Y" | "y" => Ok(true),
        "N" | "n" => Ok(false),
        _ => Err(bad(
            &s.origin,
            format_args!("expected Y or N, not '{}'", s.value),
        )),
    }
}

/// `VERBOSE`: `Y`/`N` or a level 0-4 in the rc file, as fwknop accepts; any count of
/// `-v` on the command line.
pub fn verbosity(s: &Setting) -> Result<u8, Fail> {
    let max = if s.origin.is_flag() { u8::MAX } else { 4 };
    match s.value.as_str() {
        "Y" | "y" => Ok(1),
        "N" | "n" => Ok(0),
        v => v.parse::<u8>().ok().filter(|&n| n <= max).ok_or_else(|| {
            bad(
                &s.origin,
                format_args!("'{v}' is out of range (Y, N or a level 0-4)"),
            )
        }),
    }
}

fn flag_is_set(set: &Settings, name: &str) -> Result<bool, Fail> {
    set.get(name).map_or(Ok(false), boolean)
}

/// Parse a port 1..=65535.
pub fn parse_port(s: &Setting) -> Result<u16, Fail> {
    s.value
        .parse::<u16>()
        .ok()
        .filter(|&p| p > 0)
        .ok_or_else(|| {
            bad(
                &s.origin,
                format_args!("'{}' is not a port (1-65535)", s.value),
            )
        })
}

/// Parse an access list `tcp/22,udp/53`.
pub fn access_list(s: &Setting) -> Result<Vec<PortSpec>, Fail> {
    let mut out = Vec::new();
    for entry in s.value.split(',').map(str::trim) {
        let Some((proto, p)) = entry.split_once('/') else {
            return Err(bad(
                &s.origin,
                format_args!("'{entry}' is not proto/port (e.g. tcp/22)"),
            ));
        };
        if proto != "tcp" && proto != "udp" {
            return Err(bad(
                &s.origin,
                format_args!(
                    "unknown protocol '{proto}' in '{entry}' (expected tcp or udp, in lower case)"
                ),
            ));
        }
        let spec = PortSpec::parse(entry).map_err(|_| {
            bad(
                &s.origin,
                format_args!("port '{p}' in '{entry}' is out of range (1-65535)"),
            )
        })?;
        out.push(spec);
    }
    Ok(out)
}

/// The time-offset units fwknop understands (man page: "60sec", "60min", "2days").
const OFFSET_UNITS: [(&[&str], i64); 4] = [
    (&["", "s", "sec", "secs"], 1),
    (&["m", "min", "mins", "minute", "minutes"], 60),
    (&["h", "hour", "hours"], 3600),
    (&["d", "day", "days"], 86400),
];

/// Parse a time offset: digits and a unit (`30`, `5m`, `60min`, `2h`, `2days`, any
/// case); in the rc file a leading `-` subtracts it. At most 24855 days (fwknop's
/// 32-bit limit).
pub fn time_offset(s: &Setting) -> Result<i64, Fail> {
    let refuse = || {
        bad(
            &s.origin,
            format_args!(
                "'{}' is not a time offset (N, Nm, Nh or Nd; also sec, min, hours, days)",
                s.value
            ),
        )
    };
    let v = s.value.trim();
    let (neg, v) = match v.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, v.strip_prefix('+').unwrap_or(v)),
    };
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (digits, unit) = v.split_at(split);
    let unit = unit.to_ascii_lowercase();
    let mult = OFFSET_UNITS
        .iter()
        .find(|(names, _)| names.contains(&unit.as_str()))
        .map(|(_, m)| *m)
        .ok_or_else(refuse)?;
    let n: i64 = digits
        .parse()
        .ok()
        .and_then(|n: i64| n.checked_mul(mult))
        .filter(|&n| n <= 24855 * 86400)
        .ok_or_else(refuse)?;
    Ok(if neg { -n } else { n })
}

/// A base64 key as fwknop reads it (see [`postern_proto::b64::decode_key_fwknop`]).
pub fn base64_key(text: &str, origin: &Origin) -> Result<postern_proto::Key, Fail> {
    let bytes = postern_proto::b64::decode_key_fwknop(text)
        .map_err(|_| bad(origin, "key is not valid base64"))?;
    if bytes.is_empty() {
        return Err(bad(origin, "the key decodes to 0 bytes"));
    }
    Ok(postern_proto::Key::from_bytes(bytes))
}

/// The key to use, as fwknop picks it: a passphrase before a base64 key before a key
/// file, whichever level (flag, named stanza, `[default]`) each came from.
fn key_source(set: &Settings, text: &str, b64: &str, file: &str) -> Option<KeySource> {
    if let Some(s) = set.get(text) {
        return Some(KeySource::Text(s.value.clone(), s.origin.clone()));
    }
    if let Some(s) = set.get(b64) {
        return Some(KeySource::Base64(s.value.clone(), s.origin.clone()));
    }
    set.get(file)
        .map(|s| KeySource::File(s.value.clone(), s.origin.clone()))
}

fn transport(s: &Setting) -> Result<Transport, Fail> {
    Ok(match s.value.to_ascii_lowercase().as_str() {
        "udp" => Transport::Udp,
        "tcp" => Transport::Tcp,
        "http" => Transport::Http,
        "udpraw" => Transport::UdpRaw,
        "tcpraw" => Transport::TcpRaw,
        "icmp" => Transport::Icmp,
        other => {
            return Err(bad(
                &s.origin,
                format_args!(
                    "unknown protocol '{other}' (expected udp, tcp, http, udpraw, tcpraw or icmp)"
                ),
            ))
        }
    })
}

fn allow_ip(s: &Setting) -> Result<Option<IpAddr>, Fail> {
    match s.value.to_ascii_lowercase().as_str() {
        "source" | "resolve" => Ok(None),
        _ => parse_allow_ip(&s.value).map(Some).map_err(|_| {
            bad(
                &s.origin,
                format_args!(
                    "'{}' is not an IP address (or 'source'/'resolve' in the rc file)",
                    s.value
                ),
            )
        }),
    }
}

fn fw_timeout(s: &Setting) -> Result<u32, Fail> {
    s.value
        .parse::<u32>()
        .ok()
        .filter(|&t| t <= wire::MAX_CLIENT_TIMEOUT)
        .ok_or_else(|| {
            bad(
                &s.origin,
                format_args!("'{}' is not a timeout in seconds (0-65536)", s.value),
            )
        })
}

fn nat_target(s: &Setting) -> Result<postern_proto::NatTarget, Fail> {
    let text = s
        .value
        .replacen(':', ",", usize::from(s.value.matches(':').count() == 1));
    parse_nat(&text).map_err(|e| {
        bad(
            &s.origin,
            format_args!("'{}' is not HOST:PORT ({e})", s.value),
        )
    })
}

fn spoof_source(s: &Setting) -> Result<std::net::Ipv4Addr, Fail> {
    s.value.parse().map_err(|_| {
        bad(
            &s.origin,
            format_args!("'{}' is not an IPv4 address", s.value),
        )
    })
}

fn byte(flag: &'static str, v: &str) -> Result<u8, Fail> {
    v.parse()
        .map_err(|_| Fail(format!("{flag}: '{v}' is not a number (0-255)")))
}

/// Split `-H`: `[http://]HOST[:PORT][/...]`.
pub fn http_proxy(v: &str) -> Result<(String, Option<u16>), Fail> {
    let refuse = || Fail(format!("-H/--http-proxy: '{v}' is not HOST or HOST:PORT"));
    let rest = v.strip_prefix("http://").unwrap_or(v);
    let rest = rest.split('/').next().unwrap_or_default();
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => {
            let port = p
                .parse::<u16>()
                .ok()
                .filter(|&p| p > 0)
                .ok_or_else(refuse)?;
            (h, Some(port))
        }
        _ => (rest, None),
    };
    if host.is_empty() {
        return Err(refuse());
    }
    Ok((host.to_owned(), port))
}

impl Plan {
    /// Check every value that is set, without requiring anything: what
    /// `--save-rc-stanza` checks before it writes (fwknop refuses such values while it
    /// reads its arguments, before saving).
    pub fn check_values(set: &Settings) -> Result<(), Fail> {
        for (name, s) in set.iter() {
            match name {
                "SPA_SERVER_PROTO" => transport(s).map(drop)?,
                "SPA_SERVER_PORT" | "SPA_SOURCE_PORT" | "NAT_PORT" => parse_port(s).map(drop)?,
                "ALLOW_IP" => allow_ip(s).map(drop)?,
                "ACCESS" => access_list(s).map(drop)?,
                "NAT_ACCESS" => nat_target(s).map(drop)?,
                "FW_TIMEOUT" => fw_timeout(s).map(drop)?,
                "TIME_OFFSET" => time_offset(s).map(drop)?,
                "SPOOF_SOURCE_IP" => spoof_source(s).map(drop)?,
                "DIGEST_TYPE" | "HMAC_DIGEST_TYPE" => s
                    .value
                    .parse::<DigestType>()
                    .map(drop)
                    .map_err(|e| bad(&s.origin, e))?,
                "ENCRYPTION_MODE" => s
                    .value
                    .parse::<EncryptionMode>()
                    .map(drop)
                    .map_err(|e| bad(&s.origin, e))?,
                "KEY_BASE64" | "HMAC_KEY_BASE64" => base64_key(&s.value, &s.origin).map(drop)?,
                "VERBOSE" => verbosity(s).map(drop)?,
                "RAND_PORT"
                | "NAT_LOCAL"
                | "NAT_RAND_PORT"
                | "USE_HMAC"
                | "USE_GPG"
                | "USE_GPG_AGENT"
                | "GPG_NO_SIGNING_PW"
                | "USE_WGET_USER_AGENT"
                | "RESOLVE_IP_HTTPS"
                | "RESOLVE_IP_HTTP"
                | "RESOLVE_HTTP_ONLY"
                | "NO_SAVE_ARGS"
                | "SERVER_RESOLVE_IPV4" => boolean(s).map(drop)?,
                _ => {}
            }
        }
        Ok(())
    }

    /// Check merged settings and what only the command line says.
    pub fn from_settings(set: &Settings, cl: &CommandLine) -> Result<Plan, Fail> {
        Plan::check_values(set)?;
        if let Some(s) = set.get("USE_GPG") {
            if boolean(s)? {
                return Err(bad(&s.origin, "GnuPG mode is not supported yet"));
            }
        }
        let server = set.value("SPA_SERVER").map(str::to_owned);
        if server.is_none() && !cl.test {
            return Err(Fail(
                "-D/--destination is required: the SPA server to knock on".into(),
            ));
        }
        let http_proxy = cl.http_proxy.as_deref().map(http_proxy).transpose()?;
        let transport = match (set.get("SPA_SERVER_PROTO"), &http_proxy) {
            // -H means HTTP whatever the protocol setting says, as in fwknop.
            (_, Some(_)) => Transport::Http,
            (None, None) => Transport::Udp,
            (Some(s), None) => transport(s)?,
        };
        let spoof_source = set.get("SPOOF_SOURCE_IP").map(spoof_source).transpose()?;
        if spoof_source.is_some() && !transport.is_raw() {
            return Err(Fail(
                "-Q/--spoof-source needs -P udpraw, tcpraw or icmp".into(),
            ));
        }
        let icmp = (
            cl.icmp_type
                .as_deref()
                .map(|v| byte("--icmp-type", v))
                .transpose()?
                .unwrap_or(0),
            cl.icmp_code
                .as_deref()
                .map(|v| byte("--icmp-code", v))
                .transpose()?
                .unwrap_or(0),
        );
        let port = set.get("SPA_SERVER_PORT").map(parse_port).transpose()?;
        let source_port = set.get("SPA_SOURCE_PORT").map(parse_port).transpose()?;
        let rand_port = flag_is_set(set, "RAND_PORT")?;

        let http_only = flag_is_set(set, "RESOLVE_HTTP_ONLY")?;
        let resolve_url = match set.value("RESOLVE_URL") {
            Some(u) => u.to_owned(),
            None if http_only => DEFAULT_RESOLVE_URL.replacen("https://", "http://", 1),
            None => DEFAULT_RESOLVE_URL.to_owned(),
        };
        // An allow address from any level beats the resolve switches, as in fwknop.
        let resolve = flag_is_set(set, "RESOLVE_IP_HTTPS")? || flag_is_set(set, "RESOLVE_IP_HTTP")?;
        let allow = match set.get("ALLOW_IP") {
            Some(s) => match (s.value.to_ascii_lowercase().as_str(), allow_ip(s)?) {
                ("source", _) => Allow::Source,
                (_, Some(ip)) => Allow::Ip(ip),
                (_, None) => Allow::Resolve { url: resolve_url },
            },
            None if resolve => Allow::Resolve { url: resolve_url },
            None => return Err(Fail(
                "an allow address is required: add -a/--allow-ip ADDRESS, -s/--source-ip or -R/--resolve-ip-https".into(),
            )),
        };

        let ask = match cl.server_cmd.as_deref() {
            Some(cmd) => {
                if cmd.is_empty() {
                    return Err(Fail("-C/--server-cmd: the command is empty".into()));
                }
                if let Some(s) = set.get("NAT_ACCESS") {
                    return Err(bad(&s.origin, "cannot be combined with -C/--server-cmd"));
                }
                Ask::Command(cmd.to_owned())
            }
            None => match set.get("ACCESS") {
                Some(s) => Ask::Access(access_list(s)?),
                None => {
                    return Err(Fail(
                        "-A/--access is required: the ports to open, e.g. -A tcp/22".into(),
                    ))
                }
            },
        };

        let nat_local = flag_is_set(set, "NAT_LOCAL")?;
        let nat_port = match (set.get("NAT_PORT"), flag_is_set(set, "NAT_RAND_PORT")?) {
            (Some(s), false) => NatPort::Fixed(parse_port(s)?),
            (None, true) => NatPort::Random,
            (None, false) => NatPort::Same,
            (Some(s), true) => {
                return Err(bad(&s.origin, "cannot be combined with --nat-rand-port"))
            }
        };
        let first_port = match &ask {
            Ask::Access(p) => p.first().map(|p| p.port),
            Ask::Command(_) => None,
        };
        let nat = match (set.get("NAT_ACCESS"), nat_local) {
            (Some(s), local) => {
                let t = nat_target(s)?;
                if local {
                    Nat::Local {
                        host: t.host,
                        port: t.port,
                    }
                } else {
                    Nat::Forward {
                        host: t.host,
                        port: t.port,
                    }
                }
            }
            (None, true) => {
                let host = server.clone().unwrap_or_else(|| "0.0.0.0".into());
                let port =
                    first_port.ok_or_else(|| Fail("--nat-local needs -A/--access".into()))?;
                Nat::Local { host, port }
            }
            (None, false) => {
                if nat_port != NatPort::Same {
                    return Err(Fail(
                        "--nat-port/--nat-rand-port need -N/--nat-access or --nat-local".into(),
                    ));
                }
                Nat::None
            }
        };
        if nat != Nat::None {
            if let Ask::Access(p) = &ask {
                if p.len() != 1 && nat_port != NatPort::Same {
                    let s = set
                        .get("ACCESS")
                        .map_or(Origin::Flag("-A/--access"), |s| s.origin.clone());
                    return Err(bad(&s, "NAT with --nat-port takes exactly one proto/port"));
                }
            }
        }

        let fw_timeout = set
            .get("FW_TIMEOUT")
            .map(fw_timeout)
            .transpose()?
            .unwrap_or(0);
        let user = set
            .get("SPOOF_USER")
            .map(|s| (crate::settings::truncate_user(&s.value), s.origin.clone()));
        let time_offset = set
            .get("TIME_OFFSET")
            .map(time_offset)
            .transpose()?
            .unwrap_or(0);
        let digest = match set.get("DIGEST_TYPE") {
            None => DigestType::Sha256,
            Some(s) => s.value.parse().map_err(|e| bad(&s.origin, e))?,
        };
        let mode = match set.get("ENCRYPTION_MODE") {
            None => EncryptionMode::Cbc,
            Some(s) => s.value.parse().map_err(|e| bad(&s.origin, e))?,
        };
        let hmac_digest = match set.get("HMAC_DIGEST_TYPE") {
            None => DigestType::Sha256,
            Some(s) => s.value.parse().map_err(|e| bad(&s.origin, e))?,
        };
        let key = key_source(set, "KEY", "KEY_BASE64", "KEY_FILE").unwrap_or(KeySource::Ask);
        // HMAC is on with USE_HMAC Y or an HMAC key anywhere; an HMAC type or key file
        // turns it on only from the command line (fwknop reads HMAC_DIGEST_TYPE and
        // HMAC_KEY_FILE from the rc file without turning HMAC on).
        let hmac_wanted = match set.get("USE_HMAC") {
            Some(s) if boolean(s)? => Some(s.origin.clone()),
            _ => ["HMAC_KEY", "HMAC_KEY_BASE64"]
                .iter()
                .filter_map(|v| set.get(v))
                .chain(
                    ["HMAC_DIGEST_TYPE", "HMAC_KEY_FILE"]
                        .iter()
                        .filter_map(|v| set.get(v))
                        .filter(|s| s.origin.is_flag()),
                )
                .map(|s| s.origin.clone())
                .next(),
        };
        let hmac_key = match hmac_wanted {
            None => None,
            Some(origin) => match key_source(set, "HMAC_KEY", "HMAC_KEY_BASE64", "HMAC_KEY_FILE") {
                Some(k) => Some(k),
                None if cl.keys_from_fd => Some(KeySource::Ask),
                None => {
                    return Err(bad(
                        &origin,
                        "HMAC is requested but no HMAC key is configured: add --key-hmac KEY, --key-base64-hmac B64 or --get-hmac-key FILE (or --stdin/--fd)",
                    ))
                }
            },
        };
        if mode == EncryptionMode::Legacy && hmac_key.is_some() {
            let o = set
                .get("ENCRYPTION_MODE")
                .map_or(Origin::Flag("-M/--encryption-mode"), |s| s.origin.clone());
            return Err(bad(
                &o,
                "legacy mode cannot be used with HMAC (remove the HMAC key or choose another mode)",
            ));
        }
        Ok(Plan {
            server,
            port,
            rand_port,
            transport,
            source_port,
            allow,
            ask,
            nat,
            nat_port,
            fw_timeout,
            user,
            time_offset,
            digest,
            mode,
            key,
            hmac_key,
            hmac_digest,
            user_agent: set
                .value("HTTP_USER_AGENT")
                .unwrap_or(DEFAULT_USER_AGENT)
                .to_owned(),
            server_ipv4_only: flag_is_set(set, "SERVER_RESOLVE_IPV4")?,
            verbose: set.get("VERBOSE").map(verbosity).transpose()?.unwrap_or(0) > 0,
            no_save_args: flag_is_set(set, "NO_SAVE_ARGS")?,
            http_proxy,
            spoof_source,
            icmp,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> Setting {
        Setting {
            value: v.into(),
            origin: Origin::Flag("-X/--flag"),
        }
    }

    #[test]
    fn access_lists() {
        assert_eq!(access_list(&s("tcp/22,udp/53")).unwrap().len(), 2);
        assert_eq!(
            access_list(&s("icmp/1")).unwrap_err().0,
            "-X/--flag: unknown protocol 'icmp' in 'icmp/1' (expected tcp or udp, in lower case)"
        );
        assert_eq!(
            access_list(&s("tcp/65536")).unwrap_err().0,
            "-X/--flag: port '65536' in 'tcp/65536' is out of range (1-65535)"
        );
        assert!(access_list(&s("tcp22")).is_err());
    }

    #[test]
    fn time_offsets() {
        assert_eq!(time_offset(&s("30")).unwrap(), 30);
        assert_eq!(time_offset(&s("5m")).unwrap(), 300);
        assert_eq!(time_offset(&s("-2h")).unwrap(), -7200);
        assert_eq!(time_offset(&s("1d")).unwrap(), 86400);
        assert_eq!(time_offset(&s("1M")).unwrap(), 60);
        assert_eq!(time_offset(&s("60sec")).unwrap(), 60);
        assert_eq!(time_offset(&s("60min")).unwrap(), 3600);
        assert_eq!(time_offset(&s("2days")).unwrap(), 172800);
        assert_eq!(time_offset(&s("3HOURS")).unwrap(), 10800);
        assert_eq!(time_offset(&s("-2days")).unwrap(), -172800);
        assert_eq!(time_offset(&s("24855d")).unwrap(), 24855 * 86400);
        for bad in [
            "x",
            "5y",
            "",
            "m",
            "5.5",
            "5seconds",
            "24856d",
            "99999999999999999999",
        ] {
            assert!(time_offset(&s(bad)).is_err(), "{bad}");
        }
    }

    fn rc(v: &str) -> Setting {
        Setting {
            value: v.into(),
            origin: Origin::Rc {
                path: "rc".into(),
                line: 3,
                var: "VERBOSE",
            },
        }
    }

    #[test]
    fn values_as_fwknop_reads_them() {
        assert_eq!(verbosity(&rc("2")).unwrap(), 2);
        assert_eq!(verbosity(&rc("Y")).unwrap(), 1);
        assert_eq!(verbosity(&rc("0")).unwrap(), 0);
        assert_eq!(
            verbosity(&rc("5")).unwrap_err().0,
            "rc:3: VERBOSE: '5' is out of range (Y, N or a level 0-4)"
        );
        assert!(verbosity(&rc("-1")).is_err());
        assert_eq!(verbosity(&s("7")).unwrap(), 7, "any number of -v");
        assert!(boolean(&s("y")).unwrap());
        assert!(!boolean(&s("N")).unwrap());
        assert!(boolean(&s("yes")).is_err());
        assert_eq!(
            http_proxy("198.18.0.5:3128").unwrap(),
            ("198.18.0.5".into(), Some(3128))
        );
        assert_eq!(http_proxy("http://proxy/").unwrap(), ("proxy".into(), None));
        assert!(http_proxy(":80").is_err());
        assert!(http_proxy("p:0").is_err());
    }

    #[test]
    fn ports() {
        assert_eq!(parse_port(&s("62201")).unwrap(), 62201);
        assert!(parse_port(&s("0")).is_err());
        assert!(parse_port(&s("70000")).is_err());
    }
}
