//! posternd's wiring: command line, configuration, intake, privilege separation,
//! signals, control socket and the main loop. Everything is checked before the
//! firewall is touched: a bad configuration or an unusable interface leaves the ruleset
//! exactly as it was.
//!
//! ```text
//!  worker (candidates) ─┐   or  capture threads (one process)
//!  control socket ──────┼─► bounded channel ─► main loop: rederive + apply_batch /
//!  signal thread ───────┘                       handle / status / reload, tick 1/s
//! ```

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use clap::{Parser, Subcommand};
use postern_capture::Datagram;
use postern_fw::nftables::{NftConfig, Nftables};
use postern_proto::Protocol;
use posternd::clock::Now;
use posternd::config::Config;
use posternd::control::{self, Request};
use posternd::daemon::{status_text, Daemon, Outcome, WorkerInfo};
use posternd::log;
use posternd::pipeline::capture;
use posternd::privsep::parent::{self, Backoff, WorkerEvent};
use posternd::privsep::protocol::FromWorker;
use posternd::replay::ReplayStore;

/// posternd: Single Packet Authorization daemon, compatible with fwknopd 2.6.
///
/// Reads fwknopd.conf and access.conf (default /etc/postern/, else /etc/fwknop/), sees SPA
/// packets even though the firewall drops them, and opens the requested ports for the
/// requesting address only, in nftables sets whose elements expire in the kernel.
#[derive(Debug, Parser)]
#[command(
    name = "posternd",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    /// Stay in the foreground (logs to stderr).
    #[arg(short = 'f', long = "foreground")]
    foreground: bool,
    /// fwknopd.conf to read.
    #[arg(short = 'c', long = "config-file", value_name = "FILE")]
    config_file: Option<PathBuf>,
    /// access.conf to read.
    #[arg(short = 'a', long = "access-file", value_name = "FILE")]
    access_file: Option<PathBuf>,
    /// Replay store (fwknopd's digest.cache).
    #[arg(short = 'd', long = "digest-file", value_name = "FILE")]
    digest_file: Option<PathBuf>,
    /// Capture interface (repeat, or comma-separated; `any` for all).
    #[arg(short = 'i', long = "interface", value_name = "IFACE")]
    interface: Vec<String>,
    /// Receive SPA packets on a UDP socket instead of AF_PACKET.
    #[arg(short = 'U', long = "udp-server")]
    udp_server: bool,
    /// Process the packets of a pcap capture file, then exit.
    #[arg(long = "pcap-file", value_name = "FILE")]
    pcap_file: Option<PathBuf>,
    /// Decide but change nothing (no firewall changes, no commands, no replay-store writes).
    #[arg(short = 't', long = "test")]
    test: bool,
    /// Run directory (pid file, replay store, control socket).
    #[arg(short = 'r', long = "run-dir", value_name = "DIR")]
    run_dir: Option<PathBuf>,
    /// Pid file.
    #[arg(short = 'p', long = "pid-file", value_name = "FILE")]
    pid_file: Option<PathBuf>,
    /// Stop the running posternd.
    #[arg(short = 'K', long = "kill")]
    kill: bool,
    /// Make the running posternd re-read its configuration.
    #[arg(short = 'R', long = "restart")]
    restart: bool,
    /// Show the status of the running posternd.
    #[arg(short = 'S', long = "status")]
    status: bool,
    /// Print the effective configuration (keys redacted) and exit.
    #[arg(short = 'D', long = "dump-config")]
    dump_config: bool,
    /// Check the configuration and exit: 0 if it is usable, 1 if not.
    #[arg(long = "check-config")]
    check_config: bool,
    /// More output.
    #[arg(short = 'v', long = "verbose", action = clap::ArgAction::Count)]
    verbose: u8,
    /// Internal: log to syslog (set when posternd detaches itself).
    #[arg(long = "syslog-internal", hide = true)]
    syslog_internal: bool,
    /// Print the man page and exit.
    #[arg(long = "generate-man", hide = true)]
    generate_man: bool,
    /// Internal: run as the unprivileged worker (started by posternd itself).
    #[arg(long = "worker", hide = true)]
    worker: bool,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Show the running daemon's counters and active grants.
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// fwknopd.conf, to find the control socket.
        #[arg(short = 'c', long = "config-file", value_name = "FILE")]
        config_file: Option<PathBuf>,
        /// Run directory, to find the control socket.
        #[arg(short = 'r', long = "run-dir", value_name = "DIR")]
        run_dir: Option<PathBuf>,
    },
}

