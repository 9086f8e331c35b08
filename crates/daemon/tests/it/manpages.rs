//! The man pages and completions that are shipped: posternd.8 and the completion scripts
//! are what the flags generate now; the hand-written section 5 pages render without a
//! groff warning and name every directive the parsers know. The shipped configuration
//! fails `--check-config` only because of its `__CHANGEME__` keys.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::lab::posternd_bin;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn generated(args: &[&str]) -> Vec<u8> {
    let out = Command::new(posternd_bin()).args(args).output().unwrap();
    assert!(out.status.success(), "posternd {args:?} failed");
    out.stdout
}

#[test]
fn committed_posternd_page_and_completions_are_current() {
    let check = |now: Vec<u8>, file: &str| {
        let committed = std::fs::read(root().join(file)).unwrap();
        assert!(
            now == committed,
            "{file} is out of date: regenerate it (posternd --generate-man > doc/man/posternd.8; posternd --generate-completions SHELL > dist/completions/posternd.SHELL)"
        );
    };
    check(generated(&["--generate-man"]), "doc/man/posternd.8");
    for sh in ["bash", "zsh", "fish"] {
        check(
            generated(&["--generate-completions", sh]),
            &format!("dist/completions/posternd.{sh}"),
        );
    }
}

/// A page as plain text, unhyphenated, one paragraph per line; `None` (a printed
/// skip) without groff outside CI.
fn render(page: &str) -> Option<String> {
    if !postern_testkit::have_tool("groff") {
        return None;
    }
    let out = Command::new("groff")
        .args(["-man", "-Tutf8", "-ww", "-rHY=0", "-rLL=3000n", "-P-cbou"])
        .arg(root().join(page))
        .output()
        .unwrap();
    let warnings = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && warnings.trim().is_empty(),
        "{page}: groff warns:\n{warnings}"
    );
    Some(String::from_utf8(out.stdout).unwrap())
}

#[test]
fn man_pages_render_without_warnings_and_refer_to_pages_that_exist() {
    let pages = [
        "postern.1",
        "posternd.8",
        "posternd.conf.5",
        "postern-access.conf.5",
    ];
    for page in pages {
        let Some(text) = render(&format!("doc/man/{page}")) else {
            return;
        };
        for heading in ["NAME", "SYNOPSIS", "DESCRIPTION", "SEE ALSO"] {
            assert!(
                text.contains(&format!("\n{heading}\n")),
                "{page}: no {heading}"
            );
        }
        // Every reference to one of ours names a page that is shipped.
        for word in text.split(|c: char| c.is_whitespace() || c == ',') {
            let Some((name, rest)) = word.split_once('(') else {
                continue;
            };
            if name.starts_with("postern") && rest.len() >= 2 && rest.as_bytes()[1] == b')' {
                let file = format!("{name}.{}", &rest[..1]);
                assert!(
                    pages.contains(&file.as_str()),
                    "{page} refers to {word}, which is not shipped"
                );
            }
        }
    }
    let Some(daemon) = render("doc/man/posternd.8") else {
        return;
    };
    for heading in ["COMMANDS", "FILES", "SIGNALS", "EXIT STATUS", "EXAMPLES"] {
        assert!(
            daemon.contains(&format!("\n{heading}\n")),
            "posternd.8: no {heading}"
        );
    }
}

#[test]
fn section_5_pages_name_every_directive() {
    let Some(server) = render("doc/man/posternd.conf.5") else {
        return;
    };
    for d in posternd::config::server::DIRECTIVES {
        for name in std::iter::once(&d.name).chain(d.aliases) {
            assert!(
                server.contains(name),
                "posternd.conf.5 does not describe {name}: add it"
            );
        }
    }
    let Some(access) = render("doc/man/postern-access.conf.5") else {
        return;
    };
    // The names access.rs matches on, read from its source.
    let src = include_str!("../../src/config/access.rs");
    let apply = &src[src.find("fn apply(").unwrap()..src.find("/// Read an access file").unwrap()];
    let mut names: Vec<String> = apply
        .split('"')
        .skip(1)
        .step_by(2)
        .filter(|s| {
            s.len() > 2
                && s.chars()
                    .all(|c| c.is_ascii_uppercase() || c == '_' || c.is_ascii_digit())
        })
        .map(str::to_owned)
        .collect();
    names.extend(["SOURCE", "%include", "%include_folder", "%include_keys"].map(String::from));
    assert!(names.len() > 25, "{names:?}");
    for name in names {
        assert!(
            access.contains(&name),
            "postern-access.conf.5 does not describe {name}: add it"
        );
    }
}

#[test]
fn shipped_configuration_fails_only_for_its_placeholder_keys() {
    if !postern_testkit::can_run(
        "shipped_configuration_fails_only_for_its_placeholder_keys",
        &["ip", "nft"],
    ) {
        return;
    }
    let dir = postern_testkit::TempDir::new("shipped-conf");
    for f in ["fwknopd.conf", "access.conf"] {
        let p = dir.join(f);
        std::fs::copy(root().join("dist/etc/postern").join(f), &p).unwrap();
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    }
    // In a namespace of its own: the backend choice looks at that namespace's firewall.
    let ns = postern_testkit::Netns::new("k");
    let check = || {
        ns.cmd(posternd_bin())
            .arg("--check-config")
            .arg("-c")
            .arg(dir.join("fwknopd.conf"))
            .output()
            .unwrap()
    };
    let out = check();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{text}");
    let errors: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("configuration error"))
        .collect();
    assert!(!errors.is_empty(), "{text}");
    for e in errors {
        assert!(
            e.contains("__CHANGEME__"),
            "an error other than the placeholder keys: {e}"
        );
    }
    // With keys, it is usable as shipped.
    let access = std::fs::read_to_string(dir.join("access.conf")).unwrap();
    let keyed: String = access
        .lines()
        .map(|l| {
            if l.starts_with("KEY_BASE64") {
                "KEY_BASE64 c2hpcHBlZC1lbmNyeXB0aW9uLWtleS0zMmJ5dGVzISE=".to_owned()
            } else if l.starts_with("HMAC_KEY_BASE64") {
                "HMAC_KEY_BASE64 c2hpcHBlZC1obWFjLWtleS10aGF0LWlzLWxvbmctZW5vdWdoLXRvLWJlLWZpbmU="
                    .to_owned()
            } else {
                l.to_owned()
            }
        })
        .map(|l| l + "\n")
        .collect();
    std::fs::write(dir.join("access.conf"), keyed).unwrap();
    let out = check();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
