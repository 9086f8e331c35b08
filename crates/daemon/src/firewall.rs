//! Which firewall backend, and why. With `FIREWALL_TYPE` written, that one. Without it
//! (Debian's stock fwknopd.conf sets none; fwknopd then uses iptables), posternd looks at
//! the host, so that its grants are not silently overridden by another hook's drop policy:
//!
//! 1. an iptables `INPUT` chain (legacy or iptables-nft) whose policy drops, or whose last
//!    rule drops or rejects: the iptables layout (`FWKNOP_INPUT`, ipset);
//! 2. an nftables input hook whose policy drops, in another table: that table and chain;
//! 3. nothing: posternd's own table, with `NFT_DEFAULT_DROP` as configured.
//!
//! An `NFT_*` layout directive is an nftables choice, `FIREWD_ZONE` a firewalld one
//! (rich rules over D-Bus, [`postern_fw::firewalld`]). The choice and its reason are said
//! at start, by `--check-config` and in `posternd status`.

use std::process::Command;

use postern_fw::firewalld::FirewalldConfig;
use postern_fw::nftables::{Family, NftConfig};
use postern_fw::Protocol;

use crate::config::server::{FirewallType, ServerConfig};

/// The backend's configuration, and why it was chosen.
pub fn choose(s: &ServerConfig) -> (postern_fw::Config, String) {
    let nft = |family: Family, table: String, chain: Option<String>, default_drop: bool| {
        let own_table = chain.is_none();
        postern_fw::Config::Nftables(NftConfig {
            family,
            table,
            chain,
            default_drop,
            open_port: (s.udp_server && default_drop).then_some((Protocol::Udp, s.spa_port)),
            nft: s.nft_exe.clone(),
            netlink: s.nft_netlink,
            nat: (s.nat_forwarding || s.nat_local) && own_table,
        })
    };
    let configured = || {
        nft(
            s.nft_table.0,
            s.nft_table.1.clone(),
            s.nft_chain.clone(),
            s.nft_default_drop,
        )
    };
    let firewalld = || {
        postern_fw::Config::Firewalld(FirewalldConfig {
            zone: s.firewd_zone.clone(),
        })
    };
    match s.firewall_type {
        Some(FirewallType::Iptables) => {
            return (
                postern_fw::Config::Iptables(Box::new(ipt(s))),
                "FIREWALL_TYPE iptables".into(),
            )
        }
        Some(FirewallType::Nftables) => return (configured(), "FIREWALL_TYPE nftables".into()),
        Some(FirewallType::Firewalld) => return (firewalld(), "FIREWALL_TYPE firewalld".into()),
        None if s.nft_set => return (configured(), "NFT_* directives given: nftables".into()),
        None if s.firewd_zone.is_some() => {
            return (firewalld(), "FIREWD_ZONE given: firewalld".into())
        }
        None => {}
    }
    if let Some(why) = iptables_drops(&s.ipt.iptables) {
        return (
            postern_fw::Config::Iptables(Box::new(ipt(s))),
            format!("FIREWALL_TYPE not set and {why}: the iptables layout"),
        );
    }
    if let Some((family, table, chain)) = nft_drop_hook(&s.nft_exe, &s.nft_table.1) {
        return (
            nft(family, table.clone(), Some(chain.clone()), false),
            format!(
                "FIREWALL_TYPE not set and the nftables chain '{} {table} {chain}' drops by default: grants go into that chain",
                match family {
                    Family::Inet => "inet",
                    Family::Ip => "ip",
                    Family::Ip6 => "ip6",
                }
            ),
        );
    }
    (
        configured(),
        "FIREWALL_TYPE not set and no drop policy on this host: posternd's own nftables table"
            .into(),
    )
}

/// The iptables settings, with NAT chains when NAT access is enabled.
fn ipt(s: &ServerConfig) -> postern_fw::iptables::IptConfig {
    let mut i = s.ipt.clone();
    i.nat = s.nat_forwarding || s.nat_local;
    i
}

/// Whether the iptables INPUT chain drops by default: why, if so.
fn iptables_drops(iptables: &std::path::Path) -> Option<String> {
    let out = Command::new(iptables)
        .args(["-w", "-S", "INPUT"])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let policy_drop = text.lines().any(|l| l.trim() == "-P INPUT DROP");
    let last_drops = text
        .lines()
        .rev()
        .find(|l| l.starts_with("-A INPUT"))
        .is_some_and(|l| l.ends_with("-j DROP") || l.contains("-j REJECT"));
    match (policy_drop, last_drops) {
        (true, _) => Some("the iptables INPUT policy is DROP".into()),
        (_, true) => Some("the iptables INPUT chain ends in a DROP/REJECT rule".into()),
        _ => None,
    }
}

/// An nftables input base chain with a drop policy, in a table other than `ours`.
fn nft_drop_hook(nft: &std::path::Path, ours: &str) -> Option<(Family, String, String)> {
    let out = Command::new(nft)
        .args(["-j", "list", "chains"])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v["nftables"].as_array()?.iter().find_map(|i| {
        let c = i.get("chain")?;
        let family = match c["family"].as_str()? {
            "inet" => Family::Inet,
            "ip" => Family::Ip,
            "ip6" => Family::Ip6,
            _ => return None,
        };
        let table = c["table"].as_str()?;
        (c["hook"] == "input" && c["policy"] == "drop" && table != ours).then(|| {
            (
                family,
                table.to_owned(),
                c["name"].as_str().unwrap_or("input").to_owned(),
            )
        })
    })
}
