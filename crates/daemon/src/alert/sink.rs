//! Where alerts go: e-mail (the local `sendmail` interface, or an SMTP relay through
//! lettre over rustls), a webhook (a JSON POST through ureq over rustls, signed with
//! HMAC-SHA256 over the body) and a command (argv, the event as JSON on standard input
//! and as `POSTERN_*` variables). Each delivery is bounded by `ALERT_TIMEOUT`; commands
//! run in a process group of their own that is killed whole at the timeout.

use std::io::Write as _;
use std::os::unix::process::CommandExt as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac as _};
use lettre::message::header::ContentType;
use lettre::message::{Mailbox, Message};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, CertificateStore, Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::transport::smtp::SmtpTransport;
use lettre::Transport as _;
use postern_proto::Key;

use super::config::{AlertConfig, SmtpSecurity};
use super::Event;

/// One destination.
pub trait Sink: Send {
    /// For logs and status: the kind and where (never a secret).
    fn name(&self) -> String;
    /// Deliver one alert, within the timeout; a failure as one line.
    fn deliver(&mut self, ev: &Event) -> Result<(), String>;
}

/// The sinks `cfg` asks for.
pub fn build(
    cfg: &AlertConfig,
    host: &str,
    running: &Running,
) -> Result<Vec<Box<dyn Sink>>, String> {
    let timeout = Duration::from_secs(cfg.timeout);
    let mut out: Vec<Box<dyn Sink>> = Vec::new();
    if !cfg.addresses.is_empty() {
        out.push(Box::new(Mail::new(cfg, host, timeout, running.clone())?));
    }
    if let (Some(url), Some(key)) = (&cfg.webhook, &cfg.webhook_key) {
        out.push(Box::new(Webhook::new(
            url,
            key.clone(),
            cfg.webhook_ca_file.as_deref(),
            timeout,
        )?));
    }
    if !cfg.command.is_empty() {
        out.push(Box::new(Hook {
            argv: cfg.command.clone(),
            timeout,
            running: running.clone(),
        }));
    }
    Ok(out)
}

enum Via {
    Sendmail(Vec<String>),
    Smtp(Box<SmtpTransport>, String),
}

struct Mail {
    from: Mailbox,
    to: Vec<Mailbox>,
    via: Via,
    timeout: Duration,
    running: Running,
}

impl Mail {
    fn new(
        cfg: &AlertConfig,
        host: &str,
        timeout: Duration,
        running: Running,
    ) -> Result<Mail, String> {
        let from = match &cfg.from {
            Some(f) => f.clone(),
            None => format!("posternd@{host}"),
        };
        let from: Mailbox = from
            .parse()
            .or_else(|_| "posternd@localhost".parse())
            .map_err(|e| format!("ALERT_EMAIL_FROM: {e}"))?;
        let to = cfg
            .addresses
            .iter()
            .map(|a| a.parse::<Mailbox>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("ALERT_EMAIL_ADDRESSES: {e}"))?;
        let via = match &cfg.smtp {
            None => Via::Sendmail(cfg.sendmail.clone()),
            Some(r) => {
                let params = || -> Result<TlsParameters, String> {
                    let mut p = TlsParameters::builder(r.host.clone());
                    if let Some(ca) = &cfg.smtp_ca_file {
                        let pem =
                            std::fs::read(ca).map_err(|e| format!("{}: {e}", ca.display()))?;
                        let cert = Certificate::from_pem(&pem)
                            .map_err(|e| format!("{}: {e}", ca.display()))?;
                        p = p
                            .certificate_store(CertificateStore::None)
                            .add_root_certificate(cert);
                    }
                    p.build().map_err(|e| format!("ALERT_SMTP_URL: {e}"))
                };
                let tls = match r.security {
                    SmtpSecurity::Plain => Tls::None,
                    SmtpSecurity::StartTls => Tls::Required(params()?),
                    SmtpSecurity::Tls => Tls::Wrapper(params()?),
                };
                let plain_name = !host.is_empty()
                    && host
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
                let hello = if plain_name {
                    ClientId::Domain(host.to_owned())
                } else {
                    ClientId::default()
                };
                let mut b = SmtpTransport::builder_dangerous(r.host.as_str())
                    .port(r.port)
                    .tls(tls)
                    .timeout(Some(timeout))
                    .hello_name(hello);
                if let Some(a) = &cfg.smtp_auth {
                    let pw = String::from_utf8(a.password.as_bytes().to_vec()).map_err(|_| {
                        "ALERT_SMTP_AUTH_FILE: the password is not UTF-8".to_owned()
                    })?;
                    b = b.credentials(Credentials::new(a.user.clone(), pw));
                }
                Via::Smtp(Box::new(b.build()), r.to_string())
            }
        };
        Ok(Mail {
            from,
            to,
            via,
            timeout,
            running,
        })
    }