fn default_config() -> PathBuf {
    let candidates = ["/etc/postern/fwknopd.conf", "/etc/fwknop/fwknopd.conf"];
    candidates
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from(candidates[0]))
}

fn load(
    cli_config: Option<&Path>,
    cli: Option<&Cli>,
) -> Result<Config, posternd::config::ConfigError> {
    let conf = cli_config.map_or_else(default_config, Path::to_path_buf);
    let access = cli.and_then(|c| c.access_file.as_deref());
    let mut config = Config::load(&conf, access)?;
    if let Some(cli) = cli {
        apply_overrides(&mut config, cli);
    }
    Ok(config)
}

fn apply_overrides(config: &mut Config, cli: &Cli) {
    let s = &mut config.server;
    if let Some(dir) = &cli.run_dir {
        if !s.digest_file_set {
            s.digest_file = dir.join("digest.cache");
        }
        s.pid_file = dir.join("posternd.pid");
        s.control_socket = dir.join("posternd.sock");
        s.run_dir = dir.clone();
    }
    if let Some(d) = &cli.digest_file {
        s.digest_file = d.clone();
    }
    if let Some(p) = &cli.pid_file {
        s.pid_file = p.clone();
    }
    if !cli.interface.is_empty() {
        s.interfaces = cli
            .interface
            .iter()
            .flat_map(|i| i.split(','))
            .filter(|i| !i.is_empty())
            .map(str::to_owned)
            .collect();
    }
    if cli.udp_server {
        s.udp_server = true;
    }
    if let Some(p) = &cli.pcap_file {
        s.pcap_file = Some(p.clone());
    }
}

/// The control socket of the posternd that `config_file` (or the default) configures.
/// A configuration that cannot be read is an error: never a guess at another socket,
/// which could belong to a different posternd.
fn socket_for(config_file: Option<&Path>, run_dir: Option<&Path>) -> Result<PathBuf> {
    if let Some(d) = run_dir {
        return Ok(d.join("posternd.sock"));
    }
    load(config_file, None)
        .map(|c| c.server.control_socket)
        .map_err(|e| anyhow!("configuration error: {e}; cannot tell which posternd to ask"))
}

fn ask(socket: &Path, command: &str) -> Result<String> {
    control::request(socket, command).with_context(|| {
        format!(
            "cannot reach posternd at {} (is it running? are you root?)",
            socket.display()
        )
    })
}

enum Event {
    Packet(Datagram),
    Control(Request),
    Signal(i32),
    Worker(u64, WorkerEvent),
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            log::error(&format!("{e:#}"));
            ExitCode::from(1)
        }
    }
}

