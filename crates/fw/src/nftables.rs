//! The nftables backend: grants are elements `saddr . l4proto . dport` of named sets
//! with `flags timeout`, so every opening carries its own expiry in the kernel.
//!
//! Two layouts:
//! * **own table** (default `inet postern`): posternd creates the table, the sets
//!   `allow4`/`allow6` and an `input` chain. With `default_drop` that chain *is* the
//!   host's input policy (drop, with loopback, established/related, IPv6 neighbour
//!   discovery and optionally the SPA port accepted). At exit only the grants are removed
//!   when the chain holds the drop policy (the host stays closed); otherwise the table
//!   is deleted.
//! * **existing chain** (`NFT_CHAIN`): posternd adds the sets `postern_allow4`/`_allow6`
//!   to the admin's table and one accept rule per family (commented `postern`) at the top
//!   of the admin's input chain, and removes exactly those at exit.
//!
//! The base (table, sets, chain, rules) is installed and removed by rendering one nft
//! script and running `nft -f -`. Grants, the frequent change, go by default over one
//! persistent nfnetlink socket ([`crate::netlink`]): one batch per change, no process
//! spawned (`NftConfig::netlink`; `false` renders the same change as an nft script).
//! Either way the kernel commits a change as one transaction: whole or not at all.

use std::collections::HashMap;
use std::io::Write as _;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use postern_proto::Protocol;

use crate::netlink::{self, Element, NfSocket};
use crate::{Error, Firewall, Grant, Held};

/// Table family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// `inet`: IPv4 and IPv6.
    Inet,
    /// `ip`: IPv4 only.
    Ip,
    /// `ip6`: IPv6 only.
    Ip6,
}

impl Family {
    fn name(self) -> &'static str {
        match self {
            Family::Inet => "inet",
            Family::Ip => "ip",
            Family::Ip6 => "ip6",
        }
    }
    fn v4(self) -> bool {
        self != Family::Ip6
    }
    fn v6(self) -> bool {
        self != Family::Ip
    }
}

/// Where and how the backend works.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NftConfig {
    /// Table family.
    pub family: Family,
    /// Table name.
    pub table: String,
    /// `Some(chain)`: use the admin's existing table and input chain (layout b).
    pub chain: Option<String>,
    /// Own table only: install a default-drop input policy.
    pub default_drop: bool,
    /// Own table with default drop: also accept these ports (the UDP-socket intake, the
    /// TCP server).
    pub open_ports: Vec<(Protocol, u16)>,
    /// The nft binary.
    pub nft: PathBuf,
    /// Apply grants over netlink (default) rather than by running nft.
    pub netlink: bool,
    /// Own table only: NAT access (a `prerouting` chain with DNAT maps, a `forward`
    /// chain with forward sets; both expire per element in the kernel).
    pub nat: bool,
    /// With `nat` (`ENABLE_IPT_SNAT`): a `postrouting` chain that source-translates
    /// forwarded NAT connections (SNAT maps and MASQUERADE sets, per element timeouts).
    pub snat: bool,
}

impl Default for NftConfig {
    fn default() -> Self {
        NftConfig {
            family: Family::Inet,
            table: "postern".into(),
            chain: None,
            default_drop: false,
            open_ports: Vec::new(),
            nft: PathBuf::from("nft"),
            netlink: true,
            nat: false,
            snat: false,
        }
    }
}

/// Parse `inet postern`, `ip filter`, or a bare table name (family inet).
pub fn parse_table(s: &str) -> Result<(Family, String), Error> {
    let parts: Vec<&str> = s.split_whitespace().collect();
    let (fam, name) = match parts.as_slice() {
        [name] => (Family::Inet, *name),
        ["inet", name] => (Family::Inet, *name),
        ["ip", name] => (Family::Ip, *name),
        ["ip6", name] => (Family::Ip6, *name),
        _ => {
            return Err(Error::Config(format!(
                "'{s}' is not a table (expected [inet|ip|ip6] NAME)"
            )))
        }
    };
    check_name(name)?;
    Ok((fam, name.to_owned()))
}

fn check_name(name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().next().is_some_and(|b| b.is_ascii_alphabetic())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "'{name}' is not a valid nftables name"
        )))
    }
}

/// The nftables backend.
#[derive(Debug)]
pub struct Nftables {
    cfg: NftConfig,
    /// Opened at the first grant and kept.
    socket: Option<NfSocket>,
}

const SET_TYPE4: &str = "type ipv4_addr . inet_proto . inet_service; flags timeout;";
const SET_TYPE6: &str = "type ipv6_addr . inet_proto . inet_service; flags timeout;";
const RULE_COMMENT: &str = "postern";

