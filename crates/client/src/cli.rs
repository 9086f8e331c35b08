//! Command-line flags, defined once: fwknop 2.6's client flags with the same names and
//! meanings, plus the `decode` and `keygen` subcommands. `--help` is generated from
//! these definitions.

use std::path::PathBuf;

use clap::{ArgAction, Args, Parser, Subcommand};

/// postern: Single Packet Authorization client, a drop-in for fwknop 2.6's client.
///
/// Sends one encrypted, authenticated packet that asks an SPA server (postern's
/// posternd or fwknop's fwknopd) to open ports for your address.
///
/// Example: postern -A tcp/22 -a 203.0.113.7 -D server.example.org --key-rijndael KEY --key-hmac HKEY
#[derive(Debug, Parser)]
#[command(
    name = "postern",
    version,
    args_conflicts_with_subcommands = true,
    args_override_self = true,
    disable_help_subcommand = true
)]
pub struct Cli {
    /// Subcommand (optional; without one, postern knocks like fwknop).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Knock flags (fwknop-compatible).
    #[command(flatten)]
    pub knock: KnockArgs,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Decode an SPA packet with the given keys and print its fields as JSON.
    ///
    /// Keys are given the way access.conf names them. The packet's age is not checked.
    Decode(DecodeArgs),
    /// Generate a Rijndael key and an HMAC key (same as --key-gen).
    Keygen(KeygenArgs),
    /// Print the man page (`man`) or shell completions (`bash`, `zsh`, `fish`).
    #[command(hide = true)]
    Generate {
        /// What to print.
        #[arg(value_parser = ["man", "bash", "zsh", "fish"])]
        what: String,
    },
}

/// Parse argv (program name first). Also records what clap's derive cannot: whether
/// `-s` came after `-a`.
pub fn parse(argv: &[String]) -> Result<Cli, clap::Error> {
    use clap::{CommandFactory as _, FromArgMatches as _};
    let matches = Cli::command().try_get_matches_from(argv)?;
    let mut cli = Cli::from_arg_matches(&matches)?;
    let last = |id: &str| matches.indices_of(id).and_then(Iterator::max);
    cli.knock.source_ip_last = match (last("source_ip"), last("allow_ip")) {
        (Some(s), Some(a)) => s > a,
        (Some(_), None) => true,
        _ => false,
    };
    Ok(cli)
}

/// The man page or a completion script, generated from these definitions.
pub fn generate(what: &str) -> Vec<u8> {
    use clap::CommandFactory as _;
    let mut cmd = Cli::command();
    let mut out = Vec::new();
    let shell = match what {
        "bash" => Some(clap_complete::Shell::Bash),
        "zsh" => Some(clap_complete::Shell::Zsh),
        "fish" => Some(clap_complete::Shell::Fish),
        _ => None,
    };
    match shell {
        Some(sh) => clap_complete::generate(sh, &mut cmd, "postern", &mut out),
        None => out = man_page(cmd),
    }
    out
}

/// The sections of postern(1) that clap cannot know.
const MAN_SECTIONS: &str = r#".SH FILES
.TP
.I ~/.fwknoprc
Named stanzas of settings
.RB ( \-n ,
.BR \-\-rc\-file ,
.BR \-\-save\-rc\-stanza ),
in fwknop's format; it holds keys, so it should be readable by its owner only.
.TP
.I ~/.fwknop.run
The last run's arguments
.RB ( \-l ,
.BR \-\-show\-last ,
.BR \-\-no\-save\-args ).
.SH EXIT STATUS
0 when the packet was sent (or, with
.BR \-T ,
built), the keys generated or the packet decoded; 1 on any error, with one line on
standard error naming the flag, file or check at fault.
.SH SEE ALSO
.BR posternd (8),
.BR posternd.conf (5),
.BR postern\-access.conf (5)
"#;

