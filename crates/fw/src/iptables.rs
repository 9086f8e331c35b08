//! The iptables backend, in fwknop's layout: a chain `FWKNOP_INPUT` (the `IPT_INPUT_ACCESS`
//! setting names it, its table, the chain that jumps to it and the jump's position),
//! jumped to from `INPUT`, and for NAT access `FWKNOP_FORWARD`, `FWKNOP_PREROUTING`
//! (DNAT), `FWKNOP_POSTROUTING` (SNAT) and `FWKNOP_MASQUERADE`, and `FWKNOP_OUTPUT` with
//! `ENABLE_IPT_OUTPUT`, each where its `IPT_*_ACCESS` setting says. What one grant opens
//! in them is worked out in [`opening`], as values.
//!
//! Two ways to hold openings, chosen at setup and said by [`Firewall::describe`]:
//!
//! * **ipset, expiry in the kernel** (the default wherever `ipset create` works): where
//!   fwknopd adds one rule per grant, each chain holds one rule per ipset set, and each
//!   opening is a set entry with its own timeout, so the kernel removes it on time even if
//!   posternd is gone, and a grant costs one `ipset restore` batch whatever the number of
//!   open grants (fwknopd runs iptables and lists the chain for each one). Sets whose rule
//!   names a per-grant value (a NAT target, an SNAT address) are made on first use.
//! * **plain rules, expiry by posternd** (no ipset binary, no `ip_set` in the kernel, or
//!   `IPT_USE_IPSET N`): one rule per opening with fwknopd's own comment
//!   `_exp_<unix deadline>`, added and removed in `iptables-restore --noflush` batches;
//!   posternd removes them when due ([`Firewall::expire`], every second) and, at start, a
//!   rule left by a crash is removed if its deadline has passed and kept (and removed on
//!   time) if not. Rules of that form that fwknopd itself left are treated the same way.
//!   Deadlines are wall-clock times, as fwknopd writes them.
//!
//! ```text
//!  INPUT ─(position 1)─► FWKNOP_INPUT: -m set --match-set postern-in4 src,dst -j ACCEPT
//!                        ipset postern-in4 hash:ip,port timeout: 198.18.1.2,tcp:22 timeout 30
//!  plain: FWKNOP_INPUT: -s 198.18.1.2/32 -p tcp -m tcp --dport 22
//!                       -m comment --comment _exp_1796173480 -j ACCEPT
//! ```
//!
//! IPv6 goes through ip6tables (nat table included) and the `…6` sets in the same layout.
//! Works with `iptables-nft` (Debian 12's default) and `iptables-legacy` alike: only argv,
//! with `-w`, never a shell. The admin's own rules are left as they are.

mod opening;

use std::collections::{BTreeMap, HashSet};
use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use postern_proto::Protocol;

use crate::{Error, Feature, Firewall, Grant, Held, Snat, Support};
use opening::{Hook, Match, Piece, SavedRule, Target};

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

/// `IPT_USE_IPSET` (posternd's own): how openings are held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UseIpset {
    /// ipset where `ipset create` works, else plain rules (the default).
    #[default]
    Auto,
    /// ipset, or refuse to start.
    Yes,
    /// Plain rules with `_exp_` deadlines, removed by posternd.
    No,
}

/// Settings of the iptables backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IptConfig {
    /// `IPT_INPUT_ACCESS`.
    pub input: Access,
    /// The iptables binary (`FIREWALL_EXE`; `iptables` by default). `…-save` and
    /// `…-restore` are found next to it (`iptables-legacy` → `iptables-legacy-restore`).
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
    /// `ENABLE_IPT_SNAT`: forwarded NAT connections are source-translated (the SNAT and
    /// MASQUERADE chains below are installed with NAT). posternd's nftables backend
    /// follows it too.
    pub snat: bool,
    /// `SNAT_TRANSLATE_IP`: the address SNAT gives them; without it, MASQUERADE.
    pub snat_translate: Option<IpAddr>,
    /// `IPT_SNAT_ACCESS`.
    pub snat_access: Access,
    /// `IPT_MASQUERADE_ACCESS`.
    pub masquerade_access: Access,
    /// `ENABLE_IPT_OUTPUT`: every input opening also accepts its replies in `OUTPUT`
    /// (for hosts whose OUTPUT policy drops).
    pub output: bool,
    /// `IPT_OUTPUT_ACCESS`.
    pub output_access: Access,
    /// `IPT_USE_IPSET`.
    pub use_ipset: UseIpset,
}

