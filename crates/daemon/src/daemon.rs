//! The running daemon: configuration, firewall, replay store and ledger, and the
//! handling of one datagram through the pipeline. No sockets here: `main.rs` feeds
//! datagrams in (or, with privilege separation, the worker's candidates) and asks for
//! status.
//!
//! ```text
//!  Datagram ─► decide: decode ─► replay ─► authorize ─┬─► Done (junk, replay, refused
//!                                                     │         without decryption)
//!                                                     └─► Decided ─► apply_batch:
//!      record digests (one write) ─► firewall (one transaction) ─► fdatasync ─► Outcome
//! ```
//!
//! With privilege separation the worker runs `decide` as a filter and forwards the raw
//! datagram of each `Decided`; the privileged part runs [`Daemon::rederive`] (the same
//! `decide`, with its own clock, configuration and replay store) and acts only on that.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use postern_capture::Datagram;
use postern_fw::Firewall;
use postern_proto::ReplayKey;

use crate::alert::{Alerts, Event as Alert, Fault};
use crate::clock::Now;
use crate::config::Config;
use crate::fleet::message::GrantMessage;
use crate::fleet::{Claim, Fleet};
use crate::log;
use crate::pipeline::apply::{self, Identity};
use crate::pipeline::authorize::{authorize, Clock, Decision, Reason, Verdict};
use crate::pipeline::decode::decode;
use crate::pipeline::expire::{Ledger, PendingClose};
use crate::replay::{Meta, ReplayStore};

/// Counters for `posternd status`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
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
    /// Times posternd's firewall base was found gone and reinstalled.
    pub firewall_repairs: u64,
    /// Datagrams lost before examination (full queue, socket drops).
    pub dropped: u64,
}

impl Counters {
    /// Add `other`'s counts to these.
    pub fn add(&mut self, other: &Counters) {
        self.examined += other.examined;
        for (k, n) in &other.refused {
            *self.refused.entry(k).or_insert(0) += n;
        }
        self.grants += other.grants;
        self.commands += other.commands;
        self.firewall_errors += other.firewall_errors;
        self.firewall_repairs += other.firewall_repairs;
        self.dropped += other.dropped;
    }
}

/// A packet that decrypted, with what was decided about it.
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
    /// Decrypted: to be recorded and acted on.
    Decided(Box<Decided>),
}

/// What `handle` did, for callers and tests. Values, not log text: the privileged
/// part words its own log lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Refused, for this reason.
    Refused(Refusal),
    /// Opened these grants (display form).
    Granted(Vec<String>),
    /// Started a command.
    Command,
    /// Ran a command cycle's open commands.
    Cycle(usize),
    /// Decided, but `--test` changes nothing.
    WouldAct(String),
}

/// Why a packet opened nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The pipeline refused it.
    Policy(Reason),
    /// The replay store holds `MAX_REPLAY_ENTRIES` entries.
    StoreFull,
    /// The firewall refused the change.
    Firewall(String),
    /// The command identity (CMD_EXEC_USER/GROUP) does not resolve.
    Identity(String),
    /// A candidate from the worker that does not hold up when derived again.
    WorkerMismatch,
    /// Another gateway of the fleet already accepted this packet.
    FleetReplay,
    /// Redis did not answer the claim, and `FLEET_ON_REDIS_DOWN closed`.
    FleetDown(String),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Policy(r) => write!(f, "{r}"),
            Refusal::StoreFull => f.write_str(
                "the replay store is full (MAX_REPLAY_ENTRIES); nothing opened until entries expire",
            ),
            Refusal::Firewall(e) => write!(f, "firewall change failed: {e}"),
            Refusal::Identity(e) => write!(f, "command identity: {e}"),
            Refusal::WorkerMismatch => f.write_str(
                "forwarded by the worker but not authenticated when derived again",
            ),
            Refusal::FleetReplay => {
                f.write_str("replayed packet: another gateway of the fleet accepted it")
            }
            Refusal::FleetDown(why) => write!(
                f,
                "the fleet cannot confirm this packet is new ({why}; FLEET_ON_REDIS_DOWN closed)"
            ),
        }
    }
}

