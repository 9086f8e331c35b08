//! `postern`: the SPA client, a drop-in for fwknop 2.6's client (same flags, same
//! `~/.fwknoprc`), plus `postern decode` and `postern keygen`.
//!
//! ```text
//!  argv ─► cli (clap) ─► rc file [default] ⊕ [-n stanza] ⊕ flags ─► Settings
//!       ─► Plan (every value checked, errors name the flag or file:line)
//!       ─► knock: keys, allow address, SpaMessage ─► postern_proto::seal ─► send
//! ```

#![forbid(unsafe_code)]

use std::io::{IsTerminal as _, Write as _};
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::Parser as _;

use postern::cli::{Cli, Command, KnockArgs};
use postern::plan::{Fail, Plan};
use postern::settings::Settings;
use postern::{args, decode, keygen, knock, rc, settings};

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    match run(&argv) {
        Ok(out) => {
            if !out.is_empty() {
                let mut stdout = std::io::stdout().lock();
                if writeln!(stdout, "{out}").is_err() {
                    return ExitCode::from(1);
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("postern: {e}");
            ExitCode::from(1)
        }
    }
}

/// Parse argv; clap's own errors are cut to their first line.
fn parse(argv: &[String]) -> Result<Cli, Fail> {
    Cli::try_parse_from(argv).map_err(|e| {
        if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
            e.exit();
        }
        let text = e.render().to_string();
        let first = text.lines().next().unwrap_or("invalid arguments");
        Fail(format!(
            "{} (see postern --help)",
            first.trim_start_matches("error: ")
        ))
    })
}

fn run(argv: &[String]) -> Result<String, Fail> {
    let cli = parse(argv)?;
    match cli.command {
        Some(Command::Decode(d)) => decode::run(&d).map_err(|e| Fail(e.to_string())),
        Some(Command::Generate { what }) => {
            let mut stdout = std::io::stdout().lock();
            stdout
                .write_all(&postern::cli::generate(&what))
                .map_err(|e| Fail(format!("cannot write: {e}")))?;
            Ok(String::new())
        }
        Some(Command::Keygen(k)) => keygen_command(
            k.key_len,
            k.hmac_key_len,
            k.hmac_digest_type.as_deref(),
            k.key_gen_file.as_deref(),
        ),
        None => knock_command(cli.knock, argv),
    }
}

/// `--key-gen` and `postern keygen`: print the keys, or write them to a 0600 file.
fn keygen_command(
    key_len: Option<usize>,
    hmac_key_len: Option<usize>,
    hmac_digest_type: Option<&str>,
    file: Option<&std::path::Path>,
) -> Result<String, Fail> {
    let digest = hmac_digest_type
        .map(str::parse)
        .transpose()
        .map_err(|e| Fail(format!("--hmac-digest-type: {e}")))?
        .unwrap_or(postern_proto::DigestType::Sha256);
    let text = keygen::generate(key_len, hmac_key_len, digest)?;
    match file {
        Some(path) => keygen::write_file(path, &text).map(|()| String::new()),
        None => Ok(text.to_string()),
    }
}

fn home() -> Result<PathBuf, Fail> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .ok_or_else(|| Fail("HOME is not set: give --rc-file and --save-args-file, or --no-rc-file --no-save-args".into()))
}

fn number(flag: &str, v: &Option<String>) -> Result<Option<usize>, Fail> {
    v.as_deref()
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| Fail(format!("{flag}: '{s}' is not a number")))
        })
        .transpose()
}

fn check_permissions(path: &std::path::Path, meta: &std::fs::Metadata) {
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        eprintln!(
            "postern: warning: {} is accessible by group or others (mode {mode:04o}) and may hold keys; run: chmod 600 {}",
            path.display(),
            path.display()
        );
    }
    if let Ok(me) = std::fs::metadata("/proc/self").map(|m| m.uid()) {
        if meta.uid() != me {
            eprintln!(
                "postern: warning: {} is not owned by the current user",
                path.display()
            );
        }
    }
}

/// The key variables of a stanza, which --save-rc-stanza asks before replacing.
const KEY_VARS: [&str; 6] = [
    "KEY",
    "KEY_BASE64",
    "KEY_FILE",
    "HMAC_KEY",
    "HMAC_KEY_BASE64",
    "HMAC_KEY_FILE",
];

/// What --save-rc-stanza writes: the command-line settings, with keys that the rc
/// syntax cannot hold (whitespace, `;`, `#`) converted to their base64 form.
fn stanza_entries(cli: &Settings) -> Vec<(&'static str, String)> {
    let awkward =
        |v: &str| v.is_empty() || v.contains(|c: char| c.is_whitespace() || c == ';' || c == '#');
    cli.iter()
        .map(|(name, s)| match name {
            "KEY" | "HMAC_KEY" if awkward(&s.value) => {
                let b64 = postern_proto::b64::encode_padded(s.value.as_bytes());
                (
                    if name == "KEY" {
                        "KEY_BASE64"
                    } else {
                        "HMAC_KEY_BASE64"
                    },
                    b64,
                )
            }
            _ => (name, s.value.clone()),
        })
        .collect()
}

