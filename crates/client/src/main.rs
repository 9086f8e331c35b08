//! `postern`: the SPA client, a drop-in for fwknop 2.6's client (same flags, same
//! `~/.fwknoprc`), plus `postern decode` and `postern keygen`.
//!
//! ```text
//!  argv ─► cli (clap) ─► rc file [default] ⊕ [-n stanza] ⊕ flags ─► Settings
//!       ─► (--save-rc-stanza: values checked, stanza written, as fwknop writes it)
//!       ─► Plan (every value checked, errors name the flag or file:line)
//!       ─► knock: keys, allow address, SpaMessage ─► postern_proto::seal ─► send
//! ```

#![forbid(unsafe_code)]

use std::io::Write as _;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::error::ErrorKind;

use postern::cli::{Cli, Command, KnockArgs};
use postern::plan::{CommandLine, Fail, Plan};
use postern::settings::Settings;
use postern::{args, decode, keygen, knock, rc, save};
use postern_proto::wire;

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
    postern::cli::parse(argv).map_err(|e| {
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

fn hmac_digest(name: Option<&str>) -> Result<postern_proto::DigestType, Fail> {
    Ok(name
        .map(str::parse)
        .transpose()
        .map_err(|e| Fail(format!("--hmac-digest-type: {e}")))?
        .unwrap_or(postern_proto::DigestType::Sha256))
}

/// `--key-gen` and `postern keygen`: print the keys, or write them to a 0600 file.
fn keygen_command(
    key_len: Option<usize>,
    hmac_key_len: Option<usize>,
    hmac_digest_type: Option<&str>,
    file: Option<&std::path::Path>,
) -> Result<String, Fail> {
    let text = keygen::generate(key_len, hmac_key_len, hmac_digest(hmac_digest_type)?)?;
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

/// `--key-len` / `--hmac-key-len`: fwknop checks 1-128 whether or not it generates
/// keys (and its key generator then allows Rijndael keys of 32 bytes at most).
fn key_len(flag: &str, v: &Option<String>, max: usize) -> Result<Option<usize>, Fail> {
    v.as_deref()
        .map(|s| {
            let n = s
                .parse::<usize>()
                .map_err(|_| Fail(format!("{flag}: '{s}' is not a number")))?;
            if (1..=wire::MAX_HMAC_KEY_LEN).contains(&n) {
                Ok(n)
            } else {
                Err(Fail(format!("{flag}: {n} is out of range (1-{max})")))
            }
        })
        .transpose()
}

/// `--fd N` (or `--stdin`, which is `--fd 0`), with the flag for messages.
fn key_fd(a: &KnockArgs) -> Result<Option<(u32, &'static str)>, Fail> {
    match &a.fd {
        Some(v) => v
            .parse::<u32>()
            .ok()
            .filter(|&n| i32::try_from(n).is_ok())
            .map(|n| Some((n, "--fd")))
            .ok_or_else(|| Fail(format!("--fd: '{v}' is not a file descriptor number"))),
        None => Ok(a.stdin.then_some((0, "--stdin"))),
    }
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

/// Read the rc file; `Ok(None)` if it does not exist.
fn read_rc(path: &std::path::Path) -> Result<Option<rc::RcFile>, Fail> {
    match std::fs::metadata(path) {
        Ok(meta) => {
            check_permissions(path, &meta);
            let text = std::fs::read_to_string(path)
                .map_err(|e| Fail(format!("cannot read {}: {e}", path.display())))?;
            let rc = rc::parse(&text, path).map_err(|e| Fail(e.to_string()))?;
            Ok(Some(rc))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Fail(format!("cannot read {}: {e}", path.display()))),
    }
}

/// fwknop keeps paths of at most 1023 bytes, and refuses to save arguments whose
/// lengths (spaces not counted, its program name `fwknop` counted) add up to more than
/// 1023 bytes.
const MAX_PATH_LEN: usize = 1023;
const MAX_ARGS_LEN: usize = 1023 - "fwknop".len();

fn check_args_file(path: &std::path::Path) -> Result<(), Fail> {
    let len = path.as_os_str().len();
    if len > MAX_PATH_LEN {
        return Err(Fail(format!(
            "-E/--save-args-file: the path is {len} bytes long; at most {MAX_PATH_LEN}"
        )));
    }
    Ok(())
}

fn knock_command(mut a: KnockArgs, argv: &[String]) -> Result<String, Fail> {
    let args_file = match &a.save_args_file {
        Some(p) => p.clone(),
        None => home()?.join(".fwknop.run"),
    };
    if a.show_last {
        check_args_file(&args_file)?;
        return args::load(&args_file).map(|v| v.join(" "));
    }
    let mut to_save: Vec<String> = argv.iter().skip(1).cloned().collect();
    if a.last_cmd {
        check_args_file(&args_file)?;
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
    let gen_key_len = key_len("--key-len", &a.key_len, wire::MAX_KEY_LEN)?;
    let gen_hmac_key_len = key_len("--hmac-key-len", &a.hmac_key_len, wire::MAX_HMAC_KEY_LEN)?;
    let key_fd = key_fd(&a)?;
    let key_gen = a.key_gen || a.key_gen_file.is_some();
    if key_gen && !a.save_rc_stanza {
        return keygen_command(
            gen_key_len,
            gen_hmac_key_len,
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
        Some(path) if !a.no_rc_file => read_rc(path)?,
        _ => None,
    };
    if a.stanza_list {
        let path = rc_path
            .as_ref()
            .filter(|_| !a.no_rc_file)
            .ok_or_else(|| Fail("--stanza-list cannot be used with --no-rc-file".into()))?;
        let rc = rc.as_ref().ok_or_else(|| {
            Fail(format!(
                "--stanza-list: cannot read {}: No such file or directory",
                path.display()
            ))
        })?;
        return Ok(rc::stanza_list(rc, path));
    }
    let section = |name: &str| -> Result<Option<Settings>, Fail> {
        rc.as_ref()
            .map(|r| r.section(name))
            .transpose()
            .map(Option::flatten)
            .map_err(|e| Fail(e.to_string()))
    };
    let default = section("default")?;
    let cli_settings = Settings::from_args(&a);
    let mut merged = default.clone().unwrap_or_default();

    if a.save_rc_stanza {
        // fwknop's save run uses [default] and the command line; the stanza being
        // saved is not read.
        let path = rc_path
            .as_ref()
            .filter(|_| !a.no_rc_file)
            .ok_or_else(|| Fail("--save-rc-stanza cannot be used with --no-rc-file".into()))?;
        let name = save::stanza_name(&a, default.as_ref())?;
        merged.overlay(&cli_settings);
        Plan::check_values(&merged)?;
        let generated = if key_gen {
            Some(keygen::generate_pair(
                gen_key_len,
                gen_hmac_key_len,
                hmac_digest(a.hmac_digest_type.as_deref())?,
            )?)
        } else {
            None
        };
        save::save(
            path,
            &name,
            save::entries(&a, generated.as_ref()),
            a.force_stanza,
        )?;
        if let Some(g) = generated {
            return match a.key_gen_file.as_deref() {
                Some(file) => {
                    keygen::write_file(file, &g.lines())?;
                    Ok(format!(
                        "[+] Wrote Rijndael and HMAC keys to: {}",
                        file.display()
                    ))
                }
                None => Ok(format!(
                    "[+] Wrote Rijndael and HMAC keys to rc file: {}",
                    path.display()
                )),
            };
        }
    } else {
        if let Some(name) = &a.named_config {
            match section(name)? {
                Some(s) => merged.overlay(&s),
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
    }
    let command_line = CommandLine {
        server_cmd: a.server_cmd.clone(),
        test: a.test,
        keys_from_fd: key_fd.is_some(),
        http_proxy: a.http_proxy.clone(),
        icmp_type: a.icmp_type.clone(),
        icmp_code: a.icmp_code.clone(),
    };
    let plan = Plan::from_settings(&merged, &command_line)?;
    if !plan.no_save_args {
        check_args_file(&args_file)?;
        let len: usize = to_save.iter().map(String::len).sum();
        if len > MAX_ARGS_LEN {
            return Err(Fail(format!(
                "the arguments are too long for the last-run file ({len} bytes; fwknop saves at most {MAX_ARGS_LEN}): add --no-save-args"
            )));
        }
        args::save(&args_file, &to_save)?;
    }
    let opts = knock::RunOptions {
        test: a.test,
        key_fd,
        save_packet: a.save_packet.clone(),
        append: a.save_packet_append,
    };
    knock::run(&plan, &opts)
}
