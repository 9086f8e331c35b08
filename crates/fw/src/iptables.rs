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

    fn ipt(&self, v6: bool, args: &[&str]) -> Result<String, Error> {
        let mut a = vec!["-w", "-t", self.cfg.input.table.as_str()];
        a.extend_from_slice(args);
        run(self.tool(v6), &a, None)
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

    fn jump_rule(&self) -> Vec<String> {
        vec!["-j".into(), self.cfg.input.to_chain.clone()]
    }

    /// `-C`: whether a rule exists.
    fn has_rule(&self, v6: bool, chain: &str, rule: &[String]) -> bool {
        let mut a: Vec<&str> = vec!["-C", chain];
        a.extend(rule.iter().map(String::as_str));
        self.ipt(v6, &a).is_ok()
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
            let family = if v6 { "inet6" } else { "inet" };
            // The set, with per-entry timeouts (a default of 0 means "none").
            run(
                &self.cfg.ipset,
                &[
                    "create",
                    &set,
                    "hash:ip,port",
                    "family",
                    family,
                    "timeout",
                    "0",
                    "-exist",
                ],
                None,
            )?;
            if flush {
                run(&self.cfg.ipset, &["flush", &set], None)?;
            }
            let to = self.cfg.input.to_chain.clone();
            let from = self.cfg.input.from_chain.clone();
            // posternd's chain (created if missing) holds one rule: the set match.
            if self.ipt(v6, &["-S", &to]).is_err() {
                self.ipt(v6, &["-N", &to])?;
            }
            let accept = self.accept_rule(v6);
            if !self.has_rule(v6, &to, &accept) {
                let pos = self.cfg.input.rule_position.to_string();
                let mut a: Vec<&str> = vec!["-I", &to, &pos];
                a.extend(accept.iter().map(String::as_str));
                if self.ipt(v6, &a).is_err() {
                    // A position past the end of a short chain: append.
                    let mut a: Vec<&str> = vec!["-A", &to];
                    a.extend(accept.iter().map(String::as_str));
                    self.ipt(v6, &a)?;
                }
            }
            let jump = self.jump_rule();
            if !self.has_rule(v6, &from, &jump) {
                let pos = self.cfg.input.jump_position.to_string();
                let mut a: Vec<&str> = vec!["-I", &from, &pos];
                a.extend(jump.iter().map(String::as_str));
                if self.ipt(v6, &a).is_err() {
                    let mut a: Vec<&str> = vec!["-A", &from];
                    a.extend(jump.iter().map(String::as_str));
                    self.ipt(v6, &a)?;
                }
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
            if g.nat.is_some() {
                return Err(Error::Config(
                    "NAT access is not implemented on the iptables backend yet (use FIREWALL_TYPE nftables)".into(),
                ));
            }
            let v6 = g.source.is_ipv6();
            if v6 && !self.cfg.ipv6 {
                return Err(Error::Config(format!(
                    "cannot open {}: IPv6 is not handled",
                    g.source
                )));
            }
            batch.push_str(&format!(
                "add {} {} timeout {}\n",
                self.set(v6),
                Self::entry(g),
                g.timeout.as_secs().clamp(1, 2_147_483)
            ));
        }
        // One restore: the kernel takes each line; -exist refreshes a timeout in place.
        run(&self.cfg.ipset, &["restore", "-exist"], Some(&batch)).map(|_| ())
    }

    fn revoke(&mut self, grants: &[Grant]) -> Result<(), Error> {
        let mut batch = String::new();
        for g in grants {
            batch.push_str(&format!(
                "del {} {}\n",
                self.set(g.source.is_ipv6()),
                Self::entry(g)
            ));
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
            let from = self.cfg.input.from_chain.clone();
            let to = self.cfg.input.to_chain.clone();
            let jump = self.jump_rule();
            while self.has_rule(v6, &from, &jump) {
                let mut a: Vec<&str> = vec!["-D", &from];
                a.extend(jump.iter().map(String::as_str));
                if let Err(e) = self.ipt(v6, &a) {
                    first_error.get_or_insert(e);
                    break;
                }
            }
            let _ = self.ipt(v6, &["-F", &to]);
            let _ = self.ipt(v6, &["-X", &to]);
            if let Err(e) = run(&self.cfg.ipset, &["destroy", &self.set(v6)], None) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    fn describe(&self) -> String {
        format!(
            "iptables ({}), chain {} jumped to from {} at position {}, openings in ipset {}4{} with kernel timeouts",
            self.variant(),
            self.cfg.input.to_chain,
            self.cfg.input.from_chain,
            self.cfg.input.jump_position,
            self.cfg.set_prefix,
            if self.cfg.ipv6 {
                format!("/{}6 (ip6tables too)", self.cfg.set_prefix)
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
