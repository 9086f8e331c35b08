//! Log lines an admin and fail2ban can use: one line per address for packets refused
//! before they authenticate and for replays (rate-limited, with a count of what was left
//! out), a line when a grant closes, and the shipped fail2ban filter and logcheck rules
//! run against those real lines (fail2ban's own `fail2ban-regex`, Debian's 1.0.2,
//! unpacked by scripts/deps.sh).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::lab::{keys, ready, strs, Lab, C1, C16, SRV, SRV6};

const FAIL2BAN: &str = "/opt/postern-test/fail2ban";

fn repo(p: &str) -> String {
    format!("{}/../../{p}", env!("CARGO_MANIFEST_DIR"))
}

/// posternd's lines as rsyslog writes them to /var/log/syslog (what it wrote, behind
/// the header syslog adds).
fn as_syslog(log: &str) -> String {
    let stamp = Command::new("date")
        .arg("+%b %e %H:%M:%S")
        .output()
        .unwrap();
    let stamp = String::from_utf8_lossy(&stamp.stdout).trim().to_owned();
    log.lines()
        .filter_map(|l| l.strip_prefix("posternd: "))
        .map(|m| format!("{stamp} gw posternd[4242]: {m}\n"))
        .collect()
}

fn wait_for(lab: &Lab, what: &str, secs: u64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if lab.log().contains(what) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

#[test]
fn refusals_are_logged_per_address_and_fail2ban_reads_them() {
    let name = "refusals_are_logged_per_address_and_fail2ban_reads_them";
    if !ready(name) {
        return;
    }
    if !Path::new(FAIL2BAN).join("usr/bin/fail2ban-regex").exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "fail2ban-regex missing: run scripts/deps.sh"
        );
        eprintln!("{name}: skipped, no {FAIL2BAN} (run scripts/deps.sh)");
        return;
    }
    let mut lab = Lab::new(&[22, 23]);
    lab.configure(
        "NFT_DEFAULT_DROP Y\n",
        "SOURCE ANY\nKEY enc-1\nHMAC_KEY hmac-1\nOPEN_PORTS tcp/22\nFW_ACCESS_TIMEOUT 2\n",
    );
    lab.start(&[]);
    let k = keys("enc-1", "hmac-1");
    let mut a = strs(&k);
    a.extend(["-A", "tcp/22", "-a", C1, "-D", SRV]);
    let p = lab.fwknop(&lab.c1, &a);
    assert!(
        lab.c1.wait_open(SRV, 22, Duration::from_secs(5)),
        "{}",
        lab.log()
    );
    // From C1: a replay and three junk packets (one line, the rest left out); from C1's
    // IPv6 address: junk (a line of its own); from C1 a packet that decrypts
    // but asks for a port outside OPEN_PORTS (a policy refusal: its sender holds a key,
    // so fail2ban must not match it).
    lab.send_raw(
        &lab.c1,
        SRV,
        &[&p, &"A".repeat(100), &"B".repeat(100), &"C".repeat(100)],
    );
    lab.send_raw(&lab.c1, SRV6, &[&"E".repeat(100)]);
    let mut a = strs(&k);
    a.extend(["-A", "tcp/23", "-a", C1, "-D", SRV]);
    lab.fwknop(&lab.c1, &a);
    assert!(wait_for(&lab, "is not in OPEN_PORTS", 5), "{}", lab.log());
    assert!(
        wait_for(&lab, &format!("{C16}: refused: "), 5),
        "{}",
        lab.log()
    );
    let log = lab.log();
    assert!(
        log.contains(&format!("{C1}: refused: replayed packet")),
        "{log}"
    );
    assert_eq!(log.matches(&format!("{C1}: refused: ")).count(), 1, "{log}");
    assert!(
        log.contains(&format!("{C16}: refused: not an SPA packet")),
        "{log}"
    );
    // The grant closes: a line says so.
    assert!(
        wait_for(&lab, &format!("{C1} (stanza "), 1)
            && wait_for(&lab, "): closed tcp/22 (expired)", 6),
        "{}",
        lab.log()
    );
    // After the window, the next refusal from C1 says how many were left out.
    std::thread::sleep(Duration::from_secs(10));
    lab.send_raw(&lab.c1, SRV, &[&"F".repeat(100)]);
    assert!(
        wait_for(&lab, "more from this address suppressed)", 5),
        "{}",
        lab.log()
    );
    let syslog = as_syslog(&lab.log());
    lab.stop();
    let file = lab.path("syslog");
    std::fs::write(&file, &syslog).unwrap();

    // fail2ban: every per-address refusal line, and nothing else. The filter sits next
    // to fail2ban's own common.conf, as it does once installed in /etc/fail2ban.
    let filters = lab.path("fail2ban/filter.d");
    std::fs::create_dir_all(&filters).unwrap();
    std::fs::copy(
        format!("{FAIL2BAN}/etc/fail2ban/filter.d/common.conf"),
        filters.join("common.conf"),
    )
    .unwrap();
    std::fs::copy(
        repo("dist/fail2ban/filter.d/posternd.conf"),
        filters.join("posternd.conf"),
    )
    .unwrap();
    let out = Command::new("/usr/bin/python3")
        .env(
            "PYTHONPATH",
            format!("{FAIL2BAN}/usr/lib/python3/dist-packages"),
        )
        .arg(format!("{FAIL2BAN}/usr/bin/fail2ban-regex"))
        .args(["--print-all-matched", "--print-no-missed"])
        .arg(&file)
        .arg(filters.join("posternd.conf"))
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let want = syslog
        .lines()
        .filter(|l| l.contains(": refused: ") && !l.contains("(stanza "))
        .count();
    assert!(want >= 3, "{syslog}");
    assert!(
        report.contains(&format!(
            "Lines: {} lines, 0 ignored, {want} matched",
            syslog.lines().count()
        )),
        "{report}\n{syslog}"
    );
    for host in [C1, C16] {
        assert!(report.contains(host), "{host} not matched:\n{report}");
    }
    // The jail ships disabled (UDP sources can be forged), on the SPA port only.
    let jail = std::fs::read_to_string(repo("dist/fail2ban/jail.d/posternd.conf")).unwrap();
    assert!(jail.contains("enabled  = false") && jail.contains("port     = 62201"));

    // logcheck: routine lines (grants, closes) ignored, errors reported.
    let grep = |rules: &str, text: &str| {
        let mut c = Command::new("grep");
        c.args(["-E", "-f", &repo(rules)]);
        c.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped());
        let mut child = c.spawn().unwrap();
        std::io::Write::write_all(child.stdin.as_mut().unwrap(), text.as_bytes()).unwrap();
        drop(child.stdin.take());
        String::from_utf8_lossy(&child.wait_with_output().unwrap().stdout).into_owned()
    };
    let ignored = grep("dist/logcheck/ignore.d.server/posternd", &syslog);
    assert!(ignored.contains("): granted "), "{ignored}");
    assert!(ignored.contains("): closed tcp/22"), "{ignored}");
    assert!(!ignored.contains(": refused: "), "{ignored}");
    let stamp = syslog
        .lines()
        .next()
        .unwrap()
        .split(" gw ")
        .next()
        .unwrap()
        .to_owned();
    let violation = grep(
        "dist/logcheck/violations.d/posternd",
        &format!("{stamp} gw posternd[4242]: error: cannot compact the replay store: disk full\n"),
    );
    assert!(violation.contains("error: cannot compact"), "{violation}");
}