/// The before-start rule: after a start whose replay store was missing, damaged or
/// unclean, packets stamped before the start are refused for one age window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotBefore {
    /// Wall-clock start time (compared with packet stamps).
    pub wall: u64,
    /// Monotonic time until which the rule holds.
    pub until_mono: u64,
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
    /// Whether the last check found posternd's firewall base gone and could not put it
    /// back (so that the error is logged once, not every second).
    fw_broken: bool,
    /// Whether refusals are logged per source address (the privileged part; the worker
    /// forwards them instead).
    pub log_refusals: bool,
    refusal_log: crate::pipeline::refusals::RefusalLog,
    /// The refusals from this address the worker says it did not forward.
    worker_suppressed: u64,
    /// The last metrics error logged.
    last_metrics_error: Option<String>,
    mismatch_logged: Option<Instant>,
    started: u64,
    /// See [`NotBefore`].
    pub not_before: Option<NotBefore>,
    /// The unprivileged worker's last reported counters, with privilege separation.
    pub worker_counters: Option<Counters>,
    /// The last counters of workers that were replaced.
    retired_workers: Counters,
    /// The generation of the worker whose counters are in `worker_counters`.
    worker_generation: u64,
    /// The fleet this gateway belongs to (shared replay window, fleet-wide grants).
    pub fleet: Option<Fleet>,
    /// Nonces of fleet messages applied, with their deadlines (ms): never twice.
    fleet_nonces: std::collections::HashMap<String, u64>,
    /// Access alerts (off until `main` starts them in the privileged part).
    pub alerts: Alerts,
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
            fw_broken: false,
            log_refusals: true,
            refusal_log: Default::default(),
            worker_suppressed: 0,
            last_metrics_error: None,
            mismatch_logged: None,
            started: Now::read().wall,
            not_before: None,
            worker_counters: None,
            retired_workers: Counters::default(),
            worker_generation: 0,
            fleet: None,
            fleet_nonces: std::collections::HashMap::new(),
            alerts: Alerts::off(),
        }
    }

    /// Refuse packets stamped before `now` for one age window.
    pub fn refuse_before(&mut self, now: Now) {
        self.not_before = Some(NotBefore {
            wall: now.wall,
            until_mono: now.mono + self.config.server.max_packet_age,
        });
    }

    /// Install the firewall base. On success the run begins: the replay store's
    /// clean-shutdown marker is taken away (see [`ReplayStore::begin`]).
    pub fn setup_firewall(&mut self) -> Result<(), postern_fw::Error> {
        if self.test_mode {
            return Ok(());
        }
        self.fw.setup(self.config.server.flush_at_init)?;
        self.replay.begin();
        if let Some(why) = self.replay.degraded() {
            log::error(&format!("{why}: the replay store runs IN MEMORY ONLY"));
            let detail = format!("{why}: the replay store runs in memory only");
            let ev = Alert::fault(Fault::Persistence, None, detail);
            self.alerts.emit(ev);
        }
        Ok(())
    }

    /// The firewall's description.
    pub fn firewall(&self) -> String {
        if self.test_mode {
            "none (--test: no firewall changes)".into()
        } else {
            self.fw.describe()
        }
    }

    fn clock(&self, now: Now) -> Clock {
        Clock {
            now: now.wall,
            aging: self.config.server.aging(),
            max_age: self.config.server.max_packet_age,
            not_before: self
                .not_before
                .filter(|n| now.mono <= n.until_mono)
                .map(|n| n.wall),
            nat_forwarding: self.config.server.nat_forwarding,
            nat_local: self.config.server.nat_local,
            snat: self.config.server.ipt.snat_default(),
            forwarded_for: None,
        }
    }

    fn refuse(&mut self, label: &'static str) {
        *self.counters.refused.entry(label).or_insert(0) += 1;
    }

    /// A packet refused before it authenticated: counted, summarised once a minute, and
    /// logged with its source address (every packet when verbose; otherwise at most one
    /// line per address every 10 s, see [`crate::pipeline::refusals`]).
    fn count_junk(&mut self, label: &'static str, src: IpAddr, reason: &dyn std::fmt::Display) {
        self.refuse(label);
        *self.junk.entry(label).or_insert(0) += 1;
        if self.verbose {
            log::info(&format!("{src}: refused: {reason}"));
        } else if self.log_refusals {
            use crate::pipeline::refusals::{line, Say};
            if let Some(mut say) = self.refusal_log.refused(src, Instant::now()) {
                if let Say::Source { suppressed } = &mut say {
                    // What the worker left out for this address (privilege separation).
                    *suppressed += std::mem::take(&mut self.worker_suppressed);
                }
                log::info(&line(src, reason, say));
            }
        }
    }

    /// Run one datagram through the whole pipeline (one process).
    pub fn handle(&mut self, d: &Datagram, now: Now) -> Outcome {
        match self.decide(d, now) {
            Step::Done(o) => o,
            Step::Decided(x) => self
                .apply_batch(vec![*x], now)
                .pop()
                .unwrap_or(Outcome::Refused(Refusal::WorkerMismatch)),
        }
    }

    /// Decode, replay check, authorize. Packets that never decrypted are finished here
    /// (counted, summarised, never logged one by one unless verbose); the others come
    /// back as [`Decided`] for [`Daemon::apply_batch`].
    pub fn decide(&mut self, d: &Datagram, now: Now) -> Step {
        self.counters.examined += 1;
        let src = apply::unmap(d.src.ip());
        let dst = apply::unmap(d.dst.ip());
        let http = if self.config.server.spa_over_http {
            crate::pipeline::decode::unwrap_http(&d.payload)
        } else {
            None
        };
        let (payload, forwarded_for) = match &http {
            Some(h) => (
                h.data.as_slice(),
                h.forwarded_for
                    .filter(|_| self.config.server.x_forwarded_for)
                    .map(apply::unmap),
            ),
            None => (d.payload.as_slice(), None),
        };
        let packet = match decode(payload) {
            Ok(p) => p,
            Err(e) => {
                let r = Reason::Junk(e);
                self.count_junk(r.label(), src, &r);
                return Step::Done(Outcome::Refused(Refusal::Policy(r)));
            }
        };
        let key = packet.replay_key();
        if self.replay.contains(&key) {
            self.count_junk("replay", src, &Reason::Replay);
            self.alerts.emit(Alert::replay(src));
            return Step::Done(Outcome::Refused(Refusal::Policy(Reason::Replay)));
        }
        let clock = Clock {
            forwarded_for,
            ..self.clock(now)
        };
        let decision = authorize(&packet, src, dst, &self.config.stanzas, clock);
        if !decision.burn {
            return Step::Done(self.act(decision, src, now));
        }
        let meta = Meta {
            proto: d.proto,
            src: SocketAddr::new(src, d.src.port()),
            dst: SocketAddr::new(dst, d.dst.port()),
        };
        Step::Decided(Box::new(Decided {
            key,
            meta,
            decision,
        }))
    }

    /// The privileged part's view of a worker's candidate: the raw datagram through
    /// [`Daemon::decide`] again, with this process's clock, configuration and replay
    /// store. Only a packet that decrypts here comes back; anything else (a packet
    /// that does not authenticate, a replay) opens nothing, and a candidate that never
    /// authenticated is counted as a worker mismatch.
    pub fn rederive(&mut self, d: &Datagram, now: Now) -> Option<Decided> {
        let before = self.counters.clone();
        let junk = self.junk.clone();
        // A candidate the worker claims authenticated: if it does not here, that is the
        // worker's mismatch (below), not a refusal to log against its claimed source.
        let log_refusals = std::mem::replace(&mut self.log_refusals, false);
        let step = self.decide(d, now);
        self.log_refusals = log_refusals;
        match step {
            Step::Decided(x) => {
                // The worker counted this datagram already.
                self.counters.examined = before.examined;
                Some(*x)
            }
            Step::Done(Outcome::Refused(Refusal::Policy(Reason::Replay))) => {
                // A duplicate still in flight from the worker: the store decides.
                self.counters = before;
                self.junk = junk;
                self.refuse("replay");
                log::info(&format!("{}: refused: {}", d.src.ip(), Reason::Replay));
                None
            }
            Step::Done(_) => {
                self.counters = before;
                self.junk = junk;
                self.refuse("worker_mismatch");
                let quiet = self
                    .mismatch_logged
                    .is_some_and(|t| t.elapsed() < Duration::from_secs(60));
                if !quiet {
                    log::warn(&format!(
                        "the worker forwarded a packet that does not authenticate here (claimed source {}); nothing done (counted as worker_mismatch; at most one such line a minute)",
                        d.src.ip()
                    ));
                    self.mismatch_logged = Some(Instant::now());
                }
                None
            }
        }
    }

    /// Whether the replay store holds this key.
    pub fn knows(&self, key: &ReplayKey) -> bool {
        self.replay.contains(key)
    }

    /// Remember a digest (the worker's filter, as packets are forwarded).
    pub fn remember(&mut self, key: ReplayKey, meta: Meta, now: Now) {
        let _ = self.replay.record_many(&[(key, meta)], now);
    }

    /// Why the replay store runs in memory only, if it does.
    pub fn replay_degraded(&self) -> Option<&str> {
        self.replay.degraded()
    }

    /// Record and act on decisions (derived in this process), one outcome each, in
    /// order: duplicates and a full store are refused; the digests are appended with one
    /// write; the grants of all of them go to the firewall as one transaction (each
    /// decision on its own if that fails); then one `fdatasync`. Nothing is acted on
    /// before its digest is in the store; a disk that fails switches the store to
    /// memory only (logged loudly) and never refuses access.
    pub fn apply_batch(&mut self, xs: Vec<Decided>, now: Now) -> Vec<Outcome> {
        let mut out: Vec<Option<Outcome>> = (0..xs.len()).map(|_| None).collect();
        let mut accepted = Vec::new();
        let mut in_batch = std::collections::HashSet::new();
        for (i, x) in xs.iter().enumerate() {
            let src = x.meta.src.ip();
            if self.replay.contains(&x.key) || in_batch.contains(&x.key) {
                self.refuse("replay");
                log::info(&format!("{src}: refused: {}", Reason::Replay));
                self.alerts.emit(Alert::replay(src));
                out[i] = Some(Outcome::Refused(Refusal::Policy(Reason::Replay)));
            } else if self.replay.len() + accepted.len() >= self.replay.cap() {
                // Every entry counts: a refusal that decrypted is refused anyway, and
                // nothing is opened that could not be remembered.
                self.refuse("replay_store_full");
                log::warn(&format!(
                    "{src}: refused: {} ({} entries)",
                    Refusal::StoreFull,
                    self.replay.len()
                ));
                out[i] = Some(Outcome::Refused(Refusal::StoreFull));
            } else {
                in_batch.insert(x.key);
                accepted.push(i);
            }
        }
        let items: Vec<(ReplayKey, Meta)> =
            accepted.iter().map(|&i| (xs[i].key, xs[i].meta)).collect();
        if let Some(why) = self.replay.record_many(&items, now) {
            self.persistence_lost(&why);
        }
        self.claim_in_fleet(&xs, &mut accepted, &mut out);
        // Grants together; everything else (commands, cycles, refusals, --test) alone.
        let mut pending = Vec::new();
        for &i in &accepted {
            let x = &xs[i];
            let src = x.meta.src.ip();
            match &x.decision.verdict {
                Verdict::Grant(g) if !self.test_mode => {
                    let (stanza, who) = self.who(&x.decision, src);
                    let (grants, desc) = self.prepare_grants(g, now);
                    let fleet = x
                        .decision
                        .stanza
                        .and_then(|s| self.config.stanzas.get(s))
                        .is_some_and(|s| s.fleet_grants);
                    pending.push((i, stanza, who, grants, desc, fleet));
                }
                _ => out[i] = Some(self.act(x.decision.clone(), src, now)),
            }
        }
        if !pending.is_empty() {
            let all: Vec<postern_fw::Grant> =
                pending.iter().flat_map(|p| p.3.iter().copied()).collect();
            let together = self.apply_with_repair(&all);
            for (i, stanza, who, grants, desc, fleet) in pending {
                let result = match &together {
                    Ok(()) => Ok(()),
                    Err(e) if all.len() == grants.len() => Err(e.clone()),
                    Err(_) => self.apply_with_repair(&grants),
                };
                out[i] = Some(
                    self.finish_grant(result, &stanza, &who, &grants, &desc, now, None, fleet),
                );
            }
        }
        // The group's digests reach the disk now; a `kill -9` could not lose them anyway
        // (they are in the page cache since the write), and a power loss is covered by
        // the clean-shutdown marker.
        if let Some(why) = self.replay.sync() {
            self.persistence_lost(&why);
        }
        out.into_iter()
            .map(|o| o.unwrap_or(Outcome::Refused(Refusal::WorkerMismatch)))
            .collect()
    }

    /// With a fleet: claim the packets that would act, in one round trip, before acting.
    /// A claim another gateway holds is a replay; an unanswered one follows
    /// `FLEET_ON_REDIS_DOWN`. Refused packets stay in the local store.
    fn claim_in_fleet(
        &mut self,
        xs: &[Decided],
        accepted: &mut Vec<usize>,
        out: &mut [Option<Outcome>],
    ) {
        let Some(fleet) = self.fleet.as_mut() else {
            return;
        };
        let acting: Vec<usize> = accepted
            .iter()
            .copied()
            .filter(|&i| !matches!(xs[i].decision.verdict, Verdict::Drop(_)))
            .collect();
        if acting.is_empty() || self.test_mode {
            return;
        }
        let keys: Vec<ReplayKey> = acting.iter().map(|&i| xs[i].key).collect();
        let ttl = Duration::from_secs(2 * self.config.server.max_packet_age);
        let claims = fleet.claim(&keys, ttl);
        let mut refused = Vec::new();
        for (&i, claim) in acting.iter().zip(claims) {
            let src = xs[i].meta.src.ip();
            match claim {
                Claim::Won => {}
                Claim::Lost => {
                    log::info(&format!("{src}: refused: {}", Refusal::FleetReplay));
                    refused.push((i, "fleet_replay", Refusal::FleetReplay));
                }
                Claim::Down(why) => {
                    if !fleet.proceed_when_down(&why) {
                        refused.push((i, "fleet_down", Refusal::FleetDown(why)));
                    }
                }
            }
        }
        for (i, label, r) in refused {
            self.refuse(label);
            out[i] = Some(Outcome::Refused(r));
            accepted.retain(|&a| a != i);
        }
    }

    /// A grant message from the fleet's stream: checked against this gateway's own
    /// configuration (signature, origin, deadline, nonce, a `FLEET_GRANTS` stanza whose
    /// SOURCE and ports allow it, within its timeouts), then opened for what is left.
    pub fn apply_fleet(&mut self, text: &str, sig: &str, now: Now) -> Option<Outcome> {
        let fleet = self.fleet.as_ref()?;
        let me = fleet.config().gateway.clone();
        let m = match GrantMessage::open(text, sig, fleet.config().key.as_bytes()) {
            Ok(m) => m,
            Err(e) => {
                self.refuse("fleet_message");
                log::warn(&format!("a fleet message was refused: {e}"));
                return Some(Outcome::Refused(Refusal::WorkerMismatch));
            }
        };
        if m.origin == me {
            return None;
        }
        let now_ms = now.wall.saturating_mul(1000);
        self.fleet_nonces.retain(|_, d| *d > now_ms);
        if m.deadline_ms <= now_ms || self.fleet_nonces.contains_key(&m.nonce) {
            return None;
        }
        let left = (m.deadline_ms - now_ms).div_ceil(1000);
        let ports = m.port_specs().ok()?;
        let allowed = |s: &crate::config::Stanza| {
            s.fleet_grants
                && s.source.iter().any(|n| n.contains(m.source))
                && left <= s.fw_access_timeout.max(s.max_fw_timeout)
                && s.access_expire.is_none_or(|e| now.wall < e)
                && s.restricted_port(&ports).is_none()
                && s.unopened_port(&ports).is_none()
        };
        let Some(stanza) = self
            .config
            .stanzas
            .iter()
            .find(|s| allowed(s))
            .map(|s| s.name())
        else {
            self.refuse("fleet_message");
            log::warn(&format!(
                "a fleet grant from '{}' for {} ({}) is not allowed by any FLEET_GRANTS stanza here; nothing opened",
                m.origin,
                m.source,
                m.ports.join(",")
            ));
            return Some(Outcome::Refused(Refusal::WorkerMismatch));
        };
        self.fleet_nonces.insert(m.nonce.clone(), m.deadline_ms);
        let g = crate::pipeline::authorize::GrantDecision {
            allow: m.source,
            ports,
            timeout: left,
            nat: None,
        };
        let (grants, desc) = self.prepare_grants(&g, now);
        if self.test_mode {
            return Some(Outcome::WouldAct(desc));
        }
        let who = format!(
            "{} (fleet grant from '{}', stanza {stanza} here)",
            m.source, m.origin
        );
        let result = self.apply_with_repair(&grants);
        Some(self.finish_grant(
            result,
            &stanza,
            &who,
            &grants,
            &desc,
            now,
            Some(&m.origin),
            false,
        ))
    }

    fn persistence_lost(&mut self, why: &str) {
        self.refuse("replay_store");
        let detail = format!("{why}: the replay store goes on in memory only");
        let ev = Alert::fault(Fault::Persistence, None, detail);
        self.alerts.emit(ev);
        log::error(&format!(
            "{why}: the replay store goes on IN MEMORY ONLY (replays are still refused; the next start will not trust the file and accepts only packets stamped after it for one age window)"
        ));
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
        now: Now,
    ) -> (Vec<postern_fw::Grant>, String) {
        let mut grants = apply::grants(g);
        for gr in &mut grants {
            let t = self.ledger.effective_timeout(
                (gr.source, gr.proto, gr.port),
                gr.timeout.as_secs(),
                now.mono,
            );
            gr.timeout = Duration::from_secs(t);
        }
        let shown: Vec<String> = grants
            .iter()
            .map(|x| format!("{}/{}", x.proto.name(), x.port))
            .collect();
        let mut desc = format!("{} for {} ({}s)", g.allow, shown.join(","), g.timeout);
        if let Some(n) = &g.nat {
            desc.push_str(&format!(
                ", {} to {}:{}",
                if n.local { "local NAT" } else { "NAT" },
                n.to,
                n.to_port
            ));
            desc.push_str(&n.extras());
        }
        (grants, desc)
    }

    /// Apply grants; if the firewall refuses because posternd's base is gone (the table
    /// deleted under us), reinstall it, put back what is owed, and try once more. A
    /// refusal with the base in place (a full set, a bad address) is returned as it is:
    /// reinstalling would not help, and putting every open grant back at each refused
    /// knock would stall posternd.
    fn apply_with_repair(&mut self, grants: &[postern_fw::Grant]) -> Result<(), postern_fw::Error> {
        let first = match self.fw.apply(grants) {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        match self.fw.intact() {
            Err(postern_fw::Error::Missing(_)) => {}
            _ => return Err(first),
        }
        match self.fw.setup(false) {
            Ok(()) => {
                let owed = self.reconcile(Now::read());
                self.counters.firewall_repairs += 1;
                log::warn(&format!(
                    "firewall change refused ({first}); base reinstalled, {owed} open grant(s) put back"
                ));
                self.fw.apply(grants)
            }
            Err(_) => Err(first),
        }
    }

    /// Make the kernel hold what is owed (after its base was reinstalled: a flushed
    /// ruleset, a deleted table): every grant the ledger says is still open is added
    /// again for what is left of it. The number put back.
    pub fn reconcile(&mut self, now: Now) -> usize {
        if self.test_mode {
            return 0;
        }
        let owed: Vec<postern_fw::Grant> = self
            .ledger
            .active(now.mono)
            .into_iter()
            .map(|((source, proto, port), e)| postern_fw::Grant {
                source,
                proto,
                port,
                timeout: Duration::from_secs(e.expires.saturating_sub(now.mono).max(1)),
                nat: e.nat,
            })
            .collect();
        if owed.is_empty() {
            return 0;
        }
        match self.fw.apply(&owed) {
            Ok(()) => owed.len(),
            Err(e) => {
                self.counters.firewall_errors += 1;
                let line = format!("cannot put back {} open grant(s): {e}", owed.len());
                log::error(&line);
                self.alerts.emit(Alert::fault(Fault::Firewall, None, line));
                0
            }
        }
    }

    /// At start without FLUSH_IPT_AT_INIT: what the kernel already holds (left by a
    /// previous run) joins the ledger, so status and refreshes know it.
    pub fn adopt(&mut self, now: Now) -> usize {
        if self.test_mode {
            return 0;
        }
        match self.fw.list() {
            Ok(held) => {
                for h in &held {
                    self.ledger.record(
                        (h.source, h.proto, h.port),
                        "(kept from a previous run)",
                        now.mono + h.left.as_secs(),
                        None,
                        None,
                    );
                }
                held.len()
            }
            Err(e) => {
                log::warn(&format!("cannot read what the firewall holds: {e}"));
                0
            }
        }
    }

    /// Book-keeping and the log line once the firewall answered.
    #[allow(clippy::too_many_arguments)]
    fn finish_grant(
        &mut self,
        result: Result<(), postern_fw::Error>,
        stanza: &str,
        who: &str,
        grants: &[postern_fw::Grant],
        desc: &str,
        now: Now,
        origin: Option<&str>,
        publish: bool,
    ) -> Outcome {
        match result {
            Ok(()) => {
                for gr in grants {
                    self.ledger.record(
                        (gr.source, gr.proto, gr.port),
                        stanza,
                        now.mono + gr.timeout.as_secs(),
                        origin,
                        gr.nat,
                    );
                }
                self.counters.grants += grants.len() as u64;
                log::info(&format!("{who}: granted {desc}"));
                self.alert_grant(grants, stanza, desc, now, origin);
                if publish {
                    self.publish_grants(grants, stanza, now);
                }
                Outcome::Granted(grants.iter().map(ToString::to_string).collect())
            }
            Err(e) => {
                self.counters.firewall_errors += 1;
                let line = format!("{who}: NOT opened {desc}: {e}");
                log::error(&line);
                let src = grants.first().map(|g| g.source);
                self.alerts.emit(Alert::fault(Fault::Firewall, src, line));
                Outcome::Refused(Refusal::Firewall(e.to_string()))
            }
        }
    }

    /// The grant alert: one per decision, its ports and the latest deadline.
    fn alert_grant(
        &mut self,
        grants: &[postern_fw::Grant],
        stanza: &str,
        desc: &str,
        now: Now,
        origin: Option<&str>,
    ) {
        let Some(first) = grants.first() else { return };
        let secs = grants
            .iter()
            .map(|g| g.timeout.as_secs())
            .max()
            .unwrap_or(0);
        let ports = grants
            .iter()
            .map(|g| format!("{}/{}", g.proto.name(), g.port))
            .collect();
        let detail = match origin {
            Some(o) => format!("granted {desc} (fleet grant from '{o}')"),
            None => format!("granted {desc}"),
        };
        let ev = Alert::grant(first.source, stanza, ports, now.wall + secs, detail);
        self.alerts.emit(ev);
    }

    /// Grants that closed: one log line, and one close alert, per address and stanza.
    fn closes(
        &mut self,
        closed: Vec<(
            (IpAddr, postern_proto::Protocol, u16),
            crate::pipeline::expire::Entry,
        )>,
        now: Now,
        why: &str,
    ) {
        let mut groups: Vec<(IpAddr, String, Vec<String>, u64)> = Vec::new();
        for ((src, proto, port), e) in closed {
            let ago = now.mono.saturating_sub(e.expires.min(now.mono));
            let at = now.wall.saturating_sub(ago);
            let p = format!("{}/{port}", proto.name());
            match groups.iter_mut().find(|g| g.0 == src && g.1 == e.stanza) {
                Some(g) => {
                    g.2.push(p);
                    g.3 = g.3.max(at);
                }
                None => groups.push((src, e.stanza, vec![p], at)),
            }
        }
        for (src, stanza, ports, at) in groups {
            log::info(&format!(
                "{src} (stanza {stanza}): closed {} ({why})",
                ports.join(",")
            ));
            if !self.alerts.enabled() {
                continue;
            }
            let detail = format!("access for {src} to {} {why}", ports.join(","));
            self.alerts
                .emit(Alert::close(src, &stanza, ports, at, detail));
        }
    }

    /// A candidate from the worker: one that passed its filter is re-derived
    /// ([`Daemon::rederive`]); one it refused is decided again only to log the refusal
    /// and alert on a replay, and never opens anything.
    pub fn rederive_candidate(
        &mut self,
        c: &crate::privsep::protocol::Candidate,
        now: Now,
    ) -> Option<Decided> {
        let d = c.datagram();
        if !c.refused {
            return self.rederive(&d, now);
        }
        // Refused in the worker: decided again here, with this process's keys and store;
        // `decide` logs the refusal (per address, rate-limited) and raises the replay
        // alert. The worker counted the packet already; and whatever this decides, a
        // candidate sent as refused opens nothing.
        let (counters, junk) = (self.counters.clone(), self.junk.clone());
        self.worker_suppressed = c.suppressed.min(u64::from(u32::MAX));
        // With -v the worker logged each of these itself: here, the per-address line.
        let verbose = std::mem::replace(&mut self.verbose, false);
        let step = self.decide(&d, now);
        self.verbose = verbose;
        self.worker_suppressed = 0;
        self.counters = counters;
        self.junk = junk;
        if let Step::Decided(_) = step {
            self.refuse("worker_mismatch");
        }
        None
    }

    /// Tell the fleet (one message per address: its ports and the latest deadline).
    fn publish_grants(&mut self, grants: &[postern_fw::Grant], stanza: &str, now: Now) {
        let Some(fleet) = self.fleet.as_mut() else {
            return;
        };
        let Some(first) = grants.first() else { return };
        if first.nat.is_some() {
            log::info(&format!(
                "{}: a NAT grant is not published to the fleet (the other gateways' NAT targets may differ)",
                first.source
            ));
            return;
        }
        let secs = grants
            .iter()
            .map(|g| g.timeout.as_secs())
            .max()
            .unwrap_or(0);
        let m = GrantMessage {
            v: 1,
            origin: fleet.config().gateway.clone(),
            source: first.source,
            ports: grants
                .iter()
                .map(|g| format!("{}/{}", g.proto.name(), g.port))
                .collect(),
            deadline_ms: now.wall.saturating_add(secs).saturating_mul(1000),
            stanza: stanza.to_owned(),
            nonce: crate::fleet::message::nonce(),
        };
        if let Err(e) = fleet.publish(&m) {
            log::error(&format!(
                "{}: the fleet was not told of this grant ({e}); it is open here only",
                first.source
            ));
        }
    }

    /// User, group and timeout for the commands of stanza `i`, resolved now.
    fn exec_identity(&self, i: Option<usize>) -> (Result<Identity, String>, Duration) {
        let s = i.and_then(|i| self.config.stanzas.get(i));
        let identity = match s {
            Some(s) => Identity::resolve(s.cmd_exec_user.as_deref(), s.cmd_exec_group.as_deref()),
            None => Err("no stanza".into()),
        };
        (
            identity,
            Duration::from_secs(self.config.server.cmd_exec_timeout),
        )
    }

    fn stanza_name(&self, i: Option<usize>) -> String {
        i.and_then(|i| self.config.stanzas.get(i))
            .map_or_else(|| "-".into(), |s| s.name())
    }

    fn act(&mut self, decision: Decision, src: IpAddr, now: Now) -> Outcome {
        let (stanza, who) = self.who(&decision, src);
        match decision.verdict {
            Verdict::Drop(reason) => {
                let label = reason.label();
                if decision.burn {
                    self.refuse(label);
                    log::info(&format!("{who}: refused: {reason}"));
                } else {
                    // Never decrypted under any stanza: junk, counted and summarised.
                    self.count_junk(label, src, &reason);
                }
                Outcome::Refused(Refusal::Policy(reason))
            }
            Verdict::Grant(g) => {
                let (grants, desc) = self.prepare_grants(&g, now);
                if self.test_mode {
                    log::info(&format!("{who}: would open {desc} (--test)"));
                    return Outcome::WouldAct(desc);
                }
                let result = self.apply_with_repair(&grants);
                let fleet = decision
                    .stanza
                    .and_then(|s| self.config.stanzas.get(s))
                    .is_some_and(|s| s.fleet_grants);
                self.finish_grant(result, &stanza, &who, &grants, &desc, now, None, fleet)
            }
            Verdict::Command(c) => {
                if self.test_mode {
                    log::info(&format!(
                        "{who}: would run a command for {} (--test)",
                        c.allow
                    ));
                    return Outcome::WouldAct(c.command);
                }
                let (identity, timeout) = self.exec_identity(decision.stanza);
                let sudo = decision
                    .stanza
                    .and_then(|i| self.config.stanzas.get(i))
                    .and_then(|s| s.cmd_sudo.as_deref());
                let identity = match identity {
                    Ok(i) => match sudo {
                        Some(args) => i.through_sudo(&self.config.server.sudo_exe, args),
                        None => i,
                    },
                    Err(e) => return self.identity_refused(&who, e),
                };
                self.counters.commands += 1;
                log::info(&format!(
                    "{who}: running command '{}' for {} as {}",
                    c.command, c.allow, identity.name
                ));
                spawn_command(c.command, identity, timeout, who);
                Outcome::Command
            }
            Verdict::Cycle(cy) => {
                let Some(cycle) = decision
                    .stanza
                    .and_then(|i| self.config.stanzas.get(i))
                    .and_then(|s| s.cmd_cycle.clone())
                else {
                    return Outcome::Refused(Refusal::WorkerMismatch);
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
                let (identity, timeout) = self.exec_identity(decision.stanza);
                let identity = match identity {
                    Ok(i) => i,
                    Err(e) => return self.identity_refused(&who, e),
                };
                for cmd in &open {
                    spawn_command(
                        cmd.clone(),
                        identity.clone(),
                        timeout,
                        format!("{who} cycle open"),
                    );
                }
                for command in close {
                    self.ledger.schedule_close(
                        now.mono + timer,
                        PendingClose {
                            command,
                            identity: identity.clone(),
                            stanza: stanza.clone(),
                        },
                    );
                }
                self.counters.commands += open.len() as u64;
                log::info(&format!(
                    "{who}: command cycle opened ({} command(s) as {}, close in {timer}s)",
                    open.len(),
                    identity.name
                ));
                Outcome::Cycle(open.len())
            }
        }
    }

    fn identity_refused(&mut self, who: &str, e: String) -> Outcome {
        self.refuse("cycle_identity");
        log::error(&format!("{who}: nothing run: {e}"));
        Outcome::Refused(Refusal::Identity(e))
    }

    /// Periodic work: forget old replay entries, start due cycle closes (each in a
    /// thread of its own: the main loop never waits for a command), summarise junk.
    pub fn tick(&mut self, now: Now) {
        self.watch_firewall(now);
        self.expire_firewall(now);
        let closed = self.ledger.closed(now.mono);
        self.closes(closed, now, "expired");
        if let Err(e) = self.replay.prune(now) {
            log::error(&format!("cannot compact the replay store: {e}"));
        }
        let timeout = Duration::from_secs(self.config.server.cmd_exec_timeout);
        for close in self.ledger.due_closes(now.mono, false) {
            let who = format!("stanza {} cycle close", close.stanza);
            spawn_command(close.command, close.identity, timeout, who);
        }
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

    /// Where the kernel cannot expire openings by itself (plain iptables rules, without
    /// ipset), remove those past their deadline.
    fn expire_firewall(&mut self, now: Now) {
        if self.test_mode {
            return;
        }
        match self.fw.expire(now.wall) {
            Ok(0) => {}
            Ok(n) => log::info(&format!("{n} firewall rule(s) past their deadline removed")),
            Err(e) => {
                self.counters.firewall_errors += 1;
                log::error(&format!(
                    "cannot remove expired firewall rules: {e}; retrying"
                ));
            }
        }
    }

    /// A failure to write the metrics: logged once until it works again.
    pub fn note_metrics_error(&mut self, what: &str) {
        if self.last_metrics_error.as_deref() != Some(what) {
            log::warn(&format!("metrics: {what}"));
            self.last_metrics_error = Some(what.to_owned());
        }
    }

    /// Check that posternd's base is still in the firewall (an `nft flush ruleset`, a
    /// restart of nftables.service, `iptables -F`, a firewalld reload remove it); if it
    /// is gone, reinstall it and put back every grant still owed. Called every second,
    /// so a flushed default-drop host is closed again, and its users let in again,
    /// within about a second.
    pub fn watch_firewall(&mut self, now: Now) {
        if self.test_mode {
            return;
        }
        let missing = match self.fw.intact() {
            Ok(()) => {
                self.fw_broken = false;
                return;
            }
            Err(postern_fw::Error::Missing(m)) => m,
            Err(e) => {
                // The firewall cannot even be asked (its tool fails): nothing is
                // reinstalled blindly; said once, and the next grant's repair still
                // applies.
                if !self.fw_broken {
                    log::warn(&format!(
                        "cannot check posternd's firewall base: {e}; checking again every second"
                    ));
                }
                self.fw_broken = true;
                return;
            }
        };
        match self.fw.setup(false) {
            Ok(()) => {
                let owed = self.reconcile(now);
                self.counters.firewall_repairs += 1;
                self.fw_broken = false;
                let line = format!(
                    "the firewall lost posternd's base ({missing}); base reinstalled, {owed} open grant(s) put back"
                );
                log::warn(&line);
                self.alerts.emit(Alert::fault(Fault::Firewall, None, line));
            }
            Err(e) => {
                if !self.fw_broken {
                    self.counters.firewall_errors += 1;
                    let line = format!(
                        "the firewall lost posternd's base ({missing}) and it cannot be reinstalled: {e}; retrying every second"
                    );
                    log::error(&line);
                    self.alerts.emit(Alert::fault(Fault::Firewall, None, line));
                }
                self.fw_broken = true;
            }
        }
    }

    /// Replace the configuration, keeping grants, pending closes and the replay store.
    pub fn reload(&mut self, config: Config) {
        if let Err(e) = self.alerts.restart(&config.server.alerts) {
            log::error(&format!("alerts: {e}; the previous alert settings stay"));
        }
        self.config = config;
    }

    /// Stop: run pending cycle closes (waiting for them, each bounded by
    /// CMD_EXEC_TIMEOUT), then remove grants as FLUSH_IPT_AT_EXIT says. With a
    /// default-drop table the base stays, so the host stays closed.
    pub fn shutdown(&mut self) {
        let timeout = Duration::from_secs(self.config.server.cmd_exec_timeout);
        let closes: Vec<_> = self
            .ledger
            .due_closes(0, true)
            .into_iter()
            .map(|c| {
                std::thread::spawn(move || {
                    let r = apply::run_command(&c.command, &c.identity, timeout);
                    log::info(&format!("stanza {}: cycle close at exit: {r}", c.stanza));
                })
            })
            .collect();
        for c in closes {
            let _ = c.join();
        }
        if let Err(e) = self.replay.close() {
            log::error(&format!("cannot close the replay store cleanly: {e}"));
        }
        // The sender gets a few seconds for what it holds, never more.
        let wait = Duration::from_secs(self.config.server.alerts.timeout.min(5));
        if self.test_mode || !self.config.server.flush_at_exit {
            self.alerts.finish(wait);
            return;
        }
        match self.fw.shutdown() {
            Err(e) => log::error(&format!("cannot clean up the firewall at exit: {e}")),
            Ok(()) => {
                let now = Now::read();
                let expired = self.ledger.closed(now.mono);
                self.closes(expired, now, "expired");
                let open = self.ledger.active(now.mono);
                self.closes(open, now, "closed at exit (FLUSH_IPT_AT_EXIT)");
            }
        }
        self.alerts.finish(wait);
    }

    /// The counters and the number of open grants, for [`crate::metrics`] (what the
    /// kernel holds is not read: that can be large, and metrics are written often).
    pub fn metrics_json(&mut self, now: Now, extra: &serde_json::Value) -> serde_json::Value {
        let mut v = self.counters_json(extra);
        v["grants_open"] = self.ledger.active(now.mono).len().into();
        v
    }

    /// A worker's counters; those of the worker it replaced are kept, so that every
    /// counter only grows for the life of the process (reloads and restarted workers
    /// included).
    pub fn worker_stats(&mut self, generation: u64, c: Counters) {
        if self.worker_generation != generation {
            if let Some(old) = self.worker_counters.take() {
                self.retired_workers.add(&old);
            }
            self.worker_generation = generation;
        }
        self.worker_counters = Some(c);
    }

    /// Status as JSON.
    pub fn status_json(&mut self, now: Now, extra: &serde_json::Value) -> serde_json::Value {
        let mut v = self.counters_json(extra);
        let active: Vec<serde_json::Value> = self
            .ledger
            .active(now.mono)
            .into_iter()
            .map(|((ip, proto, port), e)| {
                serde_json::json!({
                    "source": ip.to_string(),
                    "proto": proto.name(),
                    "port": port,
                    "stanza": e.stanza,
                    "origin": e.origin,
                    "seconds_left": e.expires.saturating_sub(now.mono),
                })
            })
            .collect();
        v["active"] = serde_json::Value::Array(active);
        if !self.test_mode {
            // The kernel's truth, next to what posternd believes.
            v["kernel"] = match self.fw.list() {
                Ok(held) => held
                    .iter()
                    .map(|h| {
                        serde_json::json!({
                            "source": h.source.to_string(),
                            "proto": h.proto.name(),
                            "port": h.port,
                            "left": h.left.as_secs(),
                        })
                    })
                    .collect(),
                Err(e) => serde_json::Value::String(format!("cannot list: {e}")),
            };
        }
        v
    }

    /// Status without the list of open grants: cheap at any number of grants (for
    /// monitoring and the benchmark).
    /// `extra` holds `intake` and, with privilege separation, `worker` (the worker's
    /// part, as the caller sees the process).
    pub fn counters_json(&self, extra: &serde_json::Value) -> serde_json::Value {
        let mut counters = self.counters.clone();
        let me = crate::ids::process(std::process::id());
        let privsep = self.worker_counters.is_some();
        let mut parts = vec![serde_json::json!({
            "part": if privsep { "privileged: firewall, replay store, commands" } else { "all" },
            "pid": std::process::id(),
            "user": me.user,
        })];
        if let Some(w) = &self.worker_counters {
            let mut all = self.retired_workers.clone();
            all.add(w);
            counters.examined = all.examined;
            counters.dropped = all.dropped;
            for (k, n) in &all.refused {
                *counters.refused.entry(k).or_insert(0) += n;
            }
            parts.push(extra["worker"].clone());
        }
        let replay = match self.replay.degraded() {
            Some(why) => format!("IN MEMORY ONLY: {why}"),
            None => "persistent".into(),
        };
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
            "firewall_repairs": counters.firewall_repairs,
            "alerts": self.alerts.json(),
            "dropped": counters.dropped,
            "parts": parts,
            "replay_entries": self.replay.len(),
            "replay_store": replay,
            "pending_closes": self.ledger.pending_closes(),
            "fleet": self.fleet.as_ref().map(Fleet::health),
            "core_dumps": if nix::sys::prctl::get_dumpable().unwrap_or(true) { "enabled" } else { "disabled" },
            "intake": extra["intake"],
        })
    }
}

