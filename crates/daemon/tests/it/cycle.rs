//! The full cycle with the real fwknop 2.6.10 client, and everything that must open
//! nothing: replays (also across a restart), respellings, wrong keys, tampering, old
//! packets, ports outside OPEN_PORTS, wrong usernames, junk. Then `kill -9` with a grant
//! open: the kernel still closes it on time, and the replay store still remembers.

use std::time::Duration;

use crate::lab::{keys, ready, strs, Lab, C1, SRV, SRV_C2};

const SHORT: Duration = Duration::from_millis(600);

#[test]
fn real_fwknop_client_full_cycle_and_refusals() {
    if !ready("real_fwknop_client_full_cycle_and_refusals") {
        return;
    }
    let mut lab = Lab::new(&[22, 2222, 8080]);
    lab.configure(
        &format!("NFT_DEFAULT_DROP Y\nMAX_SPA_PACKET_AGE 120\nDIGEST_FILE {}\n", lab.path("digest.cache").display()),
        "SOURCE ANY\nKEY enc-1\nHMAC_KEY hmac-1\nOPEN_PORTS tcp/22,tcp/2222\nREQUIRE_USERNAME alice\nFW_ACCESS_TIMEOUT 3\n\n\
         SOURCE ANY\nKEY plain-key\nOPEN_PORTS tcp/8080\nFW_ACCESS_TIMEOUT 30\n",
    );
    lab.start(&[]);
    let k = keys("enc-1", "hmac-1");
    assert!(
        !lab.c1.can_connect(SRV, 22, SHORT),
        "tcp/22 open before any knock"
    );

    // The real client opens tcp/22 for c1 only, for FW_ACCESS_TIMEOUT seconds.
    let mut a = strs(&k);
    a.extend(["-A", "tcp/22", "-a", C1, "-D", SRV, "-U", "alice"]);
    let good = lab.fwknop(&lab.c1, &a);
    assert!(
        lab.c1.wait_open(SRV, 22, Duration::from_secs(5)),
        "knock did not open tcp/22\n{}",
        lab.log()
    );
    assert!(
        !lab.c2.can_connect(SRV_C2, 22, SHORT),
        "a second client address reached tcp/22"
    );
    let st = lab.status();
    assert_eq!(st["active"][0]["source"], C1);
    assert_eq!(st["active"][0]["port"], 22);
    assert!(
        lab.c1.wait_closed(SRV, 22, Duration::from_secs(10)),
        "tcp/22 still open after FW_ACCESS_TIMEOUT"
    );

    // Nothing below may open anything.
    lab.send_raw(&lab.c1, SRV, &[&good]); // replay of the captured packet
    let wk = keys("enc-x", "hmac-1");
    let mut wrong = strs(&wk);
    wrong.extend(["-A", "tcp/22", "-a", C1, "-D", SRV, "-U", "alice", "--test"]);
    let wrong_key = lab.fwknop(&lab.c1, &wrong);
    let mut base = strs(&k);
    base.extend(["-a", C1, "-D", SRV, "--test"]);
    let mk = |extra: &[&str]| {
        let mut v = base.clone();
        v.extend(extra);
        lab.fwknop(&lab.c1, &v)
    };
    let outside = mk(&["-A", "tcp/8080", "-U", "alice"]);
    let bob = mk(&["-A", "tcp/22", "-U", "bob"]);
    let old = mk(&["-A", "tcp/22", "-U", "alice", "--time-offset-minus", "10m"]);
    let mut tampered = mk(&["-A", "tcp/22", "-U", "alice"]).into_bytes();
    let i = tampered.len() - 5;
    tampered[i] = if tampered[i] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    let junk = "9".repeat(200);
    lab.send_raw(
        &lab.c1,
        SRV,
        &[
            &wrong_key,
            &outside,
            &bob,
            &old,
            &tampered,
            &junk,
            "not even base64 !!",
        ],
    );
    // A no-HMAC stanza: its packet respelled with '=' or other unused bits.
    let mut plain = vec![
        "--key-rijndael",
        "plain-key",
        "-a",
        C1,
        "-D",
        SRV,
        "-A",
        "tcp/8080",
        "--test",
    ];
    let p = lab.fwknop(&lab.c1, &plain);
    let last = p.as_bytes()[p.len() - 1];
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let idx = alphabet.iter().position(|&c| c == last).unwrap();
    let variant = format!("{}{}", &p[..p.len() - 1], alphabet[idx ^ 1] as char);
    lab.send_raw(&lab.c1, SRV, &[&format!("{p}="), &variant]);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(lab.elements(), "", "something was opened\n{}", lab.log());
    let st = lab.status();
    let r = &st["refused"];
    assert_eq!(r["replay"], 1, "{st}");
    assert_eq!(r["port_not_open"], 1, "{st}");
    assert_eq!(r["username"], 1, "{st}");
    assert_eq!(r["age"], 1, "{st}");
    assert_eq!(
        r["hmac"], 3,
        "tampered HMAC, 9999… junk, respelled last character: {st}"
    );
    assert_eq!(r["decrypt"], 1, "wrong encryption key: {st}");
    assert_eq!(r["base64"], 1, "'=' respelling: {st}");
    assert_eq!(r["size"], 1, "short junk: {st}");
    assert_eq!(st["examined"], 11, "{st}");
    // The respelled no-HMAC packet was refused, and the original still works once.
    plain.retain(|a| *a != "--test");
    lab.send_raw(&lab.c1, SRV, &[&p]);
    assert!(
        lab.c1.wait_open(SRV, 8080, Duration::from_secs(5)),
        "the canonical packet must open\n{}",
        lab.log()
    );

    // kill -9 with a grant open: the kernel closes it on time; restart remembers.
    let mut a = strs(&k);
    a.extend(["-A", "tcp/2222", "-a", C1, "-D", SRV, "-U", "alice"]);
    let before_kill = lab.fwknop(&lab.c1, &a);
    assert!(lab.c1.wait_open(SRV, 2222, Duration::from_secs(5)));
    lab.kill9();
    assert!(lab.c1.can_connect(SRV, 2222, SHORT), "grant gone at kill");
    assert!(
        lab.c1.wait_closed(SRV, 2222, Duration::from_secs(10)),
        "grant outlived its timeout with the daemon dead"
    );
    lab.start(&["-v"]);
    lab.send_raw(&lab.c1, SRV, &[&before_kill, &good]);
    std::thread::sleep(Duration::from_millis(700));
    assert!(
        !lab.c1.can_connect(SRV, 2222, SHORT),
        "replay after restart opened tcp/2222"
    );
    assert_eq!(lab.status()["refused"]["replay"], 2);
    // With -v the worker logs each replay it refuses; the privileged part logs its one
    // line per address (the second replay within 10 s is left out there).
    let log = lab.log();
    let each = format!("says: {C1}: refused: replayed packet");
    assert_eq!(log.matches(&each).count(), 2, "{log}");
    assert_eq!(
        log.matches(&format!("posternd: {C1}: refused: replayed packet"))
            .count(),
        1,
        "{log}"
    );
    lab.stop();
}
