//! The package's postrm, on purge, removes what a posternd left in the firewall (here
//! after `kill -9`, so that nothing was cleaned up at exit), and says so: the nftables
//! table `inet postern`, the iptables `FWKNOP_*` chains that hold only posternd's rules,
//! and the `postern-*` ipsets; a chain of that name with someone else's rule is kept.
//! The script's firewall functions run in the lab's server namespace only (its removal
//! of /var/lib/postern and /run/postern is not run here: scripts/package-test.sh purges a
//! real installation).

use std::path::Path;

use crate::lab::{ready, Lab};

/// dist/debian/postrm up to its purge branch (the functions), then `calls`.
fn postrm_functions(calls: &str) -> String {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dist/debian/postrm"),
    )
    .unwrap();
    let end = text
        .find("\nif [ \"$1\" = \"purge\" ]")
        .expect("the purge branch");
    format!("{}\n{calls}\n", &text[..end])
}

fn purge(lab: &Lab) -> String {
    let out = lab
        .srv
        .cmd("sh")
        .args(["-c", &postrm_functions("purge_nft\npurge_iptables")])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "postrm's purge functions failed: {text}"
    );
    text
}

const ACCESS: &str =
    "SOURCE ANY\nKEY enc-1\nHMAC_KEY hmac-1\nOPEN_PORTS tcp/22\nFW_ACCESS_TIMEOUT 60\n";

#[test]
fn purge_removes_posternds_own_nftables_table() {
    if !ready("purge_removes_posternds_own_nftables_table") {
        return;
    }
    let mut lab = Lab::new(&[22]);
    lab.configure("FIREWALL_TYPE nftables\nNFT_DEFAULT_DROP Y\n", ACCESS);
    lab.start(&[]);
    lab.postern(&["-A", "tcp/22", "-a", crate::lab::C1, "-D", crate::lab::SRV]);
    lab.kill9();
    assert!(lab.ruleset().contains("table inet postern"));
    let said = purge(&lab);
    assert!(
        said.contains("removed the nftables table 'inet postern'"),
        "{said}"
    );
    assert!(
        !lab.ruleset().contains("table inet postern"),
        "{}",
        lab.ruleset()
    );
    // Nothing left: a second purge says nothing.
    assert_eq!(purge(&lab), "");
}

#[test]
fn purge_removes_posternds_iptables_chains_and_ipsets_only() {
    if !ready("purge_removes_posternds_iptables_chains_and_ipsets_only")
        || !postern_testkit::can_run(
            "purge_removes_posternds_iptables_chains_and_ipsets_only",
            &["iptables-nft", "ipset"],
        )
    {
        return;
    }
    let mut lab = Lab::new(&[22]);
    lab.configure(
        "FIREWALL_TYPE iptables\nFIREWALL_EXE /usr/sbin/iptables-nft\n",
        ACCESS,
    );
    // Someone else's chain with one of the names posternd uses (fwknopd's layout).
    lab.srv.run(&["iptables-nft", "-w", "-N", "FWKNOP_FORWARD"]);
    lab.srv.run(&[
        "iptables-nft",
        "-w",
        "-A",
        "FWKNOP_FORWARD",
        "-s",
        "198.18.9.9",
        "-j",
        "ACCEPT",
    ]);
    lab.start(&[]);
    lab.postern(&["-A", "tcp/22", "-a", crate::lab::C1, "-D", crate::lab::SRV]);
    lab.kill9();
    let sets = |lab: &Lab| {
        String::from_utf8_lossy(&lab.srv.run(&["ipset", "list", "-n"]).stdout).into_owned()
    };
    assert!(sets(&lab).contains("postern-in4"), "{}", sets(&lab));
    let said = purge(&lab);
    for line in [
        "removed iptables filter chain FWKNOP_INPUT",
        "removed ip6tables filter chain FWKNOP_INPUT",
        "removed ipset postern-in4",
        "removed ipset postern-in6",
        "kept iptables filter FWKNOP_FORWARD: it holds rules that are not posternd's",
    ] {
        assert!(said.contains(line), "no '{line}' in:\n{said}");
    }
    let chain = |tool: &str, chain: &str| {
        lab.srv
            .cmd(tool)
            .args(["-w", "-S", chain])
            .output()
            .unwrap()
            .status
            .success()
    };
    assert!(!chain("iptables-nft", "FWKNOP_INPUT"));
    assert!(!chain("ip6tables-nft", "FWKNOP_INPUT"));
    assert!(
        chain("iptables-nft", "FWKNOP_FORWARD"),
        "the admin's chain was removed"
    );
    assert!(!sets(&lab).contains("postern-"), "{}", sets(&lab));
    let input =
        String::from_utf8_lossy(&lab.srv.run(&["iptables-nft", "-w", "-S", "INPUT"]).stdout)
            .into_owned();
    assert!(!input.contains("FWKNOP_INPUT"), "the jump is left: {input}");
}