fn spawn_command(command: String, identity: Identity, timeout: Duration, who: String) {
    std::thread::spawn(
        move || match apply::run_command(&command, &identity, timeout) {
            apply::CommandResult::Exited(0) => log::info(&format!("{who}: command finished")),
            other => log::warn(&format!("{who}: command '{command}' {other}")),
        },
    );
}

/// Render status JSON as text for people (every string escaped: no control
/// character from a configuration or a packet reaches the terminal).
pub fn status_text(v: &serde_json::Value) -> String {
    let t = |x: &serde_json::Value| log::clean(x.as_str().unwrap_or("?")).into_owned();
    let mut s = format!(
        "posternd {} (pid {})\nintake: {}\nfirewall: {}\nreplay store: {} ({} entries)\n",
        t(&v["version"]),
        v["pid"],
        t(&v["intake"]),
        t(&v["firewall"]),
        t(&v["replay_store"]),
        v["replay_entries"],
    );
    for p in v["parts"].as_array().cloned().unwrap_or_default() {
        s.push_str(&format!(
            "process: {} pid {} as '{}'",
            t(&p["part"]),
            p["pid"],
            t(&p["user"])
        ));
        if p.get("landlock").is_some() {
            s.push_str(&format!(
                ", landlock {}, seccomp {} (kernel mode {}), no_new_privs {}, restarts {}",
                t(&p["landlock"]),
                t(&p["seccomp"]),
                p["kernel_seccomp_mode"],
                p["no_new_privs"],
                p["restarts"]
            ));
        }
        s.push('\n');
    }
    let refused: u64 = v["refused"].as_object().map_or(0, |m| {
        m.values().filter_map(serde_json::Value::as_u64).sum()
    });
    s.push_str(&format!(
        "packets examined: {}, refused: {}, ports opened: {}, commands: {}, firewall errors: {}, dropped before examination: {}\n",
        v["examined"], refused, v["grants"], v["commands"], v["firewall_errors"], v["dropped"]
    ));
    let a = &v["alerts"];
    if let Some(sinks) = a["sinks"].as_array().filter(|s| !s.is_empty()) {
        let names: Vec<String> = sinks.iter().map(t).collect();
        s.push_str(&format!(
            "alerts: sent {}, failed {}, dropped {}, queued {}, rate-limited {} ({})\n",
            a["sent"],
            a["failed"],
            a["dropped"],
            a["queued"],
            a["suppressed"],
            names.join("; ")
        ));
        if let Some(e) = a["last_error"].as_str() {
            s.push_str(&format!("alerts: last failure: {}\n", log::clean(e)));
        }
    }
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
                t(&a["source"]),
                format!("{}/{}", t(&a["proto"]), a["port"]),
                t(&a["stanza"]),
                a["seconds_left"].as_u64().unwrap_or(0)
            ));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use postern_fw::memory::Memory;
    use postern_proto::{
        encode, DigestType, EncryptionMode, HmacKey, Key, Keys, MessageType, RandomValue,
        SpaMessage,
    };

    const T: u64 = 1_795_000_000;

    fn at(t: u64) -> Now {
        Now { wall: t, mono: t }
    }

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

    fn message(n: u8, ts: u64, kind: MessageType, text: &str) -> SpaMessage {
        SpaMessage {
            random_value: RandomValue::from_digits(&format!("{:016}", u64::from(n) + 1000))
                .unwrap(),
            username: "u".into(),
            timestamp: ts,
            version: "3.0.0".into(),
            message_type: kind,
            message: text.into(),
            nat_access: None,
            server_auth: None,
            client_timeout: 0,
        }
    }

    fn keys(enc: &str, mac: &str) -> Keys {
        Keys::new(
            Key::from_passphrase(enc),
            EncryptionMode::Cbc,
            Some(HmacKey {
                key: Key::from_passphrase(mac),
                digest: DigestType::Sha256,
            }),
        )
        .unwrap()
    }

    fn sealed(m: &SpaMessage, k: &Keys, n: u8, src: &str) -> Datagram {
        let w = encode(m, k, DigestType::Sha256, [n; 8]).unwrap();
        Datagram {
            src: src.parse().unwrap(),
            dst: "198.18.1.1:62201".parse().unwrap(),
            proto: 17,
            payload: w.into_bytes(),
        }
    }

    fn packet(n: u8, ts: u64, port: u16) -> Datagram {
        let m = message(
            n,
            ts,
            MessageType::Access,
            &format!("198.18.1.2,tcp/{port}"),
        );
        sealed(&m, &keys("enc", "mac"), n, "198.18.1.2:5000")
    }

    /// What the worker forwards: the datagram as received.
    fn candidate(d: &Datagram) -> Datagram {
        d.clone()
    }

    fn daemon_with(access: &str, cap: usize) -> (Daemon, Memory) {
        let mem = Memory::default();
        let d = Daemon::new(
            config(access),
            Box::new(mem.clone()),
            ReplayStore::in_memory(240, cap),
            false,
        );
        (d, mem)
    }

    fn daemon(cap: usize) -> (Daemon, Memory) {
        daemon_with("SOURCE ANY\nKEY enc\nHMAC_KEY mac\n", cap)
    }

    fn granted(o: &Outcome) -> bool {
        matches!(o, Outcome::Granted(_))
    }

    fn refused_for(o: &Outcome, text: &str) -> bool {
        matches!(o, Outcome::Refused(r) if r.to_string().contains(text))
    }

    const REPLAY: Outcome = Outcome::Refused(Refusal::Policy(Reason::Replay));

    /// An SPA packet in an HTTP request (`fwknop -P http`), as fwknopd takes it only with
    /// ENABLE_SPA_OVER_HTTP; with ENABLE_X_FORWARDED_FOR a `-s` request is granted to
    /// the header's address, and only a `-s` request.
    #[test]
    fn spa_over_http_and_x_forwarded_for() {
        let http = |d: &Datagram, xff: &str| Datagram {
            proto: 6,
            payload: format!(
                "GET /{} HTTP/1.0\r\nUser-Agent: Fwknop/2.6.10\r\n{xff}Accept: */*\r\n\r\n",
                String::from_utf8_lossy(&d.payload)
                    .replace('+', "-")
                    .replace('/', "_")
            )
            .into_bytes(),
            ..d.clone()
        };
        let source = |n: u8| {
            let m = message(n, T, MessageType::Access, "0.0.0.0,tcp/22");
            sealed(&m, &keys("enc", "mac"), n, "198.18.1.2:5000")
        };
        let with = |server: &str| {
            let (mut d, _) = daemon(1000);
            d.config.server = crate::config::server::parse(
                server,
                std::path::Path::new("/etc/postern/fwknopd.conf"),
            )
            .unwrap()
            .0;
            d
        };
        // Off (fwknopd's default): the request is junk.
        let mut d = with("");
        let req = http(&packet(1, T, 22), "");
        assert!(matches!(
            d.handle(&req, at(T)),
            Outcome::Refused(Refusal::Policy(Reason::Junk(_)))
        ));
        // On: granted, and the digest is that of the SPA data (a replay of the bare packet).
        let mut d = with("ENABLE_SPA_OVER_HTTP Y\n");
        assert!(granted(&d.handle(&req, at(T))));
        assert_eq!(d.handle(&packet(1, T, 22), at(T)), REPLAY);
        let stranger = Datagram {
            payload: String::from_utf8_lossy(&req.payload)
                .replace("Fwknop/2.6.10", "curl/8.0")
                .into_bytes(),
            ..http(&packet(2, T, 22), "")
        };
        assert!(
            !granted(&d.handle(&stranger, at(T))),
            "no fwknop User-Agent"
        );
        // X-Forwarded-For, off: the packet's source.
        let xff = "X-Forwarded-For: 198.18.77.7, 10.0.0.1\r\n";
        let got = d.handle(&http(&source(3), xff), at(T));
        assert!(
            matches!(&got, Outcome::Granted(g) if g.iter().all(|x| x.contains("198.18.1.2"))),
            "{got:?}"
        );
        // On: the header's first address, for a -s request only.
        let mut d = with("ENABLE_SPA_OVER_HTTP Y\nENABLE_X_FORWARDED_FOR Y\n");
        let got = d.handle(&http(&source(4), xff), at(T));
        assert!(
            matches!(&got, Outcome::Granted(g) if g.iter().all(|x| x.contains("198.18.77.7"))),
            "{got:?}"
        );
        let got = d.handle(&http(&packet(5, T, 22), xff), at(T));
        assert!(
            matches!(&got, Outcome::Granted(g) if g.iter().all(|x| x.contains("198.18.1.2"))),
            "{got:?}"
        );
    }

    #[test]
    fn clock_steps_keep_replay_and_age_checks_right() {
        let (mut d, _) = daemon(1000);
        let p = packet(1, T, 22);
        assert!(granted(&d.handle(&p, at(T))));
        // The wall clock steps back an hour (NTP); the monotonic clock moved 1 s.
        let back = Now {
            wall: T - 3600,
            mono: T + 1,
        };
        assert_eq!(d.handle(&p, back), REPLAY);
        d.tick(back);
        assert_eq!(d.handle(&p, back), REPLAY, "prune must not forget it");
        // A fresh packet stamped before the step is judged against the new wall clock.
        assert!(refused_for(
            &d.handle(&packet(2, T, 22), back),
            "outside the allowed window"
        ));
        // The wall clock steps a day forward: retention runs on the monotonic clock, so
        // the digest is kept, and the packet stays a replay when the clock comes back.
        let ahead = Now {
            wall: T + 86_400,
            mono: T + 2,
        };
        d.tick(ahead);
        assert_eq!(d.handle(&p, at(T).plus(0)), REPLAY);
        let later = Now {
            wall: T,
            mono: T + 3,
        };
        assert_eq!(
            d.handle(&p, later),
            REPLAY,
            "a forward step readmitted a packet"
        );
        assert!(granted(&d.handle(&packet(4, T, 22), later)));
        // Entries live for twice the window after they were recorded (monotonic), then go.
        d.tick(Now {
            wall: T,
            mono: T + 3 + 241,
        });
        let k4 = postern_proto::Packet::new_checked(&packet(4, T, 22).payload)
            .unwrap()
            .replay_key();
        assert!(!d.replay.contains(&k4));
    }

    #[test]
    fn a_full_store_refuses_instead_of_forgetting_and_every_entry_counts() {
        let (mut d, mem) = daemon_with("SOURCE ANY\nKEY enc\nHMAC_KEY mac\nOPEN_PORTS tcp/22\n", 2);
        assert!(granted(&d.handle(&packet(1, T, 22), at(T))));
        // A packet that decrypted but is refused by policy takes an entry too.
        assert!(refused_for(
            &d.handle(&packet(2, T, 23), at(T)),
            "not in OPEN_PORTS"
        ));
        assert_eq!(d.replay.len(), 2);
        assert!(refused_for(
            &d.handle(&packet(3, T, 22), at(T)),
            "replay store is full"
        ));
        assert!(refused_for(
            &d.handle(&packet(4, T, 23), at(T)),
            "replay store is full"
        ));
        assert_eq!(d.replay.len(), 2, "nothing goes past MAX_REPLAY_ENTRIES");
        assert_eq!(mem.record.lock().unwrap().grants.len(), 1);
        assert_eq!(d.counters.refused["replay_store_full"], 2);
        assert!(mem.record.lock().unwrap().revoked.is_empty());
        // Once entries expire there is room again.
        d.tick(at(T + 241));
        assert!(granted(&d.handle(&packet(5, T + 241, 22), at(T + 241))));
    }

    #[test]
    fn after_a_lost_store_only_packets_stamped_after_start_count() {
        let (mut d, _) = daemon(1000);
        d.refuse_before(at(T));
        assert!(refused_for(
            &d.handle(&packet(1, T - 10, 22), at(T)),
            "stamped before posternd started"
        ));
        assert!(granted(&d.handle(&packet(2, T, 22), at(T))));
        // A wall-clock step does not end the rule early: it lasts one window of the
        // monotonic clock.
        let stepped = Now {
            wall: T + 10_000,
            mono: T + 5,
        };
        assert!(refused_for(
            &d.handle(&packet(6, T - 5, 22), stepped),
            "outside the allowed window"
        ));
        // After one window the guard is gone (the age check covers the rest).
        assert!(granted(&d.handle(&packet(3, T + 100, 22), at(T + 121))));
    }

    #[test]
    fn a_batch_is_one_transaction_and_duplicates_in_flight_are_refused() {
        let (mut d, mem) = daemon_with(
            "SOURCE ANY\nKEY enc\nHMAC_KEY mac\nOPEN_PORTS tcp/22\n",
            1000,
        );
        let c = |n: u8, port: u16| candidate(&packet(n, T, port));
        let cands = [c(1, 22), c(2, 22), c(1, 22), c(3, 23)];
        let batch: Vec<Decided> = cands.iter().filter_map(|c| d.rederive(c, at(T))).collect();
        assert_eq!(batch.len(), 4, "all authenticate");
        let out = d.apply_batch(batch, at(T));
        assert!(granted(&out[0]) && granted(&out[1]), "{out:?}");
        assert_eq!(out[2], REPLAY);
        assert!(refused_for(&out[3], "not in OPEN_PORTS"), "{out:?}");
        assert_eq!(mem.record.lock().unwrap().batches, vec![2]);
        // Already recorded: refused by the privileged part even if the worker sends it.
        assert!(d.rederive(&c(2, 22), at(T)).is_none());
        // A refusing firewall: each decision is tried alone, none is reported open.
        *mem.fail_apply.lock().unwrap() = Some("boom".into());
        let batch: Vec<Decided> = [c(4, 22), c(5, 22)]
            .iter()
            .filter_map(|c| d.rederive(c, at(T)))
            .collect();
        let out = d.apply_batch(batch, at(T));
        assert!(out.iter().all(|o| refused_for(o, "firewall change failed")));
        // Two grants refused; the base is in place, so nothing is reinstalled and the
        // open grant is not put back at every refusal.
        assert_eq!(d.counters.firewall_errors, 2);
        assert_eq!(mem.record.lock().unwrap().batches, vec![2]);
        assert_eq!(mem.record.lock().unwrap().setups, Vec::<bool>::new());
        // Once it accepts again, a repair puts the open grants back.
        *mem.fail_apply.lock().unwrap() = None;
        assert_eq!(d.reconcile(at(T + 1)), 1);
        assert_eq!(mem.record.lock().unwrap().grants.last().unwrap().port, 22);
    }

    #[test]
    fn forged_candidates_from_the_worker_open_nothing() {
        let access = "SOURCE 198.18.1.0/24\nKEY enc\nHMAC_KEY mac\nOPEN_PORTS tcp/22\n\
                      SOURCE 198.18.7.0/24\nKEY enc2\nHMAC_KEY mac2\nENABLE_CMD_EXEC Y\n";
        let (mut d, mem) = daemon_with(access, 1000);
        let k1 = keys("enc", "mac");
        let genuine = packet(1, T, 22);
        let mut forged = Vec::new();
        // Bytes that never authenticated, with any hint.
        forged.push(Datagram {
            payload: "U2FsdGVkX1".repeat(20).into_bytes(),
            ..candidate(&genuine)
        });
        // A genuine packet claimed from a source outside every SOURCE (a stranger).
        forged.push(Datagram {
            src: "203.0.113.9:5000".parse().unwrap(),
            ..candidate(&genuine)
        });
        // A command for the stanza that allows commands, sealed with the other stanza's
        // keys, claimed from inside the command stanza's SOURCE.
        let cmd = message(
            2,
            T,
            MessageType::Command,
            "198.18.7.2,/bin/touch /tmp/pwned",
        );
        forged.push(Datagram {
            src: "198.18.7.2:5000".parse().unwrap(),
            ..candidate(&sealed(&cmd, &k1, 2, "198.18.7.2:5000"))
        });
        // An old packet (outside the age window), and a packet for a port not open.
        forged.push(candidate(&packet(3, T - 1000, 22)));
        forged.push(candidate(&packet(4, T, 23)));
        // A payload with control characters and an over-long one.
        forged.push(Datagram {
            payload: b"granted\n198.18.1.9 \x1b[2J".to_vec(),
            ..candidate(&genuine)
        });
        let mut decided = Vec::new();
        for c in &forged {
            decided.extend(d.rederive(c, at(T)));
        }
        let outcomes = d.apply_batch(decided, at(T));
        assert!(
            outcomes.iter().all(|o| matches!(o, Outcome::Refused(_))),
            "{outcomes:?}"
        );
        assert!(mem.record.lock().unwrap().grants.is_empty());
        assert_eq!(d.counters.commands, 0);
        assert!(
            d.counters.refused["worker_mismatch"] >= 3,
            "{:?}",
            d.counters.refused
        );
        // Only packets that decrypted take replay entries: no forged entry fills the store.
        assert!(d.replay.len() <= 2, "{}", d.replay.len());
        // A genuine packet the worker marks as refused (the path that only logs and
        // alerts) opens nothing and takes no replay entry, and its suppressed count is
        // only ever a number in a log line.
        let entries = d.replay.len();
        let c = crate::privsep::protocol::Candidate {
            hint: u32::MAX,
            src: genuine.src,
            dst: genuine.dst,
            proto: 17,
            received: T,
            payload: String::from_utf8(genuine.payload.clone()).unwrap(),
            refused: true,
            suppressed: u64::MAX,
        };
        assert!(d.rederive_candidate(&c, at(T)).is_none());
        assert_eq!(d.replay.len(), entries);
        assert!(mem.record.lock().unwrap().grants.is_empty());
        // And a genuine packet still works.
        let x = d.rederive(&candidate(&genuine), at(T)).unwrap();
        assert!(granted(&d.apply_batch(vec![x], at(T))[0]));
    }

    #[test]
    fn a_cycle_close_keeps_the_identity_it_was_opened_with() {
        let access = "SOURCE ANY\nKEY enc\nHMAC_KEY mac\nCMD_EXEC_USER nobody\nCMD_CYCLE_OPEN /bin/true $IP\nCMD_CYCLE_CLOSE /bin/true close $IP\nCMD_CYCLE_TIMER 5\n";
        let (mut d, _) = daemon_with(access, 1000);
        let mut m = message(1, T, MessageType::ClientTimeoutAccess, "198.18.1.2,tcp/22");
        m.client_timeout = 600;
        let p = sealed(&m, &keys("enc", "mac"), 1, "198.18.1.2:5000");
        assert_eq!(d.handle(&p, at(T)), Outcome::Cycle(1));
        // A reload moves the stanza and drops CMD_EXEC_USER: the close is unchanged.
        d.reload(config(&format!(
            "# moved\n\n{}",
            access.replace("CMD_EXEC_USER nobody\n", "")
        )));
        let nobody = crate::ids::user("nobody").unwrap();
        // The client's timeout does not replace CMD_CYCLE_TIMER.
        assert!(d.ledger.due_closes(T + 4, false).is_empty());
        let due = d.ledger.due_closes(T + 5, false);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].identity.ids.map(|(u, _)| u), Some(nobody.uid));
        assert_eq!(due[0].command, "/bin/true close 198.18.1.2");
    }

    #[test]
    fn a_refusing_firewall_opens_nothing_and_the_daemon_goes_on() {
        let (mut d, mem) = daemon(1000);
        *mem.fail_apply.lock().unwrap() = Some("netlink: table deleted".into());
        *mem.base_missing.lock().unwrap() = true;
        assert!(refused_for(
            &d.handle(&packet(1, T, 22), at(T)),
            "firewall change failed"
        ));
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
        assert!(granted(&d.handle(&packet(2, T, 22), at(T))));
        assert_eq!(d.ledger.active(T).len(), 1);
    }
}