impl Nftables {
    /// Check names and build the backend (touches nothing).
    pub fn new(cfg: NftConfig) -> Result<Nftables, Error> {
        check_name(&cfg.table)?;
        if let Some(c) = &cfg.chain {
            check_name(c)?;
            if cfg.nat {
                return Err(Error::Config(
                    "NAT access needs posternd's own table, not an existing NFT_CHAIN".into(),
                ));
            }
            if cfg.default_drop {
                return Err(Error::Config(
                    "NFT_DEFAULT_DROP applies only to posternd's own table, not to an existing NFT_CHAIN".into(),
                ));
            }
        }
        Ok(Nftables { cfg, socket: None })
    }

    fn fam(&self) -> &'static str {
        self.cfg.family.name()
    }

    fn set_name(&self, v6: bool) -> &'static str {
        match (self.cfg.chain.is_some(), v6) {
            (false, false) => "allow4",
            (false, true) => "allow6",
            (true, false) => "postern_allow4",
            (true, true) => "postern_allow6",
        }
    }

    fn chain(&self) -> &str {
        self.cfg.chain.as_deref().unwrap_or("input")
    }

    fn match_rules(&self) -> Vec<String> {
        let mut v = Vec::new();
        if self.cfg.family.v4() {
            v.push(format!(
                "ip saddr . meta l4proto . th dport @{} accept",
                self.set_name(false)
            ));
        }
        if self.cfg.family.v6() {
            v.push(format!(
                "ip6 saddr . meta l4proto . th dport @{} accept",
                self.set_name(true)
            ));
        }
        v
    }

    fn sets(&self) -> Vec<String> {
        let (f, t) = (self.fam(), &self.cfg.table);
        let mut v = Vec::new();
        if self.cfg.family.v4() {
            v.push(format!(
                "add set {f} {t} {} {{ {SET_TYPE4} }}",
                self.set_name(false)
            ));
        }
        if self.cfg.family.v6() {
            v.push(format!(
                "add set {f} {t} {} {{ {SET_TYPE6} }}",
                self.set_name(true)
            ));
        }
        v
    }

    fn flush_sets(&self) -> Vec<String> {
        let (f, t) = (self.fam(), &self.cfg.table);
        let mut v = Vec::new();
        if self.cfg.family.v4() {
            v.push(format!("flush set {f} {t} {}", self.set_name(false)));
            if self.cfg.nat {
                v.extend(self.nat_flush(4));
            }
        }
        if self.cfg.family.v6() {
            v.push(format!("flush set {f} {t} {}", self.set_name(true)));
            if self.cfg.nat {
                v.extend(self.nat_flush(6));
            }
        }
        v
    }

    /// Flush every NAT map and set of one family (4 or 6).
    fn nat_flush(&self, n: u8) -> Vec<String> {
        let (f, t) = (self.fam(), &self.cfg.table);
        [
            ("map", "dnat"),
            ("set", "fwd"),
            ("map", "dnatall"),
            ("set", "fwdall"),
            ("map", "snat"),
            ("set", "masq"),
            ("map", "snatall"),
            ("set", "masqall"),
        ]
        .iter()
        .map(|(kind, name)| format!("flush {kind} {f} {t} {name}{n}"))
        .collect()
    }

    /// The script that installs the base. `stale_handles`: handles of rules a previous
    /// run left in the admin's chain (layout b), deleted in the same transaction.
    pub fn base_script(&self, flush: bool, stale_handles: &[u64]) -> String {
        let (f, t, c) = (self.fam(), &self.cfg.table, self.chain());
        let mut s = Vec::new();
        match &self.cfg.chain {
            None => {
                s.push(format!("add table {f} {t}"));
                if flush {
                    s.push(format!("delete table {f} {t}"));
                    s.push(format!("add table {f} {t}"));
                }
                s.extend(self.sets());
                let policy = if self.cfg.default_drop {
                    "drop"
                } else {
                    "accept"
                };
                s.push(format!("add chain {f} {t} {c} {{ type filter hook input priority filter; policy {policy}; }}"));
                s.push(format!("flush chain {f} {t} {c}"));
                if self.cfg.default_drop {
                    s.push(format!("add rule {f} {t} {c} iif lo accept"));
                    s.push(format!(
                        "add rule {f} {t} {c} ct state established,related accept"
                    ));
                    if self.cfg.family.v6() {
                        s.push(format!(
                            "add rule {f} {t} {c} meta l4proto ipv6-icmp icmpv6 type {{ nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit, nd-router-advert }} accept"
                        ));
                    }
                    for (proto, port) in &self.cfg.open_ports {
                        s.push(format!(
                            "add rule {f} {t} {c} {} dport {port} accept",
                            proto.name()
                        ));
                    }
                }
                for r in self.match_rules() {
                    s.push(format!("add rule {f} {t} {c} {r}"));
                }
                if self.cfg.nat {
                    s.extend(self.nat_base());
                }
            }
            Some(_) => {
                s.extend(self.sets());
                if flush {
                    s.extend(self.flush_sets());
                }
                for h in stale_handles {
                    s.push(format!("delete rule {f} {t} {c} handle {h}"));
                }
                for r in self.match_rules().iter().rev() {
                    s.push(format!(
                        "insert rule {f} {t} {c} {r} comment \"{RULE_COMMENT}\""
                    ));
                }
            }
        }
        s.join("\n") + "\n"
    }

    fn nfproto(&self) -> u8 {
        match self.cfg.family {
            Family::Inet => netlink::NFPROTO_INET,
            Family::Ip => netlink::NFPROTO_IPV4,
            Family::Ip6 => netlink::NFPROTO_IPV6,
        }
    }

    /// Whether a grant's address fits the table's family: `Ok(is_v6)`.
    fn family_of(&self, g: &Grant) -> Result<bool, Error> {
        match g.source {
            IpAddr::V4(_) if self.cfg.family.v4() => Ok(false),
            IpAddr::V6(_) if self.cfg.family.v6() => Ok(true),
            _ => Err(Error::Config(format!(
                "cannot open {} in a table of family {}",
                g.source,
                self.fam()
            ))),
        }
    }

    /// Open or refresh over netlink, up to [`netlink::MAX_ELEMENTS_PER_BATCH`] grants
    /// per transaction. A grant listed twice keeps its longest timeout.
    fn apply_netlink(&mut self, grants: &[Grant]) -> Result<(), Error> {
        let mut unique: HashMap<(IpAddr, Protocol, u16), Duration> = HashMap::new();
        for g in grants {
            self.family_of(g)?;
            let t = unique.entry((g.source, g.proto, g.port)).or_default();
            *t = (*t).max(g.timeout);
        }
        let elements: Vec<(bool, Element)> = unique
            .into_iter()
            .map(|((source, proto, port), timeout)| {
                let key = netlink::element_key(source, proto.number(), port);
                let timeout = timeout.max(Duration::from_secs(1));
                (source.is_ipv6(), Element { key, timeout })
            })
            .collect();
        let (fam, set4, set6) = (self.nfproto(), self.set_name(false), self.set_name(true));
        for chunk in elements.chunks(netlink::MAX_ELEMENTS_PER_BATCH) {
            let pick = |v6: bool| -> Vec<Element> {
                chunk
                    .iter()
                    .filter(|(is_v6, _)| *is_v6 == v6)
                    .map(|(_, e)| e.clone())
                    .collect()
            };
            let mut sock = match self.socket.take() {
                Some(s) => s,
                None => NfSocket::open()?,
            };
            sock.refresh(
                fam,
                &self.cfg.table,
                &[(set4, pick(false)), (set6, pick(true))],
            )?;
            // Kept only after a success: a socket that failed or timed out may hold late
            // answers, so the next change starts with a fresh one.
            self.socket = Some(sock);
        }
        Ok(())
    }

    /// NAT maps, sets and chains (own table).
    ///
    /// ```text
    ///  prerouting  dnat to saddr . l4proto . dport map @dnatN    (one port)
    ///              dnat to saddr map @dnatallN                   (FORWARD_ALL)
    ///  forward     saddr . daddr . l4proto . dport @fwdN accept
    ///              saddr @fwdallN accept                          (FORWARD_ALL)
    ///  postrouting snat to saddr . daddr . l4proto . dport map @snatN, @masqN masquerade
    ///              snat to saddr map @snatallN, saddr @masqallN masquerade
    /// ```
    ///
    /// Every element carries its own timeout, so each part of a NAT opening expires in
    /// the kernel with the grant. `postrouting` gets its rules with `ENABLE_IPT_SNAT`.
    fn nat_base(&self) -> Vec<String> {
        let (f, t) = (self.fam(), &self.cfg.table);
        let mut s = Vec::new();
        let fams: Vec<(&str, &str)> = [(false, "ip", "ipv4_addr"), (true, "ip6", "ipv6_addr")]
            .into_iter()
            .filter(|(v6, _, _)| {
                if *v6 {
                    self.cfg.family.v6()
                } else {
                    self.cfg.family.v4()
                }
            })
            .map(|(_, ip, ty)| (ip, ty))
            .collect();
        for (ip, ty) in &fams {
            let n = if *ip == "ip" { 4 } else { 6 };
            let flow = format!("{ty} . {ty} . inet_proto . inet_service");
            s.push(format!("add map {f} {t} dnat{n} {{ type {ty} . inet_proto . inet_service : {ty} . inet_service; flags timeout; }}"));
            s.push(format!(
                "add set {f} {t} fwd{n} {{ type {flow}; flags timeout; }}"
            ));
            s.push(format!(
                "add map {f} {t} dnatall{n} {{ type {ty} : {ty}; flags timeout; }}"
            ));
            s.push(format!(
                "add set {f} {t} fwdall{n} {{ type {ty}; flags timeout; }}"
            ));
            s.push(format!(
                "add map {f} {t} snat{n} {{ type {flow} : {ty}; flags timeout; }}"
            ));
            s.push(format!(
                "add set {f} {t} masq{n} {{ type {flow}; flags timeout; }}"
            ));
            s.push(format!(
                "add map {f} {t} snatall{n} {{ type {ty} : {ty}; flags timeout; }}"
            ));
            s.push(format!(
                "add set {f} {t} masqall{n} {{ type {ty}; flags timeout; }}"
            ));
        }
        s.push(format!("add chain {f} {t} prerouting {{ type nat hook prerouting priority dstnat; policy accept; }}"));
        s.push(format!("flush chain {f} {t} prerouting"));
        let policy = if self.cfg.default_drop {
            "drop"
        } else {
            "accept"
        };
        s.push(format!("add chain {f} {t} forward {{ type filter hook forward priority filter; policy {policy}; }}"));
        s.push(format!("flush chain {f} {t} forward"));
        s.push(format!(
            "add rule {f} {t} forward ct state established,related accept"
        ));
        s.push(format!("add chain {f} {t} postrouting {{ type nat hook postrouting priority srcnat; policy accept; }}"));
        s.push(format!("flush chain {f} {t} postrouting"));
        for (ip, _) in &fams {
            let n = if *ip == "ip" { 4 } else { 6 };
            let nfproto = if *ip == "ip" { "ipv4" } else { "ipv6" };
            let prefix = if self.cfg.family == Family::Inet {
                format!("meta nfproto {nfproto} ")
            } else {
                String::new()
            };
            let flow = format!("{ip} saddr . {ip} daddr . meta l4proto . th dport");
            s.push(format!("add rule {f} {t} prerouting {prefix}dnat {ip} addr . port to {ip} saddr . meta l4proto . th dport map @dnat{n}"));
            s.push(format!(
                "add rule {f} {t} prerouting {prefix}dnat {ip} to {ip} saddr map @dnatall{n}"
            ));
            s.push(format!("add rule {f} {t} forward {flow} @fwd{n} accept"));
            s.push(format!(
                "add rule {f} {t} forward {ip} saddr @fwdall{n} accept"
            ));
            if self.cfg.snat {
                s.push(format!(
                    "add rule {f} {t} postrouting {prefix}snat {ip} to {flow} map @snat{n}"
                ));
                s.push(format!(
                    "add rule {f} {t} postrouting {flow} @masq{n} masquerade"
                ));
                s.push(format!(
                    "add rule {f} {t} postrouting {prefix}snat {ip} to {ip} saddr map @snatall{n}"
                ));
                s.push(format!(
                    "add rule {f} {t} postrouting {ip} saddr @masqall{n} masquerade"
                ));
            }
        }
        s
    }

    /// The elements of a NAT grant: (set or map, element without timeout, data).
    fn nat_elements(
        &self,
        g: &Grant,
        n: &crate::Nat,
    ) -> Result<Vec<(String, String, Option<String>)>, Error> {
        let v6 = self.family_of(g)?;
        if n.to.is_ipv6() != v6 {
            return Err(Error::Config(format!(
                "NAT from {} to {} mixes address families",
                g.source, n.to
            )));
        }
        let k = if v6 { 6 } else { 4 };
        let p = g.proto.name();
        let (src, to) = (g.source, n.to);
        let mut v = Vec::new();
        if n.local {
            if n.dnat {
                v.push((
                    format!("dnat{k}"),
                    format!("{src} . {p} . {}", g.port),
                    Some(format!("{to} . {}", n.to_port)),
                ));
            }
            v.push((
                self.set_name(v6).to_owned(),
                format!("{src} . {p} . {}", n.to_port),
                None,
            ));
            return Ok(v);
        }
        if n.dnat {
            v.push(if n.all {
                (format!("dnatall{k}"), src.to_string(), Some(to.to_string()))
            } else {
                (
                    format!("dnat{k}"),
                    format!("{src} . {p} . {}", g.port),
                    Some(format!("{to} . {}", n.to_port)),
                )
            });
        }
        let (all, flow) = (
            if n.all { "all" } else { "" },
            if n.all {
                src.to_string()
            } else {
                format!("{src} . {to} . {p} . {}", n.to_port)
            },
        );
        v.push((format!("fwd{all}{k}"), flow.clone(), None));
        match n.snat {
            Some(crate::Snat::To(a)) => {
                if !self.cfg.snat {
                    return Err(Error::Config(
                        "SNAT is not enabled (ENABLE_IPT_SNAT)".into(),
                    ));
                }
                if a.is_ipv6() != v6 {
                    return Err(Error::Config(format!(
                        "SNAT of {src} to {a} mixes address families"
                    )));
                }
                v.push((format!("snat{all}{k}"), flow, Some(a.to_string())));
            }
            Some(crate::Snat::Masquerade) => {
                if !self.cfg.snat {
                    return Err(Error::Config(
                        "MASQUERADE is not enabled (ENABLE_IPT_SNAT)".into(),
                    ));
                }
                v.push((format!("masq{all}{k}"), flow, None));
            }
            None => {}
        }
        Ok(v)
    }

    /// The script that opens or refreshes `grants`. An element that exists is deleted
    /// and re-added in the same transaction, which sets its new timeout atomically.
    pub fn grant_script(&self, grants: &[Grant]) -> Result<String, Error> {
        let (f, t) = (self.fam(), &self.cfg.table);
        let mut s = String::new();
        for g in grants {
            let v6 = self.family_of(g)?;
            let secs = g.timeout.as_secs().max(1);
            let elems = match &g.nat {
                None => vec![(
                    self.set_name(v6).to_owned(),
                    format!("{} . {} . {}", g.source, g.proto.name(), g.port),
                    None,
                )],
                Some(n) => {
                    if !self.cfg.nat {
                        return Err(Error::Config(
                            "NAT access is not enabled (ENABLE_IPT_FORWARDING / ENABLE_IPT_LOCAL_NAT)".into(),
                        ));
                    }
                    self.nat_elements(g, n)?
                }
            };
            for (set, elem, data) in elems {
                let data = data.map_or(String::new(), |d| format!(" : {d}"));
                s.push_str(&format!(
                    "add element {f} {t} {set} {{ {elem} timeout {secs}s{data} }}\n"
                ));
                s.push_str(&format!("delete element {f} {t} {set} {{ {elem} }}\n"));
                s.push_str(&format!(
                    "add element {f} {t} {set} {{ {elem} timeout {secs}s{data} }}\n"
                ));
            }
        }
        Ok(s)
    }

    /// The script that removes what posternd added.
    pub fn teardown_script(&self, keep_base: bool, our_handles: &[u64]) -> String {
        let (f, t, c) = (self.fam(), &self.cfg.table, self.chain());
        let mut s = Vec::new();
        match &self.cfg.chain {
            None if keep_base => s.extend(self.flush_sets()),
            None => s.push(format!("delete table {f} {t}")),
            Some(_) => {
                for h in our_handles {
                    s.push(format!("delete rule {f} {t} {c} handle {h}"));
                }
                if self.cfg.family.v4() {
                    s.push(format!("delete set {f} {t} {}", self.set_name(false)));
                }
                if self.cfg.family.v6() {
                    s.push(format!("delete set {f} {t} {}", self.set_name(true)));
                }
            }
        }
        s.join("\n") + "\n"
    }

    fn run(&self, args: &[&str], script: Option<&str>) -> Result<String, Error> {
        let mut cmd = Command::new(&self.cfg.nft);
        cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd.stdin(if script.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        let mut child = cmd
            .spawn()
            .map_err(|e| Error::Spawn(format!("{}: {e}", self.cfg.nft.display())))?;
        // A tool that exits without reading its input makes this write fail (EPIPE);
        // its exit status and message then say more than the write error.
        let written = match (script, child.stdin.take()) {
            (Some(text), Some(mut stdin)) => stdin.write_all(text.as_bytes()),
            _ => Ok(()),
        };
        let out = child
            .wait_with_output()
            .map_err(|e| Error::Spawn(e.to_string()))?;
        if let (Err(e), true) = (&written, out.status.success()) {
            return Err(Error::Spawn(format!(
                "cannot write to {}: {e}",
                self.cfg.nft.display()
            )));
        }
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            let first: Vec<&str> = err
                .lines()
                .filter(|l| !l.trim().is_empty())
                .take(2)
                .collect();
            return Err(Error::Refused(first.join(" | ")));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Handles of rules commented `postern` in the admin's chain.
    fn our_rule_handles(&self) -> Result<Vec<u64>, Error> {
        let (f, t, c) = (self.fam(), self.cfg.table.as_str(), self.chain());
        let json = self
            .run(&["-j", "-a", "list", "chain", f, t, c], None)
            .map_err(|e| match e {
                Error::Refused(m) => {
                    Error::Config(format!("chain '{f} {t} {c}' is not usable: {m}"))
                }
                other => other,
            })?;
        let v: serde_json::Value =
            serde_json::from_str(&json).map_err(|e| Error::Refused(e.to_string()))?;
        let handles = v["nftables"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter_map(|i| i.get("rule"))
                    .filter(|r| r["comment"] == RULE_COMMENT)
                    .filter_map(|r| r["handle"].as_u64())
                    .collect()
            })
            .unwrap_or_default();
        Ok(handles)
    }
}

