//! What one grant opens in fwknop's iptables layout, as values: a [`Piece`] per chain
//! (`FWKNOP_INPUT`, `FWKNOP_FORWARD`, `FWKNOP_PREROUTING`, `FWKNOP_POSTROUTING`,
//! `FWKNOP_MASQUERADE`, `FWKNOP_OUTPUT`), each a match and a target. The backend turns a
//! piece into an ipset entry (the chain holds one rule per set, the entry carries the
//! timeout) or, without ipset, into a plain rule with fwknopd's `_exp_<deadline>` comment.
//! Pure: no process is run here.
//!
//! ```text
//!  Grant 198.18.1.2 tcp/22, NAT to 198.18.2.2:55000, SNAT 198.18.9.1
//!    Dnat    -s 198.18.1.2 -p tcp --dport 22          -j DNAT --to-destination 198.18.2.2:55000
//!    Forward -s 198.18.1.2 -d 198.18.2.2 -p tcp --dport 55000 -j ACCEPT
//!    Snat    -s 198.18.1.2 -d 198.18.2.2 -p tcp --dport 55000 -j SNAT --to-source 198.18.9.1
//! ```
//!
//! Compared with fwknopd 2.6.10, which matches the SNAT/MASQUERADE rule on the NAT
//! destination only (`-d 198.18.2.2 -p tcp --dport 55000`) and the forward rule without
//! `-d`, posternd also matches the grant's source and destination, so two grants never
//! share an opening (revoking one never closes the other) and nothing else is translated.

use std::net::IpAddr;

use postern_proto::Protocol;

use crate::{Grant, Snat};

/// One of posternd's chains (fwknopd's names by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Hook {
    /// `IPT_INPUT_ACCESS`: `FWKNOP_INPUT`.
    Input,
    /// `IPT_OUTPUT_ACCESS`: `FWKNOP_OUTPUT` (with `ENABLE_IPT_OUTPUT`).
    Output,
    /// `IPT_FORWARD_ACCESS`: `FWKNOP_FORWARD`.
    Forward,
    /// `IPT_DNAT_ACCESS`: `FWKNOP_PREROUTING` (nat).
    Dnat,
    /// `IPT_SNAT_ACCESS`: `FWKNOP_POSTROUTING` (nat, with `ENABLE_IPT_SNAT`).
    Snat,
    /// `IPT_MASQUERADE_ACCESS`: `FWKNOP_MASQUERADE` (nat, with `ENABLE_IPT_SNAT`).
    Masquerade,
}

/// What a piece matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Match {
    /// `-s src -p proto --dport port`.
    SrcPort(IpAddr, Protocol, u16),
    /// `-s src -d dst -p proto --dport port`.
    SrcDstPort(IpAddr, IpAddr, Protocol, u16),
    /// `-s src`: every protocol and port (`FORWARD_ALL`).
    Src(IpAddr),
    /// `-d dst -p proto --sport port`: the replies of an input opening (`ENABLE_IPT_OUTPUT`).
    DstSport(IpAddr, Protocol, u16),
}

/// What a piece does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    /// The chain's target (`ACCEPT`, or what its `IPT_*_ACCESS` names).
    Accept,
    /// `DNAT --to-destination to[:port]`.
    Dnat(IpAddr, Option<u16>),
    /// `SNAT --to-source address`.
    Snat(IpAddr),
    /// `MASQUERADE`.
    Masquerade,
}

/// One rule's worth of a grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Piece {
    /// The chain.
    pub hook: Hook,
    /// ip6tables rather than iptables.
    pub v6: bool,
    /// The match.
    pub m: Match,
    /// The target.
    pub target: Target,
}

