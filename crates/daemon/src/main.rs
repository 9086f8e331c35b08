//! posternd's wiring: command line, configuration, intake threads, signals, control
//! socket and the main loop. Everything is checked before the firewall is touched: a
//! bad configuration or an unusable interface leaves the ruleset exactly as it was.
//!
//! ```text
//!  capture threads ──┐
//!  control socket ───┼─► bounded channel ─► main loop: Daemon::handle / status / reload
//!  signal thread ────┘                          └─► tick every second
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
use postern_capture::afpacket::PacketSocket;
use postern_capture::udp::UdpIntake;
use postern_capture::Datagram;
use postern_fw::nftables::{NftConfig, Nftables};
use postern_proto::{Protocol, ReplayKey};
use posternd::config::Config;
use posternd::control::{self, Request};
use posternd::daemon::{status_text, Daemon, Outcome, Step, WorkerInfo};
use posternd::log;
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
    /// Internal: the worker refuses packets stamped before this time.
    #[arg(long = "worker-not-before", hide = true, value_name = "SECONDS")]
    worker_not_before: Option<u64>,
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

enum Event {
    Packet(Datagram),
    Control(Request),
    Signal(i32),
    Worker(String),
    WorkerGone,
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

fn socket_for(config_file: Option<&Path>, run_dir: Option<&Path>) -> PathBuf {
    if let Some(d) = run_dir {
        return d.join("posternd.sock");
    }
    load(config_file, None).map_or_else(
        |_| PathBuf::from("/run/postern/posternd.sock"),
        |c| c.server.control_socket,
    )
}

fn ask(socket: &Path, command: &str) -> Result<String> {
    control::request(socket, command).with_context(|| {
        format!(
            "cannot reach posternd at {} (is it running? are you root?)",
            socket.display()
        )
    })
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
            &socket_for(config_file.as_deref(), run_dir.as_deref()),
            if *json { "status-json" } else { "status" },
        )?;
        print!("{out}");
        return Ok(ExitCode::SUCCESS);
    }
    if cli.status || cli.kill || cli.restart {
        let socket = socket_for(cli.config_file.as_deref(), cli.run_dir.as_deref());
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
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let packets = postern_capture::pcapfile::read(&bytes, Some(config.server.spa_port))
        .map_err(|e| anyhow!("{}: {e}", path.display()))?;
    let (replay, not_before) = open_replay(&config, test)?;
    let mut d = Daemon::new(config, fw, replay, test);
    d.not_before = not_before;
    d.setup_firewall().map_err(|e| anyhow!("{e}"))?;
    use std::io::Write as _;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for (_, dg) in &packets {
        let outcome = d.handle(dg, now());
        let text = match outcome {
            Outcome::Refused(r) => format!("refused: {r}"),
            Outcome::Granted(g) => format!("granted: {}", g.join(", ")),
            Outcome::Command(_) => "command run".into(),
            Outcome::Cycle(n) => format!("cycle: {n} command(s)"),
            Outcome::WouldAct(w) => format!("would act: {w}"),
        };
        writeln!(out, "{} -> {}: {text}", dg.src, dg.dst)?;
    }
    writeln!(out, "{} packet(s) processed", packets.len())?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// The replay store as configured, and, when its file was missing or damaged, the start
/// time before which packets are refused for one age window (anything captured earlier
/// could be unknown to the store).
fn open_replay(config: &Config, test: bool) -> Result<(ReplayStore, Option<u64>)> {
    let retain = 2 * config.server.max_packet_age;
    let cap = config.server.max_replay_entries;
    if test || !config.server.digest_persistence {
        return Ok((ReplayStore::in_memory(retain, cap), None));
    }
    let path = &config.server.digest_file;
    let start = now();
    let opened = ReplayStore::open(path, start, retain, cap)
        .with_context(|| format!("cannot open the replay store {}", path.display()))?;
    opened.warnings.iter().for_each(|w| log::warn(w));
    if opened.trusted {
        return Ok((opened.store, None));
    }
    log::warn(&format!(
        "the replay store {} {}: for the next {} s only packets stamped after this start are accepted",
        path.display(),
        if !opened.existed {
            "did not exist (first start?)"
        } else if opened.unclean {
            "was not closed cleanly (crash, power loss or kill -9)"
        } else {
            "is damaged"
        },
        config.server.max_packet_age
    ));
    Ok((opened.store, Some(start)))
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
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

fn notify_ready() {
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
            .and_then(|a| sock.send_to_addr(b"READY=1\nSTATUS=running", &a))
            .is_ok()
    } else {
        sock.send_to(b"READY=1\nSTATUS=running", &p).is_ok()
    };
    if !sent {
        log::warn("cannot notify systemd of readiness");
    }
}

/// The capture sockets, opened (which needs CAP_NET_RAW) but not yet read.
struct Intake {
    desc: String,
    udp: Option<UdpIntake>,
    packet: Vec<Arc<PacketSocket>>,
}

/// Receive buffer asked for each capture socket: a flood queues in the kernel for a
/// moment instead of being dropped while the reader is briefly descheduled.
const RECEIVE_BUFFER: usize = 8 << 20;

/// Open the capture sockets.
fn open_intake(config: &Config) -> Result<Intake> {
    let port = config.server.spa_port;
    if config.server.udp_server {
        let udp = UdpIntake::bind(port).with_context(|| format!("cannot bind UDP port {port}"))?;
        if let Err(e) = udp.set_receive_buffer(RECEIVE_BUFFER) {
            log::warn(&format!(
                "UDP intake: cannot enlarge the receive buffer: {e}"
            ));
        }
        return Ok(Intake {
            desc: format!("UDP socket on port {port}"),
            udp: Some(udp),
            packet: Vec::new(),
        });
    }
    let mut packet = Vec::new();
    for iface in &config.server.interfaces {
        let s = PacketSocket::open(iface, port).with_context(|| {
            format!("cannot capture on interface '{iface}' (AF_PACKET needs CAP_NET_RAW)")
        })?;
        if let Err(e) = s.set_receive_buffer(RECEIVE_BUFFER) {
            log::warn(&format!(
                "capture on {iface}: cannot enlarge the receive buffer: {e}"
            ));
        }
        packet.push(Arc::new(s));
    }
    Ok(Intake {
        desc: format!(
            "AF_PACKET on {} (udp port {port})",
            config.server.interfaces.join(",")
        ),
        udp: None,
        packet,
    })
}

/// What a reader thread does with each datagram.
type Sink = Arc<dyn Fn(Datagram) + Send + Sync>;

/// A sink that queues datagrams for the main loop (counted as dropped when it is full).
fn channel_sink(tx: &SyncSender<Event>, dropped: &Arc<AtomicU64>) -> Sink {
    let (tx, dropped) = (tx.clone(), dropped.clone());
    Arc::new(move |d| forward(&tx, &dropped, d))
}

/// The capture sockets being read, kept for their kernel drop counters.
#[derive(Default)]
struct Reading {
    packet: Vec<Arc<PacketSocket>>,
    udp: Option<Arc<UdpIntake>>,
}

/// Start one reader thread per socket handing datagrams to `sink`. Returns the
/// description and the sockets (for their kernel drop counters).
fn start_intake(intake: Intake, sink: &Sink) -> (String, Reading) {
    let udp_reading = intake.udp.map(Arc::new);
    if let Some(udp) = udp_reading.clone() {
        let sink = sink.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 1500];
            loop {
                match udp.recv(&mut buf) {
                    Ok(d) => sink(d),
                    Err(e) => {
                        log::error(&format!("UDP intake: {e}"));
                        std::thread::sleep(Duration::from_secs(1));
                    }
                }
            }
        });
    }
    for s in &intake.packet {
        let (s, sink) = (s.clone(), sink.clone());
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            loop {
                match s.recv(&mut buf) {
                    Ok(d) => sink(d),
                    Err(e) => {
                        log::error(&format!("capture on {}: {e}", s.iface));
                        std::thread::sleep(Duration::from_secs(1));
                    }
                }
            }
        });
    }
    (
        intake.desc,
        Reading {
            packet: intake.packet,
            udp: udp_reading,
        },
    )
}

