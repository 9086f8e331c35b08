//! Stage 2, pure: which stanza accepts the packet, and what it is allowed to do.
//!
//! For each stanza whose SOURCE (and DESTINATION) match, in file order: expiry, then
//! HMAC/decrypt/digest/fields (the codec), then age, allow address, username, message
//! type and port policy. The first stanza that accepts wins; a failure moves on to the
//! next stanza, as in fwknopd. A packet that decrypted under any stanza is "burned": its
//! replay key must be recorded even if policy then refuses it.

use core::fmt;
use std::net::IpAddr;

use postern_proto::{MessageType, Packet, PortSpec, Request};

use crate::config::Stanza;

/// Time and age policy.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// Unix time now.
    pub now: u64,
    /// Whether the age check applies.
    pub aging: bool,
    /// Maximum |now - timestamp|.
    pub max_age: u64,
    /// Refuse packets stamped before this (set for one age window after a start whose
    /// replay store was missing or damaged).
    pub not_before: Option<u64>,
    /// `ENABLE_IPT_FORWARDING`: NAT access to hosts behind this gateway.
    pub nat_forwarding: bool,
    /// `ENABLE_IPT_LOCAL_NAT`: NAT access to this host's own ports.
    pub nat_local: bool,
    /// `ENABLE_IPT_SNAT` with `SNAT_TRANSLATE_IP` (SNAT) or without it (MASQUERADE):
    /// how forwarded NAT connections leave; `None` when off. A stanza's `FORCE_SNAT` /
    /// `FORCE_MASQUERADE` override it.
    pub snat: Option<postern_fw::Snat>,
    /// With `ENABLE_X_FORWARDED_FOR`, the `X-Forwarded-For` address of an HTTP request:
    /// what a `-s` (0.0.0.0) request is granted to instead of the packet's source.
    pub forwarded_for: Option<IpAddr>,
}

/// Why a packet opened nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reason {
    /// Failed the key-independent checks.
    Junk(postern_proto::Error),
    /// Already seen.
    Replay,
    /// No stanza's SOURCE/DESTINATION matches the packet.
    NoStanzaForSource,
    /// The stanza expired (ACCESS_EXPIRE).
    StanzaExpired,
    /// The codec refused it under this stanza's keys.
    Crypto(postern_proto::Error),
    /// Timestamp outside the age window (seconds off).
    TooOld(i64),
    /// Stamped before posternd started with a missing or damaged replay store.
    BeforeStart,
    /// Allow address 0.0.0.0 with REQUIRE_SOURCE_ADDRESS.
    SourceAddressRequired,
    /// Username differs from REQUIRE_USERNAME.
    Username,
    /// NAT access requested, but not enabled on this server for its kind
    /// (ENABLE_IPT_FORWARDING / ENABLE_IPT_LOCAL_NAT), or naming a host name.
    NatRefused(&'static str),
    /// Command message to a stanza without ENABLE_CMD_EXEC.
    CommandNotEnabled,
    /// A requested port is in RESTRICT_PORTS.
    PortRestricted(PortSpec),
    /// A requested port is not in OPEN_PORTS.
    PortNotOpen(PortSpec),
    /// The address to open is not one a grant can name (multicast, broadcast,
    /// unspecified).
    BadAllowAddress(IpAddr),
}

