//! The iptables backend, in fwknop's layout: a chain `FWKNOP_INPUT` (the `IPT_INPUT_ACCESS`
//! setting names it, its table, the chain that jumps to it and the jump's position),
//! jumped to from `INPUT`, and, where fwknopd adds one rule per grant, one rule per
//! family that accepts what an **ipset** set holds. Each opening is an ipset entry
//! `address,proto:port` with its own timeout, so the kernel removes it on time even if
//! posternd is gone, and a grant costs one `ipset restore` batch whatever the number of
//! open grants (fwknopd runs iptables and lists the chain for each one).
//!
//! ```text
//!  INPUT ─(position 1)─► FWKNOP_INPUT: -m set --match-set postern-in4 src,dst -j ACCEPT
//!                        ipset postern-in4 hash:ip,port timeout: 198.18.1.2,tcp:22 timeout 30
//! ```
//!
//! IPv6 goes through ip6tables and the set `postern-in6` in the same layout. Works with
//! `iptables-nft` (Debian 12's default) and `iptables-legacy` alike: only argv, with
//! `-w`, never a shell. The admin's own rules are left as they are.

use std::io::Write as _;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use postern_proto::Protocol;

use crate::{Error, Firewall, Grant, Held};

/// One `IPT_*_ACCESS` setting: `target, table, from_chain, jump_position, to_chain,
/// rule_position` (fwknopd's format, e.g. `ACCEPT, filter, INPUT, 1, FWKNOP_INPUT, 1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    /// The target of the accept rule (`ACCEPT`).
    pub target: String,
    /// The table (`filter`).
    pub table: String,
    /// The chain that jumps to posternd's chain (`INPUT`).
    pub from_chain: String,
    /// Where in it the jump goes (1 = first).
    pub jump_position: u32,
    /// posternd's chain (`FWKNOP_INPUT`).
    pub to_chain: String,
    /// Where in it the accept rule goes.
    pub rule_position: u32,
}

impl Default for Access {
    fn default() -> Self {
        Access {
            target: "ACCEPT".into(),
            table: "filter".into(),
            from_chain: "INPUT".into(),
            jump_position: 1,
            to_chain: "FWKNOP_INPUT".into(),
            rule_position: 1,
        }
    }
}

fn chain_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 28
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl Access {
    /// Parse fwknopd's six comma-separated fields.
    pub fn parse(s: &str) -> Result<Access, String> {
        let f: Vec<&str> = s.split(',').map(str::trim).collect();
        let [target, table, from, jump, to, pos] = f.as_slice() else {
            return Err(format!(
                "'{s}' is not 'target, table, from_chain, jump_position, to_chain, rule_position' (six fields, e.g. 'ACCEPT, filter, INPUT, 1, FWKNOP_INPUT, 1')"
            ));
        };
        if ![
            "ACCEPT",
            "DROP",
            "REJECT",
            "RETURN",
            "DNAT",
            "SNAT",
            "MASQUERADE",
        ]
        .contains(target)
        {
            return Err(format!("'{target}' is not an iptables target (ACCEPT)"));
        }
        if !["filter", "nat", "mangle", "raw"].contains(table) {
            return Err(format!("'{table}' is not an iptables table"));
        }
        for c in [from, to] {
            if !chain_name(c) {
                return Err(format!("'{c}' is not a chain name"));
            }
        }
        let num = |n: &str| {
            n.parse::<u32>()
                .ok()
                .filter(|&n| n >= 1)
                .ok_or_else(|| format!("'{n}' is not a rule position (1 or more)"))
        };
        Ok(Access {
            target: (*target).to_owned(),
            table: (*table).to_owned(),
            from_chain: (*from).to_owned(),
            jump_position: num(jump)?,
            to_chain: (*to).to_owned(),
            rule_position: num(pos)?,
        })
    }
}

/// Settings of the iptables backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IptConfig {
    /// `IPT_INPUT_ACCESS`.
    pub input: Access,
    /// The iptables binary (`FIREWALL_EXE`; `iptables` by default).
    pub iptables: PathBuf,
    /// The ip6tables binary (next to it).
    pub ip6tables: PathBuf,
    /// The ipset binary.
    pub ipset: PathBuf,
    /// Prefix of the ipset sets (`postern-in4`, `postern-in6`).
    pub set_prefix: String,
    /// Also handle IPv6 through ip6tables.
    pub ipv6: bool,
    /// NAT access (`ENABLE_IPT_FORWARDING` / `ENABLE_IPT_LOCAL_NAT`): the forward and
    /// DNAT chains below are installed.
    pub nat: bool,
    /// `IPT_FORWARD_ACCESS`.
    pub forward: Access,
    /// `IPT_DNAT_ACCESS`.
    pub dnat: Access,
}

