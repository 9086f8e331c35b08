//! Faults fail closed, injected for real: the firewall refusing changes (a failing nft,
//! the table deleted under posternd), a full filesystem under the replay store, a
//! damaged replay store at start. Nothing opens that should not, and posternd goes on.

use std::process::Command;
use std::time::Duration;

use crate::lab::{keys, ready, strs, Lab, C1, SRV};

const SHORT: Duration = Duration::from_millis(600);

fn knock(lab: &Lab, port: u16, extra: &[&str]) -> String {
    let k = keys("enc-1", "hmac-1");
    let mut a = strs(&k);
    let p = format!("tcp/{port}");
    a.extend(["-A", p.as_str(), "-a", C1, "-D", SRV]);
    a.extend(extra);
    lab.fwknop(&lab.c1, &a)
}

#[test]
fn firewall_failures_open_nothing_and_are_repaired() {
    if !ready("firewall_failures_open_nothing_and_are_repaired") {
        return;
    }
    let mut lab = Lab::new(&[22, 23, 24]);
    let flag = lab.path("nft-fails");
    let wrapper = lab.path("nft-wrapper");
    std::fs::write(
        &wrapper,
        format!("#!/bin/sh\nif [ -e {} ]; then echo 'Error: simulated netlink failure' >&2; exit 1; fi\nexec nft \"$@\"\n", flag.display()),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    lab.configure(
        &format!(
            "NFT_DEFAULT_DROP Y\nNFT_EXE {}\nNFT_GRANTS nft\n",
            wrapper.display()
        ),
        "SOURCE ANY\nKEY enc-1\nHMAC_KEY hmac-1\n",
    );
    lab.start(&[]);
    std::fs::write(&flag, "").unwrap();
    knock(&lab, 22, &[]);
    std::thread::sleep(Duration::from_millis(700));
    assert!(!lab.c1.can_connect(SRV, 22, SHORT));
    let st = lab.status();
    assert_eq!(st["firewall_errors"], 1, "{st}");
    assert_eq!(
        st["active"].as_array().unwrap().len(),
        0,
        "a refused grant must not be reported open"
    );
    assert!(
        lab.log().contains("NOT opened") && lab.log().contains("simulated netlink failure"),
        "{}",
        lab.log()
    );
    std::fs::remove_file(&flag).unwrap();
    knock(&lab, 22, &[]);
    assert!(
        lab.c1.wait_open(SRV, 22, Duration::from_secs(5)),
        "posternd stopped serving after a failure\n{}",
        lab.log()
    );
    // The table deleted under posternd: the next grant reinstalls the base first.
    let mut c = lab.srv.cmd("nft");
    c.args(["delete", "table", "inet", "postern"]);
    postern_testkit::sh(&mut c);
    knock(&lab, 23, &[]);
    assert!(
        lab.c1.wait_open(SRV, 23, Duration::from_secs(5)),
        "not repaired\n{}",
        lab.log()
    );
    assert!(
        lab.ruleset().contains("policy drop"),
        "the default-drop policy must be back"
    );
    assert!(
        !lab.c1.can_connect(SRV, 24, SHORT),
        "repair must not open anything else"
    );
    lab.stop();
}

/// A small tmpfs mounted in the test's own directory, unmounted on drop.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: std::path::PathBuf, size: &str) -> Tmpfs {
        std::fs::create_dir_all(&dir).unwrap();
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(&dir)
            .status()
            .unwrap();
        assert!(ok.success(), "cannot mount a tmpfs");
        Tmpfs(dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn remount(dir: &std::path::Path, opts: &str) {
    let ok = Command::new("mount")
        .args(["-o", &format!("remount,{opts}")])
        .arg(dir)
        .status()
        .unwrap();
    assert!(ok.success(), "cannot remount {}", dir.display());
}

/// Fill a tmpfs: pad the store to a page boundary (so its next line needs a new page),
/// then take every free page.
fn fill(fs: &Tmpfs, digest: &std::path::Path) {
    if let Ok(meta) = std::fs::metadata(digest) {
        let size = meta.len() as usize;
        let mut pad = 4096 - size % 4096;
        if pad < 2 {
            pad += 4096;
        }
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(digest)
            .unwrap();
        std::io::Write::write_all(&mut f, format!("#{}\n", "#".repeat(pad - 2)).as_bytes())
            .unwrap();
    }
    let _ = Command::new("dd")
        .args(["if=/dev/zero", "bs=4k", "count=100"])
        .arg(format!("of={}", fs.0.join("fill").display()))
        .output();
}

/// Persistence is never a condition for access: a full or read-only file system under
/// the replay store, at start or while running, locks nobody out and never opens a
/// replay; the next start does not trust what was not kept.
#[test]
fn a_full_or_read_only_disk_locks_nobody_out_and_opens_no_replay() {
    if !ready("a_full_or_read_only_disk_locks_nobody_out_and_opens_no_replay") {
        return;
    }
    let mut lab = Lab::new(&[22, 23, 24, 25, 26, 27]);
    let fs = Tmpfs::mount(lab.path("store"), "64k");
    let digest = fs.0.join("digest.cache");
    lab.configure(
        &format!("NFT_DEFAULT_DROP Y\nDIGEST_FILE {}\n", digest.display()),
        "SOURCE ANY\nKEY enc-1\nHMAC_KEY hmac-1\n",
    );
    lab.start(&[]);
    knock(&lab, 22, &[]);
    assert!(
        lab.c1.wait_open(SRV, 22, Duration::from_secs(5)),
        "{}",
        lab.log()
    );
    assert_eq!(lab.status()["replay_store"], "persistent");
    // The disk fills while running: the next knock still opens, the store goes on in
    // memory, loudly, and the same packet sent again is a replay.
    fill(&fs, &digest);
    let packet = knock(&lab, 23, &["--test"]);
    lab.send_raw(&lab.c1, SRV, &[&packet]);
    assert!(
        lab.c1.wait_open(SRV, 23, Duration::from_secs(5)),
        "full disk locked the knock out\n{}",
        lab.log()
    );
    let st = lab.status();
    assert!(
        st["replay_store"]
            .as_str()
            .unwrap()
            .starts_with("IN MEMORY ONLY"),
        "{st}"
    );
    assert!(lab.log().contains("IN MEMORY ONLY"), "{}", lab.log());
    lab.send_raw(&lab.c1, SRV, &[&packet]);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        lab.status()["refused"]["replay"].as_u64().unwrap_or(0) >= 1,
        "{}",
        lab.status()
    );
    // A clean stop leaves no marker: the digests of this run were not all kept.
    lab.stop();
    assert!(!fs.0.join("digest.cache.clean").exists());
    std::fs::remove_file(fs.0.join("fill")).unwrap();
    lab.start(&[]);
    assert!(
        lab.log().contains("only packets stamped after this start"),
        "{}",
        lab.log()
    );
    lab.send_raw(&lab.c1, SRV, &[&packet]);
    std::thread::sleep(Duration::from_millis(500));
    assert!(!lab.c1.can_connect(SRV, 24, SHORT));
    let st = lab.status();
    assert_eq!(st["replay_store"], "persistent", "{st}");
    lab.stop();

    // Full from the start, with no store file at all: posternd starts, in memory.
    std::fs::remove_file(&digest).unwrap();
    let _ = std::fs::remove_file(fs.0.join("digest.cache.clean"));
    fill(&fs, &digest);
    lab.start(&[]);
    let st = lab.status();
    assert!(
        st["replay_store"]
            .as_str()
            .unwrap()
            .starts_with("IN MEMORY ONLY"),
        "{st}"
    );
    knock(&lab, 25, &["--time-offset-plus", "1"]);
    assert!(
        lab.c1.wait_open(SRV, 25, Duration::from_secs(5)),
        "{}",
        lab.log()
    );
    lab.stop();
    std::fs::remove_file(fs.0.join("fill")).unwrap();

    // Read-only at start: the same.
    remount(&fs.0, "ro");
    lab.start(&[]);
    let st = lab.status();
    assert!(
        st["replay_store"]
            .as_str()
            .unwrap()
            .starts_with("IN MEMORY ONLY"),
        "{st}"
    );
    knock(&lab, 26, &["--time-offset-plus", "2"]);
    assert!(
        lab.c1.wait_open(SRV, 26, Duration::from_secs(5)),
        "{}",
        lab.log()
    );
    lab.stop();
    remount(&fs.0, "rw");

    // A damaged store at start: posternd starts, says so, and for one window accepts
    // only packets stamped after its start.
    let captured_earlier = knock(&lab, 27, &["--test", "--time-offset-minus", "30"]);
    std::fs::write(
        &digest,
        "# <digest> ...\n\u{1}\u{2}garbage that is not a digest line\n",
    )
    .unwrap();
    lab.start(&[]);
    assert!(
        lab.log().contains("only packets stamped after this start"),
        "{}",
        lab.log()
    );
    lab.send_raw(&lab.c1, SRV, &[&captured_earlier]);
    std::thread::sleep(Duration::from_millis(700));
    assert!(
        !lab.c1.can_connect(SRV, 27, SHORT),
        "a packet stamped before the start was accepted"
    );
    assert_eq!(lab.status()["refused"]["before_start"], 1);
    // The rule is the privileged part's: a replaced worker does not forget it.
    let worker = lab.status()["parts"][1]["pid"].as_u64().unwrap();
    postern_testkit::sh(Command::new("kill").args(["-9", &worker.to_string()]));
    new_worker(&lab, worker);
    lab.send_raw(&lab.c1, SRV, &[&captured_earlier]);
    std::thread::sleep(Duration::from_millis(700));
    assert!(
        !lab.c1.can_connect(SRV, 27, SHORT),
        "forgotten with the worker"
    );
    knock(&lab, 27, &["--time-offset-plus", "3"]);
    assert!(
        lab.c1.wait_open(SRV, 27, Duration::from_secs(5)),
        "{}",
        lab.log()
    );
    lab.stop();
    drop(fs);
}

#[test]
fn the_packet_parser_runs_unprivileged_and_is_restarted() {
    if !ready("the_packet_parser_runs_unprivileged_and_is_restarted") {
        return;
    }
    let mut lab = Lab::new(&[22, 23]);
    lab.configure(
        "NFT_DEFAULT_DROP Y\n",
        "SOURCE ANY\nKEY enc-1\nHMAC_KEY hmac-1\n",
    );
    lab.start(&[]);
    let st = lab.status();
    let parts = st["parts"].as_array().unwrap();
    assert_eq!(parts.len(), 2, "{st}");
    assert_eq!(parts[0]["user"], "root");
    assert_ne!(parts[1]["user"], "root", "{st}");
    let worker = parts[1]["pid"].as_u64().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{worker}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
            .unwrap_or("")
            .to_owned()
    };
    assert!(
        !field("Uid:").starts_with('0'),
        "worker uid: {}",
        field("Uid:")
    );
    assert_eq!(
        field("CapEff:"),
        "0000000000000000",
        "the worker must hold no capability"
    );
    assert_eq!(field("CapPrm:"), "0000000000000000");
    assert_eq!(field("NoNewPrivs:"), "1");
    // Every thread of the worker, not only the first, runs without privileges.
    for task in std::fs::read_dir(format!("/proc/{worker}/task")).unwrap() {
        let st = std::fs::read_to_string(task.unwrap().path().join("status")).unwrap();
        assert!(
            st.lines()
                .any(|l| l.starts_with("NoNewPrivs:") && l.ends_with('1')),
            "a worker thread without no_new_privs"
        );
        assert!(
            st.lines().any(|l| l == "CapEff:\t0000000000000000"),
            "a worker thread with capabilities"
        );
    }
    let landlock = parts[1]["landlock"].as_str().unwrap();
    assert!(
        ["enforced", "partially enforced", "not available"].contains(&landlock),
        "{st}"
    );
    eprintln!("worker Landlock status: {landlock}");
    knock(&lab, 22, &[]);
    assert!(
        lab.c1.wait_open(SRV, 22, Duration::from_secs(5)),
        "{}",
        lab.log()
    );
    assert_eq!(parts[1]["seccomp"], "enforced", "{st}");
    assert_eq!(parts[1]["kernel_seccomp_mode"], 2, "{st}");
    assert_eq!(field("Seccomp:"), "2");
    // Killed again and again by another process: the worker is replaced every time
    // (with a backoff), posternd never gives up, and grants expire on time meanwhile.
    lab.configure(
        "NFT_DEFAULT_DROP Y\n",
        "SOURCE ANY\nKEY enc-1\nHMAC_KEY hmac-1\nFW_ACCESS_TIMEOUT 3\n",
    );
    lab.run_posternd(&["-R"]);
    let mut last = new_worker(&lab, worker);
    knock(&lab, 23, &[]);
    assert!(
        lab.c1.wait_open(SRV, 23, Duration::from_secs(5)),
        "{}",
        lab.log()
    );
    let opened = std::time::Instant::now();
    postern_testkit::sh(Command::new("kill").args(["-9", &last.to_string()]));
    // With no worker at all, the grant closes on time (the kernel expires it).
    assert!(
        lab.c1.wait_closed(SRV, 23, Duration::from_secs(6)),
        "still open {:?} after the knock",
        opened.elapsed()
    );
    // The first worker is already gone; two more are killed as soon as they run.
    for round in 0..3 {
        if round > 0 {
            postern_testkit::sh(Command::new("kill").args(["-9", &last.to_string()]));
        }
        last = new_worker(&lab, last);
    }
    assert!(lab.status()["parts"][1]["restarts"].as_u64().unwrap() >= 3);
    assert!(lab.log().contains("killed (SIGKILL)"), "{}", lab.log());
    knock(&lab, 22, &["--time-offset-plus", "1"]);
    assert!(
        lab.c1.wait_open(SRV, 22, Duration::from_secs(5)),
        "{}",
        lab.log()
    );
    lab.stop();
}