/// postern(1): the flags, then every subcommand in the page itself (there are no
/// `postern-decode(1)` pages), then FILES, EXIT STATUS and SEE ALSO. Plain ASCII
/// (anything else as a groff escape).
fn man_page(cmd: clap::Command) -> Vec<u8> {
    let mut cmd = cmd.subcommand_value_name("COMMAND");
    cmd.build();
    let piece = |render: &dyn Fn(&mut Vec<u8>) -> std::io::Result<()>, first: bool, keep: bool| {
        let mut buf = Vec::new();
        let _ = render(&mut buf);
        let text = String::from_utf8_lossy(&buf).into_owned();
        text.lines()
            .filter(|l| {
                let preamble = l.starts_with(".ie \\n(.g .ds Aq") || l.starts_with(".el .ds Aq");
                (first || !preamble) && (keep || !l.starts_with(".SH "))
            })
            .map(|l| format!("{l}\n"))
            .collect::<String>()
    };
    let man = clap_mangen::Man::new(cmd.clone());
    let mut s = piece(&|w| man.render_title(w), true, true);
    s += &piece(&|w| man.render_name_section(w), false, true);
    s += &piece(&|w| man.render_synopsis_section(w), false, true);
    s += &piece(&|w| man.render_description_section(w), false, true);
    s += &piece(&|w| man.render_options_section(w), false, true);
    let subs: Vec<&clap::Command> = cmd.get_subcommands().filter(|c| !c.is_hide_set()).collect();
    if !subs.is_empty() {
        s.push_str(".SH COMMANDS\n");
    }
    for sub in subs {
        let name = format!("postern {}", sub.get_name());
        s += &format!(".SS \"{name}\"\n");
        let m = clap_mangen::Man::new(sub.clone().bin_name(&name));
        s += &piece(&|w| m.render_synopsis_section(w), false, false);
        s.push_str(".PP\n");
        s += &piece(&|w| m.render_description_section(w), false, false);
        s += &piece(&|w| m.render_options_section(w), false, false);
    }
    s.push_str(MAN_SECTIONS);
    s += &piece(&|w| man.render_version_section(w), false, true);
    s.chars()
        .map(|c| {
            if c.is_ascii() {
                c.to_string()
            } else {
                format!("\\[u{:04X}]", u32::from(c))
            }
        })
        .collect::<String>()
        .into_bytes()
}

/// Flags of `postern keygen`.
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Encryption key length in bytes (1..32).
    #[arg(long = "key-len", value_name = "N")]
    pub key_len: Option<usize>,
    /// HMAC key length in bytes (1..128).
    #[arg(long = "hmac-key-len", value_name = "N")]
    pub hmac_key_len: Option<usize>,
    /// HMAC type the key is for (sets the default HMAC key length).
    #[arg(long = "hmac-digest-type", value_name = "NAME")]
    pub hmac_digest_type: Option<String>,
    /// Write the keys to this file (mode 0600) instead of standard output.
    #[arg(short = 'K', long = "key-gen-file", value_name = "FILE")]
    pub key_gen_file: Option<PathBuf>,
}

