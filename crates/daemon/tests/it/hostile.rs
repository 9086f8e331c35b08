//! What a local user or a reload can do to the privileged part: key files that are
//! FIFOs or links to devices (never read, never blocking, never exhausting memory; the
//! stanza refused with file:line, a reload keeping the old configuration), and a
//! command-cycle close pending across a reload that moves and changes its stanza (run
//! with the identity it was opened with, never as root by default).

use std::os::unix::fs::MetadataExt as _;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::lab::{keys, ready, strs, Lab, C1, SRV};

fn knock(lab: &Lab, enc: &str, hmac: &str, port: u16) {
    let k = keys(enc, hmac);
    let mut a = strs(&k);
    let p = format!("tcp/{port}");
    a.extend(["-A", p.as_str(), "-a", C1, "-D", SRV]);
    lab.fwknop(&lab.c1, &a);
}

#[test]
fn key_files_that_are_fifos_or_devices_are_refused_without_blocking() {
    if !ready("key_files_that_are_fifos_or_devices_are_refused_without_blocking") {
        return;
    }
    let mut lab = Lab::new(&[22]);
    let fifo = lab.path("keys.fifo");
    postern_testkit::sh(Command::new("mkfifo").arg(&fifo));
    let zero = lab.path("keys.zero");
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
    // A user-owned link, even to a regular file, is not followed.
    let good_keys = lab.path("keys.good");
    std::fs::write(&good_keys, "KEY enc-1\nHMAC_KEY hmac-1\n").unwrap();
    std::fs::set_permissions(
        &good_keys,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let user_link = lab.path("keys.userlink");
    std::os::unix::fs::symlink(&good_keys, &user_link).unwrap();
    std::os::unix::fs::lchown(&user_link, Some(65534), Some(65534)).unwrap();
    let access = lab.path("access.conf").display().to_string();
    for (file, why) in [
        (&fifo, "not a regular file"),
        (&zero, "not a regular file"),
        (&user_link, "a symbolic link owned by uid 65534"),
    ] {
        lab.configure(
            "NFT_DEFAULT_DROP Y\n",
            &format!("SOURCE ANY\n%include_keys {}\n", file.display()),
        );
        let start = Instant::now();
        let out = lab.run_posternd(&["--check-config"]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "blocked on {file:?}"
        );
        assert!(!out.status.success(), "{text}");
        assert!(
            text.contains(&format!(
                "{access}:2: %INCLUDE_KEYS: {}: {why}",
                file.display()
            )),
            "{text}"
        );
    }
    // A running posternd asked to reload such a file keeps its configuration and keeps
    // answering.
    lab.configure(
        "NFT_DEFAULT_DROP Y\n",
        &format!("SOURCE ANY\n%include_keys {}\n", good_keys.display()),
    );
    lab.start(&[]);
    for file in [&fifo, &zero] {
        lab.configure(
            "NFT_DEFAULT_DROP Y\n",
            &format!("SOURCE ANY\n%include_keys {}\n", file.display()),
        );
        let start = Instant::now();
        let out = lab.run_posternd(&["-R"]);
        assert!(start.elapsed() < Duration::from_secs(5));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("reload refused, the running configuration stays"),
            "{text}"
        );
        assert!(lab.status()["pid"].as_u64().is_some());
    }
    knock(&lab, "enc-1", "hmac-1", 22);
    assert!(
        lab.c1.wait_open(SRV, 22, Duration::from_secs(5)),
        "{}",
        lab.log()
    );
    lab.stop();
}

#[test]
fn a_pending_cycle_close_keeps_its_identity_across_a_reload() {
    if !ready("a_pending_cycle_close_keeps_its_identity_across_a_reload") {
        return;
    }
    let mut lab = Lab::new(&[22]);
    let out = lab.path("out");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::set_permissions(&out, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let o = out.display();
    let stanza = |prefix: &str, user: &str| {
        format!(
            "{prefix}SOURCE ANY\nKEY cycle-key\nHMAC_KEY cycle-hmac\n{user}\
             CMD_CYCLE_OPEN /usr/bin/touch {o}/open-$PORT\n\
             CMD_CYCLE_CLOSE /usr/bin/touch {o}/close-$PORT\nCMD_CYCLE_TIMER 3\n"
        )
    };
    lab.configure("", &stanza("", "CMD_EXEC_USER nobody\n"));
    lab.start(&[]);
    knock(&lab, "cycle-key", "cycle-hmac", 22);
    let open = out.join("open-22");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !open.exists() {
        assert!(Instant::now() < deadline, "{}", lab.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let opened = Instant::now();
    // The stanza moves two lines down and loses its CMD_EXEC_USER.
    lab.configure("", &stanza("# moved\n\n", ""));
    let r = lab.run_posternd(&["-R"]);
    assert!(String::from_utf8_lossy(&r.stdout).contains("configuration reloaded"));
    let close = out.join("close-22");
    let deadline = Instant::now() + Duration::from_secs(8);
    while !close.exists() {
        assert!(Instant::now() < deadline, "no close\n{}", lab.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        opened.elapsed() >= Duration::from_millis(2000),
        "closed after {:?}, before CMD_CYCLE_TIMER",
        opened.elapsed()
    );
    let uid = std::fs::metadata(&close).unwrap().uid();
    assert_eq!(uid, 65534, "the close ran as uid {uid}, not as nobody");
    assert_eq!(std::fs::metadata(&open).unwrap().uid(), 65534);
    lab.stop();
}
