//! Client settings as rc variables: one table maps each rc variable to its flag, and
//! every value remembers where it came from (a flag, or a file and line), so an error
//! names what the user has to fix.
//!
//! Precedence, as in fwknop: `[default]` < `[named]` stanza < command line, variable by
//! variable. Variables that are alternatives of one another are not merged here: the
//! plan picks among them by kind, as fwknop does (`KEY` before `KEY_BASE64` before
//! `KEY_FILE`, an allow address before `-R`), whatever level each came from.

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
    /// `--save-rc-stanza` asks before replacing it in an existing stanza (keys and
    /// GnuPG identities), unless `--force-stanza`.
    pub asked: bool,
}

const fn var(rc_name: &'static str, flag: &'static str) -> Var {
    Var {
        rc_name,
        flag,
        asked: false,
    }
}

const fn asked(rc_name: &'static str, flag: &'static str) -> Var {
    Var {
        rc_name,
        flag,
        asked: true,
    }
}

/// Every rc variable fwknop 2.6.10 reads, in the order its `--save-rc-stanza` writes
/// them. Anything else in a stanza that is used is an error, as in fwknop.
pub const VARS: &[Var] = &[
    var("DIGEST_TYPE", "-m/--digest-type"),
    var("SPA_SERVER_PROTO", "-P/--server-proto"),
    var("SPA_SERVER_PORT", "-p/--server-port"),
    var("SPA_SOURCE_PORT", "-S/--source-port"),
    var("FW_TIMEOUT", "-f/--fw-timeout"),
    var("ALLOW_IP", "-a/--allow-ip"),
    var("TIME_OFFSET", "--time-offset-plus/--time-offset-minus"),
    var("ENCRYPTION_MODE", "-M/--encryption-mode"),
    var("USE_GPG", "--gpg-encryption"),
    var("USE_GPG_AGENT", "--gpg-agent"),
    asked("GPG_RECIPIENT", "--gpg-recipient-key"),
    asked("GPG_SIGNER", "--gpg-signer-key"),
    var("GPG_HOMEDIR", "--gpg-home-dir"),
    var("GPG_EXE", "--gpg-exe"),
    asked("GPG_SIGNING_PW", "--gpg-signing-pw"),
    asked("GPG_SIGNING_PW_BASE64", "--gpg-signing-pw"),
    var("GPG_NO_SIGNING_PW", "--gpg-no-signing-pw"),
    var("SPOOF_USER", "-U/--spoof-user"),
    var("SPOOF_SOURCE_IP", "-Q/--spoof-source"),
    var("ACCESS", "-A/--access"),
    var("SPA_SERVER", "-D/--destination"),
    var("RAND_PORT", "-r/--rand-port"),
    asked("KEY", "--key-rijndael"),
    asked("KEY_BASE64", "--key-base64-rijndael"),
    var("HMAC_DIGEST_TYPE", "--hmac-digest-type"),
    asked("HMAC_KEY_BASE64", "--key-base64-hmac"),
    asked("HMAC_KEY", "--key-hmac"),
    var("USE_HMAC", "--use-hmac"),
    var("USE_WGET_USER_AGENT", "--use-wget-user-agent"),
    var("KEY_FILE", "-G/--get-key"),
    var("HMAC_KEY_FILE", "--get-hmac-key"),
    var("NAT_ACCESS", "-N/--nat-access"),
    var("HTTP_USER_AGENT", "-u/--user-agent"),
    var("RESOLVE_URL", "--resolve-url"),
    var("NAT_LOCAL", "--nat-local"),
    var("NAT_RAND_PORT", "--nat-rand-port"),
    var("NAT_PORT", "--nat-port"),
    var("VERBOSE", "-v/--verbose"),
    var("RESOLVE_IP_HTTPS", "-R/--resolve-ip-https"),
    var("RESOLVE_IP_HTTP", "-R/--resolve-ip-https"),
    var("RESOLVE_HTTP_ONLY", "--resolve-http-only"),
    var("WGET_CMD", "-w/--wget-cmd"),
    var("NO_SAVE_ARGS", "--no-save-args"),
    var("SERVER_RESOLVE_IPV4", "--server-resolve-ipv4"),
];

impl Var {
    /// Look a variable up by its rc name (exact, upper case, as fwknop).
    pub fn by_rc_name(name: &str) -> Option<Var> {
        VARS.iter().copied().find(|v| v.rc_name == name)
    }

    /// Where fwknop's `--save-rc-stanza` writes this variable among the others.
    pub fn save_order(self) -> usize {
        VARS.iter()
            .position(|v| v.rc_name == self.rc_name)
            .unwrap_or(VARS.len())
    }