impl Reason {
    /// A short stable label for counters.
    pub fn label(&self) -> &'static str {
        match self {
            Reason::Junk(e) => e.stage().name(),
            Reason::Replay => "replay",
            Reason::NoStanzaForSource => "no_stanza",
            Reason::StanzaExpired => "stanza_expired",
            Reason::Crypto(postern_proto::Error::HmacMismatch) => "hmac",
            Reason::Crypto(_) => "decrypt",
            Reason::TooOld(_) => "age",
            Reason::BeforeStart => "before_start",
            Reason::SourceAddressRequired => "require_source_address",
            Reason::Username => "username",
            Reason::NatRefused(_) => "nat",
            Reason::CommandNotEnabled => "command_not_enabled",
            Reason::PortRestricted(_) => "port_restricted",
            Reason::PortNotOpen(_) => "port_not_open",
            Reason::BadAllowAddress(_) => "bad_allow_address",
        }
    }

    /// Whether the packet was decrypted before this failure (a policy refusal).
    fn is_policy(&self) -> bool {
        !matches!(
            self,
            Reason::Crypto(_)
                | Reason::StanzaExpired
                | Reason::NoStanzaForSource
                | Reason::Junk(_)
                | Reason::Replay
        )
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Junk(e) => write!(f, "not an SPA packet: {e}"),
            Reason::Replay => f.write_str("replayed packet"),
            Reason::NoStanzaForSource => f.write_str("no stanza for this source"),
            Reason::StanzaExpired => f.write_str("stanza expired"),
            Reason::Crypto(e) => write!(f, "{e}"),
            Reason::TooOld(d) => write!(f, "packet age {d}s is outside the allowed window"),
            Reason::BeforeStart => f.write_str(
                "packet stamped before posternd started, and the replay store was missing or damaged at start",
            ),
            Reason::SourceAddressRequired => {
                f.write_str("allow address 0.0.0.0 refused (REQUIRE_SOURCE_ADDRESS)")
            }
            Reason::Username => f.write_str("username not allowed (REQUIRE_USERNAME)"),
            Reason::NatRefused(why) => write!(f, "NAT access refused: {why}"),
            Reason::CommandNotEnabled => {
                f.write_str("command messages not allowed (ENABLE_CMD_EXEC)")
            }
            Reason::PortRestricted(p) => write!(f, "{p} is in RESTRICT_PORTS"),
            Reason::PortNotOpen(p) => write!(f, "{p} is not in OPEN_PORTS"),
            Reason::BadAllowAddress(a) => write!(f, "{a} cannot be granted access"),
        }
    }
}

/// Open ports for an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantDecision {
    /// Address to open for.
    pub allow: IpAddr,
    /// Ports.
    pub ports: Vec<PortSpec>,
    /// Seconds.
    pub timeout: u64,
    /// NAT access: the first (only) port is translated there.
    pub nat: Option<postern_fw::Nat>,
}

/// Run a command (ENABLE_CMD_EXEC).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandDecision {
    /// Address the command is for.
    pub allow: IpAddr,
    /// The command text (split on whitespace into argv, never a shell).
    pub command: String,
}

/// Run an open/close command cycle, one per requested port. Carries the values to
/// substitute, not command text: the privileged part builds the commands itself from
/// the stanza's templates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CycleDecision {
    /// Allow address (after 0.0.0.0 replacement): `$IP`, `$SRC`.
    pub allow: IpAddr,
    /// Packet source: `$PKT_SRC`.
    pub packet_source: IpAddr,
    /// Packet destination: `$DST`.
    pub destination: IpAddr,
    /// Requested ports: `$PORT`, `$PROTO`, one command per port.
    pub ports: Vec<PortSpec>,
    /// Packet timestamp (for `$TIMEOUT`).
    pub timestamp: u64,
    /// Client timeout: `$CLIENT_TIMEOUT` (only substituted: the close delay is always
    /// CMD_CYCLE_TIMER, as in fwknopd 2.6.10).
    pub client_timeout: u32,
}

impl CycleDecision {
    /// Seconds until the close commands run: CMD_CYCLE_TIMER.
    pub fn timer(&self, cycle: &crate::config::access::CmdCycle) -> u64 {
        cycle.timer
    }

    /// The open and close commands for every port, substituted from the templates.
    pub fn commands(&self, cycle: &crate::config::access::CmdCycle) -> (Vec<String>, Vec<String>) {
        let timer = self.timer(cycle);
        let mut open = Vec::new();
        let mut close = Vec::new();
        for port in &self.ports {
            let vars = [
                ("IP", self.allow.to_string()),
                ("SRC", self.allow.to_string()),
                ("PKT_SRC", self.packet_source.to_string()),
                ("DST", self.destination.to_string()),
                ("PORT", port.port.to_string()),
                ("PROTO", port.proto.number().to_string()),
                ("TIMEOUT", self.timestamp.saturating_add(timer).to_string()),
                ("CLIENT_TIMEOUT", self.client_timeout.to_string()),
            ];
            open.push(substitute(&cycle.open, &vars));
            if let Some(c) = &cycle.close {
                close.push(substitute(c, &vars));
            }
        }
        (open, close)
    }
}