/// The elements of `nft -j list set ...` output.
pub fn parse_set_elements(json: &str) -> Vec<Held> {
    let v: serde_json::Value = serde_json::from_str(json).unwrap_or_default();
    let mut out = Vec::new();
    for item in v["nftables"].as_array().into_iter().flatten() {
        for e in item["set"]["elem"].as_array().into_iter().flatten() {
            let (val, expires) = match e.get("elem") {
                Some(inner) => (&inner["val"], inner["expires"].as_u64()),
                None => (e, None),
            };
            let Some(parts) = val["concat"].as_array() else {
                continue;
            };
            let (Some(addr), Some(proto), Some(port)) = (
                parts
                    .first()
                    .and_then(|a| a.as_str())
                    .and_then(|a| a.parse().ok()),
                parts.get(1).and_then(|p| p.as_str()),
                parts.get(2).and_then(serde_json::Value::as_u64),
            ) else {
                continue;
            };
            let proto = match proto {
                "tcp" => Protocol::Tcp,
                "udp" => Protocol::Udp,
                _ => continue,
            };
            out.push(Held {
                source: addr,
                proto,
                port: u16::try_from(port).unwrap_or(0),
                left: Duration::from_secs(expires.unwrap_or(0)),
            });
        }
    }
    out
}

impl Firewall for Nftables {
    fn setup(&mut self, flush: bool) -> Result<(), Error> {
        let stale = if self.cfg.chain.is_some() {
            self.our_rule_handles()?
        } else {
            Vec::new()
        };
        self.run(&["-f", "-"], Some(&self.base_script(flush, &stale)))
            .map(|_| ())
    }

