//! The command line: every flag defined once (help, the man page and completions are
//! generated from it), and what the flags change in the configuration.

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

use postern_capture::filter::Filter;

use crate::config::Config;
use crate::control;

/// posternd: Single Packet Authorization daemon, compatible with fwknopd 2.6.
///
/// Reads fwknopd.conf and access.conf (default /etc/postern/, else /etc/fwknop/), sees SPA
/// packets even though the firewall drops them, and opens the requested ports for the
/// requesting address only, in nftables sets whose elements expire in the kernel.
#[derive(Debug, Parser)]
#[command(name = "posternd", version, args_conflicts_with_subcommands = true)]
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
    #[arg(short = 'K', long = "kill", conflicts_with_all = ["restart", "status", "dump_config"])]
    pub kill: bool,
    /// Make the running posternd re-read its configuration.
    #[arg(short = 'R', long = "restart", conflicts_with_all = ["status", "dump_config"])]
    pub restart: bool,
    /// Show the status of the running posternd.
    #[arg(short = 'S', long = "status", conflicts_with = "dump_config")]
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
    /// Capture filter (overrides PCAP_FILTER): `udp port N`, `udp dst portrange A-B`,
    /// `[src|dst] host ADDR`, `[src|dst] net ADDR/LEN`, ... with and/or/not and
    /// parentheses, as libpcap reads them (compiled into posternd's kernel filter).
    #[arg(short = 'P', long = "pcap-filter", value_name = "EXPR", value_parser = parse_filter)]
    pub pcap_filter: Option<Filter>,
    /// Files whose directives replace fwknopd.conf's (comma-separated; a later file
    /// wins; of several -O, the last counts, as with fwknopd).
    #[arg(
        short = 'O',
        long = "override-config",
        value_name = "FILE[,FILE...]",
        overrides_with = "override_config"
    )]
    pub override_config: Option<String>,
    /// Print a new encryption key and HMAC key for access.conf (KEY_BASE64: ...,
    /// HMAC_KEY_BASE64: ..., as fwknopd --key-gen prints them) and exit.
    #[arg(long = "key-gen")]
    pub key_gen: bool,
    /// Write the generated keys to FILE (replaced; mode 0600) instead (implies --key-gen).
    #[arg(long = "key-gen-file", value_name = "FILE")]
    pub key_gen_file: Option<PathBuf>,
    /// Bytes of the generated encryption key (1-32; default 32).
    #[arg(long = "key-len", value_name = "N", value_parser = clap::value_parser!(u16).range(1..=128))]
    pub key_len: Option<u16>,
    /// Bytes of the generated HMAC key (1-128; default 64).
    #[arg(long = "hmac-key-len", value_name = "N", value_parser = clap::value_parser!(u16).range(1..=128))]
    pub hmac_key_len: Option<u16>,
    /// Print the reasons posternd refuses a packet (the labels of its counters and
    /// logs: posternd's counterpart of fwknopd's server error codes) and exit.
    #[arg(long = "dump-serv-err-codes")]
    pub dump_serv_err_codes: bool,
    /// Parse the configuration and exit: 0 if it is usable, 1 if not (fwknopd's name
    /// for --check-config).
    #[arg(long = "exit-parse-config")]
    pub exit_parse_config: bool,
    /// Parse the configuration and the replay store (digest.cache), say what the store
    /// holds, and exit.
    #[arg(long = "exit-parse-digest-cache")]
    pub exit_parse_digest_cache: bool,
    /// Accepted for fwknopd compatibility; posternd's messages are not localised.
    #[arg(short = 'l', long = "locale", value_name = "LOCALE")]
    pub locale: Option<String>,
    /// Exit after N packets that passed the capture filter were processed (0: no limit).
    #[arg(short = 'C', long = "packet-limit", value_name = "N", value_parser = clap::value_parser!(u32).range(0..=i32::MAX as i64))]
    pub packet_limit: Option<u32>,
    /// At start, rename the replay store (digest.cache) to `<file>-old` and begin a new
    /// one (packets stamped before the start are then refused for one age window).
    #[arg(long = "rotate-digest-cache")]
    pub rotate_digest_cache: bool,
    /// More output.
    #[arg(short = 'v', long = "verbose", action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Internal: log to syslog (set when posternd detaches itself).
    #[arg(long = "syslog-internal", hide = true)]
    pub syslog_internal: bool,
    /// Print the man page and exit.
    #[arg(long = "generate-man", hide = true)]
    pub generate_man: bool,
    /// Print the completion script for SHELL and exit.
    #[arg(long = "generate-completions", hide = true, value_name = "SHELL", value_parser = ["bash", "zsh", "fish"])]
    pub generate_completions: Option<String>,
    /// Print the fwknopd.conf directive table of doc/configuration.md and exit.
    #[arg(long = "directives-table", hide = true)]
    pub directives_table: bool,
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
    /// Check, as root, that knocking works on this system, end to end.
    ///
    /// Builds throw-away network namespaces, runs this posternd in one of them (with a
    /// configuration of its own and the installed unit's settings) and the postern
    /// client in another, and checks: the port is closed before the knock, open after it
    /// for the knocker's address only, closed again when the grant expires, and a
    /// replayed packet is refused. Prints one line per check and a verdict; exits 0 only
    /// if every check passed. The host's firewall is never touched, and nothing is left
    /// behind, also when a check fails or on Ctrl-C.
    Selftest {
        /// The postern client to knock with (default: `postern` next to posternd, on
        /// PATH, or /usr/bin/postern).
        #[arg(long = "client", value_name = "FILE")]
        client: Option<PathBuf>,
    },
    /// Apply the default-drop input policy without locking yourself out.
    ///
    /// Accepts established/related, loopback and posternd's intake, then drops
    /// everything else, so only posternd's grants let a new connection in. The state
    /// before is saved first, and a guardian (in a session of its own) restores it
    /// unless `posternd setup --confirm` is run within --confirm-within seconds from a
    /// new connection that came in through a knock. The session you run it in stays
    /// open. `--dry-run` prints what would be applied; `--rollback` undoes it now.
    Setup(crate::setup::SetupArgs),
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
) -> Result<Config, crate::config::ConfigErrors> {
    let conf = cli_config.map_or_else(default_config, Path::to_path_buf);
    let access = cli.and_then(|c| c.access_file.as_deref());
    let overrides = cli.map(Cli::override_files).unwrap_or_default();
    let mut config = Config::load_with_overrides(&conf, &overrides, access)?;
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
    if let Some(f) = &cli.pcap_filter {
        // In UDP-server mode the filter does not apply (fwknopd's UDP server takes
        // UDPSERV_PORT); otherwise its one port, if it has one, is the SPA port shown.
        if let Some(port) = f.single_udp_port().filter(|_| !s.udp_server) {
            s.spa_port = port;
        }
        s.pcap_filter = Some(f.clone());
    }
}

