//! The running daemon: configuration, firewall, replay store and ledger, and the
//! handling of one datagram through the pipeline. No sockets here: `main.rs` feeds
//! datagrams in and asks for status.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use postern_capture::Datagram;
use postern_fw::Firewall;
use postern_proto::ReplayKey;

use crate::config::Config;
use crate::log;
use crate::pipeline::apply::{self, CommandResult};
use crate::pipeline::authorize::{authorize, Clock, Decision, Reason, Verdict};
use crate::pipeline::decode::decode;
use crate::pipeline::expire::Ledger;
use crate::replay::{Meta, ReplayStore};

/// Counters for `posternd status`.
#[derive(Debug, Default, Clone)]
pub struct Counters {
    /// Datagrams examined.
    pub examined: u64,
    /// Refusals by reason label.
    pub refused: BTreeMap<&'static str, u64>,
    /// Grants opened (per port).
    pub grants: u64,
    /// Commands run.
    pub commands: u64,
    /// Firewall errors.
    pub firewall_errors: u64,
    /// Datagrams lost before examination (full queue, socket drops).
    pub dropped: u64,
}

/// A packet that decrypted, with what the unprivileged half decided about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decided {
    /// Its replay key.
    pub key: ReplayKey,
    /// Where it came from and went to.
    pub meta: Meta,
    /// The decision.
    pub decision: Decision,
}

/// Result of [`Daemon::decide`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Finished (junk, replay, nothing decrypted).
    Done(Outcome),
    /// Decrypted: the privileged half must record and act.
    Decided(Box<Decided>),
}

/// The static counter label for a stage or refusal name reported by the worker.
pub fn junk_label(k: &str) -> &'static str {
    const KNOWN: [&str; 13] = [
        "size",
        "prefix",
        "base64",
        "classify",
        "hmac",
        "decrypt",
        "digest",
        "fields",
        "config",
        "encode",
        "replay",
        "replay_store",
        "replay_store_full",
    ];
    KNOWN.into_iter().find(|x| *x == k).unwrap_or("other")
}

/// The unprivileged worker, as the privileged part knows it.
#[derive(Debug, Clone, Default)]
pub struct WorkerInfo {
    /// Its pid.
    pub pid: u32,
    /// The user it runs as.
    pub user: String,
    /// Landlock status of the worker (filesystem access denied).
    pub landlock: String,
    /// Its last reported counters.
    pub counters: Counters,
}

/// What `handle` did, for callers and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Refused.
    Refused(String),
    /// Opened these grants (display form).
    Granted(Vec<String>),
    /// Started a command.
    Command(String),
    /// Ran a command cycle's open commands.
    Cycle(usize),
    /// Decided, but `--test` changes nothing.
    WouldAct(String),
}