/// Datagrams lost before examination: the AF_PACKET rings' drops (read and reset by the
/// kernel, so accumulated in `dropped` with the queue drops) plus the UDP socket's.
fn kernel_drops(sockets: &Reading, dropped: &AtomicU64) -> u64 {
    for s in &sockets.packet {
        if let Ok(st) = s.stats() {
            dropped.fetch_add(u64::from(st.drops), Ordering::Relaxed);
        }
    }
    dropped.load(Ordering::Relaxed) + sockets.udp.as_ref().map_or(0, |u| u.drops())
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The unprivileged worker process, seen from the privileged part.
struct WorkerProc {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    /// Stopped on purpose (reload): its exit is not a crash.
    replaced: bool,
}

impl Drop for WorkerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start `posternd --worker` (as root; it drops privileges itself once its sockets are
/// open) and wait until it says it is ready. Its later lines go to `tx`.
fn spawn_worker(
    not_before: Option<u64>,
    tx: &SyncSender<Event>,
) -> Result<(WorkerProc, WorkerInfo, String)> {
    use std::io::BufRead as _;
    let exe = std::env::current_exe().context("cannot find my own executable")?;
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    args.push("--worker".into());
    if let Some(t) = not_before {
        args.extend(["--worker-not-before".into(), t.to_string()]);
    }
    let mut child = std::process::Command::new(exe)
        .args(&args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("cannot start the worker")?;
    let stdin = child.stdin.take().context("worker stdin")?;
    let mut out = std::io::BufReader::new(child.stdout.take().context("worker stdout")?);
    let mut line = String::new();
    out.read_line(&mut line)?;
    let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
    if v["t"] != "ready" {
        let _ = child.wait();
        bail!("the worker did not start (see its message above)");
    }
    let info = WorkerInfo {
        pid: child.id(),
        user: v["user"].as_str().unwrap_or("?").to_owned(),
        landlock: v["landlock"].as_str().unwrap_or("?").to_owned(),
        counters: Default::default(),
    };
    let intake = v["intake"].as_str().unwrap_or("?").to_owned();
    let tx = tx.clone();
    std::thread::spawn(move || {
        for line in out.lines() {
            let Ok(line) = line else { break };
            if tx.send(Event::Worker(line)).is_err() {
                return;
            }
        }
        let _ = tx.send(Event::WorkerGone);
    });
    Ok((
        WorkerProc {
            child,
            stdin,
            replaced: false,
        },
        info,
        intake,
    ))
}

/// The worker's state, shared by its reader threads (which decide each datagram as it
/// arrives: no queue and no thread hand-off per packet), the thread that reads the
/// privileged part's answers, and the thread that ticks and reports counters.
struct WorkerState {
    daemon: Daemon,
    /// Requests sent and not yet answered, in order.
    in_flight: std::collections::VecDeque<(ReplayKey, posternd::replay::Meta)>,
    out: std::io::Stdout,
    /// Answers read from the privileged part (by a thread that never waits for this
    /// state, so the two processes can never block each other).
    results: mpsc::Receiver<bool>,
    /// Writing to the privileged part failed: it is gone.
    broken: bool,
}

impl WorkerState {
    /// Take in the answers that arrived: digests recorded join the mirror.
    fn absorb_results(&mut self) {
        while let Ok(recorded) = self.results.try_recv() {
            if let Some((key, meta)) = self.in_flight.pop_front() {
                if recorded {
                    self.daemon.remember(key, meta, now());
                }
            }
        }
    }

    fn handle(&mut self, d: &Datagram) {
        use std::io::Write as _;
        self.absorb_results();
        if let Step::Decided(x) = self.daemon.decide(d, now()) {
            let line = format!("{}\n", posternd::privsep::encode_decided(&x));
            let mut out = self.out.lock();
            if out
                .write_all(line.as_bytes())
                .and_then(|()| out.flush())
                .is_err()
            {
                self.broken = true;
            }
            self.in_flight.push_back((x.key, x.meta));
        }
    }
}

fn lock(state: &std::sync::Mutex<WorkerState>) -> std::sync::MutexGuard<'_, WorkerState> {
    // A reader thread that panicked leaves the state usable: keep serving.
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `posternd --worker`: capture, decode and authorize as an unprivileged user; send
/// decisions about packets that decrypted to the privileged part on stdout.
fn run_worker(config: Config, cli: &Cli) -> Result<ExitCode> {
    use std::io::{BufRead as _, Write as _};
    if cli.syslog_internal {
        log::init(false);
    }
    let dropped = Arc::new(AtomicU64::new(0));
    let intake = open_intake(&config)?;
    // A read-only mirror of the replay store: the privileged part owns the file.
    let retain = 2 * config.server.max_packet_age;
    let text = std::fs::read_to_string(&config.server.digest_file).unwrap_or_default();
    let mirror = ReplayStore::from_loaded(
        posternd::replay::parse(&text, now(), retain),
        retain,
        config.server.max_replay_entries,
    );
    let user = posternd::privsep::worker_user(config.server.worker_user.as_deref());
    // Dropped while this is the only thread: no_new_privs and Landlock are per thread,
    // and every thread started later inherits them.
    posternd::privsep::drop_privileges(&user)
        .map_err(|e| anyhow!("worker: cannot drop privileges to '{user}': {e}"))?;
    let landlock = posternd::privsep::deny_filesystem();
    let verbose = cli.verbose > 0 || config.server.verbose;
    let mut daemon = Daemon::new(
        config,
        Box::new(postern_fw::memory::Memory::default()),
        mirror,
        false,
    );
    daemon.verbose = verbose;
    daemon.not_before = cli.worker_not_before;
    // Results come back in the order the requests went out; requests are not waited
    // for one by one (the privileged part commits them in groups).
    let (rtx, rrx) = mpsc::channel::<bool>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            if v["t"] == "result" && rtx.send(v["recorded"] == true).is_err() {
                break;
            }
        }
        // The privileged part is gone: so is the worker.
        std::process::exit(0);
    });
    let state = Arc::new(std::sync::Mutex::new(WorkerState {
        daemon,
        in_flight: std::collections::VecDeque::new(),
        out: std::io::stdout(),
        results: rrx,
        broken: false,
    }));
    let sink: Sink = {
        let state = state.clone();
        Arc::new(move |d| lock(&state).handle(&d))
    };
    // The ready line goes out before any reader thread can write a request.
    {
        let st = lock(&state);
        let mut out = st.out.lock();
        let intake_desc = intake.desc.clone();
        let ready = serde_json::json!({
            "t": "ready", "user": user, "pid": std::process::id(), "intake": intake_desc, "landlock": landlock,
        });
        writeln!(out, "{ready}")?;
        out.flush()?;
    }
    let (_, sockets) = start_intake(intake, &sink);
    let mut last_tick = Instant::now();
    let mut reported = u64::MAX;
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let mut st = lock(&state);
        if st.broken {
            return Ok(ExitCode::SUCCESS);
        }
        st.absorb_results();
        if last_tick.elapsed() >= Duration::from_secs(1) {
            st.daemon.counters.dropped = kernel_drops(&sockets, &dropped);
            st.daemon.tick(now());
            last_tick = Instant::now();
        }
        // Counters go to the privileged part at most ten times a second, when they moved.
        let moved = st.daemon.counters.examined + st.daemon.counters.dropped;
        if moved != reported {
            let line = format!("{}\n", posternd::privsep::encode_stats(&st.daemon.counters));
            let mut out = st.out.lock();
            out.write_all(line.as_bytes())?;
            out.flush()?;
            reported = moved;
        }
    }
}