fn parse_filter(s: &str) -> Result<Filter, String> {
    postern_capture::filter::compile(s).map_err(|e| e.to_string())
}

impl Cli {
    /// The `-O` files, in order.
    pub fn override_files(&self) -> Vec<PathBuf> {
        self.override_config
            .iter()
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|f| !f.is_empty())
            .map(PathBuf::from)
            .collect()
    }
}

/// `--key-gen`: a random encryption key (`key_len` bytes, default 32, at most 32) and
/// HMAC key (`hmac_key_len` bytes, default 64), never equal, as the two lines
/// `fwknopd --key-gen` prints.
pub fn key_gen(key_len: Option<u16>, hmac_key_len: Option<u16>) -> Result<String, String> {
    let kl = usize::from(key_len.unwrap_or(32));
    if kl > postern_proto::wire::MAX_KEY_LEN {
        return Err(format!(
            "--key-len: {kl} bytes is more than a Rijndael key takes (1-{})",
            postern_proto::wire::MAX_KEY_LEN
        ));
    }
    let hl = usize::from(hmac_key_len.unwrap_or(64));
    let mut k = zeroize::Zeroizing::new(vec![0u8; kl]);
    let mut h = zeroize::Zeroizing::new(vec![0u8; hl]);
    loop {
        getrandom::getrandom(&mut k).map_err(|e| format!("no randomness: {e}"))?;
        getrandom::getrandom(&mut h).map_err(|e| format!("no randomness: {e}"))?;
        if k[..] != h[..] {
            break;
        }
    }
    let k = postern_proto::Key::from_bytes(k.to_vec()).to_base64();
    let h = postern_proto::Key::from_bytes(h.to_vec()).to_base64();
    Ok(format!(
        "KEY_BASE64: {}\nHMAC_KEY_BASE64: {}\n",
        k.as_str(),
        h.as_str()
    ))
}

/// What `--dump-serv-err-codes` prints: every label posternd counts a refused packet
/// under (status, logs, metrics), with its meaning. fwknopd prints its numeric server
/// error codes; posternd has no numbers, these labels are its codes.
pub fn refusal_reasons() -> String {
    let mut out = String::new();
    for label in crate::privsep::protocol::LABELS {
        let meaning = match label {
            "size" => "not an SPA packet: too short or too long",
            "prefix" => {
                "not an SPA packet: it still carries the base64 of 'Salted__' or a GnuPG prefix"
            }
            "base64" => {
                "not an SPA packet: a character outside base64, or base64 that is not canonical"
            }
            "classify" => "not a Rijndael SPA packet (GnuPG packets are not supported)",
            "hmac" => "the HMAC does not match under any stanza whose SOURCE matches",
            "decrypt" => "it does not decrypt to an SPA message under the stanza's key",
            "digest" => "the SPA digest inside the message does not match",
            "fields" => "a field of the decrypted message is malformed",
            "config" => "the stanza's keys cannot be used (configuration)",
            "encode" => "a message could not be encoded",
            "replay" => "replayed packet (its digest is in the replay store)",
            "replay_store" => "the replay store could not record the packet",
            "replay_store_full" => "the replay store is full (MAX_REPLAY_ENTRIES)",
            "no_stanza" => "no stanza's SOURCE (and DESTINATION) matches the packet",
            "stanza_expired" => "the matching stanza has expired (ACCESS_EXPIRE)",
            "age" => "the timestamp is outside MAX_SPA_PACKET_AGE",
            "before_start" => {
                "stamped before posternd started, with a missing or damaged replay store"
            }
            "require_source_address" => "allow address 0.0.0.0 with REQUIRE_SOURCE_ADDRESS",
            "username" => "the username differs from REQUIRE_USERNAME",
            "nat" => "NAT access not enabled for this kind of request, or naming a host",
            "command_not_enabled" => "a command message to a stanza without ENABLE_CMD_EXEC",
            "port_restricted" => "a requested port is in RESTRICT_PORTS",
            "port_not_open" => "a requested port is not in OPEN_PORTS",
            "bad_allow_address" => "the address to open is not one a grant can name",
            "cycle_identity" => {
                "CMD_EXEC_USER/CMD_EXEC_GROUP of a command cycle cannot be resolved"
            }
            "worker_mismatch" => {
                "the unprivileged worker forwarded a packet that does not authenticate"
            }
            "other" => "any other refusal",
            _ => "",
        };
        out.push_str(&format!("{label:<24} {meaning}\n"));
    }
    out
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
