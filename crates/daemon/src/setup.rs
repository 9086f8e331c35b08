//! `posternd setup`: put the host behind the default-drop input policy of the classic
//! fwknop guide (established/related, loopback and posternd's intake accepted, then
//! posternd's grants, nothing else), without locking the admin out, and undo it unless
//! it is confirmed in time from a new connection that came in through a knock, the way
//! `iptables-apply` and a router's "commit confirmed" do.
//!
//! ```text
//!  setup ─► save what it changes ─► guardian (own session) ─► step 1: the accepts
//!           DIR/before-* (0600)      deadline: N s              (policy as it was)
//!                                         │                          │ conntrack knows
//!                                         │                          ▼ your session?
//!                                         │◄── arm: N s from now ── step 2: policy drop
//!           deadline, unconfirmed ────────┤
//!           SIGTERM, --rollback   ────────┴─► restore exactly what was saved
//!  setup --confirm ─► the caller's address holds a grant in the running posternd?
//!                     yes: the guardian keeps the policy and exits
//! ```
//!
//! What is saved and restored is exactly what setup changes, nothing else, so a
//! rollback never reopens a grant that expired meanwhile and never undoes what other
//! software did to other tables:
//! * nftables, posternd's own table: the table's chains (its sets and their grants are
//!   left alone); chains and sets that setup created are deleted, a table that was not
//!   there is deleted. The applied base is the one posternd itself installs with
//!   `NFT_DEFAULT_DROP Y`, so a later start with that setting changes nothing.
//! * nftables, an existing chain (`NFT_CHAIN`): that chain.
//! * iptables/ip6tables: the `filter` table (`iptables-save -t filter`, restored with
//!   `iptables-restore`).
//!
//! firewalld is not managed here: a firewalld zone already rejects what it does not
//! list, and its runtime/permanent split is its own rollback.
//!
//! The session the command runs in stays open: step 1 accepts established/related
//! while the policy still accepts everything, so conntrack (which a namespace may not
//! run at all until a rule needs it) sees the open connections; when the command runs
//! over SSH, step 2 waits until conntrack knows that very connection, and gives up (and
//! rolls back) if it never does.
//!
//! The state lives in the run directory (`FWKNOP_RUN_DIR/setup`, 0700): a reboot
//! forgets the kernel's ruleset, so it must forget a pending setup too.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use postern_fw::iptables::IptConfig;
use postern_fw::nftables::{Family, NftConfig, Nftables};
use postern_fw::Protocol;
use serde::{Deserialize, Serialize};

use crate::config::server::ServerConfig;

/// `posternd setup`'s flags.
#[derive(Debug, Clone, clap::Args)]
pub struct SetupArgs {
    /// Keep the pending default-drop policy. Run it from a NEW connection that came in
    /// through a knock: the connection's source address (from SSH_CONNECTION, or
    /// --from) must hold a grant in the running posternd.
    #[arg(long, conflicts_with_all = ["rollback", "dry_run"])]
    pub confirm: bool,
    /// Restore the ruleset saved before the pending setup, now.
    #[arg(long, conflicts_with_all = ["confirm", "dry_run"])]
    pub rollback: bool,
    /// With --confirm: the address the confirming connection comes from (default: the
    /// client address in SSH_CONNECTION).
    #[arg(long, value_name = "ADDR", requires = "confirm")]
    pub from: Option<IpAddr>,
    /// Roll everything back unless confirmed within SECONDS.
    #[arg(long, value_name = "SECONDS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(5..=86_400))]
    pub confirm_within: u64,
    /// Print what setup would apply, and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// fwknopd.conf (the running posternd's).
    #[arg(short = 'c', long = "config-file", value_name = "FILE")]
    pub config_file: Option<PathBuf>,
    /// Run directory (the running posternd's; the setup state goes in DIR/setup).
    #[arg(short = 'r', long = "run-dir", value_name = "DIR")]
    pub run_dir: Option<PathBuf>,
    /// Internal: be the guardian of the setup whose state is in DIR.
    #[arg(long = "guardian-internal", hide = true, value_name = "DIR")]
    pub guardian_internal: Option<PathBuf>,
}

/// Why `posternd setup` stopped. Every message says what to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SetupError {
    /// The configuration cannot be read.
    Config(String),
    /// The configured backend or layout is not one setup manages.
    Unsupported(String),
    /// Another setup is pending, or was left unfinished.
    Pending(String),
    /// posternd is not running with this configuration.
    NotRunning(String),
    /// A firewall tool failed or refused a change.
    Firewall(String),
    /// conntrack does not know the caller's connection: the policy would cut it.
    Session(String),
    /// `--confirm` from an address that holds no grant (or cannot be told).
    NoGrant(String),
    /// The guardian could not be started or reached.
    Guardian(String),
    /// The setup directory cannot be used.
    State(String),
    /// Nothing to confirm or roll back.
    NothingPending(String),
}

impl std::fmt::Display for SetupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SetupError::Config(m) => write!(f, "configuration: {m}"),
            SetupError::Unsupported(m)
            | SetupError::Pending(m)
            | SetupError::NotRunning(m)
            | SetupError::Session(m)
            | SetupError::NoGrant(m)
            | SetupError::NothingPending(m) => f.write_str(m),
            SetupError::Firewall(m) => write!(f, "firewall: {m}"),
            SetupError::Guardian(m) => write!(f, "guardian: {m}"),
            SetupError::State(m) => write!(f, "setup state: {m}"),
        }
    }
}

impl std::error::Error for SetupError {}

/// The comment on every rule setup adds, so an admin can tell them apart.
pub const COMMENT: &str = "postern-setup";

/// How long step 2 waits for conntrack to know the caller's session.
const SESSION_WAIT: Duration = Duration::from_secs(5);

/// Run `posternd setup` with these flags; one line per step on standard output,
/// errors on standard error, exit 1 on any refusal.
pub fn main(a: &SetupArgs) -> ExitCode {
    if let Some(dir) = &a.guardian_internal {
        return guardian(dir);
    }
    let result = if a.confirm {
        confirm(a)
    } else if a.rollback {
        rollback(a)
    } else {
        apply(a)
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("posternd setup: {e}");
            ExitCode::from(1)
        }
    }
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", crate::log::clean(line));
    let _ = out.flush();
}

/// Where things are, from the configuration and `-c`/`-r`.
struct Place {
    /// The configuration; `None` when it cannot be read (`--confirm` and `--rollback`
    /// still work then: an admin may break the file while a setup is pending).
    server: Option<ServerConfig>,
    socket: PathBuf,
    dir: PathBuf,
    /// `-c FILE -r DIR` as given, for the commands setup tells the admin to run.
    flags: String,
}

impl Place {
    fn server(&self) -> Result<&ServerConfig, SetupError> {
        self.server
            .as_ref()
            .ok_or_else(|| SetupError::Config("the configuration cannot be read".into()))
    }
}

/// The default `FWKNOP_RUN_DIR`, for when the configuration cannot be read.
const DEFAULT_RUN_DIR: &str = "/run/postern";

fn place(a: &SetupArgs, strict: bool) -> Result<Place, SetupError> {
    let (server, mut socket, mut run_dir) = match crate::cli::load(a.config_file.as_deref(), None) {
        Ok(c) => {
            let s = c.server;
            let (sock, dir) = (s.control_socket.clone(), s.run_dir.clone());
            (Some(s), sock, dir)
        }
        Err(e) if strict => return Err(SetupError::Config(e.to_string())),
        Err(e) => {
            let dir = a
                .run_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_RUN_DIR));
            say(&format!(
                "the configuration cannot be read ({}); using the run directory {}",
                e.to_string().replace('\n', "; "),
                dir.display()
            ));
            (None, dir.join("posternd.sock"), dir)
        }
    };
    let mut server = server;
    if let Some(d) = &a.run_dir {
        socket = d.join("posternd.sock");
        run_dir = d.clone();
        if let Some(s) = server.as_mut() {
            s.run_dir = d.clone();
        }
    }
    // The guardian changes its working directory to /: every path it gets is absolute.
    let run_dir = std::path::absolute(&run_dir).unwrap_or(run_dir);
    let mut flags = String::new();
    if let Some(c) = &a.config_file {
        flags.push_str(&format!(" -c {}", c.display()));
    }
    if let Some(d) = &a.run_dir {
        flags.push_str(&format!(" -r {}", d.display()));
    }
    Ok(Place {
        server,
        socket,
        dir: run_dir.join("setup"),
        flags,
    })
}