/// The daemon state.
pub struct Daemon {
    /// Current configuration.
    pub config: Config,
    fw: Box<dyn Firewall>,
    replay: ReplayStore,
    ledger: Ledger,
    /// Counters.
    pub counters: Counters,
    /// Log every refusal, junk included (`-v`, `VERBOSE`).
    pub verbose: bool,
    test_mode: bool,
    junk: BTreeMap<&'static str, u64>,
    last_junk_log: Instant,
    started: u64,
    /// See [`Clock::not_before`].
    pub not_before: Option<u64>,
    /// The unprivileged worker, with privilege separation.
    pub worker: Option<WorkerInfo>,
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Daemon {
    /// Assemble (touches nothing).
    pub fn new(
        config: Config,
        fw: Box<dyn Firewall>,
        replay: ReplayStore,
        test_mode: bool,
    ) -> Daemon {
        Daemon {
            config,
            fw,
            replay,
            ledger: Ledger::default(),
            counters: Counters::default(),
            verbose: false,
            test_mode,
            junk: BTreeMap::new(),
            last_junk_log: Instant::now(),
            started: now_unix(),
            not_before: None,
            worker: None,
        }
    }

    /// Install the firewall base.
    pub fn setup_firewall(&mut self) -> Result<(), postern_fw::Error> {
        if self.test_mode {
            return Ok(());
        }
        self.fw.setup(self.config.server.flush_at_init)
    }

    /// The firewall's description.
    pub fn firewall(&self) -> String {
        if self.test_mode {
            "none (--test: no firewall changes)".into()
        } else {
            self.fw.describe()
        }
    }

    fn clock(&self, now: u64) -> Clock {
        let window = self.config.server.max_packet_age;
        Clock {
            now,
            aging: self.config.server.aging(),
            max_age: window,
            not_before: self.not_before.filter(|t| now <= t.saturating_add(window)),
        }
    }

    fn refuse(&mut self, label: &'static str) {
        *self.counters.refused.entry(label).or_insert(0) += 1;
    }

    fn count_junk(&mut self, label: &'static str) {
        self.refuse(label);
        *self.junk.entry(label).or_insert(0) += 1;
    }

    /// Run one datagram through the whole pipeline at time `now` (one process).
    pub fn handle(&mut self, d: &Datagram, now: u64) -> Outcome {
        match self.decide(d, now) {
            Step::Done(o) => o,
            Step::Decided(x) => self.apply_decided(*x, now),
        }
    }

    /// The unprivileged half: decode, replay check, authorize. Packets that never
    /// decrypted are finished here; the others come back as [`Decided`] for
    /// [`Daemon::apply_decided`] (in this process, or in the privileged one).
    pub fn decide(&mut self, d: &Datagram, now: u64) -> Step {
        self.counters.examined += 1;
        let src = apply::unmap(d.src.ip());
        let dst = apply::unmap(d.dst.ip());
        let packet = match decode(&d.payload) {
            Ok(p) => p,
            Err(e) => {
                let r = Reason::Junk(e);
                self.count_junk(r.label());
                if self.verbose {
                    log::info(&format!("{src}: refused: {r}"));
                }
                return Step::Done(Outcome::Refused(r.to_string()));
            }
        };
        let key = packet.replay_key();
        if self.replay.contains(&key) {
            self.count_junk("replay");
            if self.verbose {
                log::info(&format!("{src}: refused: {}", Reason::Replay));
            }
            return Step::Done(Outcome::Refused(Reason::Replay.to_string()));
        }
        let decision = authorize(&packet, src, dst, &self.config.stanzas, self.clock(now));
        if !decision.burn {
            return Step::Done(self.act(decision, src, now));
        }
        let meta = Meta {
            proto: 17,
            src: SocketAddr::new(src, d.src.port()),
            dst: SocketAddr::new(dst, d.dst.port()),
        };
        Step::Decided(Box::new(Decided {
            key,
            meta,
            decision,
        }))
    }

    /// Whether the replay store holds this key.
    pub fn knows(&self, key: &ReplayKey) -> bool {
        self.replay.contains(key)
    }

    /// Forget nothing: remember a digest the privileged part recorded (worker mirror).
    pub fn remember(&mut self, key: ReplayKey, meta: Meta, now: u64) {
        let _ = self.replay.record(key, meta, now);
    }

    /// The privileged half: check the decision against the configuration again (it may
    /// come from the unprivileged worker), record the digest, then act.
    pub fn apply_decided(&mut self, x: Decided, now: u64) -> Outcome {
        self.apply_batch(vec![x], now)
            .pop()
            .unwrap_or_else(|| Outcome::Refused("nothing decided".into()))
    }

    /// The privileged half for several decisions at once, one outcome each, in order:
    /// each is re-checked (stanza, replay store, capacity); their digests are appended
    /// with one write; the grants of all of them go to the firewall as one transaction
    /// (each decision on its own if that fails); then one `fdatasync`. Nothing is acted
    /// on before its digest is written (a failed write refuses the whole group).
    pub fn apply_batch(&mut self, xs: Vec<Decided>, now: u64) -> Vec<Outcome> {
        let mut out: Vec<Option<Outcome>> = (0..xs.len()).map(|_| None).collect();
        let mut accepted = Vec::new();
        let mut in_batch = std::collections::HashSet::new();
        for (i, x) in xs.iter().enumerate() {
            let src = x.meta.src.ip();
            if let Err(why) = self.validate(&x.decision) {
                self.refuse("invalid_request");
                let msg = format!("{src}: request refused by the privileged part: {why}");
                log::error(&msg);
                out[i] = Some(Outcome::Refused(msg));
            } else if self.replay.contains(&x.key) || in_batch.contains(&x.key) {
                // The worker's mirror lags behind requests in flight: the store decides.
                self.refuse("replay");
                log::info(&format!("{src}: refused: {}", Reason::Replay));
                out[i] = Some(Outcome::Refused(Reason::Replay.to_string()));
            } else if self.replay.len() + accepted.len() >= self.replay.cap()
                && !matches!(x.decision.verdict, Verdict::Drop(_))
            {
                self.refuse("replay_store_full");
                let msg = format!(
                    "{src}: the replay store is full ({} entries, MAX_REPLAY_ENTRIES); nothing opened until entries expire",
                    self.replay.len()
                );
                log::warn(&msg);
                out[i] = Some(Outcome::Refused(msg));
            } else {
                in_batch.insert(x.key);
                accepted.push(i);
            }
        }
        let items: Vec<(ReplayKey, Meta)> =
            accepted.iter().map(|&i| (xs[i].key, xs[i].meta)).collect();
        if let Err(e) = self.replay.record_many(&items, now) {
            for &i in &accepted {
                self.refuse("replay_store");
                let msg = format!(
                    "{}: cannot record the replay digest ({e}); nothing opened",
                    xs[i].meta.src.ip()
                );
                log::error(&msg);
                out[i] = Some(Outcome::Refused(msg));
            }
            return out.into_iter().flatten().collect();
        }
        // Grants together; everything else (commands, cycles, refusals, --test) alone.
        let mut pending = Vec::new();
        for &i in &accepted {
            let x = &xs[i];
            let src = x.meta.src.ip();
            match &x.decision.verdict {
                Verdict::Grant(g) if !self.test_mode => {
                    let (stanza, who) = self.who(&x.decision, src);
                    let (grants, desc) = self.prepare_grants(g, now);
                    pending.push((i, stanza, who, grants, desc));
                }
                _ => out[i] = Some(self.act(x.decision.clone(), src, now)),
            }
        }
        if !pending.is_empty() {
            let all: Vec<postern_fw::Grant> =
                pending.iter().flat_map(|p| p.3.iter().copied()).collect();
            let together = self.apply_with_repair(&all);
            for (i, stanza, who, grants, desc) in pending {
                let result = match &together {
                    Ok(()) => Ok(()),
                    Err(e) if all.len() == grants.len() => Err(e.clone()),
                    Err(_) => self.apply_with_repair(&grants),
                };
                out[i] = Some(self.finish_grant(result, &stanza, &who, &grants, &desc, now));
            }
        }
        // The group's digests reach the disk now; a `kill -9` could not lose them anyway
        // (they are in the page cache since the write), and a power loss is covered by
        // the clean-shutdown marker.
        if let Err(e) = self.replay.sync() {
            log::error(&format!("cannot sync the replay store: {e}"));
        }
        out.into_iter()
            .map(|o| o.unwrap_or_else(|| Outcome::Refused("not decided".into())))
            .collect()
    }

    /// Stanza name and the "who" prefix of log lines.
    fn who(&self, decision: &Decision, src: IpAddr) -> (String, String) {
        let stanza = self.stanza_name(decision.stanza);
        let who = match &decision.username {
            Some(u) => format!("{src} (stanza {stanza}, user '{}')", u.escape_default()),
            None => format!("{src} (stanza {stanza})"),
        };
        (stanza, who)
    }

    /// The firewall grants of a decision, with the ledger's effective timeouts, and
    /// their description for the log.
    fn prepare_grants(
        &self,
        g: &crate::pipeline::authorize::GrantDecision,
        now: u64,
    ) -> (Vec<postern_fw::Grant>, String) {
        let mut grants = apply::grants(g);
        for gr in &mut grants {
            let t = self.ledger.effective_timeout(
                (gr.source, gr.proto, gr.port),
                gr.timeout.as_secs(),
                now,
            );
            gr.timeout = Duration::from_secs(t);
        }
        let shown: Vec<String> = grants
            .iter()
            .map(|x| format!("{}/{}", x.proto.name(), x.port))
            .collect();
        let desc = format!("{} for {} ({}s)", g.allow, shown.join(","), g.timeout);
        (grants, desc)
    }

    /// Apply grants; if the firewall refuses, reinstall the base (the table may have
    /// been deleted under us) and try once more.
    fn apply_with_repair(&mut self, grants: &[postern_fw::Grant]) -> Result<(), postern_fw::Error> {
        self.fw
            .apply(grants)
            .or_else(|first| match self.fw.setup(false) {
                Ok(()) => {
                    log::warn(&format!(
                        "firewall change refused ({first}); base reinstalled"
                    ));
                    self.fw.apply(grants)
                }
                Err(_) => Err(first),
            })
    }

    /// Book-keeping and the log line once the firewall answered.
    fn finish_grant(
        &mut self,
        result: Result<(), postern_fw::Error>,
        stanza: &str,
        who: &str,
        grants: &[postern_fw::Grant],
        desc: &str,
        now: u64,
    ) -> Outcome {
        match result {
            Ok(()) => {
                for gr in grants {
                    self.ledger.record(
                        (gr.source, gr.proto, gr.port),
                        stanza,
                        now + gr.timeout.as_secs(),
                    );
                }
                self.counters.grants += grants.len() as u64;
                log::info(&format!("{who}: granted {desc}"));
                Outcome::Granted(grants.iter().map(ToString::to_string).collect())
            }
            Err(e) => {
                self.counters.firewall_errors += 1;
                let msg = format!("{who}: NOT opened {desc}: {e}");
                log::error(&msg);
                Outcome::Refused(msg)
            }
        }
    }

    /// Re-check a decision: the stanza exists and permits exactly this.
    pub fn validate(&self, d: &Decision) -> Result<(), String> {
        let stanza = match d.stanza {
            Some(i) => self
                .config
                .stanzas
                .get(i)
                .ok_or_else(|| format!("no stanza {i}"))?,
            None => {
                return if matches!(d.verdict, Verdict::Drop(_)) {
                    Ok(())
                } else {
                    Err("no stanza".into())
                }
            }
        };
        let usable = |ip: IpAddr| !ip.is_unspecified() && !ip.is_multicast();
        match &d.verdict {
            Verdict::Drop(_) => Ok(()),
            Verdict::Grant(g) => {
                if stanza.cmd_cycle.is_some() {
                    return Err("a command-cycle stanza does not grant ports".into());
                }
                if !usable(g.allow) {
                    return Err(format!("address {} cannot be opened", g.allow));
                }
                if g.ports.is_empty() || g.ports.iter().any(|p| p.port == 0) {
                    return Err("bad port list".into());
                }
                let max = stanza.fw_access_timeout.max(stanza.max_fw_timeout);
                if g.timeout == 0 || g.timeout > max {
                    return Err(format!("timeout {} outside 1..={max}", g.timeout));
                }
                let listed = |rules: &[crate::config::PortRule], p: &postern_proto::PortSpec| {
                    rules.iter().any(|r| r.proto == p.proto && r.port == p.port)
                };
                for p in &g.ports {
                    if stanza
                        .restrict_ports
                        .as_deref()
                        .is_some_and(|r| listed(r, p))
                    {
                        return Err(format!("{p} is restricted"));
                    }
                    if stanza.open_ports.as_deref().is_some_and(|o| !listed(o, p)) {
                        return Err(format!("{p} is not open"));
                    }
                }
                Ok(())
            }
            Verdict::Command(c) => {
                if !stanza.enable_cmd_exec || stanza.cmd_cycle.is_some() {
                    return Err("commands are not enabled in this stanza".into());
                }
                if c.command.trim().is_empty() {
                    return Err("empty command".into());
                }
                Ok(())
            }
            Verdict::Cycle(cy) => {
                if stanza.cmd_cycle.is_none() {
                    return Err("no command cycle in this stanza".into());
                }
                if cy.ports.is_empty() || !usable(cy.allow) {
                    return Err("bad command-cycle request".into());
                }
                Ok(())
            }
        }
    }

    /// User, group and timeout for the commands of stanza `i`.
    fn exec_identity(&self, i: Option<usize>) -> (Option<String>, Option<String>, Duration) {
        let s = i.and_then(|i| self.config.stanzas.get(i));
        (
            s.and_then(|s| s.cmd_exec_user.clone()),
            s.and_then(|s| s.cmd_exec_group.clone()),
            Duration::from_secs(self.config.server.cmd_exec_timeout),
        )
    }

    fn stanza_name(&self, i: Option<usize>) -> String {
        i.and_then(|i| self.config.stanzas.get(i))
            .map_or_else(|| "-".into(), |s| s.name())
    }

    fn act(&mut self, decision: Decision, src: IpAddr, now: u64) -> Outcome {
        let (stanza, who) = self.who(&decision, src);
        match decision.verdict {
            Verdict::Drop(reason) => {
                let label = reason.label();
                if decision.burn {
                    self.refuse(label);
                    log::info(&format!("{who}: refused: {reason}"));
                } else {
                    // Never decrypted under any stanza: junk, counted and summarised.
                    self.count_junk(label);
                    if self.verbose {
                        log::info(&format!("{who}: refused: {reason}"));
                    }
                }
                Outcome::Refused(reason.to_string())
            }
            Verdict::Grant(g) => {
                let (grants, desc) = self.prepare_grants(&g, now);
                if self.test_mode {
                    log::info(&format!("{who}: would open {desc} (--test)"));
                    return Outcome::WouldAct(desc);
                }
                let result = self.apply_with_repair(&grants);
                self.finish_grant(result, &stanza, &who, &grants, &desc, now)
            }
            Verdict::Command(c) => {
                if self.test_mode {
                    log::info(&format!(
                        "{who}: would run a command for {} (--test)",
                        c.allow
                    ));
                    return Outcome::WouldAct(c.command);
                }
                let (user, group, timeout) = self.exec_identity(decision.stanza);
                self.counters.commands += 1;
                log::info(&format!(
                    "{who}: running command for {} as {}",
                    c.allow,
                    user.as_deref().unwrap_or("root")
                ));
                spawn_command(c.command.clone(), user, group, timeout, who);
                Outcome::Command(c.command)
            }
            Verdict::Cycle(cy) => {
                let Some(cycle) = decision
                    .stanza
                    .and_then(|i| self.config.stanzas.get(i))
                    .and_then(|s| s.cmd_cycle.clone())
                else {
                    return Outcome::Refused(format!("{who}: no command cycle in this stanza"));
                };
                let (open, close) = cy.commands(&cycle);
                let timer = cy.timer(&cycle);
                if self.test_mode {
                    log::info(&format!(
                        "{who}: would run {} open command(s) (--test)",
                        open.len()
                    ));
                    return Outcome::WouldAct(open.join("; "));
                }
                let (user, group, timeout) = self.exec_identity(decision.stanza);
                for cmd in &open {
                    spawn_command(
                        cmd.clone(),
                        user.clone(),
                        group.clone(),
                        timeout,
                        format!("{who} cycle open"),
                    );
                }
                for cmd in close {
                    self.ledger.schedule_close(now + timer, cmd, stanza.clone());
                }
                self.counters.commands += open.len() as u64;
                log::info(&format!(
                    "{who}: command cycle opened ({} command(s), close in {timer}s)",
                    open.len()
                ));
                Outcome::Cycle(open.len())
            }
        }
    }

    /// Periodic work: forget old replay entries, run due cycle closes, summarise junk.
    pub fn tick(&mut self, now: u64) {
        if let Err(e) = self.replay.prune(now) {
            log::error(&format!("cannot compact the replay store: {e}"));
        }
        self.run_closes(now, false);
        if !self.junk.is_empty() && self.last_junk_log.elapsed() >= Duration::from_secs(60) {
            let parts: Vec<String> = self.junk.iter().map(|(k, v)| format!("{k} {v}")).collect();
            log::info(&format!(
                "refused without decryption in the last minute: {}",
                parts.join(", ")
            ));
            self.junk.clear();
            self.last_junk_log = Instant::now();
        }
    }

    fn run_closes(&mut self, now: u64, all: bool) {
        for (cmd, stanza) in self.ledger.due_closes(now, all) {
            let i = self.config.stanzas.iter().position(|s| s.name() == stanza);
            let (user, group, timeout) = self.exec_identity(i);
            let r = apply::run_command(&cmd, user.as_deref(), group.as_deref(), timeout);
            log::info(&format!("stanza {stanza}: cycle close command: {r:?}"));
        }
    }

    /// Replace the configuration, keeping grants and the replay store.
    pub fn reload(&mut self, config: Config) {
        self.config = config;
    }

    /// Stop: run pending cycle closes, then remove grants as FLUSH_IPT_AT_EXIT says.
    /// With a default-drop table the base stays, so the host stays closed.
    pub fn shutdown(&mut self) {
        self.run_closes(0, true);
        if let Err(e) = self.replay.close() {
            log::error(&format!("cannot close the replay store cleanly: {e}"));
        }
        if self.test_mode || !self.config.server.flush_at_exit {
            return;
        }
        let keep_base = self.config.server.nft_default_drop;
        if let Err(e) = self.fw.teardown(keep_base) {
            log::error(&format!("cannot clean up the firewall at exit: {e}"));
        }
    }

    /// Status as JSON.
    pub fn status_json(&mut self, now: u64, extra: &serde_json::Value) -> serde_json::Value {
        let mut v = self.counters_json(extra);
        let active: Vec<serde_json::Value> = self
            .ledger
            .active(now)
            .into_iter()
            .map(|((ip, proto, port), e)| {
                serde_json::json!({
                    "source": ip.to_string(),
                    "proto": proto.name(),
                    "port": port,
                    "stanza": e.stanza,
                    "seconds_left": e.expires.saturating_sub(now),
                })
            })
            .collect();
        v["active"] = serde_json::Value::Array(active);
        v
    }

    /// Status without the list of open grants: cheap at any number of grants (for
    /// monitoring and the benchmark).
    pub fn counters_json(&self, extra: &serde_json::Value) -> serde_json::Value {
        let mut counters = self.counters.clone();
        let mut parts = vec![serde_json::json!({
            "part": if self.worker.is_some() { "privileged: firewall, replay store, commands" } else { "all" },
            "pid": std::process::id(),
            "user": crate::privsep::user_of(std::process::id()),
        })];
        if let Some(w) = &self.worker {
            counters.examined = w.counters.examined;
            counters.dropped = w.counters.dropped;
            for (k, n) in &w.counters.refused {
                *counters.refused.entry(k).or_insert(0) += n;
            }
            parts.push(serde_json::json!({
                "part": "worker: capture, decode, authorize",
                "pid": w.pid,
                "user": w.user,
                "landlock": w.landlock,
            }));
        }
        serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "pid": std::process::id(),
            "started": self.started,
            "firewall": self.firewall(),
            "examined": counters.examined,
            "refused": counters.refused,
            "grants": counters.grants,
            "commands": counters.commands,
            "firewall_errors": counters.firewall_errors,
            "dropped": counters.dropped,
            "parts": parts,
            "replay_entries": self.replay.len(),
            "core_dumps": if nix::sys::prctl::get_dumpable().unwrap_or(true) { "enabled" } else { "disabled" },
            "intake": extra["intake"],
        })
    }
}