impl Default for IptConfig {
    fn default() -> Self {
        let nat = |target: &str, from: &str, to: &str| Access {
            target: target.into(),
            table: "nat".into(),
            from_chain: from.into(),
            to_chain: to.into(),
            ..Access::default()
        };
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
            dnat: nat("DNAT", "PREROUTING", "FWKNOP_PREROUTING"),
            snat: false,
            snat_translate: None,
            snat_access: nat("SNAT", "POSTROUTING", "FWKNOP_POSTROUTING"),
            masquerade_access: nat("MASQUERADE", "POSTROUTING", "FWKNOP_MASQUERADE"),
            output: false,
            output_access: Access {
                from_chain: "OUTPUT".into(),
                to_chain: "FWKNOP_OUTPUT".into(),
                ..Access::default()
            },
            use_ipset: UseIpset::Auto,
        }
    }
}

impl IptConfig {
    /// The source translation of forwarded NAT grants that `ENABLE_IPT_SNAT` and
    /// `SNAT_TRANSLATE_IP` ask for (before a stanza's `FORCE_SNAT`/`FORCE_MASQUERADE`).
    pub fn snat_default(&self) -> Option<Snat> {
        self.snat
            .then(|| self.snat_translate.map_or(Snat::Masquerade, Snat::To))
    }

    fn access(&self, h: Hook) -> &Access {
        match h {
            Hook::Input => &self.input,
            Hook::Output => &self.output_access,
            Hook::Forward => &self.forward,
            Hook::Dnat => &self.dnat,
            Hook::Snat => &self.snat_access,
            Hook::Masquerade => &self.masquerade_access,
        }
    }

    /// The chains installed.
    fn hooks(&self) -> Vec<Hook> {
        let mut v = vec![Hook::Input];
        if self.output {
            v.push(Hook::Output);
        }
        if self.nat {
            v.extend([Hook::Forward, Hook::Dnat]);
            if self.snat {
                v.extend([Hook::Snat, Hook::Masquerade]);
            }
        }
        v
    }
}

/// How openings are held (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// ipset entries with kernel timeouts.
    Ipset,
    /// Plain rules with `_exp_` deadlines.
    Plain,
}

/// The most entries one ipset set holds (open grants of one family).
const MAX_ENTRIES: &str = "4194304";

/// The iptables backend (ipset entries, or plain rules where ipset is unavailable).
#[derive(Debug)]
pub struct Iptables {
    cfg: IptConfig,
    /// Decided at setup; before it, probed when asked.
    mode: Option<Mode>,
    /// Why plain rules are used.
    plain_why: String,
    /// Sets made on first use (per NAT target, per SNAT address) whose set and rule are
    /// known to exist.
    ensured: HashSet<String>,
    /// The earliest `_exp_` deadline of a plain rule in posternd's chains.
    next_due: Option<u64>,
}

/// Prefixes of the sets made on first use.
const LAZY_SETS: [&str; 4] = ["postern-dn", "postern-da", "postern-sn", "postern-sa"];

/// One ipset entry of a piece, with the set it goes into.
struct SetEntry {
    set: String,
    /// `hash:ip,port`, `hash:ip,port,ip`, `hash:ip`.
    kind: &'static str,
    entry: String,
    /// For a set made on first use: its chain and rule.
    lazy: Option<(Hook, Vec<String>)>,
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() + u64::from(d.subsec_nanos() > 0))
}

