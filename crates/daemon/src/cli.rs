//! The command line: every flag defined once (help, the man page and completions are
//! generated from it), and what the flags change in the configuration.

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::control;

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
pub struct Cli {
    /// A subcommand (`status`).
    #[command(subcommand)]
    pub command: Option<Cmd>,
    /// Stay in the foreground (logs to stderr).
    #[arg(short = 'f', long = "foreground")]
    pub foreground: bool,
    /// fwknopd.conf to read.
    #[arg(short = 'c', long = "config-file", value_name = "FILE")]
    pub config_file: Option<PathBuf>,
    /// access.conf to read.
    #[arg(short = 'a', long = "access-file", value_name = "FILE")]
    pub access_file: Option<PathBuf>,
    /// Replay store (fwknopd's digest.cache).
    #[arg(short = 'd', long = "digest-file", value_name = "FILE")]
    pub digest_file: Option<PathBuf>,
    /// Capture interface (repeat, or comma-separated; `any` for all).
    #[arg(short = 'i', long = "interface", value_name = "IFACE")]
    pub interface: Vec<String>,
    /// Receive SPA packets on a UDP socket instead of AF_PACKET.
    #[arg(short = 'U', long = "udp-server")]
    pub udp_server: bool,
    /// Process the packets of a pcap capture file, then exit.
    #[arg(long = "pcap-file", value_name = "FILE")]
    pub pcap_file: Option<PathBuf>,
    /// Decide but change nothing (no firewall changes, no commands, no replay-store writes).
    #[arg(short = 't', long = "test")]
    pub test: bool,
    /// Run directory (pid file, replay store, control socket).
    #[arg(short = 'r', long = "run-dir", value_name = "DIR")]
    pub run_dir: Option<PathBuf>,
    /// Pid file.
    #[arg(short = 'p', long = "pid-file", value_name = "FILE")]
    pub pid_file: Option<PathBuf>,
    /// Stop the running posternd.
    #[arg(short = 'K', long = "kill")]
    pub kill: bool,
    /// Make the running posternd re-read its configuration.
    #[arg(short = 'R', long = "restart")]
    pub restart: bool,
    /// Show the status of the running posternd.
    #[arg(short = 'S', long = "status")]
    pub status: bool,
    /// Print the effective configuration (keys redacted) and exit.
    #[arg(short = 'D', long = "dump-config")]
    pub dump_config: bool,
    /// Check the configuration and exit: 0 if it is usable, 1 if not.
    #[arg(long = "check-config")]
    pub check_config: bool,
    /// List the openings the firewall holds now (fwknopd's --fw-list), and exit.
    #[arg(long = "fw-list")]
    pub fw_list: bool,
    /// List the backend and everything it holds (fwknopd's --fw-list-all), and exit.
    #[arg(long = "fw-list-all")]
    pub fw_list_all: bool,
    /// Close every opening the firewall holds now (fwknopd's --fw-flush), and exit.
    #[arg(long = "fw-flush")]
    pub fw_flush: bool,
    /// More output.
    #[arg(short = 'v', long = "verbose", action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Internal: log to syslog (set when posternd detaches itself).
    #[arg(long = "syslog-internal", hide = true)]
    pub syslog_internal: bool,
    /// Print the man page and exit.
    #[arg(long = "generate-man", hide = true)]
    pub generate_man: bool,
    /// Internal: run as the unprivileged worker (started by posternd itself).
    #[arg(long = "worker", hide = true)]
    pub worker: bool,
    /// Internal, for tests: start FILE (with posternd's arguments and --worker) as the
    /// worker instead of posternd itself (the compromised-worker harness).
    #[arg(long = "worker-program", hide = true, value_name = "FILE")]
    pub worker_program: Option<PathBuf>,
}

/// posternd's subcommands.
#[derive(Debug, Subcommand)]
pub enum Cmd {
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

/// The default fwknopd.conf: /etc/postern/, else /etc/fwknop/.
pub fn default_config() -> PathBuf {
    let candidates = ["/etc/postern/fwknopd.conf", "/etc/fwknop/fwknopd.conf"];
    candidates
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from(candidates[0]))
}

/// Load the configuration (`cli_config`, or the default), with the command line's
/// overrides when `cli` is given.
pub fn load(
    cli_config: Option<&Path>,
    cli: Option<&Cli>,
) -> Result<Config, crate::config::ConfigError> {
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
pub fn socket_for(config_file: Option<&Path>, run_dir: Option<&Path>) -> Result<PathBuf, String> {
    if let Some(d) = run_dir {
        return Ok(d.join("posternd.sock"));
    }
    load(config_file, None)
        .map(|c| c.server.control_socket)
        .map_err(|e| format!("configuration error: {e}; cannot tell which posternd to ask"))
}

/// Send one request to a running posternd.
pub fn ask(socket: &Path, command: &str) -> Result<String, String> {
    control::request(socket, command).map_err(|e| {
        format!(
            "cannot reach posternd at {} (is it running? are you root?): {e}",
            socket.display()
        )
    })
}
