//! Which firewall backend, and why. With `FIREWALL_TYPE` written, that one. Without it
//! (Debian's stock fwknopd.conf sets none; fwknopd then uses iptables), posternd looks at
//! the host, so that its grants are not silently overridden by another hook's drop policy:
//!
//! 0. firewalld running (its name owned on the system bus): firewalld;
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

use postern_fw::{Feature, Firewall, Support};

use crate::config::server::{FirewallType, ServerConfig};
use crate::config::{Config, ConfigError, Note};

/// The backend's configuration, and why it was chosen.
pub fn choose(s: &ServerConfig) -> (postern_fw::Config, String) {
    let nft = |family: Family, table: String, chain: Option<String>, default_drop: bool| {
        let own_table = chain.is_none();
        postern_fw::Config::Nftables(NftConfig {
            family,
            table,
            chain,
            default_drop,
            open_ports: if default_drop {
                s.listening_ports()
            } else {
                Vec::new()
            },
            nft: s.nft_exe.clone(),
            netlink: s.nft_netlink,
            nat: (s.nat_forwarding || s.nat_local) && own_table,
            snat: s.ipt.snat && s.nat_forwarding && own_table,
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
    // firewalld owns the host's firewall where it runs (its own nftables table, rebuilt
    // at each reload): rules added beside it would be lost or overridden.
    if postern_fw::firewalld::running() {
        return (
            firewalld(),
            "FIREWALL_TYPE not set and firewalld is running: rich rules in its zone".into(),
        );
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
    // Only forwarded NAT connections are source-translated.
    i.snat = s.ipt.snat && s.nat_forwarding;
    i
}

/// What the chosen backend cannot do of what the configuration asks, found before
/// anything is touched: errors name the file, line and directive; what it accepts but
/// ignores becomes a note (shown by `--check-config`, logged at start).
///
/// * NAT access (`ENABLE_IPT_FORWARDING`, `ENABLE_IPT_LOCAL_NAT`) on a backend that
///   cannot translate: an error.
/// * `ENABLE_IPT_SNAT` where SNAT cannot be done: an error; without
///   `ENABLE_IPT_FORWARDING`: a note (only forwarded connections are translated), as is
///   `SNAT_TRANSLATE_IP` without `ENABLE_IPT_SNAT`.
/// * `ENABLE_IPT_OUTPUT` where it changes nothing (nftables, firewalld): a note, with why.
/// * A stanza's `FORCE_SNAT` / `FORCE_MASQUERADE` without `ENABLE_IPT_SNAT`: a note at
///   the stanza's line (fwknopd accepts it and adds nothing).
pub fn check(config: &mut Config, fw: &dyn Firewall) -> Result<(), Vec<ConfigError>> {
    let s = &config.server;
    let file = s.file.clone();
    let text = crate::config::read(&file).unwrap_or_default();
    let lines = crate::config::lines(&text);
    let line_of = |names: &[&str]| {
        lines
            .iter()
            .rev()
            .find(|l| names.contains(&l.name.as_str()))
            .map_or((0, names[0].to_owned()), |l| (l.number, l.name.clone()))
    };
    let mut errors = Vec::new();
    let mut notes = Vec::new();
    let mut error = |names: &[&str], message: String| {
        let (line, directive) = line_of(names);
        errors.push(ConfigError {
            file: file.clone(),
            line,
            directive,
            message,
        });
    };
    if (s.nat_forwarding || s.nat_local) && fw.supports(Feature::Nat) != Support::Yes {
        let names: &[&str] = if s.nat_forwarding {
            &["ENABLE_IPT_FORWARDING", "ENABLE_NFT_FORWARDING"]
        } else {
            &["ENABLE_IPT_LOCAL_NAT", "ENABLE_NFT_LOCAL_NAT"]
        };
        error(
            names,
            format!(
                "NAT access needs the nftables backend with posternd's own table, or the iptables backend (this host: {})",
                fw.describe()
            ),
        );
    }
    let snat_names: &[&str] = &["ENABLE_IPT_SNAT", "ENABLE_NFT_SNAT"];
    if s.ipt.snat {
        if !s.nat_forwarding {
            let (line, name) = line_of(snat_names);
            notes.push(Note {
                file: file.clone(),
                line,
                text: format!("{name} has no effect without ENABLE_IPT_FORWARDING: only forwarded NAT connections are source-translated"),
            });
        } else if let Support::No(why) = fw.supports(Feature::Snat) {
            if fw.supports(Feature::Nat) == Support::Yes {
                error(
                    snat_names,
                    format!(
                        "SNAT/MASQUERADE cannot be done here: {why} (this host: {})",
                        fw.describe()
                    ),
                );
            }
        }
    } else if s.ipt.snat_translate.is_some() {
        let (line, name) = line_of(&["SNAT_TRANSLATE_IP"]);
        notes.push(Note {
            file: file.clone(),
            line,
            text: format!("{name} has no effect without ENABLE_IPT_SNAT Y"),
        });
    }
    if s.ipt.output {
        let why = match fw.supports(Feature::Output) {
            Support::Yes => None,
            Support::NoEffect(why) | Support::No(why) => Some(why),
        };
        if let Some(why) = why {
            let (line, name) = line_of(&["ENABLE_IPT_OUTPUT"]);
            notes.push(Note {
                file: file.clone(),
                line,
                text: format!("{name} has no effect on this backend: {why}"),
            });
        }
    }
    for st in &config.stanzas {
        if let Some((line, name)) = &st.nat.snat_at {
            if !s.ipt.snat {
                notes.push(Note {
                    file: st.file.clone(),
                    line: *line,
                    text: format!(
                        "{name} has no effect without ENABLE_IPT_SNAT Y in {} (as in fwknopd)",
                        file.display()
                    ),
                });
            }
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    config.notes.extend(notes);
    Ok(())
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
    nft_drop_hooks(nft).into_iter().find(|(_, t, _)| t != ours)
}

/// Every nftables input base chain with a drop policy: (family, table, chain).
fn nft_drop_hooks(nft: &std::path::Path) -> Vec<(Family, String, String)> {
    let Ok(out) = Command::new(nft).args(["-j", "list", "chains"]).output() else {
        return Vec::new();
    };
    if !out.status.success() {
        return Vec::new();
    }
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&out.stdout) else {
        return Vec::new();
    };
    let Some(items) = v["nftables"].as_array() else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|i| {
            let c = i.get("chain")?;
            let family = match c["family"].as_str()? {
                "inet" => Family::Inet,
                "ip" => Family::Ip,
                "ip6" => Family::Ip6,
                _ => return None,
            };
            (c["hook"] == "input" && c["policy"] == "drop").then(|| {
                (
                    family,
                    c["table"].as_str().unwrap_or_default().to_owned(),
                    c["name"].as_str().unwrap_or("input").to_owned(),
                )
            })
        })
        .collect()
}

/// Other firewall layers on this host whose drop policy would override the grants of
/// the chosen backend (the port would stay closed although posternd says "granted"):
/// one warning each, naming the layout to use instead.
pub fn conflicts(s: &ServerConfig, chosen: &postern_fw::Config) -> Vec<String> {
    let fam = |f: Family| match f {
        Family::Inet => "inet",
        Family::Ip => "ip",
        Family::Ip6 => "ip6",
    };
    let mut out = Vec::new();
    match chosen {
        postern_fw::Config::Nftables(n) => {
            if let Some(why) = iptables_drops(&s.ipt.iptables) {
                out.push(format!(
                    "{why}: it drops what posternd's nftables grants open; use FIREWALL_TYPE iptables (or remove FIREWALL_TYPE/NFT_* and let posternd choose)"
                ));
            }
            for (f, t, c) in nft_drop_hooks(&s.nft_exe) {
                let ours = t == n.table && f == n.family;
                let iptables_nft = t == "filter" && matches!(f, Family::Ip | Family::Ip6);
                if !ours && !iptables_nft {
                    out.push(format!(
                        "the nftables chain '{} {t} {c}' drops by default and would override posternd's grants: use NFT_TABLE {} {t} and NFT_CHAIN {c}",
                        fam(f),
                        fam(f)
                    ));
                }
            }
        }
        postern_fw::Config::Iptables(_) => {
            for (f, t, c) in nft_drop_hooks(&s.nft_exe) {
                if !(t == "filter" && matches!(f, Family::Ip | Family::Ip6)) {
                    out.push(format!(
                        "the nftables chain '{} {t} {c}' drops by default and would override posternd's iptables grants: use FIREWALL_TYPE nftables with NFT_TABLE {} {t} and NFT_CHAIN {c}",
                        fam(f),
                        fam(f)
                    ));
                }
            }
        }
        _ => {}
    }
    out
}
