//! `posternd selftest` from the build tree: every check passes, and nothing of it (its
//! namespaces, its processes, its files) is left once it has exited.

use std::process::Command;

use crate::lab::{postern_bin, posternd_bin};

#[test]
fn selftest_passes_and_leaves_nothing_behind() {
    if !postern_testkit::can_run("selftest_passes_and_leaves_nothing_behind", &["ip", "nft"]) {
        return;
    }
    let child = Command::new(posternd_bin())
        .args(["selftest", "--client", &postern_bin()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let all = format!("{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "selftest failed:\n{all}");
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("selftest: posternd "), "{all}");
    for check in [
        "tcp/22 answers before posternd starts",
        "posternd started with the settings of",
        "privilege separation: worker pid",
        "tcp/22 closed before the knock, from 198.19.254.2 and from 198.19.254.3",
        "knock sent with",
        "tcp/22 open for the knocker 198.19.254.2",
        "tcp/22 still closed for the second address 198.19.254.3",
        "tcp/22 closed again when the grant expired",
        "the same packet sent again is refused as a replay",
        "posternd stopped on SIGTERM",
        "nothing left behind",
    ] {
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("ok   ") && l.contains(check)),
            "no 'ok' line for '{check}':\n{all}"
        );
    }
    assert!(!text.contains("FAIL"), "{all}");
    assert!(
        lines.last().unwrap().starts_with("selftest passed: all "),
        "{all}"
    );
    // Nothing named after its pid remains: namespaces, processes, files.
    let tag = format!("postern-st-{pid}-");
    let netns = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let netns = String::from_utf8_lossy(&netns.stdout);
    assert!(!netns.contains(&tag), "namespaces left: {netns}");
    let dir = std::env::temp_dir().join(format!("postern-selftest-{pid}"));
    assert!(!dir.exists(), "{} left", dir.display());
    let needle = dir.display().to_string();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        assert!(
            !cmdline.contains(&needle) && !cmdline.contains(&tag),
            "a process of the selftest is left: {} {cmdline}",
            entry.file_name().to_string_lossy()
        );
    }
}

/// Ctrl-C in the middle (posternd running, the namespaces up): the self-test cleans up
/// and exits 130, leaving nothing.
#[test]
fn selftest_interrupted_leaves_nothing_behind() {
    use std::io::BufRead as _;
    if !postern_testkit::can_run("selftest_interrupted_leaves_nothing_behind", &["ip", "nft"]) {
        return;
    }
    let mut child = Command::new(posternd_bin())
        .args(["selftest", "--client", &postern_bin()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut seen = String::new();
    let start = std::time::Instant::now();
    while start.elapsed() < std::time::Duration::from_secs(30) {
        let mut line = String::new();
        if out.read_line(&mut line).unwrap() == 0 {
            break;
        }
        seen.push_str(&line);
        if line.contains("privilege separation") {
            break;
        }
    }
    assert!(seen.contains("posternd started"), "{seen}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{seen}{rest}");
    assert!(rest.contains("ok   nothing left behind"), "{seen}{rest}");
    assert!(rest.contains("selftest interrupted"), "{seen}{rest}");
    let netns = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let tag = format!("postern-st-{pid}-");
    assert!(!String::from_utf8_lossy(&netns.stdout).contains(&tag));
    assert!(!std::env::temp_dir()
        .join(format!("postern-selftest-{pid}"))
        .exists());
}