/// The fwknop client flags.
#[derive(Debug, Args, Default, Clone)]
pub struct KnockArgs {
    /// Ports to open on the server, e.g. tcp/22 or tcp/22,udp/53.
    #[arg(short = 'A', long = "access", value_name = "PROTO/PORT,...")]
    pub access: Option<String>,
    /// Address to open access for (IPv4; IPv6 only with postern's daemon).
    #[arg(short = 'a', long = "allow-ip", value_name = "IP")]
    pub allow_ip: Option<String>,
    /// Let the server use the packet's source address (not recommended).
    ///
    /// With -a too, the later of the two wins, as in fwknop.
    #[arg(short = 's', long = "source-ip")]
    pub source_ip: bool,
    /// Whether -s came after -a on the command line (set by [`parse`]).
    #[arg(skip)]
    pub source_ip_last: bool,
    /// Find your public address over HTTPS (see --resolve-url).
    ///
    /// An allow address given anywhere (-a, -s, ALLOW_IP) takes precedence, as in fwknop.
    #[arg(short = 'R', long = "resolve-ip-https", alias = "resolve-ip-http")]
    pub resolve_ip: bool,
    /// URL that answers with your public address (for -R).
    #[arg(long = "resolve-url", value_name = "URL")]
    pub resolve_url: Option<String>,
    /// Allow plain HTTP for -R's default URL (open to tampering).
    #[arg(long = "resolve-http-only")]
    pub resolve_http_only: bool,
    /// SPA server: host name, IPv4 or IPv6 address.
    #[arg(short = 'D', long = "destination", value_name = "HOST")]
    pub destination: Option<String>,
    /// Destination port of the SPA packet (default 62201, for every -P).
    #[arg(short = 'p', long = "server-port", value_name = "PORT")]
    pub server_port: Option<String>,
    /// Transport: udp (default), tcp, http; udpraw, tcpraw or icmp (raw sockets, root).
    #[arg(short = 'P', long = "server-proto", value_name = "PROTO")]
    pub server_proto: Option<String>,
    /// Send the packet through this HTTP proxy: HOST[:PORT] (implies -P http).
    #[arg(short = 'H', long = "http-proxy", value_name = "HOST[:PORT]")]
    pub http_proxy: Option<String>,
    /// ICMP type for -P icmp (default 0, echo reply).
    #[arg(long = "icmp-type", value_name = "TYPE")]
    pub icmp_type: Option<String>,
    /// ICMP code for -P icmp (default 0).
    #[arg(long = "icmp-code", value_name = "CODE")]
    pub icmp_code: Option<String>,
    /// Source address of the packet (raw transports only; needs root).
    #[arg(
        short = 'Q',
        long = "spoof-source",
        alias = "spoof-src",
        value_name = "IP"
    )]
    pub spoof_source: Option<String>,
    /// Source port of the SPA packet.
    #[arg(short = 'S', long = "source-port", value_name = "PORT")]
    pub source_port: Option<String>,
    /// Send to a random destination port (10000-65534).
    #[arg(short = 'r', long = "rand-port")]
    pub rand_port: bool,
    /// Ask the server to keep access open this many seconds.
    #[arg(short = 'f', long = "fw-timeout", value_name = "SECONDS")]
    pub fw_timeout: Option<String>,
    /// Ask the server to run this command instead of opening ports.
    #[arg(short = 'C', long = "server-cmd", value_name = "COMMAND")]
    pub server_cmd: Option<String>,
    /// NAT access to an internal host: HOST:PORT.
    #[arg(short = 'N', long = "nat-access", value_name = "HOST:PORT")]
    pub nat_access: Option<String>,
    /// Reach a service on the server itself through a forwarded port.
    #[arg(long = "nat-local")]
    pub nat_local: bool,
    /// Port to ask the server to forward (replaces the port in -A).
    #[arg(long = "nat-port", value_name = "PORT")]
    pub nat_port: Option<String>,
    /// Pick a random port to forward.
    #[arg(long = "nat-rand-port")]
    pub nat_rand_port: bool,
    /// Username to put in the packet.
    #[arg(short = 'U', long = "spoof-user", value_name = "USER")]
    pub spoof_user: Option<String>,
    /// Add time to the packet's timestamp: N, Nm, Nh or Nd.
    #[arg(long = "time-offset-plus", value_name = "TIME")]
    pub time_offset_plus: Option<String>,
    /// Subtract time from the packet's timestamp: N, Nm, Nh or Nd.
    #[arg(long = "time-offset-minus", value_name = "TIME")]
    pub time_offset_minus: Option<String>,
    /// Use this stanza of the rc file (on top of [default]).
    #[arg(short = 'n', long = "named-config", value_name = "NAME")]
    pub named_config: Option<String>,
    /// Path of the rc file (default ~/.fwknoprc).
    #[arg(long = "rc-file", value_name = "FILE")]
    pub rc_file: Option<PathBuf>,
    /// Do not read the rc file.
    #[arg(long = "no-rc-file")]
    pub no_rc_file: bool,
    /// Save the options given on the command line as the -n stanza of the rc file
    /// (the -D server's stanza without -n), replacing what it held, as fwknop does.
    ///
    /// Keys already in the stanza are asked about, one by one, on standard input. With
    /// --key-gen the generated keys are saved instead of printed.
    #[arg(long = "save-rc-stanza")]
    pub save_rc_stanza: bool,
    /// With --save-rc-stanza, replace keys without asking.
    #[arg(long = "force-stanza")]
    pub force_stanza: bool,
    /// List the stanzas of the rc file.
    #[arg(long = "stanza-list")]
    pub stanza_list: bool,
    /// Generate a Rijndael key and an HMAC key and print them.
    #[arg(short = 'k', long = "key-gen")]
    pub key_gen: bool,
    /// Write the generated keys to this file (implies --key-gen).
    #[arg(short = 'K', long = "key-gen-file", value_name = "FILE")]
    pub key_gen_file: Option<PathBuf>,
    /// Length of the generated encryption key in bytes (1..32).
    #[arg(long = "key-len", value_name = "N")]
    pub key_len: Option<String>,
    /// Length of the generated HMAC key in bytes (1..128).
    #[arg(long = "hmac-key-len", value_name = "N")]
    pub hmac_key_len: Option<String>,
    /// Rijndael key (passphrase).
    ///
    /// A passphrase is used before a base64 key, and that before a key file, wherever
    /// each was given (flag or rc file), as in fwknop.
    #[arg(long = "key-rijndael", value_name = "KEY")]
    pub key_rijndael: Option<String>,
    /// Rijndael key, base64.
    #[arg(long = "key-base64-rijndael", value_name = "B64")]
    pub key_base64_rijndael: Option<String>,
    /// HMAC key (passphrase).
    #[arg(long = "key-hmac", value_name = "KEY")]
    pub key_hmac: Option<String>,
    /// HMAC key, base64.
    #[arg(long = "key-base64-hmac", value_name = "B64")]
    pub key_base64_hmac: Option<String>,
    /// Require an HMAC (prompt for its key if none is configured).
    #[arg(long = "use-hmac")]
    pub use_hmac: bool,
    /// HMAC type: md5, sha1, sha256 (default), sha384, sha512, sha3_256, sha3_512.
    #[arg(long = "hmac-digest-type", value_name = "NAME")]
    pub hmac_digest_type: Option<String>,
    /// SPA digest type: md5, sha1, sha256 (default), sha384, sha512, sha3_256, sha3_512.
    #[arg(short = 'm', long = "digest-type", value_name = "NAME")]
    pub digest_type: Option<String>,
    /// Encryption mode: cbc (default), ecb, cfb, ofb, ctr, legacy.
    #[arg(short = 'M', long = "encryption-mode", value_name = "NAME")]
    pub encryption_mode: Option<String>,
    /// Read the encryption key from a file of `<server>: <key>` lines.
    #[arg(short = 'G', long = "get-key", value_name = "FILE")]
    pub get_key: Option<PathBuf>,
    /// Read the HMAC key from a file of `<server>: <key>` lines.
    #[arg(long = "get-hmac-key", value_name = "FILE")]
    pub get_hmac_key: Option<PathBuf>,
    /// Read the keys that are not configured from standard input (same as --fd 0).
    ///
    /// One line per key, encryption key first: the bytes up to the newline, as fwknop
    /// reads them (a carriage return is part of the key; 127 bytes at most).
    #[arg(long = "stdin")]
    pub stdin: bool,
    /// Read the keys that are not configured from this file descriptor.
    #[arg(long = "fd", value_name = "N")]
    pub fd: Option<String>,
    /// Build and print the packet without sending it.
    #[arg(short = 'T', long = "test")]
    pub test: bool,
    /// Save the packet to this file.
    #[arg(short = 'B', long = "save-packet", value_name = "FILE")]
    pub save_packet: Option<PathBuf>,
    /// Append to the -B file instead of overwriting it.
    #[arg(short = 'b', long = "save-packet-append")]
    pub save_packet_append: bool,
    /// Run again with the arguments of the last run.
    #[arg(short = 'l', long = "last-cmd")]
    pub last_cmd: bool,
    /// Show the arguments of the last run.
    #[arg(long = "show-last")]
    pub show_last: bool,
    /// Do not save this run's arguments.
    #[arg(long = "no-save-args")]
    pub no_save_args: bool,
    /// File the last run's arguments are kept in (default ~/.fwknop.run).
    #[arg(short = 'E', long = "save-args-file", value_name = "FILE")]
    pub save_args_file: Option<PathBuf>,
    /// HTTP User-Agent for -P http and -R.
    #[arg(short = 'u', long = "user-agent", value_name = "AGENT")]
    pub user_agent: Option<String>,
    /// Resolve the server's name to an IPv4 address only.
    #[arg(long = "server-resolve-ipv4")]
    pub server_resolve_ipv4: bool,
    /// More output (repeat for more).
    #[arg(short = 'v', long = "verbose", action = ArgAction::Count)]
    pub verbose: u8,
}