    fn message(&self, ev: &Event) -> Result<Message, String> {
        let mut b = Message::builder()
            .from(self.from.clone())
            .subject(ev.subject())
            .date_now();
        for t in &self.to {
            b = b.to(t.clone());
        }
        b.header(ContentType::TEXT_PLAIN)
            .body(ev.text())
            .map_err(|e| format!("cannot build the message: {e}"))
    }
}

impl Sink for Mail {
    fn name(&self) -> String {
        let to: Vec<String> = self.to.iter().map(|m| m.email.to_string()).collect();
        match &self.via {
            Via::Sendmail(argv) => format!("e-mail to {} by {}", to.join(","), argv.join(" ")),
            Via::Smtp(_, url) => format!("e-mail to {} via {url}", to.join(",")),
        }
    }

    fn deliver(&mut self, ev: &Event) -> Result<(), String> {
        let m = self.message(ev)?;
        match &self.via {
            Via::Smtp(t, _) => t.send(&m).map(|_| ()).map_err(|e| e.to_string()),
            Via::Sendmail(argv) => {
                // The local submission interface takes lines ending in LF.
                let text = String::from_utf8_lossy(&m.formatted()).replace("\r\n", "\n");
                run(argv, text.as_bytes(), &[], self.timeout, &self.running)
            }
        }
    }
}

struct Webhook {
    url: String,
    key: Key,
    agent: ureq::Agent,
}

impl Webhook {
    fn new(
        url: &str,
        key: Key,
        ca: Option<&std::path::Path>,
        timeout: Duration,
    ) -> Result<Webhook, String> {
        use ureq::tls::{Certificate as Cert, RootCerts, TlsConfig};
        let roots: Vec<Cert<'static>> = match ca {
            Some(ca) => {
                let pem = std::fs::read(ca).map_err(|e| format!("{}: {e}", ca.display()))?;
                ureq::tls::parse_pem(&pem)
                    .filter_map(|i| match i {
                        Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                        _ => None,
                    })
                    .collect()
            }
            None => rustls_native_certs::load_native_certs()
                .certs
                .iter()
                .map(|c| Cert::from_der(c.as_ref()).to_owned())
                .collect(),
        };
        if roots.is_empty() && url.starts_with("https://") {
            return Err(match ca {
                Some(ca) => format!("ALERT_WEBHOOK_CA_FILE: no certificate in {}", ca.display()),
                None => "ALERT_WEBHOOK_URL: no system CA certificates to check the server with (install ca-certificates, or set ALERT_WEBHOOK_CA_FILE)".into(),
            });
        }
        let tls = TlsConfig::builder()
            .root_certs(RootCerts::from(roots))
            .build();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .proxy(None)
            .max_redirects(0)
            .tls_config(tls)
            .user_agent(concat!("posternd/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Ok(Webhook {
            url: url.to_owned(),
            key,
            agent,
        })
    }
}

