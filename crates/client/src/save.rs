//! `--save-rc-stanza`: what fwknop 2.6.10 records in the rc file for a command line,
//! and the rewrite of that file.
//!
//! ```text
//!  flags (+ keys from --key-gen) ─► entries: fwknop's variables, values and order
//!  rc file ─► asked_lines ─► "replace KEY? [y/N]" (unless --force-stanza) ─► keep
//!          ─► rc::save_stanza(name, keep, entries) ─► sibling file ─► rename
//! ```
//!
//! fwknop records only what the command line gives, normalised (`TIME_OFFSET` in
//! seconds, digest and mode names in its spelling, `-vv` as `VERBOSE 2`), and never
//! `-s`, `-H`, `-B`, `--server-resolve-ipv4`, `--stdin`/`--fd` or `-C`. The stanza's
//! old variables are dropped, except keys the user chooses to keep. One deliberate
//! difference: a key that the rc syntax cannot hold (spaces, `;`, `#`) is saved as
//! base64, where fwknop writes a line that reads back as a different key.

use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use postern_proto::{DigestType, EncryptionMode};

use crate::cli::KnockArgs;
use crate::keygen::Generated;
use crate::plan::{time_offset, Fail};
use crate::rc;
use crate::settings::{truncate_user, verbose_value, Origin, Setting, Settings, Var};

/// Whether the rc syntax can hold this value as it is.
fn fits_rc(value: &str) -> bool {
    !value.is_empty() && !value.contains(|c: char| c.is_whitespace() || c == ';' || c == '#')
}

fn normalised<T, E>(
    v: &str,
    parse: impl Fn(&str) -> Result<T, E>,
    show: impl Fn(T) -> String,
) -> String {
    parse(v).map_or_else(|_| v.to_owned(), show)
}

/// The variables fwknop writes for these flags, in its order.
pub fn entries(a: &KnockArgs, generated: Option<&Generated>) -> Vec<(&'static str, String)> {
    let mut out: Vec<(&'static str, String)> = Vec::new();
    let mut put = |var: &'static str, value: Option<String>| {
        if let Some(v) = value {
            out.push((var, v));
        }
    };
    let yes = |b: bool| b.then(|| "Y".to_owned());
    let number = |v: &Option<String>| {
        v.as_deref()
            .map(|v| normalised(v, str::parse::<u32>, |n| n.to_string()))
    };
    put(
        "DIGEST_TYPE",
        a.digest_type
            .as_deref()
            .map(|v| normalised(v, str::parse::<DigestType>, |d| d.display_name().into())),
    );
    put(
        "SPA_SERVER_PROTO",
        a.server_proto.as_deref().map(str::to_ascii_lowercase),
    );
    put("SPA_SERVER_PORT", number(&a.server_port));
    put("SPA_SOURCE_PORT", number(&a.source_port));
    put("FW_TIMEOUT", number(&a.fw_timeout));
    // Only -a is recorded; a later -s turns the recorded address into 0.0.0.0.
    put(
        "ALLOW_IP",
        a.allow_ip.as_ref().map(|ip| {
            if a.source_ip && a.source_ip_last {
                "0.0.0.0".to_owned()
            } else {
                ip.clone()
            }
        }),
    );
    let offset = match (&a.time_offset_minus, &a.time_offset_plus) {
        (Some(m), _) => Some(format!("-{m}")),
        (None, Some(p)) => Some(p.clone()),
        (None, None) => None,
    };
    put(
        "TIME_OFFSET",
        offset.map(|v| {
            let s = Setting {
                value: v.clone(),
                origin: Origin::Flag("--time-offset-plus/--time-offset-minus"),
            };
            time_offset(&s).map_or(v, |n| n.to_string())
        }),
    );
    put(
        "ENCRYPTION_MODE",
        a.encryption_mode
            .as_deref()
            .map(|v| normalised(v, str::parse::<EncryptionMode>, |m| m.display_name().into())),
    );
    put(
        "SPOOF_USER",
        a.spoof_user
            .as_deref()
            .filter(|u| !u.is_empty())
            .map(truncate_user),
    );
    put("SPOOF_SOURCE_IP", a.spoof_source.clone());
    put("ACCESS", a.access.clone());
    put("SPA_SERVER", a.destination.clone());
    put("RAND_PORT", yes(a.rand_port));
    let b64 = |v: &str| postern_proto::b64::encode_padded(v.as_bytes());
    match &a.key_rijndael {
        Some(k) if !fits_rc(k) => put("KEY_BASE64", Some(b64(k))),
        Some(k) => {
            put("KEY", Some(k.clone()));
            put(
                "KEY_BASE64",
                generated
                    .map(|g| g.key.to_string())
                    .or_else(|| a.key_base64_rijndael.clone()),
            );
        }
        None => put(
            "KEY_BASE64",
            generated
                .map(|g| g.key.to_string())
                .or_else(|| a.key_base64_rijndael.clone()),
        ),
    }
    put(
        "HMAC_DIGEST_TYPE",
        a.hmac_digest_type
            .as_deref()
            .map(|v| normalised(v, str::parse::<DigestType>, |d| d.display_name().into())),
    );
    match &a.key_hmac {
        Some(k) if !fits_rc(k) => put("HMAC_KEY_BASE64", Some(b64(k))),
        Some(k) => {
            put(
                "HMAC_KEY_BASE64",
                generated
                    .map(|g| g.hmac.to_string())
                    .or_else(|| a.key_base64_hmac.clone()),
            );
            put("HMAC_KEY", Some(k.clone()));
        }
        None => put(
            "HMAC_KEY_BASE64",
            generated
                .map(|g| g.hmac.to_string())
                .or_else(|| a.key_base64_hmac.clone()),
        ),
    }
    put(
        "USE_HMAC",
        yes(a.use_hmac
            || a.hmac_digest_type.is_some()
            || a.hmac_key_len.is_some()
            || a.key_hmac.is_some()
            || a.key_base64_hmac.is_some()),
    );
    put(
        "KEY_FILE",
        a.get_key.as_ref().map(|p| p.display().to_string()),
    );
    put(
        "HMAC_KEY_FILE",
        a.get_hmac_key.as_ref().map(|p| p.display().to_string()),
    );
    put("NAT_ACCESS", a.nat_access.clone());
    put("HTTP_USER_AGENT", a.user_agent.clone());
    put("RESOLVE_URL", a.resolve_url.clone());
    put("NAT_LOCAL", yes(a.nat_local));
    put("NAT_RAND_PORT", yes(a.nat_rand_port));
    put("NAT_PORT", number(&a.nat_port));
    put("VERBOSE", verbose_value(a.verbose));
    put(
        "RESOLVE_IP_HTTPS",
        a.resolve_ip.then(|| {
            if a.allow_ip.is_some() || a.source_ip {
                "N".to_owned()
            } else {
                "Y".to_owned()
            }
        }),
    );
    put("RESOLVE_HTTP_ONLY", yes(a.resolve_http_only));
    put("NO_SAVE_ARGS", yes(a.no_save_args));
    out.sort_by_key(|(v, _)| Var::by_rc_name(v).map_or(usize::MAX, Var::save_order));
    out
}