// ---------------------------------------------------------------------------------
// The plan: what setup changes, in two steps, and what it saves first.

/// One change.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Change {
    /// `nft -f -` with this script.
    Nft { nft: PathBuf, script: String },
    /// `iptables-restore -w --noflush` with this input.
    IptRestore { restore: PathBuf, input: String },
    /// A command (`iptables -w -P INPUT DROP`).
    Argv { program: PathBuf, args: Vec<String> },
}

impl Change {
    fn show(&self) -> String {
        match self {
            Change::Nft { nft, script } => {
                format!("{} -f - <<EOF\n{script}EOF\n", nft.display())
            }
            Change::IptRestore { restore, input } => {
                format!("{} -w --noflush <<EOF\n{input}EOF\n", restore.display())
            }
            Change::Argv { program, args } => {
                format!("{} {}\n", program.display(), args.join(" "))
            }
        }
    }

    fn run(&self) -> Result<(), SetupError> {
        match self {
            Change::Nft { nft, script } => tool(nft, &["-f", "-"], Some(script)).map(|_| ()),
            Change::IptRestore { restore, input } => {
                tool(restore, &["-w", "--noflush"], Some(input)).map(|_| ())
            }
            Change::Argv { program, args } => {
                let a: Vec<&str> = args.iter().map(String::as_str).collect();
                tool(program, &a, None).map(|_| ())
            }
        }
    }
}

/// What setup saves, and later restores.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "backend", rename_all = "lowercase")]
enum Saved {
    /// nftables: the chains of one table (all of them, or `chain` only).
    Nftables {
        nft: PathBuf,
        family: String,
        table: String,
        /// `Some`: only this chain (an admin's chain); `None`: posternd's own table.
        chain: Option<String>,
        /// Whether the table existed (else a rollback deletes it).
        had_table: bool,
    },
    /// iptables: the filter table of each family changed.
    Iptables { families: Vec<IptSaved> },
}

/// One iptables family's saved filter table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct IptSaved {
    /// `ipv4` or `ipv6`.
    family: String,
    save: PathBuf,
    restore: PathBuf,
}

/// The state of a pending setup (`DIR/state.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct State {
    /// Seconds the guardian waits for a confirmation.
    within: u64,
    /// What to restore.
    saved: Saved,
    /// The fwknopd.conf of the posternd whose grants confirm (for the record).
    config_file: String,
}

/// What setup would do on this host.
struct Plan {
    /// The backend, as posternd describes it, and why it was chosen.
    backend: String,
    /// What is accepted in step 1, for the step line.
    accepts: String,
    /// Step 1: the accepts (the policy unchanged).
    step1: Vec<Change>,
    /// Step 2: the drop policy.
    step2: Vec<Change>,
    saved: Saved,
    /// Said after step 2 (how to make it last).
    notes: Vec<String>,
}

/// What the plan found.
enum Planned {
    /// Something to do.
    Apply(Plan),
    /// The policy is already there.
    InPlace(String),
}

fn plan(server: &ServerConfig) -> Result<Planned, SetupError> {
    let (fw, why) = crate::firewall::choose(server);
    match fw {
        postern_fw::Config::Nftables(n) => plan_nft(server, n, &why),
        postern_fw::Config::Iptables(i) => plan_ipt(server, &i, &why),
        postern_fw::Config::Firewalld(f) => Err(SetupError::Unsupported(format!(
            "firewalld ({why}) is not managed by posternd setup: a firewalld zone already rejects what it does not list. \
             Keep ssh in zone {zone} until a knock works, then remove it there at runtime first \
             (firewall-cmd --zone={zone} --remove-service=ssh; undone by firewall-cmd --reload), \
             and make it permanent with firewall-cmd --runtime-to-permanent once you are back in through a knock",
            zone = f.zone.as_deref().unwrap_or("public")
        ))),
        _ => Err(SetupError::Unsupported(format!(
            "this firewall backend ({why}) is not managed by posternd setup"
        ))),
    }
}

fn family_name(f: Family) -> &'static str {
    match f {
        Family::Inet => "inet",
        Family::Ip => "ip",
        Family::Ip6 => "ip6",
    }
}

fn accepts_text(v6: bool, ports: &[(Protocol, u16)]) -> String {
    let mut parts = vec!["established/related", "loopback"];
    if v6 {
        parts.push("IPv6 neighbour discovery");
    }
    let mut s = parts.join(", ");
    for (proto, p) in ports {
        let what = match proto {
            Protocol::Tcp => "the TCP server: ENABLE_TCP_SERVER",
            _ => "the SPA port: ENABLE_UDP_SERVER",
        };
        s.push_str(&format!(", {}/{p} ({what})", proto.name()));
    }
    s
}

fn plan_nft(server: &ServerConfig, n: NftConfig, why: &str) -> Result<Planned, SetupError> {
    let fam = family_name(n.family);
    let ports = server.listening_ports();
    let v6 = n.family != Family::Ip;
    let fw_err = |e: postern_fw::Error| SetupError::Config(e.to_string());
    match n.chain.clone() {
        None => {
            // posternd's own table: the base NFT_DEFAULT_DROP Y installs.
            let cfg = NftConfig {
                default_drop: true,
                open_ports: ports.clone(),
                ..n.clone()
            };
            let nft = Nftables::new(cfg).map_err(fw_err)?;
            let backend = format!("{} ({why})", postern_fw::Firewall::describe(&nft));
            if nft_chain(&n.nft, fam, &n.table, "input")?
                .is_some_and(|c| c.policy.as_deref() == Some("drop"))
            {
                let mut m = format!(
                    "the default-drop policy is already in place: {backend}; nothing to do"
                );
                if !server.nft_default_drop {
                    m.push_str(&format!(
                        " (NFT_DEFAULT_DROP is N in {}: set it to Y, or posternd removes this policy with its table when it stops)",
                        server.file.display()
                    ));
                }
                return Ok(Planned::InPlace(m));
            }
            let base = nft.base_script(false, &[]);
            // Step 1 is the whole base with the policies left accepting; step 2 sets
            // them (the `add chain ... policy drop;` lines of the same base).
            let step1 = base.replace("policy drop;", "policy accept;");
            let step2: String = base
                .lines()
                .filter(|l| l.contains("policy drop;"))
                .map(|l| format!("{l}\n"))
                .collect();
            let mut notes = Vec::new();
            if !server.nft_default_drop {
                notes.push(format!(
                    "NFT_DEFAULT_DROP is N in {}: once confirmed, set NFT_DEFAULT_DROP Y there, or posternd removes this policy with its table when it stops",
                    server.file.display()
                ));
            }
            Ok(Planned::Apply(Plan {
                backend,
                accepts: accepts_text(v6, &ports),
                step1: vec![Change::Nft {
                    nft: n.nft.clone(),
                    script: step1,
                }],
                step2: vec![Change::Nft {
                    nft: n.nft.clone(),
                    script: step2,
                }],
                saved: Saved::Nftables {
                    nft: n.nft.clone(),
                    family: fam.into(),
                    table: n.table.clone(),
                    chain: None,
                    had_table: nft_has_table(&n.nft, fam, &n.table)?,
                },
                notes,
            }))
        }
        Some(chain) => {
            let backend = format!(
                "nftables, the existing chain '{fam} {} {chain}' ({why})",
                n.table
            );
            let Some(info) = nft_chain(&n.nft, fam, &n.table, &chain)? else {
                return Err(SetupError::Config(format!(
                    "NFT_TABLE/NFT_CHAIN: there is no chain '{fam} {} {chain}'",
                    n.table
                )));
            };
            if info.hook.as_deref() != Some("input") {
                return Err(SetupError::Unsupported(format!(
                    "the chain '{fam} {} {chain}' is not an input base chain: it has no policy for setup to set; give your input base chain the drop policy yourself",
                    n.table
                )));
            }
            if info.policy.as_deref() == Some("drop") {
                return Ok(Planned::InPlace(format!(
                    "the default-drop policy is already in place: {backend}; nothing to do"
                )));
            }
            let rules = nft_accepts(v6, &ports);
            let t = &n.table;
            let step1: String = rules
                .iter()
                .rev()
                .map(|r| format!("insert rule {fam} {t} {chain} {r} comment \"{COMMENT}\"\n"))
                .collect();
            let step2 = format!(
                "add chain {fam} {t} {chain} {{ type {} hook input priority {}; policy drop; }}\n",
                info.kind.as_deref().unwrap_or("filter"),
                info.prio
            );
            Ok(Planned::Apply(Plan {
                backend,
                accepts: accepts_text(v6, &ports),
                step1: vec![Change::Nft {
                    nft: n.nft.clone(),
                    script: step1,
                }],
                step2: vec![Change::Nft {
                    nft: n.nft.clone(),
                    script: step2,
                }],
                saved: Saved::Nftables {
                    nft: n.nft.clone(),
                    family: fam.into(),
                    table: t.clone(),
                    chain: Some(chain),
                    had_table: true,
                },
                notes: Vec::new(),
            }))
        }
    }
}