fn run_daemon(config: Config, fw: Box<dyn postern_fw::Firewall>, cli: &Cli) -> Result<ExitCode> {
    if cli.worker {
        return run_worker(config, cli);
    }
    if cli.syslog_internal {
        log::init(false);
    }
    check_pid_file(&config.server.pid_file)?;
    let (tx, rx) = mpsc::sync_channel::<Event>(8192);
    let dropped = Arc::new(AtomicU64::new(0));
    let (replay, not_before) = open_replay(&config, cli.test)?;
    let privsep = config.server.privilege_separation && is_root() && !cli.test;
    // Open the intake before touching the firewall: a bad interface changes nothing.
    let mut worker = None;
    let mut worker_info = None;
    let mut packet_sockets = Reading::default();
    let intake = if privsep {
        let (w, info, intake) = spawn_worker(not_before, &tx)
            .map_err(|e| anyhow!("{e:#}; not started, firewall unchanged"))?;
        worker = Some(w);
        worker_info = Some(info);
        intake
    } else {
        let (intake, sockets) = start_intake(open_intake(&config)?, &channel_sink(&tx, &dropped));
        packet_sockets = sockets;
        intake
    };
    let socket = config.server.control_socket.clone();
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
    let stanzas = config.stanzas.len();
    let pid_file = config.server.pid_file.clone();
    let config_file = config.server.file.clone();
    let verbose = cli.verbose > 0 || config.server.verbose;
    let mut daemon = Daemon::new(config, fw, replay, cli.test);
    daemon.verbose = verbose;
    daemon.not_before = not_before;
    daemon.worker = worker_info;
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
        Some(w) => format!(", worker pid {} as '{}'", w.pid, w.user),
        None => String::new(),
    };
    log::info(&format!(
        "started (pid {}{parts}): {stanzas} stanza(s), intake: {intake}, firewall: {}",
        std::process::id(),
        daemon.firewall()
    ));
    notify_ready();
    let extra = serde_json::json!({ "intake": intake });
    let mut last_tick = Instant::now();
    let mut restarts: Vec<Instant> = Vec::new();
    let mut stashed: Option<Event> = None;
    loop {
        let event = match stashed.take() {
            Some(e) => Ok(e),
            None => rx.recv_timeout(Duration::from_millis(500)),
        };
        if last_tick.elapsed() >= Duration::from_secs(1) {
            daemon.counters.dropped = kernel_drops(&packet_sockets, &dropped);
            daemon.tick(now());
            last_tick = Instant::now();
        }
        match event {
            Ok(Event::Packet(d)) => {
                daemon.handle(&d, now());
            }
            Ok(Event::Worker(line)) => {
                // The worker's requests that are already queued go as one group: one
                // fdatasync and one firewall transaction for all of them.
                let mut lines = vec![line];
                while lines.len() < 256 {
                    match rx.try_recv() {
                        Ok(Event::Worker(l)) => lines.push(l),
                        Ok(other) => {
                            stashed = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                if let Some(w) = worker.as_mut() {
                    worker_lines(&mut daemon, w, lines);
                }
            }
            Ok(Event::WorkerGone) => {
                let replaced = worker.as_ref().is_some_and(|w| w.replaced);
                worker = None;
                if replaced {
                    log::info("starting a worker with the new configuration");
                } else {
                    restarts.retain(|t| t.elapsed() < Duration::from_secs(60));
                    if restarts.len() >= 5 {
                        log::error("the worker keeps exiting; stopping");
                        break;
                    }
                    restarts.push(Instant::now());
                    log::warn("the worker exited; starting a new one");
                }
                match spawn_worker(None, &tx) {
                    Ok((w, info, _)) => {
                        worker = Some(w);
                        daemon.worker = Some(info);
                    }
                    Err(e) => {
                        log::error(&format!("cannot restart the worker: {e:#}"));
                        break;
                    }
                }
            }
            Ok(Event::Control(req)) => {
                daemon.counters.dropped = kernel_drops(&packet_sockets, &dropped);
                let answer = match req.command.as_str() {
                    "status" => status_text(&daemon.status_json(now(), &extra)),
                    "status-json" => format!("{}\n", daemon.status_json(now(), &extra)),
                    "counters-json" => format!("{}\n", daemon.counters_json(&extra)),
                    "ping" => "pong\n".into(),
                    "stop" => {
                        let _ = req.reply.send("stopping\n".into());
                        break;
                    }
                    "reload" => reload(&mut daemon, cli, &config_file, worker.as_mut()),
                    other => format!("error: unknown request '{other}'\n"),
                };
                let _ = req.reply.send(answer);
            }
            Ok(Event::Signal(s)) if s == signal_hook::consts::SIGHUP => {
                reload(&mut daemon, cli, &config_file, worker.as_mut());
            }
            Ok(Event::Signal(_)) => break,
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    log::info("stopping");
    drop(worker);
    daemon.shutdown();
    let _ = std::fs::remove_file(&pid_file);
    let _ = std::fs::remove_file(&socket);
    Ok(ExitCode::SUCCESS)
}

/// Lines from the worker: decisions to check and carry out (as one group), or its
/// counters. Every decision line gets one answer, in order.
fn worker_lines(daemon: &mut Daemon, w: &mut WorkerProc, lines: Vec<String>) {
    use std::io::Write as _;
    // Per decision line: its replay key, or None (malformed).
    let mut slots: Vec<Option<ReplayKey>> = Vec::new();
    let mut batch = Vec::new();
    for line in &lines {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
        match v["t"].as_str() {
            Some("stats") => {
                if let Some(info) = daemon.worker.as_mut() {
                    info.counters = posternd::privsep::decode_stats(&v);
                }
            }
            Some("decided") => match posternd::privsep::decode_decided(line) {
                Ok(x) => {
                    slots.push(Some(x.key));
                    batch.push(x);
                }
                Err(e) => {
                    log::error(&format!("malformed request from the worker refused: {e}"));
                    slots.push(None);
                }
            },
            _ => log::error("unreadable line from the worker ignored"),
        }
    }
    if slots.is_empty() {
        return;
    }
    daemon.apply_batch(batch, now());
    let mut replies = String::new();
    for slot in slots {
        let recorded = slot.is_some_and(|key| daemon.knows(&key));
        replies.push_str(&format!(
            "{}\n",
            serde_json::json!({"t": "result", "recorded": recorded})
        ));
    }
    if w.stdin
        .write_all(replies.as_bytes())
        .and_then(|()| w.stdin.flush())
        .is_err()
    {
        log::error("cannot answer the worker");
    }
}

fn forward(tx: &SyncSender<Event>, dropped: &AtomicU64, d: Datagram) {
    if let Err(TrySendError::Full(_)) = tx.try_send(Event::Packet(d)) {
        dropped.fetch_add(1, Ordering::Relaxed);
    }
}

fn reload(
    daemon: &mut Daemon,
    cli: &Cli,
    config_file: &Path,
    worker: Option<&mut WorkerProc>,
) -> String {
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
            if let Some(w) = worker {
                w.replaced = true;
                let _ = w.child.kill();
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