/// The stanza to save to: `-n`, else the server (`-D`, or `[default]`'s SPA_SERVER).
pub fn stanza_name(a: &KnockArgs, default: Option<&Settings>) -> Result<String, Fail> {
    a.named_config
        .clone()
        .or_else(|| a.destination.clone())
        .or_else(|| default.and_then(|d| d.value("SPA_SERVER")).map(str::to_owned))
        .ok_or_else(|| {
            Fail(
                "--save-rc-stanza needs -n/--named-config NAME or -D/--destination HOST: the stanza to save to"
                    .into(),
            )
        })
}

/// Write `entries` into stanza `name` of the rc file at `path`. Without `force`, each
/// key already in the stanza is asked about on standard input (`y` replaces it; any
/// other answer keeps it and drops the new value), as fwknop does; no answer at all
/// refuses.
pub fn save(
    path: &Path,
    name: &str,
    mut entries: Vec<(&'static str, String)>,
    force: bool,
) -> Result<(), Fail> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            return Err(Fail(format!(
                "--save-rc-stanza: cannot read {}: {e}",
                path.display()
            )))
        }
    };
    let mut keep = Vec::new();
    if !force {
        let asked = text
            .as_deref()
            .map(|t| rc::asked_lines(t, name))
            .unwrap_or_default();
        // Answers come from standard input, as fwknop reads them; the question is
        // shown only to a person at a terminal.
        let ask = std::io::stdin().is_terminal();
        for line in asked {
            if ask {
                eprint!(
                    "postern: stanza [{name}] in {} already has {}; replace it? [y/N] ",
                    path.display(),
                    line.var.rc_name
                );
            }
            let mut answer = String::new();
            let n = std::io::stdin()
                .lock()
                .read_line(&mut answer)
                .map_err(|e| Fail(format!("--save-rc-stanza: cannot read the answer: {e}")))?;
            if n == 0 {
                if ask {
                    eprintln!();
                }
                return Err(Fail(format!(
                    "--save-rc-stanza: stanza [{name}] in {} already has keys; add --force-stanza to replace them",
                    path.display()
                )));
            }
            if !answer.trim_start().starts_with(['y', 'Y']) {
                keep.push(line.index);
                entries.retain(|(v, _)| *v != line.var.rc_name);
            }
        }
    }
    let out = rc::save_stanza(text.as_deref(), name, &keep, &entries);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn saved(argv: &[&str]) -> Vec<(&'static str, String)> {
        let mut full = vec!["postern"];
        full.extend(argv);
        let argv: Vec<String> = full.iter().map(|s| s.to_string()).collect();
        entries(&crate::cli::parse(&argv).unwrap().knock, None)
    }

    fn names(e: &[(&'static str, String)]) -> Vec<&'static str> {
        e.iter().map(|(v, _)| *v).collect()
    }

    #[test]
    fn fwknop_order_and_spelling() {
        let e = saved(&[
            "-D",
            "h",
            "-a",
            "1.2.3.4",
            "-A",
            "tcp/22",
            "--key-rijndael",
            "k",
            "--key-hmac",
            "x",
            "--hmac-digest-type",
            "sha512",
            "-m",
            "sha3_256",
            "-M",
            "ctr",
            "-p",
            "080",
            "-P",
            "TCP",
            "-f",
            "030",
            "-U",
            "bob",
            "--time-offset-plus",
            "1M",
            "-vv",
            "--server-resolve-ipv4",
            "-r",
            "-N",
            "10.0.0.1:22",
        ]);
        assert_eq!(
            names(&e),
            [
                "DIGEST_TYPE",
                "SPA_SERVER_PROTO",
                "SPA_SERVER_PORT",
                "FW_TIMEOUT",
                "ALLOW_IP",
                "TIME_OFFSET",
                "ENCRYPTION_MODE",
                "SPOOF_USER",
                "ACCESS",
                "SPA_SERVER",
                "RAND_PORT",
                "KEY",
                "HMAC_DIGEST_TYPE",
                "HMAC_KEY",
                "USE_HMAC",
                "NAT_ACCESS",
                "VERBOSE",
            ]
        );
        let v = |n: &str| e.iter().find(|(k, _)| *k == n).map(|(_, v)| v.as_str());
        assert_eq!(v("DIGEST_TYPE"), Some("SHA3_256"));
        assert_eq!(v("HMAC_DIGEST_TYPE"), Some("SHA512"));
        assert_eq!(v("ENCRYPTION_MODE"), Some("CTR"));
        assert_eq!(v("SPA_SERVER_PROTO"), Some("tcp"));
        assert_eq!(v("SPA_SERVER_PORT"), Some("80"));
        assert_eq!(v("FW_TIMEOUT"), Some("30"));
        assert_eq!(v("TIME_OFFSET"), Some("60"));
        assert_eq!(v("VERBOSE"), Some("2"));
    }

    #[test]
    fn allow_address_flags() {
        let v = |argv: &[&str]| {
            saved(argv)
                .into_iter()
                .filter(|(k, _)| k.starts_with("ALLOW") || k.starts_with("RESOLVE"))
                .collect::<Vec<_>>()
        };
        assert!(v(&["-s"]).is_empty());
        assert_eq!(
            v(&["-a", "1.2.3.4", "-s"]),
            [("ALLOW_IP", "0.0.0.0".into())]
        );
        assert_eq!(
            v(&["-s", "-a", "1.2.3.4"]),
            [("ALLOW_IP", "1.2.3.4".into())]
        );
        assert_eq!(
            v(&["-R", "-a", "1.2.3.4"]),
            [
                ("ALLOW_IP", "1.2.3.4".into()),
                ("RESOLVE_IP_HTTPS", "N".into())
            ]
        );
        assert_eq!(v(&["-R"]), [("RESOLVE_IP_HTTPS", "Y".into())]);
    }

    #[test]
    fn generated_and_awkward_keys() {
        let g = Generated {
            key: zeroize::Zeroizing::new("S0VZ".into()),
            hmac: zeroize::Zeroizing::new("SE1BQw==".into()),
        };
        let argv: Vec<String> = ["postern", "--key-rijndael", "k", "--key-hmac", "a b"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let e = entries(&crate::cli::parse(&argv).unwrap().knock, Some(&g));
        assert_eq!(
            e,
            [
                ("KEY", "k".into()),
                ("KEY_BASE64", "S0VZ".into()),
                ("HMAC_KEY_BASE64", "YSBi".into()),
                ("USE_HMAC", "Y".into()),
            ]
        );
    }
}