/// The accept rules (nft syntax) of the default-drop policy, in order.
fn nft_accepts(v6: bool, ports: &[(Protocol, u16)]) -> Vec<String> {
    let mut r = vec![
        "ct state established,related accept".to_owned(),
        "iif lo accept".to_owned(),
    ];
    if v6 {
        r.push("meta l4proto ipv6-icmp icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit, nd-router-advert } accept".into());
    }
    for (proto, p) in ports {
        r.push(format!("{} dport {p} accept", proto.name()));
    }
    r
}

/// The accept rules (iptables syntax) of the default-drop policy, in order.
fn ipt_accepts(v6: bool, ports: &[(Protocol, u16)]) -> Vec<Vec<String>> {
    let mut r: Vec<String> = vec![
        "-m conntrack --ctstate RELATED,ESTABLISHED".into(),
        "-i lo".into(),
    ];
    if v6 {
        for t in [133, 134, 135, 136] {
            r.push(format!("-p ipv6-icmp -m icmp6 --icmpv6-type {t}"));
        }
    }
    for (proto, p) in ports {
        let n = proto.name();
        r.push(format!("-p {n} -m {n} --dport {p}"));
    }
    r.into_iter()
        .map(|m| {
            let mut v: Vec<String> = m.split(' ').map(str::to_owned).collect();
            v.extend(
                ["-m", "comment", "--comment", COMMENT, "-j", "ACCEPT"]
                    .iter()
                    .map(|s| (*s).to_owned()),
            );
            v
        })
        .collect()
}

/// `iptables-nft` → `iptables-nft-save` (next to it).
fn sibling(tool: &Path, suffix: &str) -> PathBuf {
    let name = tool
        .file_name()
        .map_or_else(|| "iptables".into(), |n| n.to_string_lossy().into_owned());
    tool.with_file_name(format!("{name}-{suffix}"))
}

fn plan_ipt(server: &ServerConfig, i: &IptConfig, why: &str) -> Result<Planned, SetupError> {
    if i.input.table != "filter" || i.input.from_chain != "INPUT" {
        return Err(SetupError::Unsupported(format!(
            "IPT_INPUT_ACCESS jumps to {} from '{} {}': posternd setup sets the policy of the filter table's INPUT chain only, which would not pass through posternd's chain",
            i.input.to_chain, i.input.table, i.input.from_chain
        )));
    }
    let ports = server.listening_ports();
    let mut families = Vec::new();
    let (mut step1, mut step2, mut saved) = (Vec::new(), Vec::new(), Vec::new());
    let mut v6_any = false;
    for v6 in [false, true] {
        if v6 && !i.ipv6 {
            continue;
        }
        let prog = if v6 { &i.ip6tables } else { &i.iptables };
        let rules = tool(prog, &["-w", "-t", "filter", "-S", "INPUT"], None)?;
        if rules.lines().any(|l| l.trim() == "-P INPUT DROP") {
            continue;
        }
        if tool(
            prog,
            &["-w", "-t", "filter", "-C", "INPUT", "-j", &i.input.to_chain],
            None,
        )
        .is_err()
        {
            return Err(SetupError::NotRunning(format!(
                "{}: INPUT does not jump to posternd's chain {}: start posternd with this configuration first, or only loopback and established connections would get in",
                prog.display(),
                i.input.to_chain
            )));
        }
        let mut input = String::from("*filter\n");
        for r in ipt_accepts(v6, &ports).iter().rev() {
            let mut check = vec!["-w", "-t", "filter", "-C", "INPUT"];
            check.extend(r.iter().map(String::as_str));
            if tool(prog, &check, None).is_ok() {
                continue;
            }
            input.push_str(&format!("-I INPUT 1 {}\n", r.join(" ")));
        }
        input.push_str("COMMIT\n");
        step1.push(Change::IptRestore {
            restore: sibling(prog, "restore"),
            input,
        });
        step2.push(Change::Argv {
            program: prog.clone(),
            args: ["-w", "-t", "filter", "-P", "INPUT", "DROP"]
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
        });
        saved.push(IptSaved {
            family: if v6 { "ipv6" } else { "ipv4" }.into(),
            save: sibling(prog, "save"),
            restore: sibling(prog, "restore"),
        });
        families.push(prog.display().to_string());
        v6_any |= v6;
    }
    let fw = postern_fw::iptables::Iptables::new(i.clone())
        .map(|f| postern_fw::Firewall::describe(&f))
        .unwrap_or_else(|_| "iptables".into());
    let backend = format!("{fw} ({why})");
    if families.is_empty() {
        return Ok(Planned::InPlace(format!(
            "the default-drop policy is already in place (INPUT policy DROP): {backend}; nothing to do"
        )));
    }
    Ok(Planned::Apply(Plan {
        backend,
        accepts: format!(
            "{} in {}",
            accepts_text(v6_any, &ports),
            families.join(" and ")
        ),
        step1,
        step2,
        saved: Saved::Iptables { families: saved },
        notes: vec![
            "iptables rules do not survive a reboot by themselves: once confirmed, save them the way this host does (netfilter-persistent save, or iptables-save > /etc/iptables/rules.v4 and ip6tables-save > /etc/iptables/rules.v6)".into(),
        ],
    }))
}

// ---------------------------------------------------------------------------------
// Tools.