fn spawn_command(
    command: String,
    user: Option<String>,
    group: Option<String>,
    timeout: Duration,
    who: String,
) {
    std::thread::spawn(move || {
        let r = apply::run_command(&command, user.as_deref(), group.as_deref(), timeout);
        match r {
            CommandResult::Exited(0) => log::info(&format!("{who}: command finished")),
            other => log::warn(&format!("{who}: command ended badly: {other:?}")),
        }
    });
}

/// Render status JSON as text for people.
pub fn status_text(v: &serde_json::Value) -> String {
    let mut s = format!(
        "posternd {} (pid {})\nintake: {}\nfirewall: {}\n",
        v["version"].as_str().unwrap_or("?"),
        v["pid"],
        v["intake"].as_str().unwrap_or("?"),
        v["firewall"].as_str().unwrap_or("?")
    );
    let refused: u64 = v["refused"].as_object().map_or(0, |m| {
        m.values().filter_map(serde_json::Value::as_u64).sum()
    });
    s.push_str(&format!(
        "packets examined: {}, refused: {}, ports opened: {}, commands: {}, firewall errors: {}, dropped before examination: {}\n",
        v["examined"], refused, v["grants"], v["commands"], v["firewall_errors"], v["dropped"]
    ));
    if let Some(m) = v["refused"].as_object() {
        if !m.is_empty() {
            let parts: Vec<String> = m.iter().map(|(k, n)| format!("{k} {n}")).collect();
            s.push_str(&format!("refused by reason: {}\n", parts.join(", ")));
        }
    }
    let active = v["active"].as_array().cloned().unwrap_or_default();
    if active.is_empty() {
        s.push_str("active grants: none\n");
    } else {
        s.push_str(&format!("active grants: {}\n", active.len()));
        s.push_str(&format!(
            "  {:<40} {:<12} {:<24} {:>6}\n",
            "SOURCE", "PROTO/PORT", "STANZA", "LEFT"
        ));
        for a in active {
            s.push_str(&format!(
                "  {:<40} {:<12} {:<24} {:>5}s\n",
                a["source"].as_str().unwrap_or(""),
                format!("{}/{}", a["proto"].as_str().unwrap_or(""), a["port"]),
                a["stanza"].as_str().unwrap_or(""),
                a["seconds_left"].as_u64().unwrap_or(0)
            ));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::authorize::Decision;
    use postern_fw::memory::Memory;
    use postern_proto::{
        encode, DigestType, EncryptionMode, HmacKey, Key, Keys, MessageType, RandomValue,
        SpaMessage,
    };

    const T: u64 = 1_795_000_000;

    fn config(access: &str) -> Config {
        let (server, notes) =
            crate::config::server::parse("", std::path::Path::new("/etc/postern/fwknopd.conf"))
                .unwrap();
        let stanzas = crate::config::access::parse_text(
            access,
            std::path::Path::new("/etc/postern/access.conf"),
            0,
        )
        .unwrap();
        Config {
            server,
            stanzas,
            notes,
        }
    }

    fn packet(n: u8, ts: u64, port: u16) -> Datagram {
        let keys = Keys::new(
            Key::from_passphrase("enc"),
            EncryptionMode::Cbc,
            Some(HmacKey {
                key: Key::from_passphrase("mac"),
                digest: DigestType::Sha256,
            }),
        )
        .unwrap();
        let m = SpaMessage {
            random_value: RandomValue::from_digits(&format!("{:016}", u64::from(n) + 1000))
                .unwrap(),
            username: "u".into(),
            timestamp: ts,
            version: "3.0.0".into(),
            message_type: MessageType::Access,
            message: format!("198.18.1.2,tcp/{port}"),
            nat_access: None,
            server_auth: None,
            client_timeout: 0,
        };
        let w = encode(&m, &keys, DigestType::Sha256, [n; 8]).unwrap();
        Datagram {
            src: "198.18.1.2:5000".parse().unwrap(),
            dst: "198.18.1.1:62201".parse().unwrap(),
            payload: w.into_bytes(),
        }
    }

    fn daemon(cap: usize) -> (Daemon, Memory) {
        let mem = Memory::default();
        let d = Daemon::new(
            config("SOURCE ANY\nKEY enc\nHMAC_KEY mac\n"),
            Box::new(mem.clone()),
            ReplayStore::in_memory(240, cap),
            false,
        );
        (d, mem)
    }

    fn granted(o: &Outcome) -> bool {
        matches!(o, Outcome::Granted(_))
    }

    #[test]
    fn clock_steps_keep_replay_and_age_checks_right() {
        let (mut d, _) = daemon(1000);
        let p = packet(1, T, 22);
        assert!(granted(&d.handle(&p, T)));
        // The clock steps back an hour (NTP): the packet is still a replay.
        assert_eq!(
            d.handle(&p, T - 3600),
            Outcome::Refused(Reason::Replay.to_string())
        );
        d.tick(T - 3600);
        assert_eq!(
            d.handle(&p, T - 3600),
            Outcome::Refused(Reason::Replay.to_string()),
            "prune must not forget it"
        );
        // A fresh packet stamped before the step is judged against the new clock.
        assert!(
            matches!(d.handle(&packet(2, T, 22), T - 3600), Outcome::Refused(r) if r.contains("outside the allowed window"))
        );
        // The clock steps forward: old packets are too old, current ones fine.
        assert!(
            matches!(d.handle(&packet(3, T, 22), T + 500), Outcome::Refused(r) if r.contains("outside the allowed window"))
        );
        assert!(granted(&d.handle(&packet(4, T + 500, 22), T + 500)));
        // Entries live for twice the window after they were recorded, then go.
        d.tick(T + 500 + 241);
        assert!(!d.replay.contains(
            &postern_proto::Packet::new_checked(&packet(4, T + 500, 22).payload)
                .unwrap()
                .replay_key()
        ));
    }

    #[test]
    fn a_full_store_refuses_instead_of_forgetting() {
        let (mut d, mem) = daemon(2);
        assert!(granted(&d.handle(&packet(1, T, 22), T)));
        assert!(granted(&d.handle(&packet(2, T, 23), T)));
        assert!(
            matches!(d.handle(&packet(3, T, 24), T), Outcome::Refused(r) if r.contains("replay store is full"))
        );
        assert_eq!(mem.record.lock().unwrap().grants.len(), 2);
        assert_eq!(d.counters.refused["replay_store_full"], 1);
        // Once entries expire there is room again.
        d.tick(T + 241);
        assert!(granted(&d.handle(&packet(5, T + 241, 25), T + 241)));
    }

    #[test]
    fn after_a_lost_store_only_packets_stamped_after_start_count() {
        let (mut d, _) = daemon(1000);
        d.not_before = Some(T);
        assert!(
            matches!(d.handle(&packet(1, T - 10, 22), T), Outcome::Refused(r) if r.contains("stamped before posternd started"))
        );
        assert!(granted(&d.handle(&packet(2, T, 22), T)));
        // After one window the guard is gone (the age check covers the rest).
        assert!(granted(&d.handle(&packet(3, T + 100, 22), T + 121)));
    }

    #[test]
    fn a_batch_is_one_transaction_and_duplicates_in_flight_are_refused() {
        use crate::pipeline::authorize::GrantDecision;
        let mem = Memory::default();
        let mut d = Daemon::new(
            config("SOURCE ANY\nKEY enc\nHMAC_KEY mac\nOPEN_PORTS tcp/22\n"),
            Box::new(mem.clone()),
            ReplayStore::in_memory(240, 1000),
            false,
        );
        let x = |key: u8, port: u16, allow: &str| Decided {
            key: ReplayKey([key; 32]),
            meta: Meta {
                proto: 17,
                src: "198.18.1.2:1".parse().unwrap(),
                dst: "198.18.1.1:62201".parse().unwrap(),
            },
            decision: Decision {
                verdict: Verdict::Grant(GrantDecision {
                    allow: allow.parse().unwrap(),
                    ports: vec![postern_proto::PortSpec {
                        proto: postern_proto::Protocol::Tcp,
                        port,
                    }],
                    timeout: 30,
                }),
                stanza: Some(0),
                burn: true,
                username: None,
            },
        };
        let out = d.apply_batch(
            vec![
                x(1, 22, "198.18.1.2"),
                x(2, 22, "198.18.1.3"),
                x(1, 22, "198.18.1.2"),
                x(3, 23, "198.18.1.4"),
            ],
            T,
        );
        assert!(matches!(&out[0], Outcome::Granted(_)), "{out:?}");
        assert!(matches!(&out[1], Outcome::Granted(_)), "{out:?}");
        assert!(
            matches!(&out[2], Outcome::Refused(r) if r.contains("replay")),
            "{out:?}"
        );
        assert!(
            matches!(&out[3], Outcome::Refused(r) if r.contains("not open")),
            "{out:?}"
        );
        assert_eq!(mem.record.lock().unwrap().batches, vec![2]);
        assert!(d.knows(&ReplayKey([2; 32])) && !d.knows(&ReplayKey([3; 32])));
        // Already recorded: refused by the privileged part even if the worker sends it.
        let again = d.apply_batch(vec![x(2, 22, "198.18.1.3")], T);
        assert!(matches!(&again[0], Outcome::Refused(r) if r.contains("replay")));
        // A refusing firewall: each decision is tried alone, none is reported open.
        *mem.fail_apply.lock().unwrap() = Some("boom".into());
        let out = d.apply_batch(vec![x(4, 22, "198.18.1.5"), x(5, 22, "198.18.1.6")], T);
        assert!(out
            .iter()
            .all(|o| matches!(o, Outcome::Refused(r) if r.contains("NOT opened"))));
        assert_eq!(d.counters.firewall_errors, 2);
        assert_eq!(mem.record.lock().unwrap().batches, vec![2]);
    }

    #[test]
    fn forged_requests_from_the_worker_are_refused() {
        use crate::pipeline::authorize::{CommandDecision, GrantDecision};
        let mem = Memory::default();
        let mut d = Daemon::new(
            config("SOURCE ANY\nKEY enc\nHMAC_KEY mac\nOPEN_PORTS tcp/22\nMAX_FW_TIMEOUT 60\n"),
            Box::new(mem.clone()),
            ReplayStore::in_memory(240, 1000),
            false,
        );
        let grant = |port: u16, timeout: u64, allow: &str| {
            Verdict::Grant(GrantDecision {
                allow: allow.parse().unwrap(),
                ports: vec![postern_proto::PortSpec {
                    proto: postern_proto::Protocol::Tcp,
                    port,
                }],
                timeout,
            })
        };
        let forged = [
            (Some(0), grant(23, 30, "198.18.1.2"), "not open"),
            (Some(0), grant(22, 3600, "198.18.1.2"), "timeout"),
            (Some(0), grant(22, 30, "0.0.0.0"), "cannot be opened"),
            (Some(5), grant(22, 30, "198.18.1.2"), "no stanza 5"),
            (
                Some(0),
                Verdict::Command(CommandDecision {
                    allow: "198.18.1.2".parse().unwrap(),
                    command: "/bin/sh".into(),
                }),
                "not enabled",
            ),
        ];
        for (n, (stanza, verdict, why)) in forged.into_iter().enumerate() {
            let x = Decided {
                key: ReplayKey([n as u8; 32]),
                meta: Meta {
                    proto: 17,
                    src: "198.18.1.2:1".parse().unwrap(),
                    dst: "198.18.1.1:62201".parse().unwrap(),
                },
                decision: Decision {
                    verdict,
                    stanza,
                    burn: true,
                    username: None,
                },
            };
            assert!(
                matches!(d.apply_decided(x, T), Outcome::Refused(r) if r.contains(why)),
                "{why}"
            );
        }
        assert!(mem.record.lock().unwrap().grants.is_empty());
        assert_eq!(d.counters.refused["invalid_request"], 5);
        let ok = Decided {
            key: ReplayKey([99; 32]),
            meta: Meta {
                proto: 17,
                src: "198.18.1.2:1".parse().unwrap(),
                dst: "198.18.1.1:62201".parse().unwrap(),
            },
            decision: Decision {
                verdict: grant(22, 60, "198.18.1.2"),
                stanza: Some(0),
                burn: true,
                username: None,
            },
        };
        assert!(granted(&d.apply_decided(ok, T)));
    }

    #[test]
    fn a_refusing_firewall_opens_nothing_and_the_daemon_goes_on() {
        let (mut d, mem) = daemon(1000);
        *mem.fail_apply.lock().unwrap() = Some("netlink: table deleted".into());
        assert!(
            matches!(d.handle(&packet(1, T, 22), T), Outcome::Refused(r) if r.contains("NOT opened"))
        );
        assert_eq!(d.counters.firewall_errors, 1);
        assert!(
            d.ledger.active(T).is_empty(),
            "a failed grant must not be reported open"
        );
        assert_eq!(
            mem.record.lock().unwrap().setups,
            [false],
            "the base was reinstalled once"
        );
        *mem.fail_apply.lock().unwrap() = None;
        assert!(granted(&d.handle(&packet(2, T, 22), T)));
        assert_eq!(d.ledger.active(T).len(), 1);
    }
}