/// What to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Open ports.
    Grant(GrantDecision),
    /// Run a command.
    Command(CommandDecision),
    /// Run a command cycle.
    Cycle(CycleDecision),
    /// Nothing.
    Drop(Reason),
}

/// The outcome of authorizing one packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// What to do.
    pub verdict: Verdict,
    /// Index of the deciding stanza (accepting, or the one whose refusal is reported).
    pub stanza: Option<usize>,
    /// Whether the replay key must be recorded (the packet decrypted somewhere).
    pub burn: bool,
    /// Username in the packet, when it decrypted.
    pub username: Option<String>,
}

/// Replace `$IP $SRC $PKT_SRC $DST $PORT $PROTO $TIMEOUT $CLIENT_TIMEOUT` in a command.
pub fn substitute(template: &str, vars: &[(&str, String)]) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    'outer: while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        // Longest name first ($CLIENT_TIMEOUT before $TIMEOUT is not an issue; $PKT_SRC vs $SRC).
        let mut names: Vec<&(&str, String)> = vars.iter().collect();
        names.sort_by_key(|(n, _)| std::cmp::Reverse(n.len()));
        for (name, value) in names {
            if let Some(tail) = after.strip_prefix(name) {
                out.push_str(value);
                rest = tail;
                continue 'outer;
            }
        }
        out.push('$');
        rest = after;
    }
    out.push_str(rest);
    out
}

fn check_stanza(
    p: &Packet<'_>,
    src: IpAddr,
    dst: IpAddr,
    s: &Stanza,
    clock: Clock,
) -> Result<(Verdict, String), (Reason, Option<String>)> {
    if s.access_expire.is_some_and(|e| clock.now >= e) {
        return Err((Reason::StanzaExpired, None));
    }
    let opened = p.open(&s.keys).map_err(|e| (Reason::Crypto(e), None))?;
    let m = opened.message;
    let user = Some(m.username.clone());
    let fail = |r: Reason| (r, user.clone());
    if clock.aging {
        let age = i128::from(clock.now) - i128::from(m.timestamp);
        if age.unsigned_abs() > u128::from(clock.max_age) {
            return Err(fail(Reason::TooOld(i64::try_from(age).unwrap_or(i64::MAX))));
        }
    }
    if clock.not_before.is_some_and(|t| m.timestamp < t) {
        return Err(fail(Reason::BeforeStart));
    }
    let request = m.request().map_err(|e| fail(Reason::Crypto(e)))?;
    let (allow, ports, command) = match request {
        Request::Access { allow, ports } => (allow, ports, None),
        Request::Command { allow, command } => (allow, Vec::new(), Some(command)),
    };
    let allow = if allow.is_unspecified() {
        if s.require_source_address {
            return Err(fail(Reason::SourceAddressRequired));
        }
        clock.forwarded_for.unwrap_or(src)
    } else {
        allow
    };
    if !grantable(allow) {
        return Err(fail(Reason::BadAllowAddress(allow)));
    }
    if let Some(u) = &s.require_username {
        if *u != m.username {
            return Err(fail(Reason::Username));
        }
    }
    let nat = if m.message_type.has_nat() || s.force_nat.is_some() {
        let local = matches!(
            m.message_type,
            MessageType::LocalNatAccess | MessageType::ClientTimeoutLocalNatAccess
        ) || (s.force_nat.is_some() && !clock.nat_forwarding);
        if local && !clock.nat_local {
            return Err(fail(Reason::NatRefused(
                "local NAT is not enabled (ENABLE_IPT_LOCAL_NAT)",
            )));
        }
        if !local && !clock.nat_forwarding {
            return Err(fail(Reason::NatRefused(
                "forwarding is not enabled (ENABLE_IPT_FORWARDING)",
            )));
        }
        let (to, to_port) = match s.force_nat {
            Some(f) => f,
            None => {
                let t = m
                    .nat()
                    .map_err(|e| fail(Reason::Crypto(e)))?
                    .ok_or_else(|| fail(Reason::NatRefused("no NAT target")))?;
                let ip: IpAddr = t.host.parse().map_err(|_| {
                    fail(Reason::NatRefused(
                        "host names are not resolved; send an address",
                    ))
                })?;
                (ip, t.port)
            }
        };
        if !grantable(to) || to.is_ipv6() != allow.is_ipv6() {
            return Err(fail(Reason::NatRefused("unusable NAT address")));
        }
        Some(nat_translation(s, clock, to, to_port, local, allow).map_err(fail)?)
    } else {
        None
    };
    let timeout_for = |cap: u64, default: u64| {
        if m.client_timeout > 0 {
            u64::from(m.client_timeout).min(cap)
        } else {
            default
        }
    };
    if s.cmd_cycle.is_some() && m.message_type != MessageType::Command {
        let cycle = CycleDecision {
            allow,
            packet_source: src,
            destination: dst,
            ports,
            timestamp: m.timestamp,
            client_timeout: m.client_timeout,
        };
        return Ok((Verdict::Cycle(cycle), m.username));
    }
    if let Some(command) = command {
        if !s.enable_cmd_exec {
            return Err(fail(Reason::CommandNotEnabled));
        }
        return Ok((
            Verdict::Command(CommandDecision { allow, command }),
            m.username,
        ));
    }
    if let Some(p) = s.restricted_port(&ports) {
        return Err(fail(Reason::PortRestricted(p)));
    }
    if let Some(p) = s.unopened_port(&ports) {
        return Err(fail(Reason::PortNotOpen(p)));
    }
    let timeout = timeout_for(s.max_fw_timeout, s.fw_access_timeout);
    // NAT translates the first requested port only, as fwknopd does.
    let ports = if nat.is_some() {
        ports.into_iter().take(1).collect()
    } else {
        ports
    };
    Ok((
        Verdict::Grant(GrantDecision {
            allow,
            ports,
            timeout,
            nat,
        }),
        m.username,
    ))
}