/// Wait until a worker other than `old` runs with its sandbox in place; its pid.
fn new_worker(lab: &Lab, old: u64) -> u64 {
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    loop {
        let st = lab.status();
        let pid = st["parts"][1]["pid"].as_u64().unwrap_or(0);
        if pid != old && pid != 0 && st["parts"][1]["seccomp"] == "enforced" {
            return pid;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no new worker\n{}",
            lab.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The default grant path (one persistent netlink socket): the element carries the
/// requested timeout and expires in the kernel; a refresh resets it; a table deleted under
/// posternd makes the netlink batch fail (ENOENT), and the base is reinstalled.
#[test]
fn netlink_grants_expire_in_the_kernel_and_survive_a_deleted_table() {
    if !ready("netlink_grants_expire_in_the_kernel_and_survive_a_deleted_table") {
        return;
    }
    let mut lab = Lab::new(&[22, 23]);
    lab.configure(
        "NFT_DEFAULT_DROP Y\n",
        "SOURCE ANY\nKEY enc-1\nHMAC_KEY hmac-1\n",
    );
    lab.start(&[]);
    knock(&lab, 22, &["-f", "4"]);
    assert!(
        lab.c1.wait_open(SRV, 22, Duration::from_secs(5)),
        "{}",
        lab.log()
    );
    let el = lab.elements();
    assert!(
        el.contains(&format!("{C1} . tcp . 22 timeout 4s expires")),
        "{el}"
    );
    // A refresh through the same netlink path replaces the element's timeout.
    knock(&lab, 22, &["-f", "9"]);
    std::thread::sleep(Duration::from_millis(500));
    let el = lab.elements();
    assert!(
        el.contains(&format!("{C1} . tcp . 22 timeout 9s expires")),
        "{el}"
    );
    let mut c = lab.srv.cmd("nft");
    c.args(["delete", "table", "inet", "postern"]);
    postern_testkit::sh(&mut c);
    knock(&lab, 23, &["-f", "4"]);
    assert!(
        lab.c1.wait_open(SRV, 23, Duration::from_secs(5)),
        "not repaired\n{}",
        lab.log()
    );
    assert!(lab.log().contains("base reinstalled"), "{}", lab.log());
    assert!(lab.ruleset().contains("policy drop"));
    // The repair puts back what is still owed (the 9 s grant of tcp/22), for what is
    // left of it.
    assert!(
        lab.log().contains("1 open grant(s) put back"),
        "{}",
        lab.log()
    );
    assert!(
        lab.c1.can_connect(SRV, 22, SHORT),
        "the repair did not bring back an owed grant"
    );
    let el = lab.elements();
    assert!(el.contains(&format!("{C1} . tcp . 22 timeout")), "{el}");
    assert!(
        lab.c1.wait_closed(SRV, 23, Duration::from_secs(8)),
        "the kernel did not close the grant"
    );
    assert_eq!(lab.status()["firewall_errors"], 0);
    lab.stop();
}

/// A burst of valid knocks (the worker's reader threads and allocator under
/// contention): the worker survives its own sandbox, and every knock is granted.
#[test]
fn a_burst_of_valid_knocks_neither_kills_the_worker_nor_loses_one() {
    if !ready("a_burst_of_valid_knocks_neither_kills_the_worker_nor_loses_one") {
        return;
    }
    use postern_proto::{
        encode, DigestType, EncryptionMode, HmacKey, Key, Keys, MessageType, RandomValue,
        SpaMessage,
    };
    let mut lab = Lab::new(&[22]);
    lab.configure(
        "NFT_DEFAULT_DROP Y\nMAX_SPA_PACKET_AGE 600\n",
        "SOURCE ANY\nKEY enc-1\nHMAC_KEY hmac-1\nFW_ACCESS_TIMEOUT 60\n",
    );
    lab.start(&[]);
    std::thread::sleep(Duration::from_secs(1));
    let keys = Keys::new(
        Key::from_passphrase("enc-1"),
        EncryptionMode::Cbc,
        Some(HmacKey {
            key: Key::from_passphrase("hmac-1"),
            digest: DigestType::Sha256,
        }),
    )
    .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    const N: u32 = 2000;
    let packets: Vec<String> = (0..N)
        .map(|i| {
            let m = SpaMessage {
                random_value: RandomValue::from_digits(&format!("{:016}", 10_000 + i)).unwrap(),
                username: "burst".into(),
                timestamp: now + 1,
                version: "3.0.0".into(),
                message_type: MessageType::Access,
                message: format!("{C1},tcp/{}", 10_000 + i),
                nat_access: None,
                server_auth: None,
                client_timeout: 0,
            };
            let salt = (i as u64).to_le_bytes();
            encode(&m, &keys, DigestType::Sha256, salt).unwrap()
        })
        .collect();
    let file = lab.path("burst.txt");
    std::fs::write(&file, packets.join("\n")).unwrap();
    let script = "import socket,sys\ns=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\nfor p in open(sys.argv[2]).read().split():\n s.sendto(p.encode(), (sys.argv[1], 62201))\n";
    let mut c = lab.c1.cmd("python3");
    c.args(["-c", script, SRV]).arg(&file);
    postern_testkit::sh(&mut c);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut st = lab.status();
    while st["grants"].as_u64().unwrap_or(0) < u64::from(N) && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(200));
        st = lab.status();
    }
    assert_eq!(
        st["parts"][1]["restarts"],
        0,
        "the worker died\n{}",
        lab.log()
    );
    assert!(!lab.log().contains("SIGSYS"), "{}", lab.log());
    assert_eq!(st["grants"], u64::from(N), "{st}");
    lab.stop();
}