fn run() -> Result<ExitCode> {
    // Keys are read below: no core dump may ever hold them.
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        log::warn(&format!("cannot disable core dumps: {e}"));
    }
    let cli = Cli::parse();
    if cli.generate_man {
        use clap::CommandFactory as _;
        let mut out = Vec::new();
        clap_mangen::Man::new(Cli::command())
            .section("8")
            .render(&mut out)?;
        std::io::Write::write_all(&mut std::io::stdout(), &out)?;
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(Cmd::Status {
        json,
        config_file,
        run_dir,
    }) = &cli.command
    {
        let out = ask(
            &socket_for(config_file.as_deref(), run_dir.as_deref())?,
            if *json { "status-json" } else { "status" },
        )?;
        print!("{out}");
        return Ok(ExitCode::SUCCESS);
    }
    if cli.status || cli.kill || cli.restart {
        let socket = socket_for(cli.config_file.as_deref(), cli.run_dir.as_deref())?;
        let cmd = if cli.status {
            "status"
        } else if cli.kill {
            "stop"
        } else {
            "reload"
        };
        let out = ask(&socket, cmd)?;
        print!("{out}");
        return Ok(if out.starts_with("error") {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        });
    }
    log::init(true);
    let config = match load(cli.config_file.as_deref(), Some(&cli)) {
        Ok(c) => c,
        Err(e) => {
            if cli.check_config {
                println!("configuration error: {e}");
                return Ok(ExitCode::from(1));
            }
            bail!("{e}; not started, firewall unchanged");
        }
    };
    if cli.worker {
        return posternd::privsep::worker::run(config, cli.verbose > 0 || cli.test);
    }
    let nft = NftConfig {
        family: config.server.nft_table.0,
        table: config.server.nft_table.1.clone(),
        chain: config.server.nft_chain.clone(),
        default_drop: config.server.nft_default_drop,
        open_port: (config.server.udp_server && config.server.nft_default_drop)
            .then_some((Protocol::Udp, config.server.spa_port)),
        nft: config.server.nft_exe.clone(),
        netlink: config.server.nft_netlink,
    };
    let fw = Nftables::new(nft).map_err(|e| {
        anyhow!(
            "{}: {e}; not started, firewall unchanged",
            config.server.file.display()
        )
    })?;
    if cli.check_config {
        println!(
            "configuration OK: {} stanza(s), firewall: {}",
            config.stanzas.len(),
            postern_fw::Firewall::describe(&fw)
        );
        for n in &config.notes {
            println!("note: {n}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    if cli.dump_config {
        println!("{}", config.dump());
        return Ok(ExitCode::SUCCESS);
    }
    for n in &config.notes {
        log::warn(&n.to_string());
    }
    if let Some(pcap) = config.server.pcap_file.clone() {
        return run_pcap(config, Box::new(fw), &pcap, cli.test);
    }
    if !cli.foreground {
        return detach(&config);
    }
    run_daemon(config, Box::new(fw), &cli)
}

/// Start again in the background (`-f` added, own process group, logs to syslog) and
/// wait until the child answers on its control socket.
fn detach(config: &Config) -> Result<ExitCode> {
    use std::os::unix::process::CommandExt as _;
    let exe = std::env::current_exe().context("cannot find my own executable")?;
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    args.push("-f".into());
    args.push("--syslog-internal".into());
    let mut child = std::process::Command::new(exe)
        .args(&args)
        .process_group(0)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("cannot start in the background")?;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if let Some(st) = child.try_wait()? {
            bail!("posternd exited at start ({st}); see the system log, or run with -f");
        }
        if control::request(&config.server.control_socket, "ping").is_ok() {
            println!("posternd started in the background (pid {})", child.id());
            return Ok(ExitCode::SUCCESS);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("posternd did not become ready within 10 s; see the system log")
}

fn run_pcap(
    config: Config,
    fw: Box<dyn postern_fw::Firewall>,
    path: &Path,
    test: bool,
) -> Result<ExitCode> {
    use std::io::Write as _;
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut reader = postern_capture::pcapfile::Reader::new(
        std::io::BufReader::with_capacity(1 << 20, file),
        Some(config.server.spa_port),
    )
    .map_err(|e| anyhow!("{}: {e}", path.display()))?;
    let (replay, trusted) = open_replay(&config, test);
    let mut d = Daemon::new(config, fw, replay, test);
    if !trusted {
        d.refuse_before(Now::read());
    }
    d.setup_firewall().map_err(|e| anyhow!("{e}"))?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut n = 0u64;
    while let Some((_, dg)) = reader
        .next_datagram()
        .map_err(|e| anyhow!("{}: {e}", path.display()))?
    {
        n += 1;
        let text = match d.handle(&dg, Now::read()) {
            Outcome::Refused(r) => format!("refused: {r}"),
            Outcome::Granted(g) => format!("granted: {}", g.join(", ")),
            Outcome::Command => "command run".into(),
            Outcome::Cycle(n) => format!("cycle: {n} command(s)"),
            Outcome::WouldAct(w) => format!("would act: {}", log::clean(&w)),
        };
        writeln!(out, "{} -> {}: {text}", dg.src, dg.dst)?;
    }
    writeln!(out, "{n} packet(s) processed")?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// The replay store as configured, and whether it can be trusted. When its file was
/// missing, damaged, unclean, or cannot be written, the caller refuses packets stamped
/// before the start for one age window (anything captured earlier could be unknown to
/// the store). Never an error: a disk that fails locks nobody out.
fn open_replay(config: &Config, test: bool) -> (ReplayStore, bool) {
    let retain = 2 * config.server.max_packet_age;
    let cap = config.server.max_replay_entries;
    if test || !config.server.digest_persistence {
        return (ReplayStore::in_memory(retain, cap), true);
    }
    let path = &config.server.digest_file;
    let flag = config.server.run_dir.join("replay.untrusted");
    let opened = ReplayStore::open(path, Some(&flag), Now::read(), retain, cap);
    opened.warnings.iter().for_each(|w| log::warn(w));
    if let Some(why) = opened.store.degraded() {
        log::error(&format!(
            "{why}: the replay store runs IN MEMORY ONLY (replays are still refused; posternd status shows it)"
        ));
    }
    if opened.trusted {
        return (opened.store, true);
    }
    log::warn(&format!(
        "the replay store {} {}: for the next {} s only packets stamped after this start are accepted",
        path.display(),
        if !opened.existed {
            "did not exist (first start?)"
        } else if opened.store.degraded().is_some() {
            "cannot be written"
        } else if opened.unclean {
            "was not closed cleanly (crash, power loss or kill -9)"
        } else {
            "is damaged or was not kept on disk by the previous run"
        },
        config.server.max_packet_age
    ));
    (opened.store, false)
}

fn check_pid_file(path: &Path) -> Result<()> {
    if let Ok(text) = std::fs::read_to_string(path) {
        if let Ok(pid) = text.trim().parse::<u32>() {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if pid != std::process::id() && comm.trim() == "posternd" {
                bail!(
                    "posternd is already running (pid {pid}, {})",
                    path.display()
                );
            }
        }
    }
    Ok(())
}

/// Tell systemd something (`READY=1`, `WATCHDOG=1`, ...), when it listens.
fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(sock) = std::os::unix::net::UnixDatagram::unbound() else {
        return;
    };
    let p = path.to_string_lossy().into_owned();
    let sent = if let Some(name) = p.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt as _;
        std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
            .and_then(|a| sock.send_to_addr(state.as_bytes(), &a))
            .is_ok()
    } else {
        sock.send_to(state.as_bytes(), &p).is_ok()
    };
    if !sent {
        log::warn("cannot notify systemd");
    }
}

/// Half of systemd's watchdog interval (`WATCHDOG_USEC`), when it asks for pings.
fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Some(pid) = std::env::var("WATCHDOG_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
    {
        if pid != std::process::id() {
            return None;
        }
    }
    Some(Duration::from_micros(usec / 2).max(Duration::from_millis(100)))
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The worker and its lifecycle, seen from the main loop.
struct Workers {
    current: Option<parent::Worker>,
    generation: u64,
    restart_at: Option<Instant>,
    backoff: Backoff,
    report: parent::Report,
}

impl Workers {
    fn new(tx: &SyncSender<Event>) -> Workers {
        let tx = tx.clone();
        Workers {
            current: None,
            generation: 0,
            restart_at: None,
            backoff: Backoff::default(),
            report: Arc::new(move |g, ev| tx.send(Event::Worker(g, ev)).is_ok()),
        }
    }

    fn start(&mut self, daemon: &mut Daemon) -> std::io::Result<()> {
        self.generation += 1;
        let w = parent::spawn(self.generation, &self.report)?;
        let restarts = daemon.worker.as_ref().map_or(0, |i| i.restarts + 1);
        daemon.worker = Some(WorkerInfo {
            pid: w.pid(),
            restarts: if self.generation == 1 { 0 } else { restarts },
            ..WorkerInfo::default()
        });
        self.current = Some(w);
        self.restart_at = None;
        Ok(())
    }

    /// The current worker is gone or must go: replace it now (reload) or after the
    /// backoff (crash, violation).
    fn lost(&mut self, daemon: &mut Daemon, crashed: bool) {
        if let Some(info) = daemon.worker.as_mut() {
            // Not running until the next one is ready.
            info.pid = 0;
            info.landlock = None;
            info.seccomp = None;
        }
        if let Some(mut w) = self.current.take() {
            let how = w.kill();
            if crashed && !w.replaced {
                log::warn(&format!("worker pid {}: {how}", w.pid()));
            }
            let delay = if crashed && !w.replaced {
                self.backoff.crashed(w.started.elapsed())
            } else {
                Duration::ZERO
            };
            self.restart_at = Some(Instant::now() + delay);
        }
    }
}

/// Wait for the first worker's ready line (or its failure) before anything is touched.
fn await_ready(rx: &mpsc::Receiver<Event>, daemon: &mut Daemon) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(Event::Worker(_, WorkerEvent::Message(FromWorker::Ready { landlock, seccomp }))) => {
                if let Some(w) = daemon.worker.as_mut() {
                    w.landlock = Some(landlock);
                    w.seccomp = Some(seccomp);
                }
                return Ok(());
            }
            Ok(Event::Worker(_, WorkerEvent::Gone)) => {
                bail!("the worker did not start (see its message above)")
            }
            Ok(Event::Worker(_, WorkerEvent::Violation(v))) => {
                bail!("the worker did not start: {v}")
            }
            Ok(_) => {}
            Err(_) => bail!("the worker did not become ready within 20 s"),
        }
    }
}