/// `iptables` → `iptables-restore`, `/usr/sbin/iptables-legacy` → `…/iptables-legacy-save`.
fn companion(tool: &Path, suffix: &str) -> PathBuf {
    let name = tool
        .file_name()
        .map_or_else(|| "iptables".into(), |n| n.to_string_lossy().into_owned());
    tool.with_file_name(format!("{name}{suffix}"))
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
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
        for h in [
            Hook::Input,
            Hook::Output,
            Hook::Forward,
            Hook::Dnat,
            Hook::Snat,
            Hook::Masquerade,
        ] {
            let a = cfg.access(h);
            if !chain_name(&a.to_chain) || !chain_name(&a.from_chain) {
                return Err(Error::Config(format!(
                    "bad chain name in the {} setting ({} / {})",
                    access_name(h),
                    a.from_chain,
                    a.to_chain
                )));
            }
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
        let (mode, plain_why) = match cfg.use_ipset {
            UseIpset::No => (Some(Mode::Plain), "IPT_USE_IPSET N".to_owned()),
            UseIpset::Yes => (Some(Mode::Ipset), String::new()),
            UseIpset::Auto => (None, String::new()),
        };
        Ok(Iptables {
            cfg,
            mode,
            plain_why,
            ensured: HashSet::new(),
            next_due: None,
        })
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

    /// The mode in use, or (before setup, with `IPT_USE_IPSET auto`) the one setup would
    /// choose: ipset if it answers.
    fn mode_now(&self) -> Mode {
        self.mode.unwrap_or_else(|| {
            if run(&self.cfg.ipset, &["list", "-n"], None).is_ok() {
                Mode::Ipset
            } else {
                Mode::Plain
            }
        })
    }

    fn plain(&self) -> bool {
        self.mode == Some(Mode::Plain)
    }

    /// Create an ipset (if missing) whose entries carry their own timeouts (a default
    /// of 0 means "none").
    fn create_set(&self, name: &str, kind: &str, v6: bool) -> Result<(), Error> {
        let family = if v6 { "inet6" } else { "inet" };
        // ipset's default cap is 65,536 entries: one more grant would be refused ("Hash
        // is full"). The hash grows on demand, so a high cap costs nothing until used.
        let args = [
            "create",
            name,
            kind,
            "family",
            family,
            "maxelem",
            MAX_ENTRIES,
            "timeout",
            "0",
            "-exist",
        ];
        match run(&self.cfg.ipset, &args, None) {
            Ok(_) => Ok(()),
            // A set left by an older posternd with other parameters: kept as it is.
            Err(e) => match run(&self.cfg.ipset, &["-n", "list", name], None) {
                Ok(_) => Ok(()),
                Err(_) => Err(e),
            },
        }
    }

    fn ipt_in(&self, v6: bool, table: &str, args: &[&str]) -> Result<String, Error> {
        let mut a = vec!["-w", "-t", table];
        a.extend_from_slice(args);
        run(self.tool(v6), &a, None)
    }

    /// Make sure `access.to_chain` exists in its table, holds `rules` (at its position),
    /// and is jumped to from `access.from_chain` (at its position).
    fn ensure_chain(&self, v6: bool, access: &Access, rules: &[Vec<String>]) -> Result<(), Error> {
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
        for r in rules {
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

    /// The rule that matches a set: `-m set --match-set NAME FLAGS -m comment --comment
    /// postern` and the target.
    fn set_rule(set: &str, flags: &str, target: Vec<String>) -> Vec<String> {
        let mut v = strings(&[
            "-m",
            "set",
            "--match-set",
            set,
            flags,
            "-m",
            "comment",
            "--comment",
            "postern",
        ]);
        v.extend(target);
        v
    }

    /// The accept rule in posternd's input chain.
    fn accept_rule(&self, v6: bool) -> Vec<String> {
        Self::set_rule(
            &self.set(v6),
            "src,dst",
            strings(&["-j", &self.cfg.input.target]),
        )
    }

    /// The sets a chain's fixed rules match (ipset mode): `(set, kind, flags)`; the
    /// output chain matches the input set the other way round (replies).
    fn fixed_sets(&self, h: Hook, v6: bool) -> Vec<(String, &'static str, &'static str)> {
        let n = if v6 { 6 } else { 4 };
        match h {
            Hook::Input => vec![(self.set(v6), "hash:ip,port", "src,dst")],
            Hook::Output => vec![(self.set(v6), "hash:ip,port", "dst,src")],
            Hook::Forward => vec![
                (format!("postern-fw{n}"), "hash:ip,port,ip", "src,dst,dst"),
                (format!("postern-fa{n}"), "hash:ip", "src"),
            ],
            Hook::Masquerade => vec![
                (format!("postern-mq{n}"), "hash:ip,port,ip", "src,dst,dst"),
                (format!("postern-ma{n}"), "hash:ip", "src"),
            ],
            Hook::Dnat | Hook::Snat => Vec::new(),
        }
    }

    /// The ipset entry of a piece (ipset mode). An output piece has none: the output
    /// chain's rule matches the input set.
    fn set_entry(&self, p: &Piece) -> Option<SetEntry> {
        let n = if p.v6 { 6 } else { 4 };
        let entry = match p.m {
            Match::SrcPort(s, proto, port) => format!("{s},{}:{port}", proto.name()),
            Match::SrcDstPort(s, d, proto, port) => format!("{s},{}:{port},{d}", proto.name()),
            Match::Src(s) => s.to_string(),
            Match::DstSport(..) => return None,
        };
        let fixed = |set: String, kind| {
            Some(SetEntry {
                set,
                kind,
                entry: entry.clone(),
                lazy: None,
            })
        };
        let lazy = |prefix: &str, key: String, kind, flags: &str, pre: &[&str], target| {
            let set = format!("{prefix}{n}-{:08x}", opening::short_hash(&key));
            let mut rule = strings(pre);
            rule.extend(Self::set_rule(&set, flags, target));
            Some(SetEntry {
                set,
                kind,
                entry: entry.clone(),
                lazy: Some((p.hook, rule)),
            })
        };
        match (p.hook, p.m, p.target) {
            (Hook::Input, Match::SrcPort(..), _) => fixed(self.set(p.v6), "hash:ip,port"),
            (Hook::Forward, Match::SrcDstPort(..), _) => {
                fixed(format!("postern-fw{n}"), "hash:ip,port,ip")
            }
            (Hook::Forward, Match::Src(_), _) => fixed(format!("postern-fa{n}"), "hash:ip"),
            (Hook::Masquerade, Match::SrcDstPort(..), _) => {
                fixed(format!("postern-mq{n}"), "hash:ip,port,ip")
            }
            (Hook::Masquerade, Match::Src(_), _) => fixed(format!("postern-ma{n}"), "hash:ip"),
            (Hook::Dnat, Match::SrcPort(_, proto, _), t @ Target::Dnat(to, Some(port))) => lazy(
                "postern-dn",
                format!("{to}|{port}|{}", proto.number()),
                "hash:ip,port",
                "src,dst",
                &["-p", proto.name()],
                t.args(""),
            ),
            (Hook::Dnat, Match::Src(_), t @ Target::Dnat(to, None)) => lazy(
                "postern-da",
                to.to_string(),
                "hash:ip",
                "src",
                &[],
                t.args(""),
            ),
            (Hook::Snat, Match::SrcDstPort(..), t @ Target::Snat(a)) => lazy(
                "postern-sn",
                a.to_string(),
                "hash:ip,port,ip",
                "src,dst,dst",
                &[],
                t.args(""),
            ),
            (Hook::Snat, Match::Src(_), t @ Target::Snat(a)) => lazy(
                "postern-sa",
                a.to_string(),
                "hash:ip",
                "src",
                &[],
                t.args(""),
            ),
            _ => None,
        }
    }

    /// Create a set made on first use, and its rule, if they are not known to exist.
    fn ensure_lazy(&mut self, e: &SetEntry, v6: bool) -> Result<(), Error> {
        let Some((hook, rule)) = &e.lazy else {
            return Ok(());
        };
        if self.ensured.contains(&e.set) {
            return Ok(());
        }
        self.create_set(&e.set, e.kind, v6)?;
        let a = self.cfg.access(*hook);
        let (t, chain) = (a.table.as_str(), a.to_chain.as_str());
        let mut c: Vec<&str> = vec!["-C", chain];
        c.extend(rule.iter().map(String::as_str));
        if self.ipt_in(v6, t, &c).is_err() {
            let mut add: Vec<&str> = vec!["-A", chain];
            add.extend(rule.iter().map(String::as_str));
            self.ipt_in(v6, t, &add)?;
        }
        self.ensured.insert(e.set.clone());
        Ok(())
    }

    /// The sets posternd made on first use.
    fn lazy_sets(&self) -> Vec<String> {
        run(&self.cfg.ipset, &["list", "-n"], None)
            .map(|t| {
                t.lines()
                    .filter(|l| LAZY_SETS.iter().any(|p| l.starts_with(p)))
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Check that this backend, as configured, can open `g`.
    fn check(&self, g: &Grant) -> Result<(), Error> {
        if g.source.is_ipv6() && !self.cfg.ipv6 {
            return Err(Error::Config(format!(
                "cannot open {}: IPv6 is not handled",
                g.source
            )));
        }
        let Some(n) = &g.nat else { return Ok(()) };
        if !self.cfg.nat {
            return Err(Error::Config(
                "NAT access is not enabled (ENABLE_IPT_FORWARDING / ENABLE_IPT_LOCAL_NAT)".into(),
            ));
        }
        if n.to.is_ipv6() != g.source.is_ipv6() {
            return Err(Error::Config(format!(
                "NAT from {} to {} mixes address families",
                g.source, n.to
            )));
        }
        if n.snat.is_some() && !n.local && !self.cfg.snat {
            return Err(Error::Config(
                "SNAT/MASQUERADE is not enabled (ENABLE_IPT_SNAT)".into(),
            ));
        }
        if let Some(Snat::To(a)) = n.snat {
            if a.is_ipv6() != g.source.is_ipv6() {
                return Err(Error::Config(format!(
                    "SNAT of {} to {a} mixes address families",
                    g.source
                )));
            }
        }
        Ok(())
    }

    /// The ipset lines of `grants` (`add … timeout N` or `del …`), creating the sets
    /// made on first use when adding.
    fn ipset_batch(&mut self, grants: &[Grant], add: bool) -> Result<String, Error> {
        let existing: Option<HashSet<String>> =
            (!add).then(|| self.lazy_sets().into_iter().collect());
        let mut batch = String::new();
        for g in grants {
            self.check(g)?;
            for p in opening::pieces(g, self.cfg.output) {
                let Some(e) = self.set_entry(&p) else {
                    continue;
                };
                if add {
                    self.ensure_lazy(&e, p.v6)?;
                    batch.push_str(&format!(
                        "add {} {} timeout {}\n",
                        e.set,
                        e.entry,
                        g.timeout.as_secs().clamp(1, 2_147_483)
                    ));
                } else if e.lazy.is_none() || existing.as_ref().is_some_and(|s| s.contains(&e.set))
                {
                    batch.push_str(&format!("del {} {}\n", e.set, e.entry));
                }
            }
        }
        Ok(batch)
    }

    // ---- plain rules ----

    /// The tables posternd's chains are in, with the chains.
    fn tables(&self) -> BTreeMap<String, Vec<String>> {
        let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for h in self.cfg.hooks() {
            let a = self.cfg.access(h);
            let chains = m.entry(a.table.clone()).or_default();
            if !chains.contains(&a.to_chain) {
                chains.push(a.to_chain.clone());
            }
        }
        m
    }

    fn save(&self, v6: bool, table: &str) -> Result<String, Error> {
        run(&companion(self.tool(v6), "-save"), &["-t", table], None)
    }

    fn restore(&self, v6: bool, batch: &str) -> Result<(), Error> {
        run(
            &companion(self.tool(v6), "-restore"),
            &["-w", "--noflush"],
            Some(batch),
        )
        .map(|_| ())
    }

    /// The `_exp_` rules in posternd's chains of one family: `(table, rule)`.
    fn saved_rules(&self, v6: bool) -> Result<Vec<(String, SavedRule)>, Error> {
        let mut out = Vec::new();
        for (table, chains) in self.tables() {
            let text = self.save(v6, &table)?;
            let chains: Vec<&str> = chains.iter().map(String::as_str).collect();
            out.extend(
                opening::parse_saved(&text, &chains)
                    .into_iter()
                    .map(|r| (table.clone(), r)),
            );
        }
        Ok(out)
    }

    /// Delete saved rules of one family in one `iptables-restore` batch; if the batch is
    /// refused (a rule went away meanwhile), one rule at a time. The number deleted.
    fn delete_rules(&self, v6: bool, rules: &[(String, SavedRule)]) -> Result<usize, Error> {
        if rules.is_empty() {
            return Ok(0);
        }
        let batch = |rs: &[(String, SavedRule)]| {
            let mut by_table: BTreeMap<&str, String> = BTreeMap::new();
            for (t, r) in rs {
                by_table
                    .entry(t)
                    .or_default()
                    .push_str(&format!("-D {} {}\n", r.chain, r.spec));
            }
            by_table
                .into_iter()
                .map(|(t, lines)| format!("*{t}\n{lines}COMMIT\n"))
                .collect::<String>()
        };
        if self.restore(v6, &batch(rules)).is_ok() {
            return Ok(rules.len());
        }
        let mut done = 0;
        let mut first = None;
        for r in rules {
            match self.restore(v6, &batch(std::slice::from_ref(r))) {
                Ok(()) => done += 1,
                Err(e) => {
                    first.get_or_insert(e);
                }
            }
        }
        match (done, first) {
            (0, Some(e)) => Err(e),
            _ => Ok(done),
        }
    }

    /// Remove the `_exp_` rules past their deadline (all of them with `all`) from
    /// posternd's chains, and remember the next deadline. The number removed.
    fn expire_rules(&mut self, now: u64, all: bool) -> Result<usize, Error> {
        let mut removed = 0;
        let mut next: Option<u64> = None;
        for v6 in self.families() {
            let rules = self.saved_rules(v6)?;
            let (due, keep): (Vec<_>, Vec<_>) = rules
                .into_iter()
                .partition(|(_, r)| all || r.deadline <= now);
            for (_, r) in &keep {
                next = Some(next.map_or(r.deadline, |n| n.min(r.deadline)));
            }
            removed += self.delete_rules(v6, &due)?;
        }
        self.next_due = next;
        Ok(removed)
    }

    /// Add the plain rules of `grants`, one `iptables-restore` batch per family.
    fn plain_apply(&mut self, grants: &[Grant]) -> Result<(), Error> {
        let now = now_unix();
        let mut batches: BTreeMap<bool, BTreeMap<String, String>> = BTreeMap::new();
        let mut undo: BTreeMap<bool, BTreeMap<String, String>> = BTreeMap::new();
        let mut earliest: Option<u64> = None;
        for g in grants {
            self.check(g)?;
            let deadline = now + g.timeout.as_secs().max(1);
            earliest = Some(earliest.map_or(deadline, |e| e.min(deadline)));
            for p in opening::pieces(g, self.cfg.output) {
                let a = self.cfg.access(p.hook);
                let spec = opening::plain_rule(&p, &a.target, deadline).join(" ");
                let line = if a.rule_position == 1 {
                    format!("-I {} 1 {spec}\n", a.to_chain)
                } else {
                    format!("-A {} {spec}\n", a.to_chain)
                };
                batches
                    .entry(p.v6)
                    .or_default()
                    .entry(a.table.clone())
                    .or_default()
                    .push_str(&line);
                undo.entry(p.v6)
                    .or_default()
                    .entry(a.table.clone())
                    .or_default()
                    .push_str(&format!("-D {} {spec}\n", a.to_chain));
            }
        }
        let text = |m: &BTreeMap<String, String>| {
            m.iter()
                .map(|(t, l)| format!("*{t}\n{l}COMMIT\n"))
                .collect::<String>()
        };
        let mut done: Vec<bool> = Vec::new();
        for (v6, tables) in &batches {
            if let Err(e) = self.restore(*v6, &text(tables)) {
                // All or nothing: take back what the other family got.
                for d in done {
                    let _ = self.restore(d, &text(&undo[&d]));
                }
                return Err(e);
            }
            done.push(*v6);
        }
        if let Some(e) = earliest {
            self.next_due = Some(self.next_due.map_or(e, |n| n.min(e)));
        }
        Ok(())
    }

    /// Remove the plain rules of `grants`, whatever their deadlines.
    fn plain_revoke(&mut self, grants: &[Grant]) -> Result<(), Error> {
        let mut keys: HashSet<(bool, String, String)> = HashSet::new();
        for g in grants {
            self.check(g)?;
            for p in opening::pieces(g, self.cfg.output) {
                let a = self.cfg.access(p.hook);
                keys.insert((p.v6, a.to_chain.clone(), opening::rule_key(&p, &a.target)));
            }
        }
        for v6 in self.families() {
            if !keys.iter().any(|(k6, _, _)| *k6 == v6) {
                continue;
            }
            let doomed: Vec<(String, SavedRule)> = self
                .saved_rules(v6)?
                .into_iter()
                .filter(|(_, r)| keys.contains(&(v6, r.chain.clone(), r.key.clone())))
                .collect();
            self.delete_rules(v6, &doomed)?;
        }
        Ok(())
    }

    /// The input openings plain rules hold.
    fn plain_list(&self) -> Result<Vec<Held>, Error> {
        let now = now_unix();
        let mut best: BTreeMap<(IpAddr, u8, u16), (Protocol, u64)> = BTreeMap::new();
        for v6 in self.families() {
            let text = self.save(v6, &self.cfg.input.table)?;
            for r in opening::parse_saved(&text, &[self.cfg.input.to_chain.as_str()]) {
                if let Some((source, proto, port)) = opening::input_opening(&r) {
                    let e = best
                        .entry((source, proto.number(), port))
                        .or_insert((proto, r.deadline));
                    e.1 = e.1.max(r.deadline);
                }
            }
        }
        Ok(best
            .into_iter()
            .map(|((source, _, port), (proto, deadline))| Held {
                source,
                proto,
                port,
                left: Duration::from_secs(deadline.saturating_sub(now)),
            })
            .collect())
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

fn access_name(h: Hook) -> &'static str {
    match h {
        Hook::Input => "IPT_INPUT_ACCESS",
        Hook::Output => "IPT_OUTPUT_ACCESS",
        Hook::Forward => "IPT_FORWARD_ACCESS",
        Hook::Dnat => "IPT_DNAT_ACCESS",
        Hook::Snat => "IPT_SNAT_ACCESS",
        Hook::Masquerade => "IPT_MASQUERADE_ACCESS",
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
        self.ensured.clear();
        let mode = match self.cfg.use_ipset {
            UseIpset::No => Mode::Plain,
            UseIpset::Yes => Mode::Ipset,
            UseIpset::Auto => match self.create_set(&self.set(false), "hash:ip,port", false) {
                Ok(()) => Mode::Ipset,
                Err(e) => {
                    self.plain_why = format!("ipset is unavailable: {e}");
                    Mode::Plain
                }
            },
        };
        self.mode = Some(mode);
        let hooks = self.cfg.hooks();
        for v6 in self.families() {
            for &h in &hooks {
                let access = self.cfg.access(h).clone();
                let mut rules = Vec::new();
                if mode == Mode::Ipset {
                    for (set, kind, flags) in self.fixed_sets(h, v6) {
                        if h != Hook::Output {
                            self.create_set(&set, kind, v6)?;
                            if flush {
                                run(&self.cfg.ipset, &["flush", &set], None)?;
                            }
                        }
                        rules.push(Self::set_rule(
                            &set,
                            flags,
                            strings(&["-j", &access.target]),
                        ));
                    }
                }
                // posternd's chain (created if missing) holds the set rules (ipset) or
                // the plain rules; with flush, those plain rules and the rules of sets
                // made on first use go.
                if flush && (mode == Mode::Plain || matches!(h, Hook::Dnat | Hook::Snat)) {
                    let _ = self.ipt_in(v6, &access.table, &["-F", &access.to_chain]);
                }
                self.ensure_chain(v6, &access, &rules)?;
            }
        }
        if mode == Mode::Ipset && flush {
            for set in self.lazy_sets() {
                let _ = run(&self.cfg.ipset, &["destroy", &set], None);
            }
        }
        // Plain rules left by a crash (or by fwknopd, in the same form): past their
        // deadline (or all, with flush) removed now, the others removed when due.
        match self.expire_rules(now_unix(), flush) {
            Ok(_) => Ok(()),
            Err(e) if mode == Mode::Plain => Err(e),
            Err(_) => Ok(()),
        }
    }

    fn apply(&mut self, grants: &[Grant]) -> Result<(), Error> {
        if grants.is_empty() {
            return Ok(());
        }
        if self.plain() {
            return self.plain_apply(grants);
        }
        let batch = self.ipset_batch(grants, true)?;
        // One restore: the kernel takes each line; -exist refreshes a timeout in place.
        run(&self.cfg.ipset, &["restore", "-exist"], Some(&batch)).map(|_| ())
    }

    fn revoke(&mut self, grants: &[Grant]) -> Result<(), Error> {
        if grants.is_empty() {
            return Ok(());
        }
        if self.mode_now() == Mode::Plain {
            return self.plain_revoke(grants);
        }
        let batch = self.ipset_batch(grants, false)?;
        if batch.is_empty() {
            return Ok(());
        }
        run(&self.cfg.ipset, &["restore", "-exist"], Some(&batch)).map(|_| ())
    }

    fn list(&mut self) -> Result<Vec<Held>, Error> {
        if self.mode_now() == Mode::Plain {
            return self.plain_list();
        }
        let mut out = Vec::new();
        for v6 in self.families() {
            let text = run(&self.cfg.ipset, &["save", &self.set(v6)], None)?;
            out.extend(parse_ipset_save(&text));
        }
        Ok(out)
    }

    fn intact(&mut self) -> Result<(), Error> {
        for v6 in self.families() {
            let input = &self.cfg.input;
            let (t, from, to) = (input.table.as_str(), &input.from_chain, &input.to_chain);
            let tool = if v6 { "ip6tables" } else { "iptables" };
            self.ipt_in(v6, t, &["-C", from, "-j", to])
                .map_err(|e| match e {
                    Error::Spawn(_) => e,
                    _ => Error::Missing(format!("{tool}: the jump from {from} to {to} is missing")),
                })?;
            if self.plain() {
                // Plain rules: the chain holds the openings themselves, no set rule.
                continue;
            }
            let mut rule: Vec<String> = vec!["-C".into(), to.clone()];
            rule.extend(self.accept_rule(v6));
            let rule: Vec<&str> = rule.iter().map(String::as_str).collect();
            self.ipt_in(v6, t, &rule).map_err(|e| match e {
                Error::Spawn(_) => e,
                _ => Error::Missing(format!(
                    "{tool}: the rule matching the ipset {} is missing from {to}",
                    self.set(v6)
                )),
            })?;
        }
        Ok(())
    }

    fn expire(&mut self, now: u64) -> Result<usize, Error> {
        if self.next_due.is_some_and(|d| d <= now) {
            self.expire_rules(now, false)
        } else {
            Ok(0)
        }
    }

    fn shutdown(&mut self) -> Result<(), Error> {
        let mut first_error = None;
        let hooks = self.cfg.hooks();
        for v6 in self.families() {
            for &h in hooks.iter().rev() {
                let access = self.cfg.access(h).clone();
                if let Err(e) = self.remove_chain(v6, &access) {
                    first_error.get_or_insert(e);
                }
            }
            if self.plain() {
                continue;
            }
            if let Err(e) = run(&self.cfg.ipset, &["destroy", &self.set(v6)], None) {
                first_error.get_or_insert(e);
            }
            for &h in &hooks {
                if matches!(h, Hook::Input | Hook::Output) {
                    continue;
                }
                for (set, _, _) in self.fixed_sets(h, v6) {
                    let _ = run(&self.cfg.ipset, &["destroy", &set], None);
                }
            }
        }
        if !self.plain() {
            for set in self.lazy_sets() {
                let _ = run(&self.cfg.ipset, &["destroy", &set], None);
            }
        }
        self.next_due = None;
        first_error.map_or(Ok(()), Err)
    }

    fn supports_nat(&self) -> bool {
        self.cfg.nat
    }

    fn supports(&self, f: Feature) -> Support {
        match f {
            Feature::Nat if self.cfg.nat => Support::Yes,
            Feature::Nat => Support::No(
                "NAT access is off (ENABLE_IPT_FORWARDING / ENABLE_IPT_LOCAL_NAT)".into(),
            ),
            Feature::Snat if self.cfg.nat && self.cfg.snat => Support::Yes,
            Feature::Snat => {
                Support::No("source translation needs ENABLE_IPT_SNAT and NAT access".into())
            }
            Feature::Output if self.cfg.output => Support::Yes,
            _ => Support::No("not enabled".into()),
        }
    }

    fn describe(&self) -> String {
        let c = &self.cfg;
        let mode = match self.mode_now() {
            Mode::Ipset => format!(
                "ipset, expiry in the kernel: openings in ipset {}4{} with kernel timeouts",
                c.set_prefix,
                if c.ipv6 {
                    format!("/{}6 (ip6tables too)", c.set_prefix)
                } else {
                    String::new()
                }
            ),
            Mode::Plain => format!(
                "plain rules, expiry by posternd ({}): one rule per opening with fwknopd's _exp_ deadline comment{}",
                if self.plain_why.is_empty() {
                    "ipset does not answer"
                } else {
                    &self.plain_why
                },
                if c.ipv6 { " (ip6tables too)" } else { "" },
            ),
        };
        let mut s = format!(
            "iptables ({}), chain {} jumped to from {} at position {}, {mode}",
            self.variant(),
            c.input.to_chain,
            c.input.from_chain,
            c.input.jump_position,
        );
        if c.nat {
            s.push_str(&format!(
                ", NAT ({} and {}: forward and DNAT{})",
                c.forward.to_chain,
                c.dnat.to_chain,
                if self.mode_now() == Mode::Ipset {
                    " conditioned on ipset entries"
                } else {
                    ""
                }
            ));
            if c.snat {
                s.push_str(&format!(
                    ", {} ({} and {}{})",
                    match c.snat_translate {
                        Some(_) => "SNAT",
                        None => "MASQUERADE",
                    },
                    c.snat_access.to_chain,
                    c.masquerade_access.to_chain,
                    c.snat_translate
                        .map_or(String::new(), |a| format!(": SNAT_TRANSLATE_IP {a}"))
                ));
            }
        }
        if c.output {
            s.push_str(&format!(
                ", replies of openings accepted in {} (ENABLE_IPT_OUTPUT)",
                c.output_access.to_chain
            ));
        }
        s
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

    #[test]
    fn companion_tools_sit_next_to_iptables() {
        assert_eq!(
            companion(Path::new("iptables"), "-restore"),
            PathBuf::from("iptables-restore")
        );
        assert_eq!(
            companion(Path::new("/usr/sbin/iptables-legacy"), "-save"),
            PathBuf::from("/usr/sbin/iptables-legacy-save")
        );
    }

    #[test]
    fn chains_follow_the_settings() {
        let mut c = IptConfig::default();
        assert_eq!(c.hooks(), [Hook::Input]);
        assert_eq!(c.snat_default(), None);
        c.nat = true;
        c.snat = true;
        c.output = true;
        assert_eq!(
            c.hooks(),
            [
                Hook::Input,
                Hook::Output,
                Hook::Forward,
                Hook::Dnat,
                Hook::Snat,
                Hook::Masquerade
            ]
        );
        assert_eq!(c.snat_default(), Some(Snat::Masquerade));
        c.snat_translate = Some("198.18.9.1".parse().unwrap());
        assert_eq!(
            c.snat_default(),
            Some(Snat::To("198.18.9.1".parse().unwrap()))
        );
        assert_eq!(c.masquerade_access.to_chain, "FWKNOP_MASQUERADE");
        assert_eq!(c.snat_access.from_chain, "POSTROUTING");
        assert_eq!(c.output_access.from_chain, "OUTPUT");
    }

    #[test]
    fn each_piece_has_its_set() {
        let ipt = Iptables::new(IptConfig {
            nat: true,
            snat: true,
            ..IptConfig::default()
        })
        .unwrap();
        let mut n = crate::Nat::to("198.18.2.2".parse().unwrap(), 55000, false);
        n.snat = Some(Snat::To("198.18.9.1".parse().unwrap()));
        let g = Grant {
            source: "198.18.1.2".parse().unwrap(),
            proto: Protocol::Tcp,
            port: 22,
            timeout: Duration::from_secs(30),
            nat: Some(n),
        };
        let e: Vec<(String, String, bool)> = opening::pieces(&g, true)
            .iter()
            .filter_map(|p| ipt.set_entry(p))
            .map(|e| (e.set, e.entry, e.lazy.is_some()))
            .collect();
        assert_eq!(e.len(), 3, "{e:?}");
        assert!(e[0].0.starts_with("postern-dn4-") && e[0].1 == "198.18.1.2,tcp:22" && e[0].2);
        assert_eq!(
            e[1],
            (
                "postern-fw4".into(),
                "198.18.1.2,tcp:55000,198.18.2.2".into(),
                false
            )
        );
        assert!(e[2].0.starts_with("postern-sn4-") && e[2].1 == "198.18.1.2,tcp:55000,198.18.2.2");
        assert!(e.iter().all(|(s, _, _)| s.len() <= 31));
    }
}
