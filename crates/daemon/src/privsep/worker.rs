//! The unprivileged worker (`posternd --worker`): capture and the cheap filter.
//!
//! As root, while it is the only thread: read the configuration, open the capture
//! sockets, read the replay store as a filter. Then drop to the worker user for good,
//! deny itself the filesystem (Landlock), start its threads, and install a seccomp
//! allow-list on all of them. Each reader thread runs [`Daemon::decide`] on every
//! datagram as it arrives; a datagram that decrypted under a stanza is forwarded raw, as
//! a [`Candidate`], on standard output. Junk never leaves this process. Its log lines go
//! to standard error, which the privileged part reads and marks as the worker's.

use std::io::{Read as _, Write as _};
use std::process::ExitCode;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use postern_capture::Datagram;

use super::protocol::{self, Candidate, FromWorker, Stats};
use crate::clock::Now;
use crate::config::Config;
use crate::daemon::{Daemon, Outcome, Step};
use crate::pipeline::capture::{self, Sink};
use crate::pipeline::refusals::{RefusalLog, Say};
use crate::replay::ReplayStore;

/// The worker's state, shared by its reader threads and its reporting loop.
struct State {
    daemon: Daemon,
    out: std::io::Stdout,
    /// Writing to the privileged part failed: it is gone.
    broken: bool,
    /// Which refusals were forwarded lately (per source address).
    forwarded: RefusalLog,
}

impl State {
    fn send(&mut self, m: &FromWorker) {
        let line = protocol::encode(m);
        let mut out = self.out.lock();
        if out
            .write_all(line.as_bytes())
            .and_then(|()| out.flush())
            .is_err()
        {
            self.broken = true;
        }
    }

    fn handle(&mut self, d: Datagram) {
        let now = Now::read();
        let candidate = |hint: u32, refused: bool, suppressed: u64| Candidate {
            hint,
            src: d.src,
            dst: d.dst,
            proto: d.proto,
            received: now.wall,
            payload: protocol::ascii(&d.payload),
            refused,
            suppressed,
        };
        match self.daemon.decide(&d, now) {
            Step::Decided(x) => {
                let hint = x
                    .decision
                    .stanza
                    .and_then(|i| u32::try_from(i).ok())
                    .unwrap_or(u32::MAX);
                self.send(&FromWorker::Candidate(candidate(hint, false, 0)));
                // Forwarded once: a copy of the same packet is a replay here already.
                self.daemon.remember(x.key, x.meta, now);
            }
            Step::Done(Outcome::Refused(_)) => {
                // Refused here: forwarded, at most once per address every 10 s, so that
                // the privileged part can log it with the address (and alert on a
                // replay) after deciding again itself.
                // Nothing longer than the protocol carries: such a payload is junk
                // whatever it holds, and counted in the worker's stats.
                let src = crate::pipeline::apply::unmap(d.src.ip());
                if d.payload.len() > protocol::MAX_PAYLOAD {
                    return;
                }
                if let Some(Say::Source { suppressed }) =
                    self.forwarded.refused(src, std::time::Instant::now())
                {
                    self.send(&FromWorker::Candidate(candidate(
                        u32::MAX,
                        true,
                        suppressed,
                    )));
                }
            }
            Step::Done(_) => {}
        }
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // A reader thread that panicked leaves the state usable: keep serving.
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Run the worker until the privileged part goes away.
pub fn run(config: Config, verbose: bool) -> Result<ExitCode, String> {
    let intake = capture::open(&config).map_err(|e| e.to_string())?;
    // The replay store as a filter (the privileged part owns the file and decides).
    let retain = 2 * config.server.max_packet_age;
    let now = Now::read();
    let text = crate::replay::read_store(&config.server.digest_file)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let filter = ReplayStore::from_loaded(
        crate::replay::parse(&text, now, retain),
        retain,
        config.server.max_replay_entries,
    );
    let (user, warning) = super::worker_user(config.server.worker_user.as_deref());
    if let Some(w) = warning {
        crate::log::warn(&w);
    }
    // Dropped while this is the only thread: no_new_privs and Landlock are per thread,
    // and every thread started later inherits them.
    super::drop_privileges(&user)
        .map_err(|e| format!("worker: cannot drop privileges to '{user}': {e}"))?;
    let (landlock, why) = super::deny_filesystem();
    if let Some(why) = why {
        crate::log::warn(&format!(
            "{why}: the worker runs without its filesystem sandbox"
        ));
    }
    let mut daemon = Daemon::new(
        config,
        Box::new(postern_fw::memory::Memory::default()),
        filter,
        false,
    );
    daemon.verbose = verbose;
    daemon.log_refusals = false;
    let state = Arc::new(Mutex::new(State {
        daemon,
        out: std::io::stdout(),
        broken: false,
        forwarded: RefusalLog::default(),
    }));
    let sink: Sink = {
        let state = state.clone();
        Arc::new(move |d| lock(&state).handle(d))
    };
    // Every thread is started while the state is held, so no candidate can go out
    // before the ready line, and the seccomp filter then covers all of them.
    let reading = {
        let mut st = lock(&state);
        std::thread::spawn(|| {
            // Nothing is ever sent this way: end of input means the privileged part is
            // gone, and so is the worker.
            let mut buf = [0u8; 64];
            while matches!(std::io::stdin().read(&mut buf), Ok(n) if n > 0) {}
            std::process::exit(0);
        });
        let reading = capture::start(intake, &sink);
        let seccomp = match super::restrict_syscalls() {
            Ok(s) => s,
            Err(e) => {
                crate::log::warn(&format!("{e}: the worker runs without its own filter"));
                super::protocol::Sandbox::NotAvailable
            }
        };
        st.send(&FromWorker::Ready { landlock, seccomp });
        reading
    };
    let mut last_tick = Instant::now();
    let mut dropped = 0u64;
    let mut reported = None;
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let mut st = lock(&state);
        if st.broken {
            return Ok(ExitCode::SUCCESS);
        }
        if last_tick.elapsed() >= Duration::from_secs(1) {
            dropped += reading.drops();
            st.daemon.counters.dropped = dropped;
            st.daemon.tick(Now::read());
            last_tick = Instant::now();
        }
        // Counters go to the privileged part at most ten times a second, when they moved.
        let stats = Stats::from_counters(&st.daemon.counters);
        if reported.as_ref() != Some(&stats) {
            st.send(&FromWorker::Stats(stats.clone()));
            reported = Some(stats);
        }
    }
}