fn run_daemon(config: Config, fw: Box<dyn postern_fw::Firewall>, cli: &Cli) -> Result<ExitCode> {
    if cli.syslog_internal {
        log::init(false);
    }
    check_pid_file(&config.server.pid_file)?;
    let (tx, rx) = mpsc::sync_channel::<Event>(8192);
    let dropped = Arc::new(AtomicU64::new(0));
    let (replay, trusted) = open_replay(&config, cli.test);
    let privsep = config.server.privilege_separation && is_root() && !cli.test;
    let stanzas = config.stanzas.len();
    let pid_file = config.server.pid_file.clone();
    let config_file = config.server.file.clone();
    let verbose = cli.verbose > 0 || config.server.verbose;
    let intake_desc = capture::describe(&config);
    let one_process_intake = if privsep {
        None
    } else {
        Some(capture::open(&config)?)
    };
    let mut daemon = Daemon::new(config, fw, replay, cli.test);
    daemon.verbose = verbose;
    if !trusted {
        // Held by the privileged part: no worker restart or reload forgets it.
        daemon.refuse_before(Now::read());
    }
    // Open the intake before touching the firewall: a bad interface changes nothing.
    let mut workers = Workers::new(&tx);
    let mut reading = capture::Reading::default();
    if privsep {
        workers.start(&mut daemon).map_err(|e| {
            anyhow!("cannot start the worker: {e}; not started, firewall unchanged")
        })?;
        await_ready(&rx, &mut daemon)
            .map_err(|e| anyhow!("{e:#}; not started, firewall unchanged"))?;
    } else if let Some(intake) = one_process_intake {
        let (tx, dropped) = (tx.clone(), dropped.clone());
        let sink: capture::Sink = Arc::new(move |d| forward(&tx, &dropped, d));
        reading = capture::start(intake, &sink);
    }
    let socket = daemon.config.server.control_socket.clone();
    control::serve(&socket, tx.clone(), Event::Control)
        .with_context(|| format!("control socket {}", socket.display()))?;
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGHUP,
    ])
    .context("cannot install signal handlers")?;
    {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for s in signals.forever() {
                if tx.send(Event::Signal(s)).is_err() {
                    break;
                }
            }
        });
    }
    if let Err(e) = daemon.setup_firewall() {
        let _ = std::fs::remove_file(&socket);
        bail!("cannot install the firewall base: {e}");
    }
    if let Some(dir) = pid_file.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    std::fs::write(&pid_file, format!("{}\n", std::process::id()))
        .with_context(|| format!("cannot write {}", pid_file.display()))?;
    let parts = match &daemon.worker {
        Some(w) => format!(
            ", worker pid {} as '{}'",
            w.pid,
            posternd::privsep::proc_state(w.pid).user
        ),
        None => String::new(),
    };
    log::info(&format!(
        "started (pid {}{parts}): {stanzas} stanza(s), intake: {intake_desc}, firewall: {}",
        std::process::id(),
        daemon.firewall()
    ));
    notify("READY=1\nSTATUS=running");
    let watchdog = watchdog_interval();
    let mut last_ping = Instant::now();
    let extra = serde_json::json!({ "intake": intake_desc });
    let mut last_tick = Instant::now();
    let mut stashed: Option<Event> = None;
    let mut drop_total = 0u64;
    let fault = loop {
        let event = match stashed.take() {
            Some(e) => Ok(e),
            None => rx.recv_timeout(Duration::from_millis(250)),
        };
        if last_tick.elapsed() >= Duration::from_secs(1) {
            drop_total += reading.drops();
            daemon.counters.dropped = drop_total + dropped.load(Ordering::Relaxed);
            daemon.tick(Now::read());
            last_tick = Instant::now();
        }
        if let Some(every) = watchdog {
            if last_ping.elapsed() >= every {
                notify("WATCHDOG=1");
                last_ping = Instant::now();
            }
        }
        if privsep
            && workers.current.is_none()
            && workers.restart_at.is_some_and(|t| Instant::now() >= t)
        {
            match workers.start(&mut daemon) {
                Ok(()) => log::info("worker started"),
                Err(e) => {
                    log::error(&format!("cannot start a worker: {e}; trying again"));
                    workers.restart_at =
                        Some(Instant::now() + workers.backoff.crashed(Duration::ZERO));
                }
            }
        }
        match event {
            Ok(Event::Packet(d)) => {
                daemon.handle(&d, Now::read());
            }
            Ok(Event::Worker(g, ev)) if g == workers.generation && workers.current.is_some() => {
                match ev {
                    WorkerEvent::Message(FromWorker::Candidate(c)) => {
                        // The candidates already queued go as one group: one fdatasync
                        // and one firewall transaction for all of them.
                        let now = Now::read();
                        let mut batch: Vec<_> = daemon.rederive(&c, now).into_iter().collect();
                        while batch.len() < 256 {
                            match rx.try_recv() {
                                Ok(Event::Worker(
                                    g2,
                                    WorkerEvent::Message(FromWorker::Candidate(c)),
                                )) if g2 == g => {
                                    batch.extend(daemon.rederive(&c, now));
                                }
                                Ok(other) => {
                                    stashed = Some(other);
                                    break;
                                }
                                Err(_) => break,
                            }
                        }
                        if !batch.is_empty() {
                            daemon.apply_batch(batch, now);
                        }
                    }
                    WorkerEvent::Message(FromWorker::Stats(s)) => {
                        if let Some(w) = daemon.worker.as_mut() {
                            w.counters = s.to_counters();
                        }
                    }
                    WorkerEvent::Message(FromWorker::Ready { landlock, seccomp }) => {
                        if let Some(w) = daemon.worker.as_mut() {
                            w.landlock = Some(landlock);
                            w.seccomp = Some(seccomp);
                        }
                    }
                    WorkerEvent::Violation(v) => {
                        daemon
                            .counters
                            .refused
                            .entry("worker_mismatch")
                            .and_modify(|n| *n += 1)
                            .or_insert(1);
                        log::error(&format!(
                            "the worker broke the protocol ({v}); it is replaced"
                        ));
                        workers.lost(&mut daemon, true);
                    }
                    WorkerEvent::Gone => {
                        let replaced = workers.current.as_ref().is_some_and(|w| w.replaced);
                        if replaced {
                            log::info("starting a worker with the new configuration");
                        } else {
                            log::warn("the worker exited; a new one is started (grants and their expiry go on)");
                        }
                        workers.lost(&mut daemon, !replaced);
                    }
                }
            }
            Ok(Event::Worker(..)) => {}
            Ok(Event::Control(req)) => {
                let answer = match req.command.as_str() {
                    "status" => status_text(&daemon.status_json(Now::read(), &extra)),
                    "status-json" => format!("{}\n", daemon.status_json(Now::read(), &extra)),
                    "counters-json" => format!("{}\n", daemon.counters_json(&extra)),
                    "ping" => "pong\n".into(),
                    "stop" => {
                        let _ = req.reply.send("stopping\n".into());
                        break None;
                    }
                    "reload" => reload(&mut daemon, cli, &config_file, &mut workers),
                    other => format!("error: unknown request '{}'\n", log::clean(other)),
                };
                let _ = req.reply.send(answer);
            }
            Ok(Event::Signal(s)) if s == signal_hook::consts::SIGHUP => {
                reload(&mut daemon, cli, &config_file, &mut workers);
            }
            Ok(Event::Signal(_)) => break None,
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break Some("the event channel closed"),
        }
    };
    notify("STOPPING=1");
    log::info("stopping");
    drop(workers);
    daemon.shutdown();
    let _ = std::fs::remove_file(&pid_file);
    let _ = std::fs::remove_file(&socket);
    match fault {
        None => Ok(ExitCode::SUCCESS),
        Some(why) => {
            log::error(&format!("stopped by a fault: {why}"));
            Ok(ExitCode::from(1))
        }
    }
}