    fn apply(&mut self, grants: &[Grant]) -> Result<(), Error> {
        if grants.is_empty() {
            return Ok(());
        }
        let (nat, plain): (Vec<Grant>, Vec<Grant>) = grants.iter().partition(|g| g.nat.is_some());
        if !nat.is_empty() {
            // NAT grants (map elements with data) go as one nft transaction of their own.
            let script = self.grant_script(&nat)?;
            self.run(&["-f", "-"], Some(&script))?;
        }
        if plain.is_empty() {
            return Ok(());
        }
        if self.cfg.netlink {
            return self.apply_netlink(&plain);
        }
        let script = self.grant_script(&plain)?;
        self.run(&["-f", "-"], Some(&script)).map(|_| ())
    }

    fn revoke(&mut self, grants: &[Grant]) -> Result<(), Error> {
        let (f, t) = (self.fam(), &self.cfg.table);
        let mut s = String::new();
        for g in grants {
            let v6 = self.family_of(g)?;
            let elems = match &g.nat {
                None => vec![(
                    self.set_name(v6).to_owned(),
                    format!("{} . {} . {}", g.source, g.proto.name(), g.port),
                    None,
                )],
                Some(n) => self.nat_elements(g, n)?,
            };
            // Deleting an element that is already gone fails the transaction: add it
            // (no-op when present) then delete it, as one transaction.
            for (set, elem, data) in elems {
                let data = data.map_or(String::new(), |d| format!(" : {d}"));
                s.push_str(&format!(
                    "add element {f} {t} {set} {{ {elem} timeout 1s{data} }}\ndelete element {f} {t} {set} {{ {elem} }}\n"
                ));
            }
        }
        if s.is_empty() {
            return Ok(());
        }
        self.run(&["-f", "-"], Some(&s)).map(|_| ())
    }

