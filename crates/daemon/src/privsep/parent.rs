//! The privileged side of privilege separation: start the worker, read what it says
//! (bounded lines, typed messages), relay its log lines marked as its own, and replace
//! it when it exits, misbehaves or is killed, with a backoff, for as long as posternd
//! runs. Grants and their expiry go on meanwhile: they never depend on the worker.
//!
//! The parent never writes to the worker (its standard input only tells it, by
//! closing, that the parent is gone), so a worker that stops reading cannot block it.

use std::io::BufReader;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::protocol::{self, FromWorker, Sandbox};
use crate::log;

/// What the reader threads report, tagged with the worker's generation.
#[derive(Debug)]
pub enum WorkerEvent {
    /// A message.
    Message(FromWorker),
    /// It broke the protocol: it is to be replaced.
    Violation(String),
    /// Its output ended (it exited, or was killed).
    Gone,
}

/// Where events go (the main loop's channel, wrapped by the caller).
pub type Report = Arc<dyn Fn(u64, WorkerEvent) -> bool + Send + Sync>;

/// A running worker.
pub struct Worker {
    child: Child,
    _stdin: ChildStdin,
    /// Which start this is (events of older ones are ignored).
    pub generation: u64,
    /// When it was started.
    pub started: Instant,
    /// Stopped on purpose (reload): its exit is not a crash.
    pub replaced: bool,
}

impl Worker {
    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kill it and reap it; how it ended, for the log.
    pub fn kill(&mut self) -> String {
        let _ = self.child.kill();
        match self.child.wait() {
            Ok(st) => {
                use std::os::unix::process::ExitStatusExt as _;
                match (st.code(), st.signal()) {
                    (Some(c), _) => format!("exited with status {c}"),
                    (None, Some(9)) => "killed (SIGKILL)".into(),
                    (None, Some(31)) => "killed by its seccomp filter (SIGSYS)".into(),
                    (None, Some(s)) => format!("killed by signal {s}"),
                    _ => st.to_string(),
                }
            }
            Err(e) => format!("cannot be reaped: {e}"),
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start `posternd --worker` with this process's arguments (as root; it drops
/// privileges itself once its sockets are open). Its messages and its log lines go to
/// `report`.
pub fn spawn(
    generation: u64,
    report: &Report,
    program: Option<&std::path::Path>,
) -> std::io::Result<Worker> {
    let exe = match program {
        Some(p) => p.to_owned(),
        None => std::env::current_exe()?,
    };
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--syslog-internal")
        .collect();
    let mut child = Command::new(exe)
        .args(&args)
        .arg("--worker")
        // One malloc arena: less memory, and no arena creation (which reads files)
        // under contention between the reader threads.
        .env("MALLOC_ARENA_MAX", "1")
        // Its standard error is a pipe to this process, not the journal.
        .env_remove("JOURNAL_STREAM")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let stdin = child
        .stdin
        .take()
        .ok_or_else(|| std::io::Error::other("no pipe to the worker"))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| std::io::Error::other("no pipe to the worker"))?;
    let stderr = child
        .stderr
        .take()
        .ok_or_else(|| std::io::Error::other("no pipe to the worker"))?;
    let pid = child.id();
    {
        let report = report.clone();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut buf = Vec::new();
            loop {
                let ev = match protocol::read_line(&mut r, &mut buf) {
                    Ok(false) => WorkerEvent::Gone,
                    Ok(true) => match protocol::decode(&buf) {
                        Ok(m) => WorkerEvent::Message(m),
                        Err(v) => WorkerEvent::Violation(v.to_string()),
                    },
                    Err(v) => WorkerEvent::Violation(v.to_string()),
                };
                let last = !matches!(ev, WorkerEvent::Message(_));
                if !report(generation, ev) || last {
                    return;
                }
            }
        });
    }
    std::thread::spawn(move || {
        // The worker's own log lines, marked as its words (escaped by the logger).
        let mut r = BufReader::new(stderr);
        let mut buf = Vec::new();
        let mut suppressed = 0u64;
        let mut window = Instant::now();
        let mut in_window = 0u32;
        loop {
            match protocol::read_line(&mut r, &mut buf) {
                Ok(true) => {}
                Ok(false) => return,
                Err(protocol::Violation::TooLong) => {
                    // Skip to the end of that line.
                    buf.clear();
                    continue;
                }
                Err(_) => return,
            }
            if window.elapsed() >= Duration::from_secs(1) {
                if suppressed > 0 {
                    log::warn(&format!(
                        "worker[{pid}]: {suppressed} more line(s) suppressed"
                    ));
                }
                window = Instant::now();
                in_window = 0;
                suppressed = 0;
            }
            in_window += 1;
            if in_window > 20 {
                suppressed += 1;
                continue;
            }
            let line = String::from_utf8_lossy(&buf);
            let line = line.strip_prefix("posternd: ").unwrap_or(&line);
            log::info(&format!("worker[{pid}] says: {line}"));
        }
    });
    Ok(Worker {
        child,
        _stdin: stdin,
        generation,
        started: Instant::now(),
        replaced: false,
    })
}