impl Default for IptConfig {
    fn default() -> Self {
        IptConfig {
            input: Access::default(),
            iptables: PathBuf::from("iptables"),
            ip6tables: PathBuf::from("ip6tables"),
            ipset: PathBuf::from("ipset"),
            set_prefix: "postern-in".into(),
            ipv6: true,
            nat: false,
            forward: Access {
                from_chain: "FORWARD".into(),
                to_chain: "FWKNOP_FORWARD".into(),
                ..Access::default()
            },
            dnat: Access {
                target: "DNAT".into(),
                table: "nat".into(),
                from_chain: "PREROUTING".into(),
                to_chain: "FWKNOP_PREROUTING".into(),
                ..Access::default()
            },
        }
    }
}

/// The iptables + ipset backend.
#[derive(Debug)]
pub struct Iptables {
    cfg: IptConfig,
}

fn run(prog: &PathBuf, args: &[&str], input: Option<&str>) -> Result<String, Error> {
    let mut cmd = Command::new(prog);
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::Spawn(format!("{}: {e}", prog.display())))?;
    let written = match (input, child.stdin.take()) {
        (Some(text), Some(mut stdin)) => stdin.write_all(text.as_bytes()),
        _ => Ok(()),
    };
    let out = child
        .wait_with_output()
        .map_err(|e| Error::Spawn(e.to_string()))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let first: Vec<&str> = err
            .lines()
            .filter(|l| !l.trim().is_empty())
            .take(2)
            .collect();
        return Err(Error::Refused(format!(
            "{} {}: {}",
            prog.display(),
            args.join(" "),
            first.join(" | ")
        )));
    }
    if let Err(e) = written {
        return Err(Error::Spawn(format!(
            "cannot write to {}: {e}",
            prog.display()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Iptables {
    /// Check the settings (touches nothing).
    pub fn new(cfg: IptConfig) -> Result<Iptables, Error> {
        if !chain_name(&cfg.input.to_chain) || !chain_name(&cfg.input.from_chain) {
            return Err(Error::Config("bad chain name in IPT_INPUT_ACCESS".into()));
        }
        if cfg.set_prefix.len() > 28
            || !cfg
                .set_prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(Error::Config(format!(
                "'{}' is not usable as an ipset name prefix",
                cfg.set_prefix
            )));
        }
        Ok(Iptables { cfg })
    }

    fn families(&self) -> Vec<bool> {
        if self.cfg.ipv6 {
            vec![false, true]
        } else {
            vec![false]
        }
    }

    fn set(&self, v6: bool) -> String {
        format!("{}{}", self.cfg.set_prefix, if v6 { 6 } else { 4 })
    }

    fn tool(&self, v6: bool) -> &PathBuf {
        if v6 {
            &self.cfg.ip6tables
        } else {
            &self.cfg.iptables
        }
    }

    /// Create an ipset (if missing) whose entries carry their own timeouts (a default
    /// of 0 means "none").
    fn create_set(&self, name: &str, kind: &str, v6: bool) -> Result<(), Error> {
        let family = if v6 { "inet6" } else { "inet" };
        let args = [
            "create", name, kind, "family", family, "timeout", "0", "-exist",
        ];
        run(&self.cfg.ipset, &args, None).map(|_| ())
    }

    fn ipt_in(&self, v6: bool, table: &str, args: &[&str]) -> Result<String, Error> {
        let mut a = vec!["-w", "-t", table];
        a.extend_from_slice(args);
        run(self.tool(v6), &a, None)
    }

    /// Make sure `access.to_chain` exists in its table, holds `rule` (at its position),
    /// and is jumped to from `access.from_chain` (at its position).
    fn ensure_chain(
        &self,
        v6: bool,
        access: &Access,
        rule: Option<&[String]>,
    ) -> Result<(), Error> {
        let t = access.table.as_str();
        let (to, from) = (access.to_chain.as_str(), access.from_chain.as_str());
        if self.ipt_in(v6, t, &["-S", to]).is_err() {
            self.ipt_in(v6, t, &["-N", to])?;
        }
        let has = |chain: &str, r: &[String]| {
            let mut a: Vec<&str> = vec!["-C", chain];
            a.extend(r.iter().map(String::as_str));
            self.ipt_in(v6, t, &a).is_ok()
        };
        let insert = |chain: &str, pos: u32, r: &[String]| -> Result<(), Error> {
            let pos = pos.to_string();
            let mut a: Vec<&str> = vec!["-I", chain, &pos];
            a.extend(r.iter().map(String::as_str));
            if self.ipt_in(v6, t, &a).is_ok() {
                return Ok(());
            }
            // A position past the end of a short chain: append.
            let mut a: Vec<&str> = vec!["-A", chain];
            a.extend(r.iter().map(String::as_str));
            self.ipt_in(v6, t, &a).map(|_| ())
        };
        if let Some(r) = rule {
            if !has(to, r) {
                insert(to, access.rule_position, r)?;
            }
        }
        let jump = vec!["-j".to_owned(), to.to_owned()];
        if !has(from, &jump) {
            insert(from, access.jump_position, &jump)?;
        }
        Ok(())
    }

    /// Remove the jump to `access.to_chain` and the chain itself.
    fn remove_chain(&self, v6: bool, access: &Access) -> Result<(), Error> {
        let t = access.table.as_str();
        let jump = ["-j", access.to_chain.as_str()];
        let mut first = None;
        loop {
            let mut c: Vec<&str> = vec!["-C", &access.from_chain];
            c.extend(jump);
            if self.ipt_in(v6, t, &c).is_err() {
                break;
            }
            let mut d: Vec<&str> = vec!["-D", &access.from_chain];
            d.extend(jump);
            if let Err(e) = self.ipt_in(v6, t, &d) {
                first = Some(e);
                break;
            }
        }
        let _ = self.ipt_in(v6, t, &["-F", &access.to_chain]);
        let _ = self.ipt_in(v6, t, &["-X", &access.to_chain]);
        first.map_or(Ok(()), Err)
    }

    fn fwd_set(&self, v6: bool) -> String {
        format!("postern-fw{}", if v6 { 6 } else { 4 })
    }

    /// The ipset that conditions the DNAT rule of one NAT target.
    fn dnat_set(&self, n: &crate::Nat, proto: Protocol) -> String {
        use std::hash::{Hash as _, Hasher as _};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (n.to, n.to_port, proto.number()).hash(&mut h);
        format!(
            "postern-dn{}-{:08x}",
            if n.to.is_ipv6() { 6 } else { 4 },
            h.finish() as u32
        )
    }

    /// The DNAT rule for one NAT target: connections whose (source, proto:port) is in
    /// its set go to the target. The set's entries carry the timeouts.
    fn dnat_rule(&self, n: &crate::Nat, proto: Protocol) -> Vec<String> {
        let to = match n.to {
            IpAddr::V4(a) => format!("{a}:{}", n.to_port),
            IpAddr::V6(a) => format!("[{a}]:{}", n.to_port),
        };
        [
            "-p",
            proto.name(),
            "-m",
            "set",
            "--match-set",
            &self.dnat_set(n, proto),
            "src,dst",
            "-m",
            "comment",
            "--comment",
            "postern",
            "-j",
            "DNAT",
            "--to-destination",
            &to,
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
    }

    /// Create the set and the DNAT rule of a NAT target if they are not there yet.
    fn ensure_dnat(&self, n: &crate::Nat, proto: Protocol) -> Result<(), Error> {
        let v6 = n.to.is_ipv6();
        let set = self.dnat_set(n, proto);
        self.create_set(&set, "hash:ip,port", v6)?;
        let rule = self.dnat_rule(n, proto);
        let t = self.cfg.dnat.table.as_str();
        let chain = self.cfg.dnat.to_chain.as_str();
        let mut c: Vec<&str> = vec!["-C", chain];
        c.extend(rule.iter().map(String::as_str));
        if self.ipt_in(v6, t, &c).is_err() {
            let mut a: Vec<&str> = vec!["-A", chain];
            a.extend(rule.iter().map(String::as_str));
            self.ipt_in(v6, t, &a)?;
        }
        Ok(())
    }

    /// The sets posternd created for NAT targets.
    fn dnat_sets(&self) -> Vec<String> {
        run(&self.cfg.ipset, &["list", "-n"], None)
            .map(|t| {
                t.lines()
                    .filter(|l| l.starts_with("postern-dn"))
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The ipset lines that open a grant (NAT ones included).
    fn entries(&self, g: &Grant) -> Result<Vec<(String, String)>, Error> {
        let v6 = g.source.is_ipv6();
        if v6 && !self.cfg.ipv6 {
            return Err(Error::Config(format!(
                "cannot open {}: IPv6 is not handled",
                g.source
            )));
        }
        let Some(n) = &g.nat else {
            return Ok(vec![(self.set(v6), Self::entry(g))]);
        };
        if !self.cfg.nat {
            return Err(Error::Config(
                "NAT access is not enabled (ENABLE_IPT_FORWARDING / ENABLE_IPT_LOCAL_NAT)".into(),
            ));
        }
        if n.to.is_ipv6() != v6 {
            return Err(Error::Config(format!(
                "NAT from {} to {} mixes address families",
                g.source, n.to
            )));
        }
        let p = g.proto.name();
        let mut v = vec![(
            self.dnat_set(n, g.proto),
            format!("{},{p}:{}", g.source, g.port),
        )];
        if n.local {
            v.push((self.set(v6), format!("{},{p}:{}", g.source, n.to_port)));
        } else {
            v.push((
                self.fwd_set(v6),
                format!("{},{p}:{},{}", g.source, n.to_port, n.to),
            ));
        }
        Ok(v)
    }

    /// The accept rule in posternd's chain.
    fn accept_rule(&self, v6: bool) -> Vec<String> {
        vec![
            "-m".into(),
            "set".into(),
            "--match-set".into(),
            self.set(v6),
            "src,dst".into(),
            "-m".into(),
            "comment".into(),
            "--comment".into(),
            "postern".into(),
            "-j".into(),
            self.cfg.input.target.clone(),
        ]
    }

    fn entry(g: &Grant) -> String {
        format!("{},{}:{}", g.source, g.proto.name(), g.port)
    }

    /// Which iptables this is (`nf_tables` or `legacy`), for status.
    pub fn variant(&self) -> String {
        run(&self.cfg.iptables, &["-V"], None)
            .ok()
            .and_then(|v| {
                v.split('(')
                    .nth(1)
                    .map(|s| s.trim_end().trim_end_matches(')').to_owned())
            })
            .unwrap_or_else(|| "unknown".into())
    }
}

/// Parse `ipset save` output into what it holds.
pub fn parse_ipset_save(text: &str) -> Vec<Held> {
    let mut out = Vec::new();
    for l in text.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.first() != Some(&"add") || f.len() < 3 {
            continue;
        }
        let Some((addr, pp)) = f[2].rsplit_once(',') else {
            continue;
        };
        let Some((proto, port)) = pp.split_once(':') else {
            continue;
        };
        let proto = match proto {
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            _ => continue,
        };
        let (Ok(source), Ok(port)) = (addr.parse::<IpAddr>(), port.parse::<u16>()) else {
            continue;
        };
        let left = f
            .iter()
            .position(|w| *w == "timeout")
            .and_then(|i| f.get(i + 1))
            .and_then(|t| t.parse().ok())
            .unwrap_or(0);
        out.push(Held {
            source,
            proto,
            port,
            left: Duration::from_secs(left),
        });
    }
    out
}

impl Firewall for Iptables {
    fn setup(&mut self, flush: bool) -> Result<(), Error> {
        for v6 in self.families() {
            let set = self.set(v6);
            self.create_set(&set, "hash:ip,port", v6)?;
            if flush {
                run(&self.cfg.ipset, &["flush", &set], None)?;
            }
            // posternd's chain (created if missing) holds one rule: the set match.
            let accept = self.accept_rule(v6);
            self.ensure_chain(v6, &self.cfg.input.clone(), Some(&accept))?;
            if self.cfg.nat {
                let fwd = self.fwd_set(v6);
                self.create_set(&fwd, "hash:ip,port,ip", v6)?;
                if flush {
                    run(&self.cfg.ipset, &["flush", &fwd], None)?;
                }
                let accept: Vec<String> = [
                    "-m",
                    "set",
                    "--match-set",
                    &fwd,
                    "src,dst,dst",
                    "-m",
                    "comment",
                    "--comment",
                    "postern",
                    "-j",
                    "ACCEPT",
                ]
                .iter()
                .map(|s| (*s).to_owned())
                .collect();
                self.ensure_chain(v6, &self.cfg.forward.clone(), Some(&accept))?;
                self.ensure_chain(v6, &self.cfg.dnat.clone(), None)?;
                if flush {
                    let _ = self.ipt_in(v6, &self.cfg.dnat.table, &["-F", &self.cfg.dnat.to_chain]);
                }
            }
        }
        if self.cfg.nat && flush {
            for set in self.dnat_sets() {
                let _ = run(&self.cfg.ipset, &["destroy", &set], None);
            }
        }
        Ok(())
    }

    fn apply(&mut self, grants: &[Grant]) -> Result<(), Error> {
        if grants.is_empty() {
            return Ok(());
        }
        let mut batch = String::new();
        for g in grants {
            if let Some(n) = &g.nat {
                if self.cfg.nat {
                    self.ensure_dnat(n, g.proto)?;
                }
            }
            for (set, entry) in self.entries(g)? {
                batch.push_str(&format!(
                    "add {set} {entry} timeout {}\n",
                    g.timeout.as_secs().clamp(1, 2_147_483)
                ));
            }
        }
        // One restore: the kernel takes each line; -exist refreshes a timeout in place.
        run(&self.cfg.ipset, &["restore", "-exist"], Some(&batch)).map(|_| ())
    }

    fn revoke(&mut self, grants: &[Grant]) -> Result<(), Error> {
        let mut batch = String::new();
        for g in grants {
            for (set, entry) in self.entries(g)? {
                batch.push_str(&format!("del {set} {entry}\n"));
            }
        }
        if batch.is_empty() {
            return Ok(());
        }
        run(&self.cfg.ipset, &["restore", "-exist"], Some(&batch)).map(|_| ())
    }

    fn list(&mut self) -> Result<Vec<Held>, Error> {
        let mut out = Vec::new();
        for v6 in self.families() {
            let text = run(&self.cfg.ipset, &["save", &self.set(v6)], None)?;
            out.extend(parse_ipset_save(&text));
        }
        Ok(out)
    }

    fn shutdown(&mut self) -> Result<(), Error> {
        let mut first_error = None;
        for v6 in self.families() {
            if let Err(e) = self.remove_chain(v6, &self.cfg.input.clone()) {
                first_error.get_or_insert(e);
            }
            if let Err(e) = run(&self.cfg.ipset, &["destroy", &self.set(v6)], None) {
                first_error.get_or_insert(e);
            }
            if self.cfg.nat {
                for access in [self.cfg.forward.clone(), self.cfg.dnat.clone()] {
                    if let Err(e) = self.remove_chain(v6, &access) {
                        first_error.get_or_insert(e);
                    }
                }
                let _ = run(&self.cfg.ipset, &["destroy", &self.fwd_set(v6)], None);
            }
        }
        if self.cfg.nat {
            for set in self.dnat_sets() {
                let _ = run(&self.cfg.ipset, &["destroy", &set], None);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    fn supports_nat(&self) -> bool {
        self.cfg.nat
    }

    fn describe(&self) -> String {
        format!(
            "iptables ({}), chain {} jumped to from {} at position {}, openings in ipset {}4{} with kernel timeouts{}",
            self.variant(),
            self.cfg.input.to_chain,
            self.cfg.input.from_chain,
            self.cfg.input.jump_position,
            self.cfg.set_prefix,
            if self.cfg.ipv6 {
                format!("/{}6 (ip6tables too)", self.cfg.set_prefix)
            } else {
                String::new()
            },
            if self.cfg.nat {
                format!(
                    ", NAT ({} and {}: forward and DNAT conditioned on ipset entries)",
                    self.cfg.forward.to_chain, self.cfg.dnat.to_chain
                )
            } else {
                String::new()
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_settings_parse_as_fwknopd_writes_them() {
        let a = Access::parse("ACCEPT, filter, INPUT, 1, FWKNOP_INPUT, 1").unwrap();
        assert_eq!(a, Access::default());
        for bad in [
            "ACCEPT, filter, INPUT, 1, FWKNOP_INPUT",
            "ACCEPT, filter, INPUT, 0, FWKNOP_INPUT, 1",
            "ALLOW, filter, INPUT, 1, FWKNOP_INPUT, 1",
            "ACCEPT, filters, INPUT, 1, FWKNOP_INPUT, 1",
            "ACCEPT, filter, IN PUT, 1, FWKNOP_INPUT, 1",
            "ACCEPT, filter, INPUT, x, FWKNOP_INPUT, 1",
        ] {
            assert!(Access::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ipset_save_output_is_read() {
        let text =
            "create postern-in4 hash:ip,port family inet hashsize 1024 maxelem 65536 timeout 0\n\
                    add postern-in4 198.18.1.2,tcp:22 timeout 27\n\
                    add postern-in4 198.18.1.3,udp:53 timeout 5\n\
                    add postern-in4 198.18.1.4,sctp:1 timeout 5\n";
        let h = parse_ipset_save(text);
        assert_eq!(h.len(), 2);
        assert_eq!(h[0].port, 22);
        assert_eq!(h[0].left, Duration::from_secs(27));
        let six = parse_ipset_save("add postern-in6 2001:db8::2,tcp:22 timeout 9\n");
        assert_eq!(six[0].source, "2001:db8::2".parse::<IpAddr>().unwrap());
    }
}