/// The pieces of a grant. `output`: `ENABLE_IPT_OUTPUT` (every input opening also
/// accepts its replies in the output path).
pub fn pieces(g: &Grant, output: bool) -> Vec<Piece> {
    let v6 = g.source.is_ipv6();
    let (src, proto) = (g.source, g.proto);
    let piece = |hook, m, target| Piece {
        hook,
        v6,
        m,
        target,
    };
    let mut v = Vec::new();
    let input = |v: &mut Vec<Piece>, port: u16| {
        v.push(piece(
            Hook::Input,
            Match::SrcPort(src, proto, port),
            Target::Accept,
        ));
        if output {
            v.push(piece(
                Hook::Output,
                Match::DstSport(src, proto, port),
                Target::Accept,
            ));
        }
    };
    let Some(n) = g.nat else {
        input(&mut v, g.port);
        return v;
    };
    if n.local {
        if n.dnat {
            v.push(piece(
                Hook::Dnat,
                Match::SrcPort(src, proto, g.port),
                Target::Dnat(n.to, Some(n.to_port)),
            ));
        }
        input(&mut v, n.to_port);
        return v;
    }
    let fwd = if n.all {
        Match::Src(src)
    } else {
        Match::SrcDstPort(src, n.to, proto, n.to_port)
    };
    if n.dnat {
        let (m, t) = if n.all {
            (Match::Src(src), Target::Dnat(n.to, None))
        } else {
            (
                Match::SrcPort(src, proto, g.port),
                Target::Dnat(n.to, Some(n.to_port)),
            )
        };
        v.push(piece(Hook::Dnat, m, t));
    }
    v.push(piece(Hook::Forward, fwd, Target::Accept));
    match n.snat {
        Some(Snat::To(a)) => v.push(piece(Hook::Snat, fwd, Target::Snat(a))),
        Some(Snat::Masquerade) => v.push(piece(Hook::Masquerade, fwd, Target::Masquerade)),
        None => {}
    }
    v
}

fn host(a: IpAddr) -> String {
    match a {
        IpAddr::V4(a) => format!("{a}/32"),
        IpAddr::V6(a) => format!("{a}/128"),
    }
}

