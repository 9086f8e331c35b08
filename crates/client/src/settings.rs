//! Client settings as rc variables: one table maps each rc variable to its flag, and
//! every value remembers where it came from (a flag, or a file and line), so an error
//! names what the user has to fix.
//!
//! Precedence, as in fwknop: `[default]` < `[named]` stanza < command line. Variables
//! that are alternatives of one another (KEY / KEY_BASE64 / KEY_FILE, ...) share a
//! slot: setting one at a higher level removes the others.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use crate::cli::KnockArgs;

/// One rc variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Var {
    /// Name in the rc file.
    pub rc_name: &'static str,
    /// The flag that sets it, for messages.
    pub flag: &'static str,
    /// Alternatives share a slot.
    pub slot: Option<&'static str>,
}

const fn var(rc_name: &'static str, flag: &'static str) -> Var {
    Var {
        rc_name,
        flag,
        slot: None,
    }
}

const fn alt(rc_name: &'static str, flag: &'static str, slot: &'static str) -> Var {
    Var {
        rc_name,
        flag,
        slot: Some(slot),
    }
}

/// Every rc variable fwknop 2.6 documents, with its flag.
pub const VARS: &[Var] = &[
    var("SPA_SERVER", "-D/--destination"),
    var("SPA_SERVER_PORT", "-p/--server-port"),
    var("SPA_SERVER_PROTO", "-P/--server-proto"),
    var("SPA_SOURCE_PORT", "-S/--source-port"),
    var("RAND_PORT", "-r/--rand-port"),
    alt("ALLOW_IP", "-a/--allow-ip", "allow"),
    alt("RESOLVE_IP_HTTPS", "-R/--resolve-ip-https", "allow"),
    alt("RESOLVE_IP_HTTP", "-R/--resolve-ip-https", "allow"),
    var("ACCESS", "-A/--access"),
    var("NAT_ACCESS", "-N/--nat-access"),
    var("NAT_LOCAL", "--nat-local"),
    var("NAT_PORT", "--nat-port"),
    var("NAT_RAND_PORT", "--nat-rand-port"),
    var("FW_TIMEOUT", "-f/--fw-timeout"),
    var("SPOOF_USER", "-U/--spoof-user"),
    var("SPOOF_SOURCE_IP", "-Q/--spoof-source"),
    var("TIME_OFFSET", "--time-offset-plus/--time-offset-minus"),
    var("DIGEST_TYPE", "-m/--digest-type"),
    var("ENCRYPTION_MODE", "-M/--encryption-mode"),
    alt("KEY", "--key-rijndael", "key"),
    alt("KEY_BASE64", "--key-base64-rijndael", "key"),
    alt("KEY_FILE", "-G/--get-key", "key"),
    alt("HMAC_KEY", "--key-hmac", "hmac_key"),
    alt("HMAC_KEY_BASE64", "--key-base64-hmac", "hmac_key"),
    alt("HMAC_KEY_FILE", "--get-hmac-key", "hmac_key"),
    var("HMAC_DIGEST_TYPE", "--hmac-digest-type"),
    var("USE_HMAC", "--use-hmac"),
    var("USE_GPG", "--gpg-encryption"),
    var("USE_GPG_AGENT", "--gpg-agent"),
    var("GPG_RECIPIENT", "--gpg-recipient-key"),
    var("GPG_SIGNER", "--gpg-signer-key"),
    var("GPG_HOMEDIR", "--gpg-home-dir"),
    var("GPG_EXE", "--gpg-exe"),
    var("GPG_SIGNING_PW", "--gpg-signing-pw"),
    var("GPG_SIGNING_PW_BASE64", "--gpg-signing-pw"),
    var("GPG_NO_SIGNING_PW", "--gpg-no-signing-pw"),
    var("HTTP_USER_AGENT", "-u/--user-agent"),
    var("USE_WGET_USER_AGENT", "--use-wget-user-agent"),
    var("RESOLVE_URL", "--resolve-url"),
    var("RESOLVE_HTTP_ONLY", "--resolve-http-only"),
    var("WGET_CMD", "-w/--wget-cmd"),
    var("SERVER_RESOLVE_IPV4", "--server-resolve-ipv4"),
    var("HTTP_PROXY", "-H/--http-proxy"),
    var("VERBOSE", "-v/--verbose"),
    var("NO_SAVE_ARGS", "--no-save-args"),
];

impl Var {
    /// Look a variable up by its rc name (upper case).
    pub fn by_rc_name(name: &str) -> Option<Var> {
        VARS.iter().copied().find(|v| v.rc_name == name)
    }

    fn get(name: &str) -> Var {
        match Var::by_rc_name(name) {
            Some(v) => v,
            None => unreachable!("{name} is in VARS"),
        }
    }
}

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A command-line flag.
    Flag(&'static str),
    /// A line of an rc file.
    Rc {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// The variable.
        var: &'static str,
    },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Flag(flag) => f.write_str(flag),
            Origin::Rc { path, line, var } => write!(f, "{}:{line}: {var}", path.display()),
        }
    }
}

/// A value and its origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    /// The text.
    pub value: String,
    /// Where it came from.
    pub origin: Origin,
}

/// Settings keyed by rc variable name.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    map: BTreeMap<&'static str, Setting>,
}

impl Settings {
    /// Set a variable, clearing the other variables of its slot.
    pub fn set(&mut self, var: Var, s: Setting) {
        if let Some(slot) = var.slot {
            for other in VARS.iter().filter(|v| v.slot == Some(slot)) {
                self.map.remove(other.rc_name);
            }
        }
        self.map.insert(var.rc_name, s);
    }