fn save_rc_stanza(
    path: &std::path::Path,
    name: &str,
    rc: Option<&rc::RcFile>,
    cli: &Settings,
    force: bool,
) -> Result<(), Fail> {
    let entries = stanza_entries(cli);
    if let Some(existing) = rc.and_then(|r| r.stanza(name)) {
        let replaces_key = entries.iter().any(|(v, _)| KEY_VARS.contains(v))
            && KEY_VARS.iter().any(|v| existing.settings.get(v).is_some());
        if replaces_key && !force {
            if !std::io::stdin().is_terminal() {
                return Err(Fail(format!(
                    "--save-rc-stanza: stanza [{name}] in {} already has keys; add --force-stanza to replace them",
                    path.display()
                )));
            }
            eprint!(
                "postern: replace the keys of stanza [{name}] in {}? [y/N] ",
                path.display()
            );
            let mut answer = String::new();
            std::io::stdin()
                .read_line(&mut answer)
                .map_err(|e| Fail(e.to_string()))?;
            if !answer.trim().eq_ignore_ascii_case("y") {
                return Err(Fail("--save-rc-stanza: not saved".into()));
            }
        }
    }
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => {
            return Err(Fail(format!(
                "--save-rc-stanza: cannot read {}: {e}",
                path.display()
            )))
        }
    };
    let remove: Vec<&str> = entries
        .iter()
        .filter_map(|(v, _)| settings::Var::by_rc_name(v))
        .flat_map(|v| {
            settings::VARS
                .iter()
                .filter(move |o| o.slot.is_some() && o.slot == v.slot && o.rc_name != v.rc_name)
        })
        .map(|o| o.rc_name)
        .filter(|o| !entries.iter().any(|(e, _)| e == o))
        .collect();
    let out = rc::save_stanza(&text, name, &entries, &remove);
    // Write a sibling file and rename it over the old one: never a half-written rc file.
    let tmp = path.with_extension("postern-tmp");
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(out.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Fail(format!(
            "--save-rc-stanza: cannot write {}: {e}",
            path.display()
        ))
    })
}

fn knock_command(mut a: KnockArgs, argv: &[String]) -> Result<String, Fail> {
    let args_file = match &a.save_args_file {
        Some(p) => p.clone(),
        None => home()?.join(".fwknop.run"),
    };
    if a.show_last {
        return args::load(&args_file).map(|v| v.join(" "));
    }
    let mut to_save: Vec<String> = argv.iter().skip(1).cloned().collect();
    if a.last_cmd {
        let mut saved = args::load(&args_file)?;
        saved.retain(|s| s != "-l" && s != "--last-cmd");
        let extra: Vec<String> = argv
            .iter()
            .skip(1)
            .filter(|s| *s != "-l" && *s != "--last-cmd")
            .cloned()
            .collect();
        let mut full = vec![argv[0].clone()];
        full.extend(saved.iter().cloned());
        full.extend(extra);
        let cli = parse(&full)?;
        a = cli.knock;
        to_save = full[1..].to_vec();
    }
    if a.key_gen || a.key_gen_file.is_some() {
        return keygen_command(
            number("--key-len", &a.key_len)?,
            number("--hmac-key-len", &a.hmac_key_len)?,
            a.hmac_digest_type.as_deref(),
            a.key_gen_file.as_deref(),
        );
    }

    let rc_path = match &a.rc_file {
        Some(p) => Some(p.clone()),
        None if a.no_rc_file => None,
        None => Some(home()?.join(".fwknoprc")),
    };
    let rc = match &rc_path {
        Some(path) if !a.no_rc_file => match std::fs::metadata(path) {
            Ok(meta) => {
                check_permissions(path, &meta);
                let text = std::fs::read_to_string(path)
                    .map_err(|e| Fail(format!("cannot read {}: {e}", path.display())))?;
                let rc = rc::parse(&text, path).map_err(|e| Fail(e.to_string()))?;
                for w in &rc.warnings {
                    eprintln!("postern: warning: {w}");
                }
                Some(rc)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(Fail(format!("cannot read {}: {e}", path.display()))),
        },
        _ => None,
    };
    if a.stanza_list {
        return Ok(rc
            .as_ref()
            .map(|r| rc::stanza_names(r).join("\n"))
            .unwrap_or_default());
    }
    let cli_settings = Settings::from_args(&a);
    if a.save_rc_stanza {
        let name = a.named_config.as_deref().ok_or_else(|| {
            Fail("--save-rc-stanza needs -n/--named-config NAME: the stanza to save to".into())
        })?;
        let path = rc_path
            .as_ref()
            .ok_or_else(|| Fail("--save-rc-stanza cannot be used with --no-rc-file".into()))?;
        save_rc_stanza(path, name, rc.as_ref(), &cli_settings, a.force_stanza)?;
    }
    let mut merged = Settings::default();
    if let Some(rc) = &rc {
        if let Some(d) = rc.stanza("default") {
            merged.overlay(&d.settings);
        }
    }
    if let Some(name) = &a.named_config {
        match rc.as_ref().and_then(|r| r.stanza(name)) {
            Some(s) => merged.overlay(&s.settings),
            None if a.save_rc_stanza => {}
            None => {
                let where_ = rc_path
                    .as_ref()
                    .map_or("the rc file".into(), |p| p.display().to_string());
                return Err(Fail(format!(
                    "-n/--named-config: no stanza [{name}] in {where_}"
                )));
            }
        }
    }
    merged.overlay(&cli_settings);
    let plan = Plan::from_settings(&merged, a.server_cmd.as_deref(), a.test, a.stdin)?;
    if !plan.no_save_args {
        args::save(&args_file, &to_save)?;
    }
    let opts = knock::RunOptions {
        test: a.test,
        stdin: a.stdin,
        save_packet: a.save_packet.clone(),
        append: a.save_packet_append,
    };
    knock::run(&plan, &opts)
}