fn forward(tx: &SyncSender<Event>, dropped: &AtomicU64, d: Datagram) {
    if let Err(TrySendError::Full(_)) = tx.try_send(Event::Packet(d)) {
        dropped.fetch_add(1, Ordering::Relaxed);
    }
}

fn reload(daemon: &mut Daemon, cli: &Cli, config_file: &Path, workers: &mut Workers) -> String {
    match load(Some(config_file), Some(cli)) {
        Ok(c) => {
            let changed = c.server.nft_table != daemon.config.server.nft_table
                || c.server.nft_chain != daemon.config.server.nft_chain
                || c.server.interfaces != daemon.config.server.interfaces
                || c.server.udp_server != daemon.config.server.udp_server
                || c.server.spa_port != daemon.config.server.spa_port;
            let n = c.stanzas.len();
            daemon.reload(c);
            // The worker reads the configuration itself: a new one takes over.
            if let Some(w) = workers.current.as_mut() {
                w.replaced = true;
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(i32::try_from(w.pid()).unwrap_or(0)),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let mut msg = format!("configuration reloaded: {n} stanza(s); active grants kept");
            if changed {
                msg.push_str("; intake and firewall layout changes take effect at restart");
            }
            log::info(&msg);
            format!("{msg}\n")
        }
        Err(e) => {
            let msg = format!("reload refused, the running configuration stays: {e}");
            log::error(&msg);
            format!("error: {msg}\n")
        }
    }
}
