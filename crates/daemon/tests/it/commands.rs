//! Command messages (ENABLE_CMD_EXEC, run as CMD_EXEC_USER, as argv) and command cycles
//! (CMD_CYCLE_OPEN/CLOSE with substitution, for every requested port), driven by the
//! real fwknop client.

use std::os::unix::fs::MetadataExt as _;
use std::time::{Duration, Instant};

use crate::lab::{ready, Lab, C1, SRV};

fn wait_for(what: &str, mut f: impl FnMut() -> bool, lab: &Lab) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(8) {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what}\n{}", lab.log());
}

#[test]
fn commands_and_cycles_from_the_real_client() {
    if !ready("commands_and_cycles_from_the_real_client") {
        return;
    }
    let mut lab = Lab::new(&[22]);
    let out = lab.path("out");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::set_permissions(&out, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let o = out.display();
    lab.configure(
        "NFT_DEFAULT_DROP Y\n",
        &format!(
            "SOURCE ANY\nKEY cmd-key\nHMAC_KEY cmd-hmac\nENABLE_CMD_EXEC Y\nCMD_EXEC_USER nobody\n\n\
             SOURCE ANY\nKEY cycle-key\nHMAC_KEY cycle-hmac\nCMD_CYCLE_OPEN /usr/bin/touch {o}/open-$PORT-$PROTO-$SRC\n\
             CMD_CYCLE_CLOSE /bin/rm -f {o}/open-$PORT-$PROTO-$SRC\nCMD_CYCLE_TIMER 2\n\n\
             SOURCE ANY\nKEY nocmd-key\nHMAC_KEY nocmd-hmac\n"
        ),
    );
    lab.start(&[]);
    // A command message runs as nobody, as argv: `$(id)` is a file name, not a shell expansion.
    let marker = out.join("ran");
    let cmd = format!("/usr/bin/touch {} {o}/$(id)", marker.display());
    lab.fwknop(
        &lab.c1,
        &[
            "-C",
            &cmd,
            "-a",
            C1,
            "-D",
            SRV,
            "--key-rijndael",
            "cmd-key",
            "--key-hmac",
            "cmd-hmac",
        ],
    );
    wait_for("the command did not run", || marker.exists(), &lab);
    assert_eq!(
        std::fs::metadata(&marker).unwrap().uid(),
        65534,
        "not run as nobody"
    );
    assert!(
        out.join("$(id)").exists(),
        "'$(id)' must be a plain argument"
    );
    // Without ENABLE_CMD_EXEC the command is refused.
    let refused = out.join("refused");
    let cmd = format!("/usr/bin/touch {}", refused.display());
    lab.fwknop(
        &lab.c1,
        &[
            "-C",
            &cmd,
            "-a",
            C1,
            "-D",
            SRV,
            "--key-rijndael",
            "nocmd-key",
            "--key-hmac",
            "nocmd-hmac",
        ],
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(!refused.exists());
    assert_eq!(lab.status()["refused"]["command_not_enabled"], 1);
    // A cycle: one open command per requested port, closed after the timer.
    lab.fwknop(
        &lab.c1,
        &[
            "-A",
            "tcp/22,udp/53",
            "-a",
            C1,
            "-D",
            SRV,
            "--key-rijndael",
            "cycle-key",
            "--key-hmac",
            "cycle-hmac",
        ],
    );
    let a = out.join(format!("open-22-6-{C1}"));
    let b = out.join(format!("open-53-17-{C1}"));
    wait_for(
        "cycle open commands did not run for every port",
        || a.exists() && b.exists(),
        &lab,
    );
    wait_for(
        "cycle close commands did not run",
        || !a.exists() && !b.exists(),
        &lab,
    );
    assert_eq!(
        lab.elements(),
        "",
        "a cycle stanza must not use the built-in firewall"
    );
    lab.stop();
}
