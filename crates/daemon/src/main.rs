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

use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use clap::Parser as _;
use postern_capture::Datagram;
use posternd::alert::{Alerts, Event as Alert, Fault};
use posternd::cli::{ask, load, socket_for, Cli, Cmd};
use posternd::clock::Now;
use posternd::config::Config;
use posternd::control::{self, Request};
use posternd::daemon::{status_text, Daemon};
use posternd::log;
use posternd::pipeline::capture;
use posternd::privsep::parent::{Supervisor, WorkerEvent};
use posternd::privsep::protocol::FromWorker;
use posternd::{offline, service};

enum Event {
    Fleet(posternd::fleet::StreamEvent),
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
    let mut cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                e.exit();
            }
            // One line naming the flag, and exit status 1, as fwknopd refuses options.
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            eprintln!(
                "posternd: {} (see posternd --help)",
                first.trim_start_matches("error: ")
            );
            return Ok(ExitCode::from(1));
        }
    };
    // fwknopd's name for --check-config.
    cli.check_config |= cli.exit_parse_config;
    if cli.key_gen || cli.key_gen_file.is_some() {
        return key_gen(&cli);
    }
    if cli.dump_serv_err_codes {
        print!("{}", posternd::cli::refusal_reasons());
        return Ok(ExitCode::SUCCESS);
    }
    if cli.directives_table {
        print!("{}", posternd::config::server::reference_table());
        return Ok(ExitCode::SUCCESS);
    }
    if cli.generate_man || cli.generate_completions.is_some() {
        let out = match &cli.generate_completions {
            Some(shell) => posternd::man::completions(shell),
            None => posternd::man::page(),
        };
        std::io::Write::write_all(&mut std::io::stdout(), &out)?;
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(Cmd::Selftest { client }) = &cli.command {
        return Ok(posternd::selftest::run(client.as_deref()));
    }
    if let Some(Cmd::Setup(args)) = &cli.command {
        return Ok(posternd::setup::main(args));
    }
    if let Some(Cmd::Status {
        json,
        config_file,
        run_dir,
    }) = &cli.command
    {
        let out = ask(
            &socket_for(config_file.as_deref(), run_dir.as_deref()).map_err(|e| anyhow!(e))?,
            if *json { "status-json" } else { "status" },
        )
        .map_err(|e| anyhow!(e))?;
        print!("{out}");
        return Ok(ExitCode::SUCCESS);
    }
    if cli.status || cli.kill || cli.restart {
        let socket = socket_for(cli.config_file.as_deref(), cli.run_dir.as_deref())
            .map_err(|e| anyhow!(e))?;
        let cmd = if cli.status {
            "status"
        } else if cli.kill {
            "stop"
        } else {
            "reload"
        };
        let out = ask(&socket, cmd).map_err(|e| anyhow!(e))?;
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
                for e in &e.0 {
                    println!("configuration error: {e}");
                }
                return Ok(ExitCode::from(1));
            }
            for e in &e.0 {
                eprintln!("posternd: configuration error: {e}");
            }
            bail!(
                "{} configuration error(s); not started, firewall unchanged",
                e.0.len()
            );
        }
    };
    log::name(
        &config.server.syslog_identity,
        config.server.syslog_facility,
    );
    if cli.worker {
        return posternd::privsep::worker::run(config, cli.verbose > 0 || cli.test)
            .map_err(|e| anyhow!(e));
    }
    let (fw_config, fw_why) = posternd::firewall::choose(&config.server);
    let fw = postern_fw::open(&fw_config).map_err(|e| {
        anyhow!(
            "{}: {e}; not started, firewall unchanged",
            config.server.file.display()
        )
    })?;
    // What this backend cannot do of what the configuration asks (NAT, SNAT, OUTPUT):
    // refused with file:line; what it ignores joins the notes.
    let mut config = config;
    if let Err(errors) = posternd::firewall::check(&mut config, fw.as_ref()) {
        for e in &errors {
            if cli.check_config {
                println!("configuration error: {e}");
            } else {
                eprintln!("posternd: configuration error: {e}");
            }
        }
        if cli.check_config {
            return Ok(ExitCode::from(1));
        }
        bail!(
            "{} configuration error(s); not started, firewall unchanged",
            errors.len()
        );
    }
    // What only the running system can tell: interfaces, key files, other firewall
    // layers that would override the grants.
    let findings = posternd::config::check::run(&config);
    let mut warnings = findings.warnings;
    warnings.extend(posternd::firewall::conflicts(&config.server, &fw_config));
    if !findings.errors.is_empty() {
        for e in &findings.errors {
            if cli.check_config {
                println!("configuration error: {e}");
            } else {
                eprintln!("posternd: configuration error: {e}");
            }
        }
        if cli.check_config {
            for w in &warnings {
                println!("warning: {w}");
            }
            return Ok(ExitCode::from(1));
        }
        bail!(
            "{} configuration error(s); not started, firewall unchanged",
            findings.errors.len()
        );
    }
    if cli.check_config {
        for w in &warnings {
            println!("warning: {w}");
        }
    } else if !cli.worker {
        for w in &warnings {
            log::warn(w);
        }
    }
    if cli.check_config {
        println!(
            "configuration OK: {} stanza(s), firewall: {} ({fw_why})",
            config.stanzas.len(),
            fw.describe()
        );
        for n in &config.notes {
            println!("note: {n}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    if cli.exit_parse_digest_cache {
        return Ok(parse_digest_cache(&config));
    }
    if cli.fw_list || cli.fw_list_all || cli.fw_flush {
        return firewall_command(fw, &cli, &fw_why);
    }
    if cli.dump_config {
        println!("{}", config.dump());
        return Ok(ExitCode::SUCCESS);
    }
    for n in &config.notes {
        log::warn(&n.to_string());
    }
    if let Some(pcap) = config.server.pcap_file.clone() {
        if cli.rotate_digest_cache {
            rotate_digest_cache(&config, cli.test);
        }
        let (replay, trusted) = offline::open_replay(&config, cli.test);
        let mut d = Daemon::new(config, fw, replay, cli.test);
        if !trusted {
            d.refuse_before(Now::read());
        }
        d.setup_firewall().map_err(|e| anyhow!("{e}"))?;
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        let limit = cli.packet_limit.filter(|&n| n > 0).map(u64::from);
        offline::run_limited(&mut d, &pcap, &mut out, limit).map_err(|e| anyhow!(e))?;
        return Ok(ExitCode::SUCCESS);
    }
    if !cli.foreground {
        let pid = service::detach(&config.server.control_socket).map_err(|e| anyhow!(e))?;
        println!("posternd started in the background (pid {pid})");
        return Ok(ExitCode::SUCCESS);
    }
    log::info(&format!("firewall: {fw_why}"));
    run_daemon(config, fw, &cli)
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Wait for the first worker's ready line (or its failure) before anything is touched.
fn await_ready(rx: &mpsc::Receiver<Event>, workers: &mut Supervisor) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(Event::Worker(_, WorkerEvent::Message(FromWorker::Ready { landlock, seccomp }))) => {
                workers.ready(landlock, seccomp);
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
    service::check_pid_file(&config.server.pid_file).map_err(|e| anyhow!(e))?;
    if cli.rotate_digest_cache {
        rotate_digest_cache(&config, cli.test);
    }
    let (tx, rx) = mpsc::sync_channel::<Event>(8192);
    let dropped = Arc::new(AtomicU64::new(0));
    let (replay, trusted) = offline::open_replay(&config, cli.test);
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
    // In this (privileged) process only; the sender thread never holds up the loop.
    daemon.alerts = Alerts::start(&daemon.config.server.alerts)
        .map_err(|e| anyhow!("alerts: {e}; not started, firewall unchanged"))?;
    if !trusted {
        // Held by the privileged part: no worker restart or reload forgets it.
        daemon.refuse_before(Now::read());
    }
    // Open the intake before touching the firewall: a bad interface changes nothing.
    let mut workers = {
        let tx = tx.clone();
        Supervisor::new(
            Arc::new(move |g, ev| tx.send(Event::Worker(g, ev)).is_ok()),
            cli.worker_program.clone(),
        )
    };
    let mut reading = capture::Reading::default();
    if privsep {
        workers.start().map_err(|e| {
            anyhow!("cannot start the worker: {e}; not started, firewall unchanged")
        })?;
        daemon.worker_counters = Some(Default::default());
        await_ready(&rx, &mut workers)
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
    if let Some(fc) = daemon.config.server.fleet.clone() {
        daemon.fleet = Some(start_fleet(&fc, &tx)?);
    }
    if let Err(e) = daemon.setup_firewall() {
        let _ = std::fs::remove_file(&socket);
        if let postern_fw::Error::Unavailable(_) = e {
            bail!("{e}; not started, firewall unchanged");
        }
        bail!("cannot install the firewall base: {e}");
    }
    if !daemon.config.server.flush_at_init {
        let kept = daemon.adopt(Now::read());
        if kept > 0 {
            log::info(&format!(
                "{kept} opening(s) from a previous run kept until they expire (FLUSH_IPT_AT_INIT N)"
            ));
        }
    }
    if let Some(dir) = pid_file.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    std::fs::write(&pid_file, format!("{}\n", std::process::id()))
        .with_context(|| format!("cannot write {}", pid_file.display()))?;
    let parts = if privsep {
        let pid = workers.info.pid;
        format!(
            ", worker pid {pid} as '{}'",
            posternd::ids::process(pid).user
        )
    } else {
        String::new()
    };
    log::info(&format!(
        "started (pid {}{parts}): {stanzas} stanza(s), intake: {intake_desc}, firewall: {}",
        std::process::id(),
        daemon.firewall()
    ));
    service::notify("READY=1\nSTATUS=running");
    let watchdog = service::watchdog_interval();
    let mut last_ping = Instant::now();
    let extra =
        |w: &Supervisor| serde_json::json!({ "intake": intake_desc, "worker": w.part_json() });
    let mut last_tick = Instant::now();
    let published = posternd::metrics::Published::default();
    if let Some(addr) = daemon.config.server.metrics_listen {
        posternd::metrics::listen(addr, published.clone())
            .map_err(|e| anyhow!("METRICS_LISTEN {addr}: {e}"))?;
    }
    publish_metrics(&mut daemon, &published, &extra(&workers));
    let mut last_metrics = Instant::now();
    let mut stashed: Option<Event> = None;
    let mut drop_total = 0u64;
    let mut fleet_lost_logged: Option<Instant> = None;
    let packet_limit = cli.packet_limit.filter(|&n| n > 0).map(u64::from);
    let fault = loop {
        if let Some(limit) = packet_limit {
            let n = examined(&daemon);
            if n >= limit {
                log::info(&format!(
                    "packet limit reached ({n} of -C {limit} processed); exiting"
                ));
                break None;
            }
        }
        let event = match stashed.take() {
            Some(e) => Ok(e),
            None => rx.recv_timeout(Duration::from_millis(250)),
        };
        if last_tick.elapsed() >= Duration::from_secs(1) {
            drop_total += reading.drops();
            daemon.counters.dropped = drop_total + dropped.load(Ordering::Relaxed);
            daemon.tick(Now::read());
            last_tick = Instant::now();
            if last_metrics.elapsed() >= METRICS_EVERY {
                publish_metrics(&mut daemon, &published, &extra(&workers));
                last_metrics = Instant::now();
            }
        }
        if let Some(every) = watchdog {
            if last_ping.elapsed() >= every {
                service::notify("WATCHDOG=1");
                last_ping = Instant::now();
            }
        }
        if privsep && workers.due() {
            match workers.start() {
                Ok(()) => log::info("worker started"),
                Err(e) => {
                    let line = format!("cannot start a worker: {e}; trying again");
                    log::error(&line);
                    daemon.alerts.emit(Alert::fault(Fault::Worker, None, line));
                }
            }
        }
        match event {
            Ok(Event::Packet(d)) => {
                daemon.handle(&d, Now::read());
            }
            Ok(Event::Fleet(ev)) => match ev {
                posternd::fleet::StreamEvent::Message { id, text, sig } => {
                    if let Some(f) = daemon.fleet.as_mut() {
                        f.stream_message(&id);
                    }
                    daemon.apply_fleet(&text, &sig, Now::read());
                }
                posternd::fleet::StreamEvent::Connected => {
                    if let Some(f) = daemon.fleet.as_mut() {
                        f.stream_state(None);
                    }
                    log::info("fleet: following the grant stream");
                }
                posternd::fleet::StreamEvent::Lost(why) => {
                    if let Some(f) = daemon.fleet.as_mut() {
                        f.stream_state(Some(why.clone()));
                    }
                    if fleet_lost_logged
                        .is_none_or(|t: Instant| t.elapsed() >= Duration::from_secs(30))
                    {
                        log::warn(&format!("fleet: grant stream: {why}; reconnecting"));
                        fleet_lost_logged = Some(Instant::now());
                    }
                }
            },
            Ok(Event::Worker(g, ev)) if workers.is_current(g) => {
                match ev {
                    WorkerEvent::Message(FromWorker::Candidate(c)) => {
                        // The candidates already queued go as one group: one fdatasync
                        // and one firewall transaction for all of them.
                        let now = Now::read();
                        let mut batch: Vec<_> =
                            daemon.rederive_candidate(&c, now).into_iter().collect();
                        while batch.len() < 256 {
                            match rx.try_recv() {
                                Ok(Event::Worker(
                                    g2,
                                    WorkerEvent::Message(FromWorker::Candidate(c)),
                                )) if g2 == g => {
                                    batch.extend(daemon.rederive_candidate(&c, now));
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
                        daemon.worker_stats(g, s.to_counters());
                    }
                    WorkerEvent::Message(FromWorker::Ready { landlock, seccomp }) => {
                        workers.ready(landlock, seccomp);
                    }
                    WorkerEvent::Violation(v) => {
                        daemon
                            .counters
                            .refused
                            .entry("worker_mismatch")
                            .and_modify(|n| *n += 1)
                            .or_insert(1);
                        let line = format!("the worker broke the protocol ({v}); it is replaced");
                        log::error(&line);
                        daemon.alerts.emit(Alert::fault(Fault::Worker, None, line));
                        workers.lost(true);
                    }
                    WorkerEvent::Gone => {
                        let replaced = workers.replacing();
                        if replaced {
                            log::info("starting a worker with the new configuration");
                        } else {
                            let line = "the worker exited; a new one is started (grants and their expiry go on)";
                            log::warn(line);
                            let ev = Alert::fault(Fault::Worker, None, line.into());
                            daemon.alerts.emit(ev);
                        }
                        workers.lost(!replaced);
                    }
                }
            }
            Ok(Event::Worker(..)) => {}
            Ok(Event::Control(req)) => {
                let answer = match req.command.as_str() {
                    "status" => status_text(&daemon.status_json(Now::read(), &extra(&workers))),
                    "status-json" => {
                        format!("{}\n", daemon.status_json(Now::read(), &extra(&workers)))
                    }
                    "counters-json" => format!("{}\n", daemon.counters_json(&extra(&workers))),
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
    service::notify("STOPPING=1");
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

/// `--fw-list`, `--fw-list-all`, `--fw-flush`: what the kernel holds, read (or closed)
/// through the configured backend, whether or not posternd runs.
fn firewall_command(
    mut fw: Box<dyn postern_fw::Firewall>,
    cli: &Cli,
    why: &str,
) -> Result<ExitCode> {
    let held = fw.list().map_err(|e| anyhow!("{}: {e}", fw.describe()))?;
    if cli.fw_list_all {
        println!("firewall: {} ({why})", fw.describe());
    }
    if cli.fw_flush {
        let grants: Vec<postern_fw::Grant> = held
            .iter()
            .map(|h| postern_fw::Grant {
                source: h.source,
                proto: h.proto,
                port: h.port,
                timeout: h.left,
                nat: None,
            })
            .collect();
        fw.revoke(&grants).map_err(|e| anyhow!("{e}"))?;
        println!("{} opening(s) closed", grants.len());
        return Ok(ExitCode::SUCCESS);
    }
    if held.is_empty() {
        println!("no openings");
    }
    for h in held {
        println!(
            "{:<40} {}/{:<6} {}s left",
            h.source,
            h.proto.name(),
            h.port,
            h.left.as_secs()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Connect to the fleet's Redis (a refused password stops the start; an unreachable
/// Redis is the configured degraded mode, said loudly) and follow its grant stream.
fn start_fleet(
    fc: &posternd::config::server::FleetConfig,
    tx: &SyncSender<Event>,
) -> Result<posternd::fleet::Fleet> {
    use posternd::fleet::{ConnectError, Fleet};
    let mut fleet = Fleet::new(fc).map_err(|e| anyhow!("{e}; not started, firewall unchanged"))?;
    match fleet.connect_at_start() {
        Ok(()) => log::info(&format!(
            "fleet: gateway '{}' on {}",
            fc.gateway,
            posternd::fleet::redact(&fc.url)
        )),
        Err(ConnectError::Auth(why)) => {
            bail!("fleet: {why} (FLEET_REDIS_PASSWORD_FILE / the ACL user); not started, firewall unchanged")
        }
        Err(ConnectError::Unreachable(why)) => log::error(&format!(
            "fleet: {why}; starting anyway: until Redis answers, FLEET_ON_REDIS_DOWN {} applies",
            match fc.on_down {
                posternd::config::server::OnRedisDown::Closed => "closed (new grants refused)",
                posternd::config::server::OnRedisDown::Local => "local (local replay store only)",
            }
        )),
    }
    let tx = tx.clone();
    posternd::fleet::follow(fc.clone(), Duration::from_secs(86_400), move |ev| {
        tx.send(Event::Fleet(ev)).is_ok()
    })
    .map_err(|e| anyhow!(e))?;
    Ok(fleet)
}

fn forward(tx: &SyncSender<Event>, dropped: &AtomicU64, d: Datagram) {
    if let Err(TrySendError::Full(_)) = tx.try_send(Event::Packet(d)) {
        dropped.fetch_add(1, Ordering::Relaxed);
    }
}

/// How often the metrics are written.
const METRICS_EVERY: Duration = Duration::from_secs(5);

/// Write the metrics textfile and update what the loopback listener serves.
fn publish_metrics(
    daemon: &mut Daemon,
    published: &posternd::metrics::Published,
    extra: &serde_json::Value,
) {
    let s = &daemon.config.server;
    if s.metrics_textfile.is_none() && s.metrics_listen.is_none() {
        return;
    }
    let text = posternd::metrics::render(&daemon.metrics_json(Now::read(), extra));
    if let Some(path) = daemon.config.server.metrics_textfile.clone() {
        if let Err(e) = posternd::metrics::write_textfile(&path, &text) {
            daemon.note_metrics_error(&format!("cannot write {}: {e}", path.display()));
        }
    }
    published.set(text);
}

fn reload(daemon: &mut Daemon, cli: &Cli, config_file: &Path, workers: &mut Supervisor) -> String {
    match load(Some(config_file), Some(cli)) {
        Ok(c) => {
            let changed = c.server.nft_table != daemon.config.server.nft_table
                || c.server.nft_chain != daemon.config.server.nft_chain
                || c.server.interfaces != daemon.config.server.interfaces
                || c.server.udp_server != daemon.config.server.udp_server
                || c.server.spa_port != daemon.config.server.spa_port
                || c.server.pcap_filter != daemon.config.server.pcap_filter;
            let n = c.stanzas.len();
            log::name(&c.server.syslog_identity, c.server.syslog_facility);
            daemon.reload(c);
            // The worker reads the configuration itself: a new one takes over.
            workers.replace();
            let mut msg = format!("configuration reloaded: {n} stanza(s); active grants kept");
            if changed {
                msg.push_str("; intake and firewall layout changes take effect at restart");
            }
            log::info(&msg);
            format!("{msg}\n")
        }
        Err(e) => {
            let all: Vec<String> = e.0.iter().map(ToString::to_string).collect();
            let msg = format!(
                "reload refused, the running configuration stays: {}",
                all.join("; ")
            );
            log::error(&msg);
            format!("error: {msg}\n")
        }
    }
}

/// Datagrams examined so far, by this process or by the workers (`-C`).
fn examined(daemon: &Daemon) -> u64 {
    if daemon.worker_counters.is_none() {
        return daemon.counters.examined;
    }
    daemon.counters_json(&serde_json::json!({}))["examined"]
        .as_u64()
        .unwrap_or(0)
}

/// `--key-gen` / `--key-gen-file`: fwknopd's two lines, printed or written (mode 0600).
fn key_gen(cli: &Cli) -> Result<ExitCode> {
    let text = posternd::cli::key_gen(cli.key_len, cli.hmac_key_len).map_err(|e| anyhow!(e))?;
    let text = zeroize::Zeroizing::new(text);
    match &cli.key_gen_file {
        None => print!("{}", text.as_str()),
        Some(path) => {
            use std::io::Write as _;
            use std::os::unix::fs::OpenOptionsExt as _;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(path)
                .with_context(|| format!("cannot write {}", path.display()))?;
            f.write_all(text.as_bytes())
                .with_context(|| format!("cannot write {}", path.display()))?;
            println!("wrote KEY_BASE64 and HMAC_KEY_BASE64 to {}", path.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `--exit-parse-digest-cache`: what the replay store holds, read without changing it.
fn parse_digest_cache(config: &Config) -> ExitCode {
    let path = &config.server.digest_file;
    if !config.server.digest_persistence {
        println!("ENABLE_DIGEST_PERSISTENCE N: no replay store file is kept");
        return ExitCode::SUCCESS;
    }
    match posternd::replay::read_store(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            println!(
                "{}: does not exist yet (posternd makes it at start)",
                path.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("{}: cannot read: {e}", path.display());
            ExitCode::from(1)
        }
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let retain = 2 * config.server.max_packet_age;
            let l = posternd::replay::parse(&text, Now::read(), retain);
            for n in &l.bad_lines {
                println!("{}:{n}: not a digest entry; skipped", path.display());
            }
            println!(
                "{}: {} entries, {} of them within the replay window ({} s), {} unreadable; digest cache parsed",
                path.display(),
                l.lines,
                l.seen.len(),
                retain,
                l.bad_lines.len()
            );
            ExitCode::SUCCESS
        }
    }
}

/// `--rotate-digest-cache`: the replay store is renamed to `<file>-old` (replacing an
/// older one) before it is opened, so the run starts a new one, as fwknopd does. The new
/// store is then missing, so packets stamped before this start are refused for one age
/// window (a packet recorded only in the old file cannot be replayed). Nothing in test
/// mode or without persistence.
fn rotate_digest_cache(config: &Config, test: bool) {
    let from = &config.server.digest_file;
    if test || !config.server.digest_persistence {
        return;
    }
    let mut to = from.as_os_str().to_owned();
    to.push("-old");
    match std::fs::rename(from, &to) {
        Ok(()) => log::info(&format!(
            "replay store rotated: {} is now {}",
            from.display(),
            std::path::Path::new(&to).display()
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => log::info(&format!(
            "--rotate-digest-cache: {} does not exist; nothing to rotate",
            from.display()
        )),
        Err(e) => log::warn(&format!(
            "--rotate-digest-cache: cannot rename {}: {e}",
            from.display()
        )),
    }
}