    fn list(&mut self) -> Result<Vec<Held>, Error> {
        let (f, t) = (self.fam(), self.cfg.table.clone());
        let mut out = Vec::new();
        for v6 in [false, true] {
            if (v6 && !self.cfg.family.v6()) || (!v6 && !self.cfg.family.v4()) {
                continue;
            }
            let json = self.run(&["-j", "list", "set", f, &t, self.set_name(v6)], None)?;
            out.extend(parse_set_elements(&json));
        }
        Ok(out)
    }

    fn intact(&mut self) -> Result<(), Error> {
        let (f, t, c) = (self.fam(), self.cfg.table.clone(), self.chain().to_owned());
        let chain = self
            .run(&["list", "chain", f, &t, &c], None)
            .map_err(|e| match e {
                Error::Refused(m) if m.contains("No such file or directory") => {
                    Error::Missing(format!("{f} {t} {c} is gone"))
                }
                other => other,
            })?;
        for v6 in [false, true] {
            if (v6 && !self.cfg.family.v6()) || (!v6 && !self.cfg.family.v4()) {
                continue;
            }
            let set = self.set_name(v6);
            if !chain.contains(&format!("@{set}")) {
                return Err(Error::Missing(format!(
                    "the rule matching @{set} is missing from {f} {t} {c}"
                )));
            }
        }
        if self.cfg.default_drop && !chain.contains("policy drop") {
            return Err(Error::Missing(format!(
                "{f} {t} {c} no longer has its drop policy"
            )));
        }
        Ok(())
    }