fn tool(prog: &Path, args: &[&str], input: Option<&str>) -> Result<String, SetupError> {
    let mut cmd = Command::new(prog);
    cmd.args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
    let mut child = cmd
        .spawn()
        .map_err(|e| SetupError::Firewall(format!("cannot run {}: {e}", prog.display())))?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        let _ = stdin.write_all(text.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| SetupError::Firewall(format!("{}: {e}", prog.display())))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let first: Vec<&str> = err
            .lines()
            .filter(|l| !l.trim().is_empty())
            .take(3)
            .collect();
        return Err(SetupError::Firewall(format!(
            "{} {} refused: {}",
            prog.display(),
            args.join(" "),
            first.join(" | ")
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// An nftables chain as `nft -j` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ChainInfo {
    kind: Option<String>,
    hook: Option<String>,
    prio: i64,
    policy: Option<String>,
}

fn nft_has_table(nft: &Path, fam: &str, table: &str) -> Result<bool, SetupError> {
    let json = tool(nft, &["-j", "list", "tables"], None)?;
    let v: serde_json::Value = serde_json::from_str(&json).unwrap_or_default();
    Ok(v["nftables"].as_array().into_iter().flatten().any(|i| {
        i["table"]["family"].as_str() == Some(fam) && i["table"]["name"].as_str() == Some(table)
    }))
}

fn nft_chain(
    nft: &Path,
    fam: &str,
    table: &str,
    chain: &str,
) -> Result<Option<ChainInfo>, SetupError> {
    if !nft_has_table(nft, fam, table)? {
        return Ok(None);
    }
    let json = tool(nft, &["-j", "list", "chains", fam], None)?;
    let v: serde_json::Value = serde_json::from_str(&json).unwrap_or_default();
    Ok(v["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|i| {
            let c = i.get("chain")?;
            (c["table"].as_str() == Some(table) && c["name"].as_str() == Some(chain)).then(|| {
                ChainInfo {
                    kind: c["type"].as_str().map(str::to_owned),
                    hook: c["hook"].as_str().map(str::to_owned),
                    prio: c["prio"].as_i64().unwrap_or(0),
                    policy: c["policy"].as_str().map(str::to_owned),
                }
            })
        }))
}

/// A top-level block of `nft list table` output: `chain NAME { ... }`, `set NAME {...}`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Block {
    kind: String,
    name: String,
    /// Its lines, from `\tchain NAME {` to `\t}`, each ending in a newline.
    text: String,
}

/// The blocks of one table's listing, in order.
fn blocks(listing: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut cur: Option<Block> = None;
    for line in listing.lines() {
        if let Some(b) = cur.as_mut() {
            b.text.push_str(line);
            b.text.push('\n');
            if line == "\t}" {
                out.extend(cur.take());
            }
            continue;
        }
        let Some(head) = line.strip_prefix('\t') else {
            continue;
        };
        if head.starts_with('\t') || !head.ends_with(" {") {
            continue;
        }
        let words: Vec<&str> = head.split_whitespace().collect();
        if let [kind, name, "{"] = words.as_slice() {
            cur = Some(Block {
                kind: (*kind).to_owned(),
                name: name.trim_matches('"').to_owned(),
                text: format!("{line}\n"),
            });
        }
    }
    out
}

/// A set or map block without its elements (a rollback never puts grants back).
fn without_elements(block: &str) -> String {
    let mut out = String::new();
    let mut skipping = false;
    for line in block.lines() {
        if !skipping && line.trim_start().starts_with("elements = {") {
            skipping = !line.trim_end().ends_with('}');
            continue;
        }
        if skipping {
            skipping = !line.trim_end().ends_with('}');
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// The nft script that puts back what setup changed in table `fam table`: `saved` and
/// `current` are `nft list table` outputs (`None`: no such table). With `only`, that
/// chain alone; else every chain of the table, and chains and sets that were not there
/// are deleted. Set elements (grants) are never touched.
fn nft_restore_script(
    fam: &str,
    table: &str,
    saved: Option<&str>,
    current: Option<&str>,
    only: Option<&str>,
) -> String {
    let Some(saved) = saved else {
        return match current {
            Some(_) => format!("delete table {fam} {table}\n"),
            None => String::new(),
        };
    };
    let saved_blocks = blocks(saved);
    let now_blocks = current.map(blocks).unwrap_or_default();
    let exists =
        |kind: &str, name: &str| now_blocks.iter().any(|b| b.kind == kind && b.name == name);
    let was = |kind: &str, name: &str| {
        saved_blocks
            .iter()
            .any(|b| b.kind == kind && b.name == name)
    };
    let mut s = String::new();
    if current.is_none() {
        s.push_str(&format!("add table {fam} {table}\n"));
    }
    let mut body = String::new();
    for b in &saved_blocks {
        let wanted = match only {
            Some(c) => b.kind == "chain" && b.name == c,
            None => true,
        };
        if !wanted {
            continue;
        }
        match b.kind.as_str() {
            "chain" => {
                if exists("chain", &b.name) {
                    s.push_str(&format!("flush chain {fam} {table} {}\n", b.name));
                }
                body.push_str(&b.text);
            }
            // Sets and maps only if they are gone (without elements).
            kind if !exists(kind, &b.name) => body.push_str(&without_elements(&b.text)),
            _ => {}
        }
    }
    if !body.is_empty() {
        s.push_str(&format!("table {fam} {table} {{\n{body}}}\n"));
    }
    if only.is_none() {
        // Chains first (their rules may name sets), then sets and maps.
        for b in now_blocks.iter().filter(|b| b.kind == "chain") {
            if !was("chain", &b.name) {
                s.push_str(&format!("delete chain {fam} {table} {}\n", b.name));
            }
        }
        for b in now_blocks
            .iter()
            .filter(|b| b.kind == "set" || b.kind == "map")
        {
            if !was(&b.kind, &b.name) {
                s.push_str(&format!("delete {} {fam} {table} {}\n", b.kind, b.name));
            }
        }
    }
    s
}

fn nft_table_listing(nft: &Path, fam: &str, table: &str) -> Result<Option<String>, SetupError> {
    if !nft_has_table(nft, fam, table)? {
        return Ok(None);
    }
    tool(nft, &["list", "table", fam, table], None).map(Some)
}

/// iptables-save output without its timestamps and counters.
fn ipt_normal(text: &str) -> String {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            if l.starts_with(':') {
                match l.rfind(" [") {
                    Some(i) => format!("{} [0:0]\n", &l[..i]),
                    None => format!("{l}\n"),
                }
            } else {
                format!("{l}\n")
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------
// The setup directory.

const STATE: &str = "state.json";
const SOCKET: &str = "guardian.sock";
const PID: &str = "guardian.pid";
const LOG: &str = "guardian.log";
const RULESET: &str = "before.ruleset";
const TABLE: &str = "before-table.nft";

fn ipt_file(family: &str) -> String {
    format!("before-{family}.rules")
}

fn write_private(path: &Path, text: &str, exclusive: bool) -> Result<(), SetupError> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).mode(0o600);
    if exclusive {
        o.create_new(true);
    } else {
        o.create(true).truncate(true);
    }
    let mut f = o
        .open(path)
        .map_err(|e| SetupError::State(format!("cannot write {}: {e}", path.display())))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| SetupError::State(format!("cannot write {}: {e}", path.display())))
}

fn read_state(dir: &Path) -> Option<State> {
    let text = std::fs::read_to_string(dir.join(STATE)).ok()?;
    serde_json::from_str(&text).ok()
}

/// Remove the pending state (the log stays).
fn clear(dir: &Path) {
    for f in [STATE, SOCKET, PID, RULESET, TABLE] {
        let _ = std::fs::remove_file(dir.join(f));
    }
    for fam in ["ipv4", "ipv6"] {
        let _ = std::fs::remove_file(dir.join(ipt_file(fam)));
    }
}

/// Ask the guardian something; `None` when no guardian answers.
fn ask_guardian(dir: &Path, what: &str) -> Option<String> {
    let mut s = UnixStream::connect(dir.join(SOCKET)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    s.write_all(format!("{what}\n").as_bytes()).ok()?;
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out.trim().to_owned())
}

/// The last line the guardian logged, for "nothing pending" messages.
fn last_outcome(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join(LOG)).ok()?;
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(str::to_owned)
}

/// Save what `saved` names into `dir` (0600 files).
fn save(dir: &Path, saved: &Saved) -> Result<String, SetupError> {
    match saved {
        Saved::Nftables {
            nft,
            family,
            table,
            had_table,
            ..
        } => {
            let all = tool(nft, &["list", "ruleset"], None)?;
            write_private(&dir.join(RULESET), &all, false)?;
            if *had_table {
                let t = tool(nft, &["list", "table", family, table], None)?;
                write_private(&dir.join(TABLE), &t, false)?;
            }
            Ok(format!(
                "saved the current ruleset to {} (0600)",
                dir.join(RULESET).display()
            ))
        }
        Saved::Iptables { families } => {
            let mut names = Vec::new();
            for f in families {
                let text = tool(&f.save, &["-t", "filter"], None)?;
                let p = dir.join(ipt_file(&f.family));
                write_private(&p, &text, false)?;
                names.push(p.display().to_string());
            }
            Ok(format!(
                "saved the current filter table to {} (0600)",
                names.join(" and ")
            ))
        }
    }
}

/// Put back what was saved; one line saying what was restored.
fn restore(dir: &Path, saved: &Saved) -> Result<String, SetupError> {
    match saved {
        Saved::Nftables {
            nft,
            family,
            table,
            chain,
            had_table,
        } => {
            let before = if *had_table {
                Some(std::fs::read_to_string(dir.join(TABLE)).map_err(|e| {
                    SetupError::State(format!("cannot read {}: {e}", dir.join(TABLE).display()))
                })?)
            } else {
                None
            };
            let now = nft_table_listing(nft, family, table)?;
            let script = nft_restore_script(
                family,
                table,
                before.as_deref(),
                now.as_deref(),
                chain.as_deref(),
            );
            if !script.is_empty() {
                tool(nft, &["-f", "-"], Some(&script))?;
            }
            let after = nft_table_listing(nft, family, table)?;
            let what = match (chain, had_table) {
                (Some(c), _) => format!("the chain '{family} {table} {c}'"),
                (None, true) => format!("the chains of table '{family} {table}'"),
                (None, false) => format!("table '{family} {table}' (deleted: it was not there)"),
            };
            let pick = |t: Option<&str>| -> Vec<Block> {
                t.map(blocks)
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|b| b.kind == "chain" && chain.as_ref().is_none_or(|c| *c == b.name))
                    .collect()
            };
            if pick(before.as_deref()) == pick(after.as_deref()) {
                Ok(format!("{what} restored exactly as saved"))
            } else {
                Err(SetupError::Firewall(format!(
                    "{what}: restored, but it differs from the copy saved in {}",
                    dir.join(TABLE).display()
                )))
            }
        }
        Saved::Iptables { families } => {
            let mut done = Vec::new();
            for f in families {
                let p = dir.join(ipt_file(&f.family));
                let text = std::fs::read_to_string(&p)
                    .map_err(|e| SetupError::State(format!("cannot read {}: {e}", p.display())))?;
                tool(&f.restore, &["-w"], Some(&text))?;
                let now = tool(&f.save, &["-t", "filter"], None)?;
                if ipt_normal(&now) != ipt_normal(&text) {
                    return Err(SetupError::Firewall(format!(
                        "{}: restored, but it differs from the copy saved in {}",
                        f.restore.display(),
                        p.display()
                    )));
                }
                done.push(f.family.clone());
            }
            Ok(format!(
                "the filter table ({}) restored exactly as saved",
                done.join(", ")
            ))
        }
    }
}

// ---------------------------------------------------------------------------------
// posternd setup.

fn apply(a: &SetupArgs) -> Result<(), SetupError> {
    let p = place(a, true)?;
    // One pending setup at a time.
    if !a.dry_run {
        if let Some(answer) = ask_guardian(&p.dir, "status") {
            return Err(SetupError::Pending(format!(
                "a setup is already pending ({answer}): confirm it with `posternd setup --confirm{f}` or undo it with `posternd setup --rollback{f}`",
                f = p.flags
            )));
        }
        if p.dir.join(STATE).exists() {
            return Err(SetupError::Pending(format!(
                "a setup was left unfinished (its guardian is gone; state in {}): undo it with `posternd setup --rollback{f}`, or keep it with `posternd setup --confirm{f}`",
                p.dir.display(),
                f = p.flags
            )));
        }
    }
    let plan = match plan(p.server()?)? {
        Planned::InPlace(m) => {
            say(&m);
            return Ok(());
        }
        Planned::Apply(plan) => plan,
    };
    say(&format!("firewall: {}", plan.backend));
    if a.dry_run {
        say("dry run: nothing is changed; setup would apply, in two steps:");
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "# step 1: accept {} (the policy stays as it is)",
            plan.accepts
        );
        for c in &plan.step1 {
            let _ = write!(out, "{}", c.show());
        }
        let _ = writeln!(out, "# step 2: the default-drop policy");
        for c in &plan.step2 {
            let _ = write!(out, "{}", c.show());
        }
        return Ok(());
    }
    // Nobody could knock in to confirm without a running posternd.
    crate::control::request(&p.socket, "ping").map_err(|e| {
        SetupError::NotRunning(format!(
            "posternd does not answer at {} ({e}): start it first; with the policy in place only a knock lets a new connection in, and confirming needs one",
            p.socket.display()
        ))
    })?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&p.dir)
        .and_then(|()| std::fs::set_permissions(&p.dir, std::fs::Permissions::from_mode(0o700)))
        .map_err(|e| SetupError::State(format!("cannot create {}: {e}", p.dir.display())))?;
    let state = State {
        within: a.confirm_within,
        saved: plan.saved.clone(),
        config_file: p.server()?.file.display().to_string(),
    };
    let json = serde_json::to_string_pretty(&state).unwrap_or_default();
    // Created exclusively: two setups started at once cannot both go on.
    write_private(&p.dir.join(STATE), &json, true).map_err(|_| {
        SetupError::Pending(format!(
            "another setup is starting (state in {}): wait for it, or undo it with `posternd setup --rollback{}`",
            p.dir.display(),
            p.flags
        ))
    })?;
    let saved_line = match save(&p.dir, &plan.saved) {
        Ok(l) => l,
        Err(e) => {
            clear(&p.dir);
            return Err(e);
        }
    };
    say(&saved_line);
    let _ = std::fs::remove_file(p.dir.join(LOG));
    let pid = match start_guardian(&p.dir) {
        Ok(pid) => pid,
        Err(e) => {
            clear(&p.dir);
            return Err(e);
        }
    };
    say(&format!(
        "guardian started (pid {pid}, in its own session): unless confirmed, it restores the saved state {} s after the policy is in place",
        a.confirm_within
    ));
    let undo = |why: SetupError| -> SetupError {
        let outcome = ask_guardian(&p.dir, "rollback").unwrap_or_else(|| {
            if !p.dir.join(STATE).exists() {
                return last_outcome(&p.dir)
                    .unwrap_or_else(|| "the guardian has already rolled back".into());
            }
            match restore(&p.dir, &plan.saved) {
                Ok(l) => {
                    clear(&p.dir);
                    format!("rolled back: {l}")
                }
                Err(e) => format!("ROLLBACK FAILED: {e}"),
            }
        });
        say(&outcome);
        why
    };
    for c in &plan.step1 {
        if let Err(e) = c.run() {
            return Err(undo(e));
        }
    }
    say(&format!(
        "step 1/2: accepting {}; the policy is unchanged",
        plan.accepts
    ));
    if let Err(e) = settle() {
        return Err(undo(e));
    }
    // The guardian's clock restarts now, for the whole --confirm-within; a guardian
    // that does not answer has already rolled back, and then step 2 never happens.
    let left = match ask_guardian(&p.dir, "arm") {
        Some(a) if a.starts_with("armed ") => a.trim_start_matches("armed ").to_owned(),
        other => {
            return Err(undo(SetupError::Guardian(format!(
                "the guardian did not take the policy ({}); the policy is not applied",
                other.unwrap_or_else(|| "it has already rolled back".into())
            ))))
        }
    };
    for c in &plan.step2 {
        if let Err(e) = c.run() {
            return Err(undo(e));
        }
    }
    say("step 2/2: default-drop input policy in place: posternd's grants are now the only way in");
    say(&format!(
        "to keep it: knock, open a NEW connection through the grant, and run there `posternd setup --confirm{}` within {left} s; otherwise everything is rolled back",
        p.flags
    ));
    say(&format!(
        "to undo it now: posternd setup --rollback{}",
        p.flags
    ));
    for n in &plan.notes {
        say(&format!("note: {n}"));
    }
    Ok(())
}

