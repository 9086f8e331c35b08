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
}

/// The default URL `-R` asks, fwknop's own.
pub const DEFAULT_RESOLVE_URL: &str = "https://www.cipherdyne.org/cgi-bin/myip";
/// User-Agent sent with `-P http` and `-R`: fwknopd 2.6 requires it to start `Fwknop`.
pub const DEFAULT_USER_AGENT: &str = "Fwknop/2.6.10";

fn boolean(s: &Setting) -> Result<bool, Fail> {
    match s.value.to_ascii_lowercase().as_str() {
        "y" | "yes" | "1" | "true" | "on" => Ok(true),
        "n" | "no" | "0" | "false" | "off" => Ok(false),
        _ => Err(bad(
            &s.origin,
            format_args!("expected Y or N, not '{}'", s.value),
        )),
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

/// Parse a time offset: `N`, `Ns`, `Nm`, `Nh`, `Nd`, optionally with a leading `-`.
pub fn time_offset(s: &Setting) -> Result<i64, Fail> {
    let v = s.value.trim();
    let (neg, v) = match v.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, v.strip_prefix('+').unwrap_or(v)),
    };
    let (digits, mult) = match v.char_indices().last() {
        Some((i, 's' | 'S')) => (&v[..i], 1),
        Some((i, 'm' | 'M')) => (&v[..i], 60),
        Some((i, 'h' | 'H')) => (&v[..i], 3600),
        Some((i, 'd' | 'D')) => (&v[..i], 86400),
        _ => (v, 1),
    };
    let n: i64 = digits
        .parse()
        .ok()
        .filter(|&n: &i64| (0..=100 * 365 * 86400).contains(&(n * mult)))
        .ok_or_else(|| {
            bad(
                &s.origin,
                format_args!("'{}' is not a time offset (N, Nm, Nh or Nd)", s.value),
            )
        })?;
    Ok(if neg { -n * mult } else { n * mult })
}

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

impl Plan {
    /// Check merged settings; `server_cmd` is `-C`, which has no rc variable;
    /// `stdin_keys` is `--stdin` (keys that are not configured are read from stdin).
    pub fn from_settings(
        set: &Settings,
        server_cmd: Option<&str>,
        test: bool,
        stdin_keys: bool,
    ) -> Result<Plan, Fail> {
        for unsupported in ["SPOOF_SOURCE_IP", "HTTP_PROXY"] {
            if let Some(s) = set.get(unsupported) {
                return Err(bad(
                    &s.origin,
                    "not supported by postern yet (raw sockets and proxies are not implemented)",
                ));
            }
        }
        if let Some(s) = set.get("USE_GPG") {
            if boolean(s)? {
                return Err(bad(&s.origin, "GnuPG mode is not supported yet"));
            }
        }
        let server = set.value("SPA_SERVER").map(str::to_owned);
        if server.is_none() && !test {
            return Err(Fail(
                "-D/--destination is required: the SPA server to knock on".into(),
            ));
        }
        let transport = match set.get("SPA_SERVER_PROTO") {
            None => Transport::Udp,
            Some(s) => match s.value.to_ascii_lowercase().as_str() {
                "udp" => Transport::Udp,
                "tcp" => Transport::Tcp,
                "http" => Transport::Http,
                "udpraw" | "tcpraw" | "icmp" => {
                    return Err(bad(
                        &s.origin,
                        format_args!(
                            "'{}' (raw sockets) is not supported yet; use udp, tcp or http",
                            s.value
                        ),
                    ))
                }
                other => {
                    return Err(bad(
                        &s.origin,
                        format_args!("unknown protocol '{other}' (expected udp, tcp or http)"),
                    ))
                }
            },
        };
        let port = set.get("SPA_SERVER_PORT").map(parse_port).transpose()?;
        let source_port = set.get("SPA_SOURCE_PORT").map(parse_port).transpose()?;
        let rand_port = flag_is_set(set, "RAND_PORT")?;

        let resolve_url = |set: &Settings| -> Result<String, Fail> {
            let http_only = flag_is_set(set, "RESOLVE_HTTP_ONLY")?;
            Ok(match set.value("RESOLVE_URL") {
                Some(u) => u.to_owned(),
                None if http_only => DEFAULT_RESOLVE_URL.replacen("https://", "http://", 1),
                None => DEFAULT_RESOLVE_URL.to_owned(),
            })
        };
        let allow = if let Some(s) = set.get("ALLOW_IP") {
            match s.value.to_ascii_lowercase().as_str() {
                "source" => Allow::Source,
                "resolve" => Allow::Resolve {
                    url: resolve_url(set)?,
                },
                _ => Allow::Ip(parse_allow_ip(&s.value).map_err(|_| {
                    bad(
                        &s.origin,
                        format_args!(
                            "'{}' is not an IP address (or 'source'/'resolve' in the rc file)",
                            s.value
                        ),
                    )
                })?),
            }
        } else if set.get("RESOLVE_IP_HTTPS").map(boolean).transpose()? == Some(true)
            || set.get("RESOLVE_IP_HTTP").map(boolean).transpose()? == Some(true)
        {
            Allow::Resolve {
                url: resolve_url(set)?,
            }
        } else {
            return Err(Fail(
                "an allow address is required: add -a/--allow-ip ADDRESS, -s/--source-ip or -R/--resolve-ip-https".into(),
            ));
        };

        let ask = match server_cmd {
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
                let text =
                    s.value
                        .replacen(':', ",", usize::from(s.value.matches(':').count() == 1));
                let t = parse_nat(&text).map_err(|e| {
                    bad(
                        &s.origin,
                        format_args!("'{}' is not HOST:PORT ({e})", s.value),
                    )
                })?;
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

        let fw_timeout = match set.get("FW_TIMEOUT") {
            None => 0,
            Some(s) => s
                .value
                .parse::<u32>()
                .ok()
                .filter(|&t| t <= wire::MAX_CLIENT_TIMEOUT)
                .ok_or_else(|| {
                    bad(
                        &s.origin,
                        format_args!("'{}' is not a timeout in seconds (0-65536)", s.value),
                    )
                })?,
        };
        let user = set
            .get("SPOOF_USER")
            .map(|s| (s.value.clone(), s.origin.clone()));
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
        let hmac_wanted = match set.get("USE_HMAC") {
            Some(s) if boolean(s)? => Some(s.origin.clone()),
            _ => set.get("HMAC_DIGEST_TYPE").map(|s| s.origin.clone()),
        };
        let hmac_key = match (key_source(set, "HMAC_KEY", "HMAC_KEY_BASE64", "HMAC_KEY_FILE"), hmac_wanted) {
            (Some(k), _) => Some(k),
            (None, Some(_)) if stdin_keys => Some(KeySource::Ask),
            (None, Some(origin)) => {
                return Err(bad(
                    &origin,
                    "HMAC is requested but no HMAC key is configured: add --key-hmac KEY, --key-base64-hmac B64 or --get-hmac-key FILE (or --stdin)",
                ))
            }
            (None, None) => None,
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
            verbose: flag_is_set(set, "VERBOSE")?,
            no_save_args: flag_is_set(set, "NO_SAVE_ARGS")?,
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
        assert!(time_offset(&s("x")).is_err());
        assert!(time_offset(&s("5y")).is_err());
    }

    #[test]
    fn ports() {
        assert_eq!(parse_port(&s("62201")).unwrap(), 62201);
        assert!(parse_port(&s("0")).is_err());
        assert!(parse_port(&s("70000")).is_err());
    }
}
