//! A bad configuration refuses to start, names file, line and directive, and leaves the
//! nftables ruleset byte-for-byte as it was. A bad reload keeps the running one.

use std::time::Duration;

use crate::lab::{keys, ready, strs, Lab, C1, SRV};

const ADMIN_TABLE: &str =
    "table inet filter {\n chain input { type filter hook input priority 0; policy accept; }\n}\n";

#[test]
fn config_errors_change_nothing() {
    if !ready("config_errors_change_nothing") {
        return;
    }
    let mut lab = Lab::new(&[22]);
    lab.nft_load(ADMIN_TABLE);
    let before = lab.ruleset();
    let good_server = "NFT_DEFAULT_DROP Y\n";
    let good_access = "SOURCE ANY\nKEY enc-1\nHMAC_KEY hmac-1\n";
    let conf = lab.path("fwknopd.conf").display().to_string();
    let access = lab.path("access.conf").display().to_string();
    let cases: Vec<(&str, &str, Vec<&str>, String)> = vec![
        (
            "NFT_DEFAULT_DROP Y\nBOGUS_DIRECTIVE 1\n",
            good_access,
            vec![],
            format!("{conf}:2: BOGUS_DIRECTIVE: unknown directive"),
        ),
        (
            "ENABLE_PCAP_PROMISC Y\n",
            good_access,
            vec![],
            format!("{conf}:1: ENABLE_PCAP_PROMISC: promiscuous capture is not supported"),
        ),
        (
            "MAX_SPA_PACKET_AGE abc\n",
            good_access,
            vec![],
            format!("{conf}:1: MAX_SPA_PACKET_AGE: 'abc' is not a number"),
        ),
        (
            good_server,
            "SOURCE ANY\nKEY same\nHMAC_KEY same\n",
            vec![],
            format!("{access}:3: HMAC_KEY: hmac key must differ from the encryption key"),
        ),
        (
            good_server,
            "SOURCE 10.1.2.300\nKEY k\n",
            vec![],
            format!("{access}:1: SOURCE: '10.1.2.300' is not ANY"),
        ),
        (
            good_server,
            "SOURCE ANY\nKEY k\nOPEN_PORTS tcp/22, icmp/1\n",
            vec![],
            format!("{access}:3: OPEN_PORTS: 'icmp/1' is not tcp/PORT or udp/PORT"),
        ),
        (
            good_server,
            "SOURCE ANY\nKEY_BASE64 __CHANGEME__\n",
            vec![],
            format!("{access}:2: KEY_BASE64: the key is still __CHANGEME__"),
        ),
        (
            good_server,
            good_access,
            vec!["-i", "nosuch0"],
            "PCAP_INTF (or -i): no interface 'nosuch0' on this host (it has: ".into(),
        ),
        (
            "NFT_TABLE inet filter\nNFT_CHAIN nosuchchain\n",
            good_access,
            vec![],
            "chain 'inet filter nosuchchain' is not usable".into(),
        ),
    ];
    for (server, acc, extra, want) in cases {
        lab.configure(server, acc);
        let out = lab.run_posternd(&extra);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{want}: posternd started");
        assert!(err.contains(&want), "expected '{want}' in: {err}");
        assert_eq!(lab.ruleset(), before, "{want}: the ruleset changed");
        let check = lab.run_posternd(&["--check-config"]);
        if extra.is_empty() && !want.contains("nosuchchain") {
            assert_eq!(
                check.status.code(),
                Some(1),
                "--check-config must fail for {want}"
            );
        }
    }
    // A key-bearing access.conf readable by others is refused with the chmod to run.
    lab.configure(good_server, good_access);
    std::fs::set_permissions(
        lab.path("access.conf"),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    let out = lab.run_posternd(&[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("chmod 600 {access}")), "{err}");
    assert_eq!(lab.ruleset(), before);

    // --check-config and --dump-config on a good configuration; keys never shown.
    lab.configure(good_server, good_access);
    let out = lab.run_posternd(&["--check-config"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("configuration OK: 1 stanza(s)"));
    let dump = String::from_utf8(lab.run_posternd(&["-D"]).stdout).unwrap();
    assert!(
        dump.contains("NFT_DEFAULT_DROP            Y") && dump.contains("<redacted, 5 bytes>"),
        "{dump}"
    );
    assert!(
        !dump.contains("enc-1") && !dump.contains("hmac-1"),
        "keys leaked: {dump}"
    );

    // A reload with a bad configuration keeps the running one.
    lab.start(&[]);
    lab.configure(good_server, "SOURCE ANY\nKEY enc-2\nBROKEN\n");
    let out = lab
        .srv
        .cmd(crate::lab::posternd_bin())
        .arg("-R")
        .arg("-r")
        .arg(lab.path("run"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let answer = String::from_utf8_lossy(&out.stdout);
    assert!(
        answer.contains("reload refused")
            && answer.contains(&format!("{access}:3: BROKEN: unknown directive")),
        "{answer}"
    );
    let k = keys("enc-1", "hmac-1");
    let mut a = strs(&k);
    a.extend(["-A", "tcp/22", "-a", C1, "-D", SRV]);
    lab.fwknop(&lab.c1, &a);
    assert!(
        lab.c1.wait_open(SRV, 22, Duration::from_secs(5)),
        "old configuration no longer serves\n{}",
        lab.log()
    );
    // A good reload keeps the grant that is open.
    lab.configure(good_server, "SOURCE ANY\nKEY enc-2\nHMAC_KEY hmac-2\n");
    let out = lab
        .srv
        .cmd(crate::lab::posternd_bin())
        .arg("-R")
        .arg("-r")
        .arg(lab.path("run"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(lab.status()["active"][0]["port"], 22);
    assert!(lab.c1.can_connect(SRV, 22, Duration::from_millis(500)));
    // The worker reads the configuration itself: a reload replaces it, which is no crash.
    postern_testkit::wait_for_line(
        &lab.path("posternd.log"),
        "starting a worker with the new configuration",
        Duration::from_secs(5),
    );
    assert!(!lab.log().contains("the worker exited"), "{}", lab.log());
    // SIGHUP reloads too.
    lab.configure(good_server, "SOURCE ANY\nKEY enc-3\nHMAC_KEY hmac-3\n");
    let pid = lab.daemon.as_ref().unwrap().child.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
    postern_testkit::wait_for_line(
        &lab.path("posternd.log"),
        "configuration reloaded: 1 stanza(s); active grants kept",
        Duration::from_secs(5),
    );
    let k = keys("enc-3", "hmac-3");
    let mut a = strs(&k);
    a.extend(["-A", "tcp/22", "-a", C1, "-D", SRV]);
    lab.fwknop(&lab.c1, &a);
    postern_testkit::wait_for_line(
        &lab.path("posternd.log"),
        "stanza access.conf:1, user",
        Duration::from_secs(5),
    );
    lab.stop();
}

/// One `--check-config` run reports every error of both files, suggests the directive
/// meant, and warns of what would not work on this host: a stanza without HMAC, and an
/// iptables drop policy that would override the grants of posternd's nftables table.
#[test]
fn check_config_reports_every_error_at_once_and_what_the_host_would_override() {
    if !ready("check_config_reports_every_error_at_once_and_what_the_host_would_override") {
        return;
    }
    let lab = Lab::new(&[22]);
    let conf = lab.path("fwknopd.conf").display().to_string();
    let access = lab.path("access.conf").display().to_string();
    lab.configure(
        "PCAP_INTFF eth0\nMAX_SPA_PACKET_AGE soon\nFWKNOP_RUN_DIR relative/run\nENABLE_PCAP_PROMISC Y\n",
        "SOURCE ANY\nKEY k\nOPEN_PORTS tcp/22, icmp/1\n",
    );
    let out = lab.run_posternd(&["--check-config"]);
    let t = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{t}");
    for want in [
        format!("configuration error: {conf}:1: PCAP_INTFF: unknown directive (did you mean PCAP_INTF?)"),
        format!("configuration error: {conf}:2: MAX_SPA_PACKET_AGE: 'soon' is not a number"),
        format!("configuration error: {conf}:3: FWKNOP_RUN_DIR: 'relative/run' is not an absolute path"),
        format!("configuration error: {conf}:4: ENABLE_PCAP_PROMISC:"),
        format!("configuration error: {access}:3: OPEN_PORTS:"),
    ] {
        assert!(t.contains(&want), "'{want}' not in:\n{t}");
    }
    assert_eq!(t.matches("configuration error:").count(), 5, "{t}");

    // Good files, but a stanza without HMAC and a host whose iptables INPUT policy drops
    // what posternd's own nftables table would open: warnings, and still usable.
    lab.srv.run(&["iptables", "-w", "-P", "INPUT", "DROP"]);
    lab.configure("FIREWALL_TYPE nftables\n", "SOURCE ANY\nKEY k\n");
    let out = lab.run_posternd(&["--check-config"]);
    let t = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{t}");
    assert!(
        t.contains(&format!("warning: {access}:1: stanza without an HMAC key")),
        "{t}"
    );
    assert!(
        t.contains("warning: the iptables INPUT policy is DROP: it drops what posternd's nftables grants open; use FIREWALL_TYPE iptables"),
        "{t}"
    );
}

#[test]
fn background_mode_detaches_and_answers() {
    if !ready("background_mode_detaches_and_answers") {
        return;
    }
    let lab = Lab::new(&[22]);
    lab.configure(
        "NFT_DEFAULT_DROP Y\n",
        "SOURCE ANY\nKEY enc-1\nHMAC_KEY hmac-1\n",
    );
    let args = lab.args(&["-i", &lab.iface]);
    let args: Vec<&String> = args.iter().filter(|a| *a != "-f").collect();
    let out = lab.srv.cmd(args[0]).args(&args[1..]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("started in the background"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(lab.status()["examined"], 0);
    let pid: u32 = std::fs::read_to_string(lab.path("run/posternd.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let guard = KillOnDrop(pid);
    let out = lab
        .srv
        .cmd(crate::lab::posternd_bin())
        .arg("-K")
        .arg("-r")
        .arg(lab.path("run"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let start = std::time::Instant::now();
    while alive(pid) && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!alive(pid), "posternd still running after -K");
    drop(guard);
}

/// Running (not a zombie waiting for a reaper).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .is_some_and(|rest| !rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// Kills a detached daemon by PID if a test fails before stopping it.
struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if alive(self.0) {
            let _ = std::process::Command::new("kill")
                .args(["-9", &self.0.to_string()])
                .status();
        }
    }
}