    /// Lay `top` over these settings.
    pub fn overlay(&mut self, top: &Settings) {
        for (name, s) in &top.map {
            self.set(Var::get(name), s.clone());
        }
    }

    /// The setting of a variable.
    pub fn get(&self, name: &str) -> Option<&Setting> {
        self.map.get(name)
    }

    /// The value of a variable.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.map.get(name).map(|s| s.value.as_str())
    }

    /// Iterate in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &Setting)> {
        self.map.iter().map(|(k, v)| (*k, v))
    }

    /// What the command line says, as rc variables.
    pub fn from_args(a: &KnockArgs) -> Settings {
        let mut s = Settings::default();
        let mut put = |name: &str, flag: &'static str, value: Option<String>| {
            if let Some(value) = value {
                s.set(
                    Var::get(name),
                    Setting {
                        value,
                        origin: Origin::Flag(flag),
                    },
                );
            }
        };
        let yes = |b: bool| b.then(|| "Y".to_owned());
        put("SPA_SERVER", "-D/--destination", a.destination.clone());
        put("SPA_SERVER_PORT", "-p/--server-port", a.server_port.clone());
        put(
            "SPA_SERVER_PROTO",
            "-P/--server-proto",
            a.server_proto.clone(),
        );
        put("SPA_SOURCE_PORT", "-S/--source-port", a.source_port.clone());
        put("RAND_PORT", "-r/--rand-port", yes(a.rand_port));
        put("ALLOW_IP", "-a/--allow-ip", a.allow_ip.clone());
        put(
            "ALLOW_IP",
            "-s/--source-ip",
            a.source_ip.then(|| "source".to_owned()),
        );
        put(
            "ALLOW_IP",
            "-R/--resolve-ip-https",
            a.resolve_ip.then(|| "resolve".to_owned()),
        );
        put("RESOLVE_URL", "--resolve-url", a.resolve_url.clone());
        put(
            "RESOLVE_HTTP_ONLY",
            "--resolve-http-only",
            yes(a.resolve_http_only),
        );
        put("ACCESS", "-A/--access", a.access.clone());
        put("NAT_ACCESS", "-N/--nat-access", a.nat_access.clone());
        put("NAT_LOCAL", "--nat-local", yes(a.nat_local));
        put("NAT_PORT", "--nat-port", a.nat_port.clone());
        put("NAT_RAND_PORT", "--nat-rand-port", yes(a.nat_rand_port));
        put("FW_TIMEOUT", "-f/--fw-timeout", a.fw_timeout.clone());
        put("SPOOF_USER", "-U/--spoof-user", a.spoof_user.clone());
        put(
            "TIME_OFFSET",
            "--time-offset-plus",
            a.time_offset_plus.clone(),
        );
        put(
            "TIME_OFFSET",
            "--time-offset-minus",
            a.time_offset_minus.as_ref().map(|m| format!("-{m}")),
        );
        put("DIGEST_TYPE", "-m/--digest-type", a.digest_type.clone());
        put(
            "ENCRYPTION_MODE",
            "-M/--encryption-mode",
            a.encryption_mode.clone(),
        );
        put("KEY", "--key-rijndael", a.key_rijndael.clone());
        put(
            "KEY_BASE64",
            "--key-base64-rijndael",
            a.key_base64_rijndael.clone(),
        );
        put(
            "KEY_FILE",
            "-G/--get-key",
            a.get_key.as_ref().map(|p| p.display().to_string()),
        );
        put("HMAC_KEY", "--key-hmac", a.key_hmac.clone());
        put(
            "HMAC_KEY_BASE64",
            "--key-base64-hmac",
            a.key_base64_hmac.clone(),
        );
        put(
            "HMAC_KEY_FILE",
            "--get-hmac-key",
            a.get_hmac_key.as_ref().map(|p| p.display().to_string()),
        );
        put(
            "HMAC_DIGEST_TYPE",
            "--hmac-digest-type",
            a.hmac_digest_type.clone(),
        );
        put("USE_HMAC", "--use-hmac", yes(a.use_hmac));
        put("HTTP_USER_AGENT", "-u/--user-agent", a.user_agent.clone());
        put(
            "SERVER_RESOLVE_IPV4",
            "--server-resolve-ipv4",
            yes(a.server_resolve_ipv4),
        );
        put("VERBOSE", "-v/--verbose", yes(a.verbose > 0));
        put("NO_SAVE_ARGS", "--no-save-args", yes(a.no_save_args));
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flag(v: &str) -> Setting {
        Setting {
            value: v.into(),
            origin: Origin::Flag("test"),
        }
    }

    #[test]
    fn slots_replace_alternatives() {
        let mut base = Settings::default();
        base.set(Var::get("KEY_BASE64"), flag("QQ=="));
        base.set(Var::get("ACCESS"), flag("tcp/22"));
        let mut top = Settings::default();
        top.set(Var::get("KEY"), flag("pass"));
        base.overlay(&top);
        assert_eq!(base.value("KEY"), Some("pass"));
        assert_eq!(base.value("KEY_BASE64"), None);
        assert_eq!(base.value("ACCESS"), Some("tcp/22"));
    }

    #[test]
    fn every_var_name_is_unique() {
        for (i, v) in VARS.iter().enumerate() {
            assert!(
                VARS[i + 1..].iter().all(|w| w.rc_name != v.rc_name),
                "{}",
                v.rc_name
            );
        }
    }
}
