//! The compromised-worker harness: posternd runs a hostile program as its worker, which
//! writes forged requests straight into the privileged part's pipe (genuine packets
//! claimed from strangers and for other stanzas, bytes that never authenticated,
//! forged log lines with control characters, an endless line). Nothing may be opened,
//! run, recorded or logged as if real; the hostile worker is replaced, and the real
//! worker that follows serves real knocks.

use std::time::Duration;

use crate::lab::{keys, ready, strs, Lab, C1, SRV};

/// A stranger's address, never used on any link (only claimed by the forger).
const STRANGER: &str = "198.19.99.5";

#[test]
fn a_compromised_worker_cannot_make_the_privileged_part_act() {
    if !ready("a_compromised_worker_cannot_make_the_privileged_part_act") {
        return;
    }
    let mut lab = Lab::new(&[22, 23]);
    let out = lab.path("out");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::set_permissions(&out, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let marker = out.join("pwned");
    lab.configure(
        "NFT_DEFAULT_DROP Y\n",
        "SOURCE 198.18.1.0/24\nKEY enc-1\nHMAC_KEY hmac-1\nOPEN_PORTS tcp/22\n\n\
         SOURCE 198.18.7.0/24\nKEY enc-2\nHMAC_KEY hmac-2\nENABLE_CMD_EXEC Y\n",
    );
    // Genuine packets, captured (sent nowhere): an access request for stanza 1 and a
    // command for stanza 2.
    let k1 = keys("enc-1", "hmac-1");
    let mut a = strs(&k1);
    a.extend(["-A", "tcp/22", "-a", C1, "-D", SRV, "--test"]);
    let access = lab.fwknop(&lab.c1, &a);
    let k2 = keys("enc-2", "hmac-2");
    let mut a = strs(&k2);
    let cmd = format!("/usr/bin/touch {}", marker.display());
    a.extend([
        "--server-cmd",
        &cmd,
        "-a",
        "198.18.7.2",
        "-D",
        SRV,
        "--test",
    ]);
    let command = lab.fwknop(&lab.c1, &a);
    let candidate = |hint: u32, src: &str, payload: &str| {
        serde_json::json!({"t": "candidate", "hint": hint, "src": format!("{src}:40000"),
            "dst": format!("{SRV}:62201"), "received": 0, "payload": payload})
        .to_string()
    };
    let forged = [
        serde_json::json!({"t": "ready", "landlock": "enforced", "seccomp": "enforced"})
            .to_string(),
        // Bytes that never authenticated.
        candidate(0, C1, &"U2FsdGVkX1".repeat(20)),
        // The genuine command, claimed from a stranger (outside stanza 2's SOURCE).
        candidate(1, STRANGER, &command),
        // The genuine command, claimed from inside stanza 1's SOURCE (wrong keys there).
        candidate(0, C1, &command),
        // The genuine access request, claimed from a stranger.
        candidate(0, STRANGER, &access),
        // Counters with labels of its own choosing: a protocol violation is not needed
        // to fail, they are simply not believed past the closed label set.
        serde_json::json!({"t": "stats", "examined": 3, "dropped": 0, "refused": {"hmac": 1}})
            .to_string(),
    ];
    let lines: String = forged.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(lab.path("forged.jsonl"), lines).unwrap();
    let script = lab.path("hostile-worker");
    let gen = lab.path("generation");
    std::fs::write(
        &script,
        format!(
            r#"#!/usr/bin/python3
import os, sys, time
gen = {gen:?}
n = int(open(gen).read()) if os.path.exists(gen) else 0
open(gen, "w").write(str(n + 1))
if n > 0:
    os.execv({real:?}, [{real:?}] + sys.argv[1:])
out = sys.stdout
out.write(open({forged:?}).read())
out.flush()
sys.stderr.write("posternd: {STRANGER} (stanza access.conf:1): granted {STRANGER} for tcp/22 (30s)\n")
sys.stderr.write("posternd: forged\rline\x1b[2J with controls\n")
sys.stderr.flush()
time.sleep(1.5)
out.write("A" * 20000)
out.flush()
time.sleep(30)
"#,
            gen = gen.display().to_string(),
            real = crate::lab::posternd_bin(),
            forged = lab.path("forged.jsonl").display().to_string(),
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let script_arg = script.display().to_string();
    lab.start(&["--worker-program", &script_arg]);
    postern_testkit::wait_for_line(
        &lab.path("posternd.log"),
        "broke the protocol",
        Duration::from_secs(10),
    );
    // The real worker takes over.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while lab.status()["parts"][1]["kernel_seccomp_mode"] != 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the real worker never came\n{}",
            lab.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = lab.log();
    let st = lab.status();
    // Nothing opened, nothing run.
    let elements = lab.elements();
    assert!(
        !elements.contains(STRANGER) && !elements.contains(C1),
        "{elements}\n{log}"
    );
    assert!(!lab.c1.can_connect(SRV, 22, Duration::from_millis(300)));
    std::thread::sleep(Duration::from_millis(300));
    assert!(!marker.exists(), "a forged command ran\n{log}");
    assert_eq!(st["commands"], 0, "{st}");
    assert_eq!(st["grants"], 0, "{st}");
    assert!(
        st["refused"]["worker_mismatch"].as_u64().unwrap_or(0) >= 4,
        "every forged candidate is counted: {st}"
    );
    // Nothing forged was recorded: the genuine packets still open when really sent.
    assert_eq!(st["replay_entries"], 0, "{st}");
    // The forged log lines are marked as the worker's, and carry no control character.
    for line in log.lines() {
        assert!(
            !line.starts_with(&format!("posternd: {STRANGER}")),
            "a forged line passed as the daemon's: {line}"
        );
        assert!(!line.contains('\r') && !line.contains('\u{1b}'), "{line:?}");
    }
    assert!(
        log.contains(&format!("says: {STRANGER} (stanza access.conf:1): granted")),
        "{log}"
    );
    assert!(log.contains("line longer than 16168 bytes"), "{log}");
    // Junk the real worker forwards for the refusal log (at most one per address every
    // 10 s): control bytes, which JSON escapes six to one, and bytes past ASCII. It stays
    // within the protocol: the worker is not replaced.
    let broke = |log: &str| log.matches("broke the protocol").count();
    let before = broke(&lab.log());
    lab.send_raw(&lab.c2, crate::lab::SRV_C2, &[&"\u{1}".repeat(1400)]);
    lab.send_raw(&lab.c1, SRV, &[&"\u{ff}".repeat(1400)]);
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(broke(&lab.log()), before, "{}", lab.log());
    // Real knocks work with the real worker.
    lab.send_raw(&lab.c1, SRV, &[&access]);
    assert!(
        lab.c1.wait_open(SRV, 22, Duration::from_secs(5)),
        "{}",
        lab.log()
    );
    assert!(!lab.c1.can_connect(SRV, 23, Duration::from_millis(300)));
    lab.stop();
}