    fn shutdown(&mut self) -> Result<(), Error> {
        let ours = if self.cfg.chain.is_some() {
            self.our_rule_handles()?
        } else {
            Vec::new()
        };
        let keep_base = self.cfg.default_drop;
        self.run(&["-f", "-"], Some(&self.teardown_script(keep_base, &ours)))
            .map(|_| ())
    }

    fn supports_nat(&self) -> bool {
        self.cfg.nat && self.cfg.chain.is_none()
    }

    fn supports(&self, f: crate::Feature) -> crate::Support {
        use crate::{Feature, Support};
        match f {
            Feature::Nat if self.supports_nat() => Support::Yes,
            Feature::Snat if self.supports_nat() && self.cfg.snat => Support::Yes,
            Feature::Nat | Feature::Snat if self.cfg.chain.is_some() => Support::No(
                "NAT access needs posternd's own table, not an existing NFT_CHAIN".into(),
            ),
            Feature::Output => Support::NoEffect(
                "posternd adds no output rules on nftables: an accept in posternd's own table (which has no output policy) cannot override a drop in another table's output chain, and NFT_CHAIN names an input chain only; if your output policy drops, accept 'ct state established,related' there, which covers the replies of every opening".into(),
            ),
            _ => Support::No("not enabled".into()),
        }
    }

