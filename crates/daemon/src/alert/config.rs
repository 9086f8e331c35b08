//! The `ALERT_*` directives of `fwknopd.conf` (and fwknop 1.x's `EMAIL_ADDRESSES`), read
//! one line at a time by [`directive`] and checked together by [`finish`]. Secrets (the
//! SMTP password, the webhook key) are read here, from files that must be mode 0600, and
//! held as [`Key`]s (zeroed when dropped, never printed).

use std::path::{Path, PathBuf};

use postern_proto::Key;

/// The default local mail submission command.
pub const DEFAULT_SENDMAIL: &str = "/usr/sbin/sendmail -t -i";

/// The default bound on one delivery (seconds).
pub const DEFAULT_TIMEOUT: u64 = 10;

/// The smallest webhook key accepted (bytes).
pub const MIN_WEBHOOK_KEY: usize = 16;

/// How the SMTP relay is reached (`ALERT_SMTP_URL`'s scheme).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpSecurity {
    /// `smtp://`: no TLS.
    Plain,
    /// `smtp+starttls://`: STARTTLS, required (no fallback to plain text).
    StartTls,
    /// `smtps://`: TLS from the first byte.
    Tls,
}

/// `ALERT_SMTP_URL`, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpRelay {
    /// How it is reached.
    pub security: SmtpSecurity,
    /// Host name or address (without brackets), also the name its certificate must carry.
    pub host: String,
    /// Port (default 25, 587 with STARTTLS, 465 with smtps).
    pub port: u16,
}

impl std::fmt::Display for SmtpRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = match self.security {
            SmtpSecurity::Plain => "smtp",
            SmtpSecurity::StartTls => "smtp+starttls",
            SmtpSecurity::Tls => "smtps",
        };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

/// SMTP credentials from `ALERT_SMTP_AUTH_FILE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpAuth {
    /// The user name.
    pub user: String,
    /// The password.
    pub password: Key,
}

/// Everything the alert senders need, from `fwknopd.conf`. All empty: no alerts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertConfig {
    /// `ALERT_EMAIL_ADDRESSES` / `EMAIL_ADDRESSES`: e-mail is sent only when set.
    pub addresses: Vec<String>,
    /// `ALERT_EMAIL_FROM` (default `posternd@<host name>`).
    pub from: Option<String>,
    /// `ALERT_SENDMAIL_CMD` as argv (used when no `ALERT_SMTP_URL` is set).
    pub sendmail: Vec<String>,
    /// `ALERT_SMTP_URL`.
    pub smtp: Option<SmtpRelay>,
    /// `ALERT_SMTP_AUTH_FILE`, read.
    pub smtp_auth: Option<SmtpAuth>,
    /// `ALERT_SMTP_CA_FILE`: the only CA trusted for the relay (else the system's roots).
    pub smtp_ca_file: Option<PathBuf>,
    /// `ALERT_WEBHOOK_URL`.
    pub webhook: Option<String>,
    /// `ALERT_WEBHOOK_KEY_FILE`, read: the HMAC-SHA256 key of `X-Postern-Signature`.
    pub webhook_key: Option<Key>,
    /// `ALERT_WEBHOOK_CA_FILE`: the only CA trusted for an https webhook.
    pub webhook_ca_file: Option<PathBuf>,
    /// `ALERT_COMMAND` as argv.
    pub command: Vec<String>,
    /// `ALERT_TIMEOUT`: seconds one delivery may take (a command is then killed).
    pub timeout: u64,
}