    pub(crate) fn get(name: &str) -> Var {
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

impl Origin {
    /// Whether the value was given on the command line.
    pub fn is_flag(&self) -> bool {
        matches!(self, Origin::Flag(_))
    }
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

/// The most bytes of `-U`/`SPOOF_USER` fwknop keeps.
pub const MAX_SPOOF_USER_LEN: usize = 29;

/// Cut a `-U`/`SPOOF_USER` value the way fwknop does, at 29 bytes. A cut inside a
/// multi-byte character keeps the whole character: fwknop's cut leaves a non-ASCII
/// byte there and refuses the name, and so does the message check here.
pub fn truncate_user(user: &str) -> String {
    let mut end = user.len().min(MAX_SPOOF_USER_LEN);
    while !user.is_char_boundary(end) {
        end += 1;
    }
    user[..end].to_owned()
}

impl Settings {
    /// Set a variable (a later value replaces an earlier one of the same variable).
    pub fn set(&mut self, var: Var, s: Setting) {
        self.map.insert(var.rc_name, s);
    }

    /// Lay `top` over these settings, variable by variable.
    pub fn overlay(&mut self, top: &Settings) {
        for (name, s) in &top.map {
            self.map.insert(name, s.clone());
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
        // -a and -s both set the allow address, the later one wins; either beats -R.
        match (&a.allow_ip, a.source_ip, a.source_ip_last) {
            (Some(ip), false, _) | (Some(ip), true, false) => {
                put("ALLOW_IP", "-a/--allow-ip", Some(ip.clone()))
            }
            (_, true, _) => put("ALLOW_IP", "-s/--source-ip", Some("source".into())),
            (None, false, _) => {}
        }
        if a.resolve_ip {
            let direct = a.allow_ip.is_some() || a.source_ip;
            put(
                "RESOLVE_IP_HTTPS",
                "-R/--resolve-ip-https",
                Some(if direct { "N" } else { "Y" }.into()),
            );
        }
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
        // An empty -U leaves the default user, as in fwknop.
        put(
            "SPOOF_USER",
            "-U/--spoof-user",
            a.spoof_user
                .as_deref()
                .filter(|u| !u.is_empty())
                .map(truncate_user),
        );
        put(
            "SPOOF_SOURCE_IP",
            "-Q/--spoof-source",
            a.spoof_source.clone(),
        );
        // With both, fwknop applies the minus offset.
        match (&a.time_offset_minus, &a.time_offset_plus) {
            (Some(m), _) => put("TIME_OFFSET", "--time-offset-minus", Some(format!("-{m}"))),
            (None, Some(p)) => put("TIME_OFFSET", "--time-offset-plus", Some(p.clone())),
            (None, None) => {}
        }
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
        // fwknop turns HMAC on for --use-hmac and for --hmac-key-len.
        let use_hmac = if a.use_hmac {
            Some("--use-hmac")
        } else if a.hmac_key_len.is_some() {
            Some("--hmac-key-len")
        } else {
            None
        };
        if let Some(flag) = use_hmac {
            put("USE_HMAC", flag, Some("Y".into()));
        }
        put("HTTP_USER_AGENT", "-u/--user-agent", a.user_agent.clone());
        put(
            "SERVER_RESOLVE_IPV4",
            "--server-resolve-ipv4",
            yes(a.server_resolve_ipv4),
        );
        put("VERBOSE", "-v/--verbose", verbose_value(a.verbose));
        put("NO_SAVE_ARGS", "--no-save-args", yes(a.no_save_args));
        s
    }
}

/// `-v` as fwknop records it: `Y` once, the count when repeated.
pub fn verbose_value(count: u8) -> Option<String> {
    match count {
        0 => None,
        1 => Some("Y".into()),
        n => Some(n.to_string()),
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
    fn overlay_is_per_variable() {
        let mut base = Settings::default();
        base.set(Var::get("KEY_BASE64"), flag("QQ=="));
        base.set(Var::get("ACCESS"), flag("tcp/22"));
        let mut top = Settings::default();
        top.set(Var::get("KEY"), flag("pass"));
        top.set(Var::get("ACCESS"), flag("tcp/23"));
        base.overlay(&top);
        assert_eq!(base.value("KEY"), Some("pass"));
        assert_eq!(base.value("KEY_BASE64"), Some("QQ=="));
        assert_eq!(base.value("ACCESS"), Some("tcp/23"));
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

    #[test]
    fn users_are_cut_like_fwknop() {
        assert_eq!(truncate_user(&"u".repeat(40)).len(), 29);
        assert_eq!(truncate_user("alice"), "alice");
        let split = format!("{}é", "a".repeat(28));
        assert_eq!(truncate_user(&split), split);
    }
}