/// When to start the next worker after one crashed: 1 s, doubling to 30 s while they
/// keep crashing; back to 1 s after one ran for a minute.
#[derive(Debug, Default)]
pub struct Backoff {
    crashes: u32,
}

impl Backoff {
    /// A worker that ran for `lived` crashed: the delay before the next one.
    pub fn crashed(&mut self, lived: Duration) -> Duration {
        if lived >= Duration::from_secs(60) {
            self.crashes = 0;
        }
        let d = Duration::from_secs(1u64 << self.crashes.min(5)).min(Duration::from_secs(30));
        self.crashes = self.crashes.saturating_add(1);
        d
    }
}

/// What the privileged part knows of the worker: what the kernel says of the process
/// (read from `/proc`), and the sandbox states it reported.
#[derive(Debug, Clone, Default)]
pub struct WorkerInfo {
    /// Its pid (0 while none runs).
    pub pid: u32,
    /// Landlock, as reported.
    pub landlock: Option<Sandbox>,
    /// Its own seccomp filter, as reported.
    pub seccomp: Option<Sandbox>,
    /// Workers started after the first.
    pub restarts: u64,
}

/// The worker's lifecycle: start, replace (at once after a reload, after a backoff
/// after a crash or a protocol violation), never give up.
pub struct Supervisor {
    current: Option<Worker>,
    generation: u64,
    restart_at: Option<Instant>,
    backoff: Backoff,
    report: Report,
    program: Option<std::path::PathBuf>,
    /// For status.
    pub info: WorkerInfo,
}

impl Supervisor {
    /// No worker yet. `program` replaces `posternd --worker` (tests only).
    pub fn new(report: Report, program: Option<std::path::PathBuf>) -> Supervisor {
        Supervisor {
            current: None,
            generation: 0,
            restart_at: None,
            backoff: Backoff::default(),
            report,
            program,
            info: WorkerInfo::default(),
        }
    }

    /// Start a worker (the first, or the next).
    pub fn start(&mut self) -> std::io::Result<()> {
        self.generation += 1;
        match spawn(self.generation, &self.report, self.program.as_deref()) {
            Ok(w) => {
                if self.generation > 1 {
                    self.info.restarts += 1;
                }
                self.info.pid = w.pid();
                self.current = Some(w);
                self.restart_at = None;
                Ok(())
            }
            Err(e) => {
                self.restart_at = Some(Instant::now() + self.backoff.crashed(Duration::ZERO));
                Err(e)
            }
        }
    }

    /// Whether an event of generation `g` is from the running worker.
    pub fn is_current(&self, g: u64) -> bool {
        g == self.generation && self.current.is_some()
    }

    /// The generation of the running worker.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Whether a new worker is due now.
    pub fn due(&self) -> bool {
        self.current.is_none() && self.restart_at.is_some_and(|t| Instant::now() >= t)
    }

    /// Its ready line arrived.
    pub fn ready(&mut self, landlock: Sandbox, seccomp: Sandbox) {
        self.info.landlock = Some(landlock);
        self.info.seccomp = Some(seccomp);
    }

    /// Replace the worker to take a new configuration (its exit is not a crash).
    pub fn replace(&mut self) {
        if let Some(w) = self.current.as_mut() {
            w.replaced = true;
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(i32::try_from(w.pid()).unwrap_or(0)),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }

    /// The running worker is gone, or must go: it is killed and reaped, and the next
    /// one is due now (replaced on purpose) or after the backoff (`crashed`).
    pub fn lost(&mut self, crashed: bool) {
        self.info.pid = 0;
        self.info.landlock = None;
        self.info.seccomp = None;
        if let Some(mut w) = self.current.take() {
            let how = w.kill();
            let delay = if crashed && !w.replaced {
                log::warn(&format!("worker pid {}: {how}", w.pid()));
                self.backoff.crashed(w.started.elapsed())
            } else {
                Duration::ZERO
            };
            self.restart_at = Some(Instant::now() + delay);
        }
    }

    /// Whether the running worker was stopped on purpose.
    pub fn replacing(&self) -> bool {
        self.current.as_ref().is_some_and(|w| w.replaced)
    }

    /// The worker's part of `posternd status`.
    pub fn part_json(&self) -> serde_json::Value {
        let w = &self.info;
        let state = if w.pid == 0 {
            crate::ids::ProcState::default()
        } else {
            crate::ids::process(w.pid)
        };
        let show = |s: Option<Sandbox>| s.map_or("starting", Sandbox::as_str);
        serde_json::json!({
            "part": "worker: capture, decode, filter",
            "pid": w.pid,
            "user": state.user,
            "landlock": show(w.landlock),
            "seccomp": show(w.seccomp),
            "kernel_seccomp_mode": state.seccomp,
            "no_new_privs": state.no_new_privs,
            "restarts": w.restarts,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_resets() {
        let mut b = Backoff::default();
        let quick = Duration::from_millis(10);
        let delays: Vec<u64> = (0..7).map(|_| b.crashed(quick).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(b.crashed(Duration::from_secs(61)).as_secs(), 1);
    }
}