impl Default for AlertConfig {
    fn default() -> AlertConfig {
        AlertConfig {
            addresses: Vec::new(),
            from: None,
            sendmail: argv(DEFAULT_SENDMAIL),
            smtp: None,
            smtp_auth: None,
            smtp_ca_file: None,
            webhook: None,
            webhook_key: None,
            webhook_ca_file: None,
            command: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

impl AlertConfig {
    /// Whether any sink is configured.
    pub fn enabled(&self) -> bool {
        !self.addresses.is_empty() || self.webhook.is_some() || !self.command.is_empty()
    }

    /// The settings as `-D` shows them (secrets never).
    pub fn dump(&self) -> String {
        let mut s = String::new();
        let mut line = |k: &str, v: String| s.push_str(&format!("{k:<28}{v}\n"));
        if !self.addresses.is_empty() {
            line("ALERT_EMAIL_ADDRESSES", self.addresses.join(", "));
            if let Some(f) = &self.from {
                line("ALERT_EMAIL_FROM", f.clone());
            }
            match &self.smtp {
                Some(r) => line("ALERT_SMTP_URL", r.to_string()),
                None => line("ALERT_SENDMAIL_CMD", self.sendmail.join(" ")),
            }
            if let Some(a) = &self.smtp_auth {
                line("ALERT_SMTP_AUTH_FILE", format!("(user '{}')", a.user));
            }
            if let Some(f) = &self.smtp_ca_file {
                line("ALERT_SMTP_CA_FILE", f.display().to_string());
            }
        }
        if let Some(u) = &self.webhook {
            line("ALERT_WEBHOOK_URL", u.clone());
            if let Some(f) = &self.webhook_ca_file {
                line("ALERT_WEBHOOK_CA_FILE", f.display().to_string());
            }
        }
        if !self.command.is_empty() {
            line("ALERT_COMMAND", self.command.join(" "));
        }
        if self.enabled() {
            line("ALERT_TIMEOUT", self.timeout.to_string());
        }
        s
    }
}

/// A command line as argv: split on blanks, never given to a shell.
fn argv(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_owned).collect()
}

/// Apply one `fwknopd.conf` line. `None`: not an alert directive. `Err`: what is wrong
/// with the value (the caller adds file, line and directive).
pub fn directive(cfg: &mut AlertConfig, name: &str, value: &str) -> Option<Result<(), String>> {
    let r = match name {
        "ALERT_EMAIL_ADDRESSES" | "EMAIL_ADDRESSES" => addresses(value).map(|a| {
            cfg.addresses = a;
        }),
        "ALERT_EMAIL_FROM" => mailbox(value).map(|()| cfg.from = Some(value.to_owned())),
        "ALERT_SENDMAIL_CMD" => command(value).map(|a| cfg.sendmail = a),
        "ALERT_SMTP_URL" => smtp_url(value).map(|r| cfg.smtp = Some(r)),
        "ALERT_SMTP_AUTH_FILE" => auth_file(Path::new(value)).map(|a| cfg.smtp_auth = Some(a)),
        "ALERT_SMTP_CA_FILE" => {
            ca_file(Path::new(value)).map(|()| cfg.smtp_ca_file = Some(value.into()))
        }
        "ALERT_WEBHOOK_URL" => webhook_url(value).map(|()| cfg.webhook = Some(value.to_owned())),
        "ALERT_WEBHOOK_KEY_FILE" => {
            webhook_key(Path::new(value)).map(|k| cfg.webhook_key = Some(k))
        }
        "ALERT_WEBHOOK_CA_FILE" => {
            ca_file(Path::new(value)).map(|()| cfg.webhook_ca_file = Some(value.into()))
        }
        "ALERT_COMMAND" => command(value).map(|a| cfg.command = a),
        "ALERT_TIMEOUT" => match value.parse::<u64>() {
            Ok(n) if (1..=300).contains(&n) => {
                cfg.timeout = n;
                Ok(())
            }
            _ => Err(format!("'{value}' is not a number from 1 to 300")),
        },
        _ => return None,
    };
    Some(r)
}

/// The checks that need every line: the directive concerned and what is wrong.
pub fn finish(cfg: &AlertConfig) -> Result<(), (&'static str, String)> {
    if cfg.webhook.is_some() && cfg.webhook_key.is_none() {
        return Err((
            "ALERT_WEBHOOK_URL",
            "a webhook needs ALERT_WEBHOOK_KEY_FILE (every request is signed)".into(),
        ));
    }
    if cfg.webhook.is_none() && (cfg.webhook_key.is_some() || cfg.webhook_ca_file.is_some()) {
        return Err((
            "ALERT_WEBHOOK_KEY_FILE",
            "ALERT_WEBHOOK_* settings without ALERT_WEBHOOK_URL".into(),
        ));
    }
    if cfg.webhook_ca_file.is_some()
        && cfg
            .webhook
            .as_deref()
            .is_some_and(|u| u.starts_with("http://"))
    {
        return Err((
            "ALERT_WEBHOOK_CA_FILE",
            "the webhook URL is http://: a CA file needs https://".into(),
        ));
    }
    if cfg.smtp.is_none() && (cfg.smtp_auth.is_some() || cfg.smtp_ca_file.is_some()) {
        return Err((
            "ALERT_SMTP_URL",
            "ALERT_SMTP_AUTH_FILE / ALERT_SMTP_CA_FILE without ALERT_SMTP_URL".into(),
        ));
    }
    if let Some(r) = &cfg.smtp {
        if cfg.addresses.is_empty() {
            return Err((
                "ALERT_SMTP_URL",
                "no ALERT_EMAIL_ADDRESSES to send to".into(),
            ));
        }
        if r.security == SmtpSecurity::Plain {
            if cfg.smtp_ca_file.is_some() {
                return Err((
                    "ALERT_SMTP_CA_FILE",
                    "the relay is smtp:// (no TLS): use smtp+starttls:// or smtps://".into(),
                ));
            }
            let loopback = r
                .host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|a| a.is_loopback())
                || r.host == "localhost";
            if cfg.smtp_auth.is_some() && !loopback {
                return Err((
                    "ALERT_SMTP_AUTH_FILE",
                    format!(
                        "the password would cross the network in clear to {}: use smtp+starttls:// or smtps://",
                        r.host
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn addresses(value: &str) -> Result<Vec<String>, String> {
    let list: Vec<String> = value
        .split([',', ' ', '\t'])
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    if list.is_empty() {
        return Err("no address given".into());
    }
    for a in &list {
        mailbox(a)?;
    }
    Ok(list)
}

fn mailbox(value: &str) -> Result<(), String> {
    value
        .parse::<lettre::message::Mailbox>()
        .map(|_| ())
        .map_err(|e| format!("'{value}' is not an e-mail address ({e})"))
}

fn command(value: &str) -> Result<Vec<String>, String> {
    let a = argv(value);
    let Some(prog) = a.first() else {
        return Err("no command given".into());
    };
    if !prog.starts_with('/') {
        return Err(format!(
            "'{prog}' is not an absolute path (the command runs as argv, without a shell or PATH search)"
        ));
    }
    Ok(a)
}

fn smtp_url(value: &str) -> Result<SmtpRelay, String> {
    let expected = "expected smtp://host:port, smtp+starttls://host:port or smtps://host:port";
    let (security, rest, default_port) = if let Some(r) = value.strip_prefix("smtp://") {
        (SmtpSecurity::Plain, r, 25)
    } else if let Some(r) = value.strip_prefix("smtp+starttls://") {
        (SmtpSecurity::StartTls, r, 587)
    } else if let Some(r) = value.strip_prefix("smtps://") {
        (SmtpSecurity::Tls, r, 465)
    } else {
        return Err(expected.into());
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains('@') {
        return Err("no credentials in the URL: put them in ALERT_SMTP_AUTH_FILE".into());
    }
    let (host, port) = if let Some(r) = rest.strip_prefix('[') {
        let (h, tail) = r.split_once(']').ok_or(expected)?;
        h.parse::<std::net::Ipv6Addr>()
            .map_err(|_| format!("'{h}' is not an IPv6 address"))?;
        (h, tail.strip_prefix(':'))
    } else {
        match rest.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        }
    };
    let port = match port {
        None => default_port,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|&p| p > 0)
            .ok_or_else(|| format!("'{p}' is not a port"))?,
    };
    let name_ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_'));
    if !name_ok || rest.contains('/') {
        return Err(expected.into());
    }
    Ok(SmtpRelay {
        security,
        host: host.to_owned(),
        port,
    })
}

fn webhook_url(value: &str) -> Result<(), String> {
    let rest = value
        .strip_prefix("https://")
        .or_else(|| value.strip_prefix("http://"))
        .ok_or("expected an http:// or https:// URL")?;
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    if authority.is_empty() {
        return Err("the URL has no host".into());
    }
    if authority.contains('@') {
        return Err(
            "no credentials in the URL (requests are signed with ALERT_WEBHOOK_KEY_FILE)".into(),
        );
    }
    if value.chars().any(|c| c.is_control() || c == ' ') {
        return Err("the URL holds blanks or control characters".into());
    }
    value
        .parse::<ureq::http::Uri>()
        .map(|_| ())
        .map_err(|e| format!("not a URL: {e}"))
}

/// A file holding a secret: readable, and by its owner only.
fn secret(path: &Path) -> Result<String, String> {
    use std::os::unix::fs::PermissionsExt as _;
    let text = crate::config::read(path).map_err(|e| e.message)?;
    let mode = std::fs::metadata(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .permissions()
        .mode()
        & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "{} holds a secret but is accessible by group or others (mode {mode:04o}); run: chmod 600 {}",
            path.display(),
            path.display()
        ));
    }
    Ok(text)
}

fn auth_file(path: &Path) -> Result<SmtpAuth, String> {
    let text = zeroize::Zeroizing::new(secret(path)?);
    let lines: Vec<&str> = text
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.is_empty())
        .collect();
    let (user, password) = match lines.as_slice() {
        [one] => one.split_once(':').ok_or_else(|| {
            format!(
                "{} holds no 'user:password' (or user and password on two lines)",
                path.display()
            )
        })?,
        [user, password] => (*user, *password),
        _ => {
            return Err(format!(
                "{} must hold 'user:password', or the user and the password on two lines",
                path.display()
            ))
        }
    };
    if user.is_empty() || password.is_empty() {
        return Err(format!(
            "{} holds an empty user or password",
            path.display()
        ));
    }
    Ok(SmtpAuth {
        user: user.to_owned(),
        password: Key::from_bytes(password.as_bytes().to_vec()),
    })
}

fn webhook_key(path: &Path) -> Result<Key, String> {
    let text = zeroize::Zeroizing::new(secret(path)?);
    let key = text.trim_end_matches(['\n', '\r']);
    if key.len() < MIN_WEBHOOK_KEY {
        return Err(format!(
            "{} holds {} bytes; the webhook key must be at least {MIN_WEBHOOK_KEY} (e.g. head -c 32 /dev/urandom | base64 > {})",
            path.display(),
            key.len(),
            path.display()
        ));
    }
    Ok(Key::from_bytes(key.as_bytes().to_vec()))
}

fn ca_file(path: &Path) -> Result<(), String> {
    let text = crate::config::read(path).map_err(|e| e.message)?;
    if !text.contains("-----BEGIN CERTIFICATE-----") {
        return Err(format!("{} holds no PEM certificate", path.display()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn set(c: &mut AlertConfig, name: &str, value: &str) -> Result<(), String> {
        directive(c, name, value).expect("an alert directive")
    }

    #[test]
    fn urls_and_addresses() {
        let mut c = AlertConfig::default();
        assert!(directive(&mut c, "PCAP_INTF", "eth0").is_none());
        assert!(!c.enabled());
        assert_eq!(c.sendmail, ["/usr/sbin/sendmail", "-t", "-i"]);
        set(
            &mut c,
            "EMAIL_ADDRESSES",
            "root@localhost, ops@example.org admin@x.test",
        )
        .unwrap();
        assert_eq!(c.addresses.len(), 3);
        assert!(c.enabled());
        assert!(set(&mut c, "ALERT_EMAIL_ADDRESSES", "not an address").is_err());
        let r = smtp_url("smtp+starttls://mail.example.org").unwrap();
        assert_eq!((r.security, r.port), (SmtpSecurity::StartTls, 587));
        assert_eq!(
            smtp_url("smtps://[2001:db8::1]:2465").unwrap().to_string(),
            "smtps://[2001:db8::1]:2465"
        );
        assert_eq!(smtp_url("smtp://127.0.0.1:25/").unwrap().host, "127.0.0.1");
        for bad in [
            "http://x",
            "smtp://",
            "smtp://u:p@h:25",
            "smtp://h:0",
            "smtp://h:25/x",
            "smtps://[h]:1",
            "smtp://a b",
        ] {
            assert!(smtp_url(bad).is_err(), "{bad}");
        }
        assert!(webhook_url("https://hooks.example.org/a/b?c=d").is_ok());
        assert!(webhook_url("http://198.18.2.2:8080/").is_ok());
        for bad in ["ftp://x", "https://", "https://u:p@h/", "http://h/a b"] {
            assert!(webhook_url(bad).is_err(), "{bad}");
        }
        assert!(set(&mut c, "ALERT_COMMAND", "notify-send x")
            .unwrap_err()
            .contains("absolute"));
        set(&mut c, "ALERT_COMMAND", "/usr/local/bin/alert --json").unwrap();
        assert_eq!(c.command, ["/usr/local/bin/alert", "--json"]);
        assert!(set(&mut c, "ALERT_TIMEOUT", "0").is_err());
        set(&mut c, "ALERT_TIMEOUT", "3").unwrap();
        assert_eq!(c.timeout, 3);
    }

    #[test]
    fn secret_files_must_be_private_and_complete() {
        let dir = std::env::temp_dir().join(format!("postern-alert-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let write = |name: &str, text: &str, mode: u32| {
            let p = dir.join(name);
            std::fs::write(&p, text).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            p.display().to_string()
        };
        let mut c = AlertConfig::default();
        let open = write("auth-open", "u:p\n", 0o644);
        let e = set(&mut c, "ALERT_SMTP_AUTH_FILE", &open).unwrap_err();
        assert!(e.contains(&format!("run: chmod 600 {open}")), "{e}");
        set(
            &mut c,
            "ALERT_SMTP_AUTH_FILE",
            &write("auth1", "alerts:s3cret:x\n", 0o600),
        )
        .unwrap();
        let a = c.smtp_auth.clone().unwrap();
        assert_eq!(
            (a.user.as_str(), a.password.as_bytes()),
            ("alerts", &b"s3cret:x"[..])
        );
        set(
            &mut c,
            "ALERT_SMTP_AUTH_FILE",
            &write("auth2", "alerts\ns3cret\n", 0o400),
        )
        .unwrap();
        assert_eq!(c.smtp_auth.as_ref().unwrap().password.as_bytes(), b"s3cret");
        assert!(set(
            &mut c,
            "ALERT_SMTP_AUTH_FILE",
            &write("auth3", "nocolon\n", 0o600)
        )
        .is_err());
        assert!(
            !format!("{c:?}").contains("s3cret"),
            "Debug must not show the password"
        );
        let e = set(
            &mut c,
            "ALERT_WEBHOOK_KEY_FILE",
            &write("k-short", "short\n", 0o600),
        )
        .unwrap_err();
        assert!(e.contains("at least 16"), "{e}");
        set(
            &mut c,
            "ALERT_WEBHOOK_KEY_FILE",
            &write("k", "0123456789abcdef-key\n", 0o600),
        )
        .unwrap();
        assert_eq!(
            c.webhook_key.as_ref().unwrap().as_bytes(),
            b"0123456789abcdef-key"
        );
        // Checked together.
        assert_eq!(finish(&c).unwrap_err().0, "ALERT_WEBHOOK_KEY_FILE");
        set(&mut c, "ALERT_WEBHOOK_URL", "http://198.18.2.2/").unwrap();
        assert_eq!(finish(&c).unwrap_err().0, "ALERT_SMTP_URL");
        set(&mut c, "ALERT_SMTP_URL", "smtp://198.18.2.2:25").unwrap();
        assert_eq!(finish(&c).unwrap_err().0, "ALERT_SMTP_URL", "no addresses");
        set(&mut c, "ALERT_EMAIL_ADDRESSES", "ops@example.org").unwrap();
        assert!(finish(&c).unwrap_err().1.contains("in clear"));
        set(&mut c, "ALERT_SMTP_URL", "smtp://127.0.0.1:25").unwrap();
        finish(&c).unwrap();
        set(&mut c, "ALERT_SMTP_URL", "smtp+starttls://mail.test").unwrap();
        finish(&c).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