    fn describe(&self) -> String {
        match &self.cfg.chain {
            None => format!(
                "nftables, own table '{} {}'{}{}",
                self.fam(),
                self.cfg.table,
                if self.cfg.default_drop {
                    " with default-drop input policy"
                } else {
                    ""
                },
                match (self.cfg.nat, self.cfg.snat) {
                    (true, true) =>
                        ", NAT (prerouting DNAT maps, forward sets, postrouting SNAT maps and MASQUERADE sets)",
                    (true, false) => ", NAT (prerouting DNAT maps, forward sets)",
                    _ => "",
                }
            ),
            Some(c) => format!(
                "nftables, sets and one rule in the existing chain '{} {} {c}'",
                self.fam(),
                self.cfg.table
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn own_table_with_default_drop() {
        let n = Nftables::new(NftConfig {
            default_drop: true,
            open_ports: vec![(Protocol::Udp, 62201)],
            ..NftConfig::default()
        })
        .unwrap();
        let s = n.base_script(true, &[]);
        assert!(s.starts_with(
            "add table inet postern\ndelete table inet postern\nadd table inet postern\n"
        ));
        assert!(s.contains("policy drop;"));
        assert!(s.contains("add rule inet postern input udp dport 62201 accept"));
        assert!(s.contains("ip6 saddr . meta l4proto . th dport @allow6 accept"));
        assert!(s.contains("nd-neighbor-solicit"));
        assert!(!n.base_script(false, &[]).contains("delete table"));
    }

    #[test]
    fn existing_chain_layout() {
        let n = Nftables::new(NftConfig {
            family: Family::Ip,
            table: "filter".into(),
            chain: Some("INPUT".into()),
            ..NftConfig::default()
        })
        .unwrap();
        let s = n.base_script(true, &[7]);
        assert!(s.contains("add set ip filter postern_allow4"));
        assert!(!s.contains("allow6"));
        assert!(s.contains("delete rule ip filter INPUT handle 7"));
        assert!(s.contains("insert rule ip filter INPUT ip saddr . meta l4proto . th dport @postern_allow4 accept comment \"postern\""));
        let t = n.teardown_script(false, &[9]);
        assert_eq!(
            t,
            "delete rule ip filter INPUT handle 9\ndelete set ip filter postern_allow4\n"
        );
        let g = Grant {
            source: "2001:db8::1".parse().unwrap(),
            proto: Protocol::Tcp,
            port: 22,
            timeout: Duration::from_secs(30),
            nat: None,
        };
        assert!(n.grant_script(&[g]).is_err(), "IPv6 grant in an ip table");
    }

    #[test]
    fn grants_refresh_atomically() {
        let n = Nftables::new(NftConfig::default()).unwrap();
        let g = Grant {
            source: "198.18.1.2".parse().unwrap(),
            proto: Protocol::Tcp,
            port: 22,
            timeout: Duration::from_secs(30),
            nat: None,
        };
        assert_eq!(
            n.grant_script(&[g]).unwrap(),
            "add element inet postern allow4 { 198.18.1.2 . tcp . 22 timeout 30s }\n\
             delete element inet postern allow4 { 198.18.1.2 . tcp . 22 }\n\
             add element inet postern allow4 { 198.18.1.2 . tcp . 22 timeout 30s }\n"
        );
    }

    #[test]
    fn nat_translations_are_elements_with_timeouts() {
        let n = Nftables::new(NftConfig {
            nat: true,
            snat: true,
            ..NftConfig::default()
        })
        .unwrap();
        let base = n.base_script(false, &[]);
        for r in [
            "add chain inet postern postrouting { type nat hook postrouting priority srcnat; policy accept; }",
            "add rule inet postern postrouting meta nfproto ipv4 snat ip to ip saddr . ip daddr . meta l4proto . th dport map @snat4",
            "add rule inet postern postrouting ip saddr . ip daddr . meta l4proto . th dport @masq4 masquerade",
            "add rule inet postern postrouting meta nfproto ipv6 snat ip6 to ip6 saddr map @snatall6",
            "add rule inet postern prerouting meta nfproto ipv4 dnat ip to ip saddr map @dnatall4",
            "add rule inet postern forward ip saddr @fwdall4 accept",
        ] {
            assert!(base.contains(r), "{r}\n{base}");
        }
        let mut nat = crate::Nat::to("198.18.2.2".parse().unwrap(), 55000, false);
        nat.snat = Some(crate::Snat::To("198.18.9.1".parse().unwrap()));
        let g = Grant {
            source: "198.18.1.2".parse().unwrap(),
            proto: Protocol::Tcp,
            port: 22,
            timeout: Duration::from_secs(30),
            nat: Some(nat),
        };
        let s = n.grant_script(&[g]).unwrap();
        assert!(s.contains("add element inet postern dnat4 { 198.18.1.2 . tcp . 22 timeout 30s : 198.18.2.2 . 55000 }"), "{s}");
        assert!(s.contains("add element inet postern fwd4 { 198.18.1.2 . 198.18.2.2 . tcp . 55000 timeout 30s }"), "{s}");
        assert!(s.contains("add element inet postern snat4 { 198.18.1.2 . 198.18.2.2 . tcp . 55000 timeout 30s : 198.18.9.1 }"), "{s}");
        let mut all = g;
        nat.snat = Some(crate::Snat::Masquerade);
        nat.all = true;
        nat.dnat = false;
        all.nat = Some(nat);
        let s = n.grant_script(&[all]).unwrap();
        assert!(!s.contains("dnat"), "{s}");
        assert!(
            s.contains("add element inet postern fwdall4 { 198.18.1.2 timeout 30s }"),
            "{s}"
        );
        assert!(
            s.contains("add element inet postern masqall4 { 198.18.1.2 timeout 30s }"),
            "{s}"
        );
        // Without ENABLE_IPT_SNAT the postrouting chain stays empty and SNAT is refused.
        let off = Nftables::new(NftConfig {
            nat: true,
            ..NftConfig::default()
        })
        .unwrap();
        assert!(!off.base_script(false, &[]).contains("masquerade"));
        assert!(off.grant_script(&[all]).is_err());
    }

    #[test]
    fn names_are_checked() {
        assert!(parse_table("inet postern").is_ok());
        assert!(parse_table("ip6 x").is_ok());
        assert!(parse_table("inet a; flush ruleset").is_err());
        assert!(parse_table("bridge x").is_err());
        assert!(Nftables::new(NftConfig {
            table: "a b".into(),
            ..NftConfig::default()
        })
        .is_err());
        assert!(Nftables::new(NftConfig {
            chain: Some("input".into()),
            default_drop: true,
            ..NftConfig::default()
        })
        .is_err());
    }
}