/// The caller's connection, from `SSH_CONNECTION` (`client port server port`).
fn ssh_connection(v: &str) -> Option<(SocketAddr, SocketAddr)> {
    let f: Vec<&str> = v.split_whitespace().collect();
    let [c, cp, s, sp] = f.as_slice() else {
        return None;
    };
    let ip = |t: &str| t.parse::<IpAddr>().ok().map(|a| a.to_canonical());
    Some((
        SocketAddr::new(ip(c)?, cp.parse().ok()?),
        SocketAddr::new(ip(s)?, sp.parse().ok()?),
    ))
}

/// Between the steps: conntrack must know the session this command runs in, or the
/// policy would cut it.
fn settle() -> Result<(), SetupError> {
    let session = std::env::var("SSH_CONNECTION")
        .ok()
        .and_then(|v| ssh_connection(&v));
    let Some((client, server)) = session else {
        say("not over SSH (no SSH_CONNECTION): no session to check; letting conntrack see the open connections for 1 s");
        std::thread::sleep(Duration::from_secs(1));
        return Ok(());
    };
    let start = Instant::now();
    loop {
        match conntrack::seen_reply(client, server) {
            Ok(true) => {
                say(&format!(
                    "your session {client} -> {server} is known to conntrack: it stays open"
                ));
                return Ok(());
            }
            Ok(false) if start.elapsed() < SESSION_WAIT => {
                std::thread::sleep(Duration::from_millis(200));
            }
            Ok(false) => {
                return Err(SetupError::Session(format!(
                    "conntrack has not seen your session {client} -> {server} (SSH_CONNECTION) within {} s: the drop policy would cut it, so it is not applied",
                    SESSION_WAIT.as_secs()
                )));
            }
            Err(e) => {
                say(&format!(
                    "cannot ask conntrack about your session ({e}): not checked; the guardian still rolls back"
                ));
                return Ok(());
            }
        }
    }
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|f| f.is_file())
    })
}