/// `sha256=<hex>`: HMAC-SHA256 of `body` under `key`.
pub fn signature(key: &[u8], body: &[u8]) -> String {
    let Ok(mut mac) = Hmac::<sha2::Sha256>::new_from_slice(key) else {
        return String::new();
    };
    mac.update(body);
    let tag = mac.finalize().into_bytes();
    let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

impl Sink for Webhook {
    fn name(&self) -> String {
        // The path may carry a token (Slack-style URLs): scheme and authority only.
        let end = self
            .url
            .find("://")
            .map(|i| i + 3)
            .and_then(|i| self.url[i..].find('/').map(|j| i + j))
            .unwrap_or(self.url.len());
        format!("webhook {}/...", &self.url[..end])
    }

    fn deliver(&mut self, ev: &Event) -> Result<(), String> {
        let body = serde_json::to_vec(&ev.json()).map_err(|e| e.to_string())?;
        self.agent
            .post(&self.url)
            .header("Content-Type", "application/json")
            .header("X-Postern-Event", ev.kind.name())
            .header("X-Postern-Signature", signature(self.key.as_bytes(), &body))
            .send(&body[..])
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

struct Hook {
    argv: Vec<String>,
    timeout: Duration,
    running: Running,
}

impl Sink for Hook {
    fn name(&self) -> String {
        format!("command {}", self.argv[0])
    }

    fn deliver(&mut self, ev: &Event) -> Result<(), String> {
        let mut body = serde_json::to_vec(&ev.json()).map_err(|e| e.to_string())?;
        body.push(b'\n');
        run(&self.argv, &body, &ev.env(), self.timeout, &self.running)
    }
}

/// Process groups of one sender's commands running now (so that none outlives it).
#[derive(Debug, Clone, Default)]
pub struct Running(std::sync::Arc<std::sync::Mutex<Vec<i32>>>);

impl Running {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<i32>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Kill every command still running, with its process group (at exit).
    pub fn kill(&self) {
        for pgid in self.lock().drain(..) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pgid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Run `argv` (never through a shell) with `input` on standard input, an environment of
/// PATH and `env` only, in a process group of its own that is killed whole at `timeout`.
fn run(
    argv: &[String],
    input: &[u8],
    env: &[(&str, String)],
    timeout: Duration,
    running: &Running,
) -> Result<(), String> {
    let Some((prog, args)) = argv.split_first() else {
        return Err("empty command".into());
    };
    let mut cmd = Command::new(prog);
    cmd.args(args)
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .current_dir("/")
        .process_group(0);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {prog}: {e}"))?;
    let pgid = i32::try_from(child.id()).unwrap_or(0);
    running.lock().push(pgid);
    let result = wait(&mut child, prog, input, timeout);
    running.lock().retain(|&p| p != pgid);
    result
}

fn wait(
    child: &mut std::process::Child,
    prog: &str,
    input: &[u8],
    timeout: Duration,
) -> Result<(), String> {
    // Alerts are a few hundred bytes, well under a pipe's buffer: this write never waits
    // for the command (one that exits without reading gets EPIPE, which is fine).
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(input);
    }
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(st)) if st.success() => return Ok(()),
            Ok(Some(st)) => {
                return Err(match st.code() {
                    Some(c) => format!("{prog} exited with status {c}"),
                    None => format!("{prog} was killed by a signal"),
                })
            }
            Ok(None) if start.elapsed() >= timeout => {
                if let Ok(pid) = i32::try_from(child.id()) {
                    let _ = nix::sys::signal::killpg(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{prog} killed at the timeout ({}s, with its process group)",
                    timeout.as_secs()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("{prog}: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_of_the_body() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn a_command_gets_the_event_on_stdin_and_in_its_environment() {
        let dir = std::env::temp_dir().join(format!("postern-alert-hook-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("out");
        let argv = vec![
            "/bin/sh".to_owned(),
            "-c".to_owned(),
            format!(
                "cat > {0}; env | grep ^POSTERN_ | sort >> {0}; echo \"$HOME\" >> {0}",
                out.display()
            ),
        ];
        let mut ev = Event::replay("198.18.1.9".parse().unwrap());
        ev.host = "gw".into();
        let env = ev.env();
        let r = Running::default();
        run(
            &argv,
            b"{\"event\":\"replay\"}\n",
            &env,
            Duration::from_secs(5),
            &r,
        )
        .unwrap();
        let text = std::fs::read_to_string(&out).unwrap();
        assert!(text.starts_with("{\"event\":\"replay\"}\n"), "{text}");
        assert!(text.contains("POSTERN_EVENT=replay\n"), "{text}");
        assert!(text.contains("POSTERN_SOURCE=198.18.1.9\n"), "{text}");
        assert!(text.ends_with("\n\n"), "no inherited HOME: {text}");
        let e = run(&["/bin/false".into()], b"", &[], Duration::from_secs(5), &r).unwrap_err();
        assert_eq!(e, "/bin/false exited with status 1");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