/// The NAT opening of an accepted NAT request, as fwknopd 2.6.10 builds it: DNAT (unless
/// `DISABLE_DNAT`), the forward (or, for local NAT, input) opening, and for forwarded
/// connections the source translation of `ENABLE_IPT_SNAT`, which a stanza's
/// `FORCE_MASQUERADE` or `FORCE_SNAT` overrides (and which they never turn on). Where
/// fwknopd adds a POSTROUTING rule for local NAT, posternd adds none: connections to this
/// host never pass POSTROUTING. `FORWARD_ALL` applies to forwarded NAT only.
fn nat_translation(
    s: &Stanza,
    clock: Clock,
    to: IpAddr,
    to_port: u16,
    local: bool,
    allow: IpAddr,
) -> Result<postern_fw::Nat, Reason> {
    use postern_fw::Snat;
    let snat = match clock.snat {
        Some(default) if !local => Some(if s.nat.force_masquerade {
            Snat::Masquerade
        } else if let Some(a) = s.nat.force_snat {
            Snat::To(a)
        } else {
            default
        }),
        _ => None,
    };
    if let Some(Snat::To(a)) = snat {
        if a.is_ipv6() != allow.is_ipv6() {
            return Err(Reason::NatRefused(
                "the SNAT address (SNAT_TRANSLATE_IP / FORCE_SNAT) is of another address family than the grant",
            ));
        }
    }
    Ok(postern_fw::Nat {
        to,
        to_port,
        local,
        snat,
        all: s.nat.forward_all && !local,
        dnat: !s.nat.disable_dnat,
    })
}

/// Whether an address may be named in a grant: a unicast address of a remote host.
fn grantable(ip: IpAddr) -> bool {
    let v4_broadcast = matches!(ip, IpAddr::V4(a) if a.is_broadcast());
    !(ip.is_unspecified() || ip.is_multicast() || v4_broadcast)
}