fn with_port(a: IpAddr, port: u16) -> String {
    match a {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

impl Match {
    /// As iptables-save prints it (`-s 198.18.1.2/32 -p tcp -m tcp --dport 22`).
    pub fn args(&self) -> Vec<String> {
        let p = |proto: Protocol| proto.name().to_owned();
        let v: Vec<String> = match *self {
            Match::SrcPort(s, proto, port) => vec![
                "-s".into(),
                host(s),
                "-p".into(),
                p(proto),
                "-m".into(),
                p(proto),
                "--dport".into(),
                port.to_string(),
            ],
            Match::SrcDstPort(s, d, proto, port) => vec![
                "-s".into(),
                host(s),
                "-d".into(),
                host(d),
                "-p".into(),
                p(proto),
                "-m".into(),
                p(proto),
                "--dport".into(),
                port.to_string(),
            ],
            Match::Src(s) => vec!["-s".into(), host(s)],
            Match::DstSport(d, proto, port) => vec![
                "-d".into(),
                host(d),
                "-p".into(),
                p(proto),
                "-m".into(),
                p(proto),
                "--sport".into(),
                port.to_string(),
            ],
        };
        v
    }
}

impl Target {
    /// `-j ...`; `accept` is the chain's target for [`Target::Accept`].
    pub fn args(&self, accept: &str) -> Vec<String> {
        match *self {
            Target::Accept => vec!["-j".into(), accept.to_owned()],
            Target::Dnat(to, port) => vec![
                "-j".into(),
                "DNAT".into(),
                "--to-destination".into(),
                match port {
                    Some(p) => with_port(to, p),
                    None => to.to_string(),
                },
            ],
            Target::Snat(a) => vec![
                "-j".into(),
                "SNAT".into(),
                "--to-source".into(),
                a.to_string(),
            ],
            Target::Masquerade => vec!["-j".into(), "MASQUERADE".into()],
        }
    }
}

/// fwknopd's expiry comment: `_exp_<unix deadline>`.
pub fn exp_comment(deadline: u64) -> String {
    format!("_exp_{deadline}")
}

/// A plain rule as iptables-save prints it, without the chain:
/// `-s 198.18.1.2/32 -p tcp -m tcp --dport 22 -m comment --comment _exp_1796173480 -j ACCEPT`.
pub fn plain_rule(p: &Piece, accept: &str, deadline: u64) -> Vec<String> {
    let mut v = p.m.args();
    v.extend([
        "-m".into(),
        "comment".into(),
        "--comment".into(),
        exp_comment(deadline),
    ]);
    v.extend(p.target.args(accept));
    v
}

/// The same rule with its comment left out: what makes two rules the same opening.
pub fn rule_key(p: &Piece, accept: &str) -> String {
    let mut v = p.m.args();
    v.extend(p.target.args(accept));
    v.join(" ")
}

/// A rule with an `_exp_` comment found in one of posternd's chains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedRule {
    /// The chain.
    pub chain: String,
    /// The rule as printed after `-A CHAIN ` (what `-D CHAIN` takes back).
    pub spec: String,
    /// The rule without its comment (compare with [`rule_key`]).
    pub key: String,
    /// Its deadline (Unix time).
    pub deadline: u64,
}

/// The `_exp_` rules of `chains` in one table's iptables-save output (posternd's plain
/// rules, and fwknopd's own, which have the same form).
pub fn parse_saved(text: &str, chains: &[&str]) -> Vec<SavedRule> {
    let mut out = Vec::new();
    for l in text.lines() {
        let Some(rest) = l.strip_prefix("-A ") else {
            continue;
        };
        let Some((chain, spec)) = rest.split_once(' ') else {
            continue;
        };
        if !chains.contains(&chain) {
            continue;
        }
        let w: Vec<&str> = spec.split_whitespace().collect();
        let Some(i) = w.iter().position(|t| *t == "--comment") else {
            continue;
        };
        let Some(deadline) = w
            .get(i + 1)
            .map(|c| c.trim_matches('"'))
            .and_then(|c| c.strip_prefix("_exp_"))
            .and_then(|d| d.parse::<u64>().ok())
        else {
            continue;
        };
        // Drop `-m comment --comment _exp_N` to get the key.
        let mut key: Vec<&str> = Vec::with_capacity(w.len());
        let mut j = 0;
        while j < w.len() {
            if w[j] == "-m"
                && w.get(j + 1) == Some(&"comment")
                && w.get(j + 2) == Some(&"--comment")
            {
                j += 4;
                continue;
            }
            key.push(w[j]);
            j += 1;
        }
        out.push(SavedRule {
            chain: chain.to_owned(),
            spec: spec.to_owned(),
            key: key.join(" "),
            deadline,
        });
    }
    out
}

/// The input opening a saved rule holds: `(source, proto, port)`.
pub fn input_opening(r: &SavedRule) -> Option<(IpAddr, Protocol, u16)> {
    let w: Vec<&str> = r.key.split_whitespace().collect();
    let after = |flag: &str| {
        w.iter()
            .position(|t| *t == flag)
            .and_then(|i| w.get(i + 1))
            .copied()
    };
    if after("-d").is_some() {
        return None;
    }
    let src = after("-s")?;
    let src = src.split_once('/').map_or(src, |(a, _)| a);
    let proto = match after("-p")? {
        "tcp" => Protocol::Tcp,
        "udp" => Protocol::Udp,
        _ => return None,
    };
    let port = after("--dport")?.parse().ok()?;
    Some((src.parse().ok()?, proto, port))
}

/// A short stable hash for set names (FNV-1a, 32 bits).
pub fn short_hash(s: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in s.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Nat;
    use std::time::Duration;

    fn grant(nat: Option<Nat>) -> Grant {
        Grant {
            source: "198.18.1.2".parse().unwrap(),
            proto: Protocol::Tcp,
            port: 22,
            timeout: Duration::from_secs(30),
            nat,
        }
    }

    fn to() -> IpAddr {
        "198.18.2.2".parse().unwrap()
    }

    fn text(p: &[Piece]) -> Vec<String> {
        p.iter()
            .map(|p| format!("{:?} {}", p.hook, plain_rule(p, "ACCEPT", 9).join(" ")))
            .collect()
    }

    #[test]
    fn the_pieces_match_what_fwknopd_matches() {
        assert_eq!(
            text(&pieces(&grant(None), true)),
            [
                "Input -s 198.18.1.2/32 -p tcp -m tcp --dport 22 -m comment --comment _exp_9 -j ACCEPT",
                "Output -d 198.18.1.2/32 -p tcp -m tcp --sport 22 -m comment --comment _exp_9 -j ACCEPT",
            ]
        );
        let mut n = Nat::to(to(), 55000, false);
        n.snat = Some(Snat::To("198.18.9.1".parse().unwrap()));
        assert_eq!(
            text(&pieces(&grant(Some(n)), true)),
            [
                "Dnat -s 198.18.1.2/32 -p tcp -m tcp --dport 22 -m comment --comment _exp_9 -j DNAT --to-destination 198.18.2.2:55000",
                "Forward -s 198.18.1.2/32 -d 198.18.2.2/32 -p tcp -m tcp --dport 55000 -m comment --comment _exp_9 -j ACCEPT",
                "Snat -s 198.18.1.2/32 -d 198.18.2.2/32 -p tcp -m tcp --dport 55000 -m comment --comment _exp_9 -j SNAT --to-source 198.18.9.1",
            ]
        );
        n.snat = Some(Snat::Masquerade);
        n.all = true;
        assert_eq!(
            text(&pieces(&grant(Some(n)), false)),
            [
                "Dnat -s 198.18.1.2/32 -m comment --comment _exp_9 -j DNAT --to-destination 198.18.2.2",
                "Forward -s 198.18.1.2/32 -m comment --comment _exp_9 -j ACCEPT",
                "Masquerade -s 198.18.1.2/32 -m comment --comment _exp_9 -j MASQUERADE",
            ]
        );
        n.dnat = false;
        let p = pieces(&grant(Some(n)), false);
        assert!(p.iter().all(|p| p.hook != Hook::Dnat), "{p:?}");
        // Local NAT: DNAT to this host and the input opening on the translated port.
        let local = Nat::to("198.18.1.1".parse().unwrap(), 2222, true);
        assert_eq!(
            text(&pieces(&grant(Some(local)), false)),
            [
                "Dnat -s 198.18.1.2/32 -p tcp -m tcp --dport 22 -m comment --comment _exp_9 -j DNAT --to-destination 198.18.1.1:2222",
                "Input -s 198.18.1.2/32 -p tcp -m tcp --dport 2222 -m comment --comment _exp_9 -j ACCEPT",
            ]
        );
        let mut six = grant(None);
        six.source = "2001:db8:1::2".parse().unwrap();
        assert_eq!(
            plain_rule(&pieces(&six, false)[0], "ACCEPT", 1).join(" "),
            "-s 2001:db8:1::2/128 -p tcp -m tcp --dport 22 -m comment --comment _exp_1 -j ACCEPT"
        );
    }

    #[test]
    fn saved_rules_are_read_back_with_their_deadlines() {
        let text = "*filter\n:FWKNOP_INPUT - [0:0]\n\
            -A INPUT -j FWKNOP_INPUT\n\
            -A FWKNOP_INPUT -s 198.18.30.2/32 -p tcp -m tcp --dport 22 -m comment --comment _exp_1796173480 -j ACCEPT\n\
            -A FWKNOP_INPUT -m set --match-set postern-in4 src,dst -m comment --comment postern -j ACCEPT\n\
            -A FWKNOP_FORWARD -s 198.18.30.2/32 -m comment --comment \"_exp_17\" -j ACCEPT\n\
            -A OTHER -s 198.18.30.3/32 -m comment --comment _exp_1 -j ACCEPT\nCOMMIT\n";
        let r = parse_saved(text, &["FWKNOP_INPUT", "FWKNOP_FORWARD"]);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].deadline, 1_796_173_480);
        assert_eq!(
            r[0].spec,
            "-s 198.18.30.2/32 -p tcp -m tcp --dport 22 -m comment --comment _exp_1796173480 -j ACCEPT"
        );
        let p = pieces(&grant(None), false)[0];
        let mut g = p;
        g.m = Match::SrcPort("198.18.30.2".parse().unwrap(), Protocol::Tcp, 22);
        assert_eq!(r[0].key, rule_key(&g, "ACCEPT"));
        assert_eq!(
            input_opening(&r[0]),
            Some(("198.18.30.2".parse().unwrap(), Protocol::Tcp, 22))
        );
        assert_eq!(r[1].deadline, 17);
        assert_eq!(input_opening(&r[1]), None);
    }

    #[test]
    fn set_name_hashes_are_stable() {
        assert_eq!(short_hash(""), 0x811c_9dc5);
        assert_eq!(short_hash("a"), 0xe40c_292c);
    }
}
