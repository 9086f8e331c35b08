//! `--pcap-file` with `--test`: decisions from a capture, nothing changed; and systemd
//! readiness, sent only once the firewall base is in place.

use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::Duration;

use postern_capture::frame::build_ipv4_udp;
use postern_capture::pcapfile::write_raw;
use postern_testkit::TempDir;

use crate::lab::{posternd_bin, ready, Lab};

fn fwknop_packet(dir: &TempDir, args: &[&str]) -> String {
    let out = Command::new("fwknop")
        .arg("--rc-file")
        .arg(dir.join("rc"))
        .args([
            "--no-save-args",
            "--test",
            "-v",
            "-D",
            "198.18.1.1",
            "--key-rijndael",
            "enc-1",
            "--key-hmac",
            "hmac-1",
        ])
        .args(args)
        .env("HOME", &dir.0)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.trim().strip_prefix("Final SPA Data: ").map(str::to_owned))
        .unwrap()
}

#[test]
fn pcap_file_in_test_mode_decides_but_changes_nothing() {
    if !postern_testkit::have_tool("fwknop") {
        return;
    }
    let dir = TempDir::new("pcap");
    let good = fwknop_packet(&dir, &["-A", "tcp/22", "-a", "198.18.1.2"]);
    let other = fwknop_packet(&dir, &["-A", "tcp/8080", "-a", "198.18.1.2"]);
    let src = "198.18.1.2:40000".parse().unwrap();
    let spa = "198.18.1.1:62201".parse().unwrap();
    let dns = "198.18.1.1:53".parse().unwrap();
    let file = write_raw(&[
        (1, build_ipv4_udp(src, spa, good.as_bytes())),
        (2, build_ipv4_udp(src, spa, good.as_bytes())),
        (3, build_ipv4_udp(src, dns, good.as_bytes())),
        (4, build_ipv4_udp(src, spa, other.as_bytes())),
        (5, build_ipv4_udp(src, spa, b"junk")),
    ]);
    std::fs::write(dir.join("cap.pcap"), file).unwrap();
    std::fs::write(dir.join("fwknopd.conf"), "FLUSH_IPT_AT_INIT N\n").unwrap();
    std::fs::write(
        dir.join("access.conf"),
        "SOURCE ANY\nKEY enc-1\nHMAC_KEY hmac-1\nOPEN_PORTS tcp/22\n",
    )
    .unwrap();
    std::fs::set_permissions(
        dir.join("access.conf"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let out = Command::new(posternd_bin())
        .arg("-c")
        .arg(dir.join("fwknopd.conf"))
        .arg("-r")
        .arg(dir.join("run"))
        .arg("--pcap-file")
        .arg(dir.join("cap.pcap"))
        .arg("-t")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "{text}");
    assert!(
        lines[0].ends_with("would act: 198.18.1.2 for tcp/22 (30s)"),
        "{text}"
    );
    assert!(lines[1].ends_with("refused: replayed packet"), "{text}");
    assert!(
        lines[2].ends_with("refused: tcp/8080 is not in OPEN_PORTS"),
        "{text}"
    );
    assert!(
        lines[3].contains("refused: not an SPA packet: packet too short"),
        "{text}"
    );
    assert_eq!(lines[4], "4 packet(s) processed");
    assert!(
        !dir.join("run/digest.cache").exists(),
        "--test must not write the replay store"
    );
}

#[test]
fn systemd_readiness_comes_after_the_firewall_base() {
    if !ready("systemd_readiness_comes_after_the_firewall_base")
        || !postern_testkit::have_tool("systemd-analyze")
    {
        return;
    }
    let lab = Lab::new(&[22]);
    lab.configure(
        "NFT_DEFAULT_DROP Y\n",
        "SOURCE ANY\nKEY enc-1\nHMAC_KEY hmac-1\n",
    );
    let sock_path = lab.path("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let args = lab.args(&["-i", &lab.iface]);
    let mut child = lab
        .srv
        .cmd(&args[0])
        .args(&args[1..])
        .env("NOTIFY_SOCKET", &sock_path)
        .spawn()
        .unwrap();
    let mut buf = [0u8; 256];
    let n = sock.recv(&mut buf).expect("no READY=1 from posternd");
    assert!(String::from_utf8_lossy(&buf[..n]).contains("READY=1"));
    assert!(
        lab.ruleset().contains("table inet postern"),
        "ready before the firewall base was installed"
    );
    let _ = child.kill();
    let _ = child.wait();
    // The unit file in the repository is valid for systemd.
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../dist/posternd.service"
    ))
    .unwrap();
    assert!(unit.contains("Type=notify"));
    let local = lab.path("posternd.service");
    std::fs::write(&local, unit.replace("/usr/sbin/posternd", posternd_bin())).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&local)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify: {err}");
}