/// Decide what a packet (already past `decode` and the replay check) may do.
pub fn authorize(
    p: &Packet<'_>,
    src: IpAddr,
    dst: IpAddr,
    stanzas: &[Stanza],
    clock: Clock,
) -> Decision {
    let mut best: Option<(usize, Reason, Option<String>)> = None;
    let mut burn = false;
    let mut any = false;
    for (i, s) in stanzas.iter().enumerate() {
        if !s.matches(src, dst) {
            continue;
        }
        any = true;
        match check_stanza(p, src, dst, s, clock) {
            Ok((verdict, user)) => {
                return Decision {
                    verdict,
                    stanza: Some(i),
                    burn: true,
                    username: Some(user),
                };
            }
            Err((reason, user)) => {
                let decrypted = user.is_some();
                burn |= decrypted;
                let better = match &best {
                    None => true,
                    Some((_, b, _)) => reason.is_policy() && !b.is_policy(),
                };
                if better {
                    best = Some((i, reason, user));
                }
            }
        }
    }
    match best {
        Some((i, reason, user)) => Decision {
            verdict: Verdict::Drop(reason),
            stanza: Some(i),
            burn,
            username: user,
        },
        None => Decision {
            verdict: Verdict::Drop(if any {
                Reason::StanzaExpired
            } else {
                Reason::NoStanzaForSource
            }),
            stanza: None,
            burn,
            username: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nat_translations_follow_fwknopd() {
        use postern_fw::Snat;
        let stanzas = crate::config::access::parse_text(
            "SOURCE ANY\nKEY k1\n\
             SOURCE ANY\nKEY k2\nFORCE_NAT 198.18.2.2 1\nFORCE_SNAT 198.18.9.9\nFORWARD_ALL Y\n\
             SOURCE ANY\nKEY k3\nFORCE_NAT 198.18.2.2 1\nFORCE_SNAT 198.18.9.9\nFORCE_MASQUERADE Y\nDISABLE_DNAT Y\n",
            std::path::Path::new("/a.conf"),
            0,
        )
        .unwrap();
        let translate: IpAddr = "198.18.9.1".parse().unwrap();
        let clock = |snat| Clock {
            now: 0,
            aging: false,
            max_age: 0,
            not_before: None,
            nat_forwarding: true,
            nat_local: true,
            snat,
            forwarded_for: None,
        };
        let (to, src): (IpAddr, IpAddr) =
            ("198.18.2.2".parse().unwrap(), "198.18.1.2".parse().unwrap());
        let t = |i: usize, snat, local| {
            nat_translation(&stanzas[i], clock(snat), to, 1, local, src).unwrap()
        };
        let on = Some(Snat::To(translate));
        assert_eq!(
            t(0, on, false),
            postern_fw::Nat {
                snat: on,
                ..postern_fw::Nat::to(to, 1, false)
            }
        );
        assert_eq!(t(0, None, false).snat, None, "ENABLE_IPT_SNAT off");
        assert_eq!(
            t(0, on, true).snat,
            None,
            "local NAT is never source-translated"
        );
        let forced = t(1, Some(Snat::Masquerade), false);
        assert_eq!(forced.snat, Some(Snat::To("198.18.9.9".parse().unwrap())));
        assert!(forced.all && forced.dnat);
        assert_eq!(
            t(1, None, false).snat,
            None,
            "FORCE_SNAT alone turns nothing on"
        );
        assert!(!t(1, on, true).all, "FORWARD_ALL is for forwarded NAT");
        let masq = t(2, on, false);
        assert_eq!(masq.snat, Some(Snat::Masquerade));
        assert!(!masq.dnat && !masq.all);
        let six: IpAddr = "2001:db8::2".parse().unwrap();
        assert!(nat_translation(
            &stanzas[0],
            clock(on),
            "2001:db8::5".parse().unwrap(),
            1,
            false,
            six
        )
        .is_err());
    }

    #[test]
    fn substitution() {
        let vars = [
            ("SRC", "1.2.3.4".to_owned()),
            ("PKT_SRC", "5.6.7.8".to_owned()),
            ("PORT", "22".to_owned()),
        ];
        assert_eq!(
            substitute("/bin/open $SRC $PKT_SRC $PORT $OTHER", &vars),
            "/bin/open 1.2.3.4 5.6.7.8 22 $OTHER"
        );
        assert_eq!(substitute("$", &vars), "$");
    }
}