/// Flags of `postern decode`.
#[derive(Debug, Args)]
pub struct DecodeArgs {
    /// Rijndael key as a passphrase (access.conf KEY).
    #[arg(
        long = "key-rijndael",
        value_name = "PASS",
        conflicts_with = "key_base64_rijndael"
    )]
    pub key_rijndael: Option<String>,
    /// Rijndael key as base64 (access.conf KEY_BASE64).
    #[arg(long = "key-base64-rijndael", value_name = "B64")]
    pub key_base64_rijndael: Option<String>,
    /// HMAC key as a passphrase (access.conf HMAC_KEY).
    #[arg(
        long = "key-hmac",
        value_name = "PASS",
        conflicts_with = "key_base64_hmac"
    )]
    pub key_hmac: Option<String>,
    /// HMAC key as base64 (access.conf HMAC_KEY_BASE64).
    #[arg(long = "key-base64-hmac", value_name = "B64")]
    pub key_base64_hmac: Option<String>,
    /// HMAC type: md5, sha1, sha256 (default), sha384, sha512, sha3_256, sha3_512.
    #[arg(long = "hmac-digest-type", value_name = "NAME")]
    pub hmac_digest_type: Option<String>,
    /// Encryption mode: cbc (default), ecb, cfb, ofb, ctr, legacy.
    #[arg(
        short = 'M',
        long = "encryption-mode",
        value_name = "NAME",
        default_value = "cbc"
    )]
    pub encryption_mode: String,
    /// The packet; read from standard input when absent or `-`.
    pub packet: Option<String>,
}