/// Start the guardian for `dir` and wait until it answers. Its pid.
fn start_guardian(dir: &Path) -> Result<u32, SetupError> {
    let exe = std::env::current_exe()
        .map_err(|e| SetupError::Guardian(format!("cannot find my own executable: {e}")))?;
    let log = |_: ()| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(dir.join(LOG))
    };
    let args = [
        "setup".to_owned(),
        "--guardian-internal".to_owned(),
        dir.display().to_string(),
    ];
    // Under systemd, a scope of its own: a logind that kills the session's processes
    // (KillUserProcesses=yes) does not reach it. Elsewhere (namespaces, containers) a
    // new session is enough.
    let systemd = Path::new("/run/systemd/system").is_dir();
    let mut tries: Vec<Command> = Vec::new();
    if let (true, Some(run)) = (systemd, which("systemd-run")) {
        let mut c = Command::new(run);
        c.args([
            "--scope",
            "--quiet",
            "--collect",
            &format!("--unit=posternd-setup-guardian-{}", std::process::id()),
            "--",
        ])
        .arg(&exe)
        .args(&args);
        tries.push(c);
    }
    let mut plain = Command::new(&exe);
    plain.args(&args);
    tries.push(plain);
    let mut last = String::new();
    for mut c in tries {
        let out = log(()).map_err(|e| SetupError::Guardian(format!("{}: {e}", LOG)))?;
        let err = out
            .try_clone()
            .map_err(|e| SetupError::Guardian(e.to_string()))?;
        c.stdin(Stdio::null()).stdout(out).stderr(err);
        let mut child = match c.spawn() {
            Ok(ch) => ch,
            Err(e) => {
                last = format!("cannot start it: {e}");
                continue;
            }
        };
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(st)) = child.try_wait() {
                last = format!("it exited at once ({st}); see {}", dir.join(LOG).display());
                break;
            }
            if ask_guardian(dir, "status").is_some() {
                return Ok(child.id());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        if last.is_empty() {
            last = "it did not answer within 10 s".into();
        }
    }
    Err(SetupError::Guardian(format!("{last}; nothing was changed")))
}

// ---------------------------------------------------------------------------------
// posternd setup --confirm / --rollback.

/// The grants the kernel holds for `who`, as `proto/port` strings.
fn grants_of(p: &Place, who: IpAddr) -> Result<Vec<String>, SetupError> {
    let who = who.to_canonical();
    let held: Vec<(IpAddr, String)> = match crate::control::request(&p.socket, "status-json") {
        Ok(text) => {
            let v: serde_json::Value = serde_json::from_str(&text).map_err(|_| {
                SetupError::NotRunning(format!(
                    "posternd at {} did not answer with its status: {}",
                    p.socket.display(),
                    text.trim()
                ))
            })?;
            let list = match &v["kernel"] {
                serde_json::Value::Array(a) => a.clone(),
                _ => v["active"].as_array().cloned().unwrap_or_default(),
            };
            list.iter()
                .filter_map(|g| {
                    let ip = g["source"].as_str()?.parse::<IpAddr>().ok()?;
                    Some((
                        ip.to_canonical(),
                        format!(
                            "{}/{}",
                            g["proto"].as_str().unwrap_or("?"),
                            g["port"].as_u64().unwrap_or(0)
                        ),
                    ))
                })
                .collect()
        }
        Err(e) => {
            say(&format!(
                "posternd does not answer at {} ({e}): reading the grants from the firewall itself",
                p.socket.display()
            ));
            let (cfg, _) = crate::firewall::choose(p.server()?);
            let mut fw = postern_fw::open(&cfg).map_err(|e| SetupError::Firewall(e.to_string()))?;
            fw.list()
                .map_err(|e| SetupError::Firewall(e.to_string()))?
                .into_iter()
                .map(|h| {
                    (
                        h.source.to_canonical(),
                        format!("{}/{}", h.proto.name(), h.port),
                    )
                })
                .collect()
        }
    };
    Ok(held
        .into_iter()
        .filter(|(ip, _)| *ip == who)
        .map(|(_, g)| g)
        .collect())
}

fn confirm(a: &SetupArgs) -> Result<(), SetupError> {
    let p = place(a, false)?;
    let pending = ask_guardian(&p.dir, "status");
    if pending.is_none() && !p.dir.join(STATE).exists() {
        return Err(SetupError::NothingPending(format!(
            "nothing to confirm: no setup is pending{}",
            last_outcome(&p.dir)
                .map(|l| format!(" (the last one: {l})"))
                .unwrap_or_default()
        )));
    }
    let who = match a.from {
        Some(ip) => ip,
        None => std::env::var("SSH_CONNECTION")
            .ok()
            .and_then(|v| ssh_connection(&v))
            .map(|(c, _)| c.ip())
            .ok_or_else(|| {
                SetupError::NoGrant(
                    "cannot tell where this connection comes from (no SSH_CONNECTION): give --from ADDR, the address you knocked from".into(),
                )
            })?,
    };
    let grants = grants_of(&p, who)?;
    if grants.is_empty() {
        return Err(SetupError::NoGrant(format!(
            "not confirmed: {who} holds no grant in posternd, so this is not a connection that came in through a knock; knock, connect anew through the grant and confirm from there{}",
            pending
                .as_deref()
                .map(|s| format!(" ({s})"))
                .unwrap_or_default()
        )));
    }
    say(&format!(
        "{who} holds a grant ({}): knocking works",
        grants.join(", ")
    ));
    match ask_guardian(&p.dir, "confirm") {
        Some(answer) if answer == "kept" => {
            say("confirmed: the default-drop policy stays");
        }
        Some(answer) => {
            return Err(SetupError::Guardian(format!("not confirmed: {answer}")));
        }
        None => {
            // The guardian is gone (killed): nothing would roll back anyway.
            clear(&p.dir);
            say("confirmed: the default-drop policy stays (the guardian had already gone; its saved state is removed)");
        }
    }
    Ok(())
}

fn rollback(a: &SetupArgs) -> Result<(), SetupError> {
    let p = place(a, false)?;
    if let Some(answer) = ask_guardian(&p.dir, "rollback") {
        say(&answer);
        return if answer.starts_with("rolled back") {
            Ok(())
        } else {
            Err(SetupError::Firewall(answer))
        };
    }
    let Some(state) = read_state(&p.dir) else {
        return Err(SetupError::NothingPending(format!(
            "nothing to roll back: no setup is pending{}",
            last_outcome(&p.dir)
                .map(|l| format!(" (the last one: {l})"))
                .unwrap_or_default()
        )));
    };
    let line = restore(&p.dir, &state.saved)?;
    clear(&p.dir);
    say(&format!("rolled back (the guardian was gone): {line}"));
    Ok(())
}

// ---------------------------------------------------------------------------------
// The guardian.

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// One line in DIR/guardian.log (its standard output) and in the system log.
fn note(syslog: bool, msg: &str) {
    println!("{} {}", unix_now(), crate::log::clean(msg));
    let _ = std::io::stdout().flush();
    if syslog {
        crate::log::info(&format!("setup guardian: {msg}"));
    }
}

