//! Checks that need the running system, not only the files: run by `--check-config`
//! and at every start, so that what would fail (or silently not work) at run time is
//! said before anything is touched.

use super::Config;

/// What the system says about a configuration.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Findings {
    /// posternd cannot run like this.
    pub errors: Vec<String>,
    /// posternd runs, but probably not as meant.
    pub warnings: Vec<String>,
}

/// Run every check.
pub fn run(config: &Config) -> Findings {
    let mut f = Findings::default();
    interfaces(config, &mut f);
    stanzas(config, &mut f);
    f
}

/// Every capture interface exists (`any` always does; the UDP-socket intake and a
/// capture file use none).
fn interfaces(config: &Config, f: &mut Findings) {
    let s = &config.server;
    if s.udp_server || s.pcap_file.is_some() {
        return;
    }
    for i in &s.interfaces {
        // Asked of the kernel in this process's network namespace (not /sys, which
        // may show another namespace's view).
        if i != "any" && nix::net::if_::if_nametoindex(i.as_str()).is_err() {
            let mut known: Vec<String> = nix::net::if_::if_nameindex()
                .map(|l| {
                    l.iter()
                        .map(|n| n.name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default();
            known.sort();
            f.errors.push(format!(
                "{}: PCAP_INTF (or -i): no interface '{i}' on this host (it has: {}; or write 'any')",
                s.file.display(),
                known.join(", ")
            ));
        }
    }
}

/// Stanzas without HMAC (key files that others can read are refused when read).
fn stanzas(config: &Config, f: &mut Findings) {
    for st in &config.stanzas {
        let at = format!("{}:{}", st.file.display(), st.line);
        if st.keys.hmac().is_none() {
            f.warnings.push(format!(
                "{at}: stanza without an HMAC key: its packets are decrypted before they are authenticated (fwknop's legacy mode); add HMAC_KEY_BASE64 (postern --key-gen prints one)"
            ));
        }
    }
}