/// Restore, a few times if the firewall refuses; the line to log.
fn guarded_restore(dir: &Path, saved: &Saved) -> Result<String, String> {
    let mut last = String::new();
    for _ in 0..3 {
        match restore(dir, saved) {
            Ok(l) => {
                clear(dir);
                return Ok(l);
            }
            Err(e) => {
                last = e.to_string();
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
    Err(last)
}

fn guardian(dir: &Path) -> ExitCode {
    // Out of the admin's session and process group: a hang-up there is not ours.
    let _ = nix::unistd::setsid();
    let _ = std::env::set_current_dir("/");
    let syslog = Path::new("/dev/log").exists();
    if syslog {
        crate::log::init(false);
    }
    let stop = Arc::new(AtomicBool::new(false));
    for s in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        let _ = signal_hook::flag::register(s, stop.clone());
    }
    let hangup = Arc::new(AtomicBool::new(false));
    let _ = signal_hook::flag::register(signal_hook::consts::SIGHUP, hangup);
    let Some(state) = read_state(dir) else {
        note(
            syslog,
            &format!("no setup state in {}: nothing to guard", dir.display()),
        );
        return ExitCode::from(1);
    };
    let sock = dir.join(SOCKET);
    let _ = std::fs::remove_file(&sock);
    let listener = match UnixListener::bind(&sock) {
        Ok(l) => l,
        Err(e) => {
            note(syslog, &format!("cannot listen on {}: {e}", sock.display()));
            return ExitCode::from(1);
        }
    };
    let _ = std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o600));
    let _ = listener.set_nonblocking(true);
    let _ = write_private(&dir.join(PID), &format!("{}\n", std::process::id()), false);
    let mut deadline = Instant::now() + Duration::from_secs(state.within);
    let mut armed = false;
    note(
        syslog,
        &format!(
            "pid {}: guarding; unless confirmed within {} s of the policy being applied (or of now, if setup stops before), it restores the state saved before setup",
            std::process::id(),
            state.within
        ),
    );
    let left = |d: Instant| d.saturating_duration_since(Instant::now()).as_secs();
    let finish = |why: &str| -> (String, ExitCode) {
        match guarded_restore(dir, &state.saved) {
            Ok(l) => {
                let line = format!("rolled back ({why}): {l}");
                note(syslog, &line);
                (line, ExitCode::SUCCESS)
            }
            Err(e) => {
                let line = format!(
                    "ROLLBACK FAILED ({why}): {e}; the saved state stays in {}: run posternd setup --rollback",
                    dir.display()
                );
                note(syslog, &line);
                (line, ExitCode::from(1))
            }
        }
    };
    loop {
        if stop.load(Ordering::Relaxed) {
            return finish("the guardian was told to stop").1;
        }
        if Instant::now() >= deadline {
            return finish(&format!("not confirmed within {} s", state.within)).1;
        }
        let mut conn = match listener.accept() {
            Ok((c, _)) => c,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            Err(_) => {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        let _ = conn.set_nonblocking(false);
        let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
        let mut line = String::new();
        if BufReader::new(&conn).take(64).read_line(&mut line).is_err() {
            continue;
        }
        let reply = |conn: &mut UnixStream, text: &str| {
            let _ = conn.write_all(format!("{text}\n").as_bytes());
        };
        match line.trim() {
            "status" => reply(
                &mut conn,
                &format!(
                    "pending: rolls back in {} s, policy {}",
                    left(deadline),
                    if armed { "applied" } else { "not yet applied" }
                ),
            ),
            "arm" if armed => reply(&mut conn, &format!("armed {}", left(deadline))),
            "arm" => {
                armed = true;
                deadline = Instant::now() + Duration::from_secs(state.within);
                note(
                    syslog,
                    &format!("the policy is being applied; {} s to confirm", state.within),
                );
                reply(&mut conn, &format!("armed {}", state.within));
            }
            "confirm" if !armed => reply(
                &mut conn,
                "setup has not finished applying the policy yet: confirm again in a moment",
            ),
            "confirm" => {
                clear(dir);
                note(
                    syslog,
                    &format!(
                        "confirmed with {} s left: the default-drop policy stays",
                        left(deadline)
                    ),
                );
                reply(&mut conn, "kept");
                return ExitCode::SUCCESS;
            }
            "rollback" => {
                let (line, code) = finish("asked to");
                reply(&mut conn, &line);
                return code;
            }
            other => reply(
                &mut conn,
                &format!("error: unknown request '{}'", crate::log::clean(other)),
            ),
        }
    }
}

/// Ask conntrack (ctnetlink) about one TCP connection.
mod conntrack {
    use std::net::{IpAddr, SocketAddr};
    use std::os::fd::AsRawFd as _;

    use nix::sys::socket::{
        bind, recv, send, setsockopt, socket, sockopt, AddressFamily, MsgFlags, NetlinkAddr,
        SockFlag, SockProtocol, SockType,
    };
    use nix::sys::time::TimeVal;

    const NFNL_SUBSYS_CTNETLINK: u16 = 1;
    const IPCTNL_MSG_CT_NEW: u16 = 0;
    const IPCTNL_MSG_CT_GET: u16 = 1;
    const NLMSG_ERROR: u16 = 2;
    const NLM_F_REQUEST: u16 = 1;
    const NLA_F_NESTED: u16 = 0x8000;
    const NLA_TYPE_MASK: u16 = 0x3fff;
    const CTA_TUPLE_ORIG: u16 = 1;
    const CTA_STATUS: u16 = 3;
    const CTA_TUPLE_IP: u16 = 1;
    const CTA_TUPLE_PROTO: u16 = 2;
    const CTA_IP_V4_SRC: u16 = 1;
    const CTA_IP_V4_DST: u16 = 2;
    const CTA_IP_V6_SRC: u16 = 3;
    const CTA_IP_V6_DST: u16 = 4;
    const CTA_PROTO_NUM: u16 = 1;
    const CTA_PROTO_SRC_PORT: u16 = 2;
    const CTA_PROTO_DST_PORT: u16 = 3;
    /// `IPS_SEEN_REPLY`: packets went both ways, so `ct state established` matches.
    const IPS_SEEN_REPLY: u32 = 1 << 1;
    const IPPROTO_TCP: u8 = 6;

    fn attr(buf: &mut Vec<u8>, ty: u16, data: &[u8]) {
        let len = u16::try_from(4 + data.len()).unwrap_or(u16::MAX);
        buf.extend_from_slice(&len.to_ne_bytes());
        buf.extend_from_slice(&ty.to_ne_bytes());
        buf.extend_from_slice(data);
        while buf.len() % 4 != 0 {
            buf.push(0);
        }
    }

    fn nested(ty: u16, inner: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        attr(&mut v, ty | NLA_F_NESTED, inner);
        v
    }

    fn ip_bytes(a: IpAddr) -> Vec<u8> {
        match a {
            IpAddr::V4(a) => a.octets().to_vec(),
            IpAddr::V6(a) => a.octets().to_vec(),
        }
    }

    /// The `IPCTNL_MSG_CT_GET` request for the TCP connection `client -> server`.
    pub(super) fn request(client: SocketAddr, server: SocketAddr, seq: u32) -> Vec<u8> {
        let v6 = client.is_ipv6();
        let (src, dst) = if v6 {
            (CTA_IP_V6_SRC, CTA_IP_V6_DST)
        } else {
            (CTA_IP_V4_SRC, CTA_IP_V4_DST)
        };
        let mut ip = Vec::new();
        attr(&mut ip, src, &ip_bytes(client.ip()));
        attr(&mut ip, dst, &ip_bytes(server.ip()));
        let mut proto = Vec::new();
        attr(&mut proto, CTA_PROTO_NUM, &[IPPROTO_TCP]);
        attr(&mut proto, CTA_PROTO_SRC_PORT, &client.port().to_be_bytes());
        attr(&mut proto, CTA_PROTO_DST_PORT, &server.port().to_be_bytes());
        let mut tuple = nested(CTA_TUPLE_IP, &ip);
        tuple.extend(nested(CTA_TUPLE_PROTO, &proto));
        let body = nested(CTA_TUPLE_ORIG, &tuple);
        let mut m = Vec::new();
        let len = u32::try_from(16 + 4 + body.len()).unwrap_or(u32::MAX);
        m.extend_from_slice(&len.to_ne_bytes());
        m.extend_from_slice(&(NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_GET).to_ne_bytes());
        m.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.push(if v6 { 10 } else { 2 });
        m.push(0);
        m.extend_from_slice(&0u16.to_be_bytes());
        m.extend_from_slice(&body);
        m
    }

    /// The answer: `Some(seen_reply)` for a conntrack entry, `None` for "no such
    /// entry", an error text for anything else.
    pub(super) fn answer(data: &[u8]) -> Result<Option<bool>, String> {
        let mut at = 0;
        while at + 20 <= data.len() {
            let word = |i: usize| [data[i], data[i + 1], data[i + 2], data[i + 3]];
            let len = u32::from_ne_bytes(word(at)) as usize;
            let ty = u16::from_ne_bytes([data[at + 4], data[at + 5]]);
            if len < 20 || at + len > data.len() {
                break;
            }
            if ty == NLMSG_ERROR {
                let errno = i32::from_ne_bytes(word(at + 16));
                if errno == 0 {
                    at += (len + 3) & !3;
                    continue;
                }
                if errno == -(nix::errno::Errno::ENOENT as i32) {
                    return Ok(None);
                }
                return Err(nix::errno::Errno::from_raw(-errno).desc().to_owned());
            }
            if ty == NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_NEW {
                let mut a = at + 20;
                while a + 4 <= at + len {
                    let alen = usize::from(u16::from_ne_bytes([data[a], data[a + 1]]));
                    let aty = u16::from_ne_bytes([data[a + 2], data[a + 3]]) & NLA_TYPE_MASK;
                    if alen < 4 || a + alen > at + len {
                        break;
                    }
                    if aty == CTA_STATUS && alen >= 8 {
                        let status = u32::from_be_bytes(word(a + 4));
                        return Ok(Some(status & IPS_SEEN_REPLY != 0));
                    }
                    a += (alen + 3) & !3;
                }
                return Ok(Some(false));
            }
            at += (len + 3) & !3;
        }
        Err("no answer".into())
    }

    /// Whether conntrack holds `client -> server` (TCP) with packets seen both ways.
    pub(super) fn seen_reply(client: SocketAddr, server: SocketAddr) -> Result<bool, String> {
        if client.is_ipv6() != server.is_ipv6() {
            return Err("mixed address families".into());
        }
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkNetFilter,
        )
        .map_err(|e| format!("netlink socket: {e}"))?;
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0)).map_err(|e| format!("netlink: {e}"))?;
        setsockopt(&fd, sockopt::ReceiveTimeout, &TimeVal::new(2, 0))
            .map_err(|e| format!("netlink: {e}"))?;
        send(
            fd.as_raw_fd(),
            &request(client, server, 1),
            MsgFlags::empty(),
        )
        .map_err(|e| format!("netlink: {e}"))?;
        let mut buf = vec![0u8; 16384];
        let n = recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty())
            .map_err(|e| format!("netlink: {e}"))?;
        Ok(answer(&buf[..n])?.unwrap_or(false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LISTING: &str = "table inet postern {\n\tset allow4 {\n\t\ttype ipv4_addr . inet_proto . inet_service\n\t\tflags timeout\n\t\telements = { 198.18.1.2 . tcp . 22 timeout 30s expires 20s,\n\t\t\t     198.18.1.3 . tcp . 22 timeout 30s expires 9s }\n\t}\n\n\tchain input {\n\t\ttype filter hook input priority filter; policy accept;\n\t\tip saddr . meta l4proto . th dport @allow4 accept\n\t}\n}\n";

    #[test]
    fn listing_blocks_are_found() {
        let b = blocks(LISTING);
        assert_eq!(b.len(), 2);
        assert_eq!((b[0].kind.as_str(), b[0].name.as_str()), ("set", "allow4"));
        assert_eq!((b[1].kind.as_str(), b[1].name.as_str()), ("chain", "input"));
        assert!(b[1].text.starts_with("\tchain input {\n"));
        assert!(b[1].text.ends_with("\t}\n"));
        let e = without_elements(&b[0].text);
        assert!(!e.contains("198.18"), "{e}");
        assert!(e.contains("flags timeout"));
    }

    #[test]
    fn restore_puts_back_chains_only_and_deletes_what_setup_made() {
        let now = LISTING.replace("\tchain input {", "\tchain extra {\n\t}\n\n\tchain input {");
        let s = nft_restore_script("inet", "postern", Some(LISTING), Some(&now), None);
        assert!(s.starts_with("flush chain inet postern input\n"), "{s}");
        assert!(s.contains("table inet postern {\n\tchain input {\n"));
        assert!(s.contains("delete chain inet postern extra\n"));
        assert!(
            !s.contains("elements"),
            "grants must never be put back: {s}"
        );
        // A table that was not there is deleted; one deleted meanwhile comes back
        // without its grants.
        assert_eq!(
            nft_restore_script("inet", "postern", None, Some(LISTING), None),
            "delete table inet postern\n"
        );
        let gone = nft_restore_script("inet", "postern", Some(LISTING), None, None);
        assert!(gone.starts_with("add table inet postern\n"));
        assert!(gone.contains("\tset allow4 {") && !gone.contains("198.18"));
        // An admin's chain: that chain alone.
        let only = nft_restore_script("inet", "postern", Some(LISTING), Some(&now), Some("input"));
        assert!(
            !only.contains("extra") && !only.contains("set allow4"),
            "{only}"
        );
    }

    #[test]
    fn iptables_save_is_compared_without_counters_and_stamps() {
        let a = "# Generated by iptables-save v1.8.9 on Mon\n*filter\n:INPUT DROP [12:3400]\n-A INPUT -i lo -j ACCEPT\nCOMMIT\n";
        let b = "# Generated by iptables-save v1.8.9 on Tue\n*filter\n:INPUT DROP [0:0]\n-A INPUT -i lo -j ACCEPT\nCOMMIT\n";
        assert_eq!(ipt_normal(a), ipt_normal(b));
        assert_ne!(ipt_normal(a), ipt_normal(&b.replace("DROP", "ACCEPT")));
        assert_eq!(
            sibling(Path::new("/usr/sbin/iptables-nft"), "save"),
            Path::new("/usr/sbin/iptables-nft-save")
        );
        assert_eq!(
            sibling(Path::new("iptables"), "restore"),
            Path::new("iptables-restore")
        );
    }

    #[test]
    fn accept_rules_come_in_the_guide_order() {
        let v4 = ipt_accepts(false, &[(Protocol::Udp, 62201), (Protocol::Tcp, 62201)]);
        assert_eq!(v4.len(), 4);
        assert!(v4[3].join(" ").starts_with("-p tcp -m tcp --dport 62201 "));
        assert_eq!(
            v4[0].join(" "),
            "-m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment postern-setup -j ACCEPT"
        );
        assert!(v4[2].join(" ").starts_with("-p udp -m udp --dport 62201 "));
        assert_eq!(ipt_accepts(true, &[]).len(), 6);
        assert!(nft_accepts(true, &[])[2].contains("nd-neighbor-solicit"));
    }

    #[test]
    fn ssh_connection_is_read() {
        let (c, s) = ssh_connection("198.18.1.2 50122 198.18.1.1 22").unwrap();
        assert_eq!(c, "198.18.1.2:50122".parse().unwrap());
        assert_eq!(s, "198.18.1.1:22".parse().unwrap());
        let (c, _) = ssh_connection("::ffff:198.18.1.2 1 ::ffff:198.18.1.1 22").unwrap();
        assert_eq!(c.ip(), "198.18.1.2".parse::<IpAddr>().unwrap());
        assert!(ssh_connection("198.18.1.2 x 198.18.1.1 22").is_none());
        assert!(ssh_connection("").is_none());
    }

    #[test]
    fn conntrack_request_and_answers() {
        let m = conntrack::request(
            "198.18.1.2:50122".parse().unwrap(),
            "198.18.1.1:22".parse().unwrap(),
            7,
        );
        assert_eq!(m.len() % 4, 0);
        assert_eq!(
            u32::from_ne_bytes(m[0..4].try_into().unwrap()) as usize,
            m.len()
        );
        assert_eq!(u16::from_ne_bytes([m[4], m[5]]), 0x101);
        assert!(m.windows(4).any(|w| w == [198, 18, 1, 2]));
        assert!(m.windows(2).any(|w| w == 50122u16.to_be_bytes()));
        // ENOENT: no such connection.
        let mut e = Vec::new();
        e.extend_from_slice(&36u32.to_ne_bytes());
        e.extend_from_slice(&2u16.to_ne_bytes());
        e.extend_from_slice(&[0; 10]);
        e.extend_from_slice(&(-2i32).to_ne_bytes());
        e.extend_from_slice(&[0; 16]);
        assert_eq!(conntrack::answer(&e), Ok(None));
        // An entry with IPS_SEEN_REPLY | IPS_ASSURED | IPS_CONFIRMED.
        let mut c = Vec::new();
        c.extend_from_slice(&28u32.to_ne_bytes());
        c.extend_from_slice(&0x100u16.to_ne_bytes());
        c.extend_from_slice(&[0; 10]);
        c.extend_from_slice(&[2, 0, 0, 0]);
        c.extend_from_slice(&8u16.to_ne_bytes());
        c.extend_from_slice(&3u16.to_ne_bytes());
        c.extend_from_slice(&0x0eu32.to_be_bytes());
        assert_eq!(conntrack::answer(&c), Ok(Some(true)));
        assert!(conntrack::answer(&c[..10]).is_err());
    }
}
