//! Gateway fleets on Redis / Valkey: one replay window, and fleet-wide grants.
//!
//! ```text
//!  gateway A (privileged part)                 Redis                     gateway B, C
//!  packet accepted locally ─► SET <prefix>:replay:<key> NX PX <retention>  (one round
//!      OK  ─► act                     trip per group, bounded by FLEET_REDIS_TIMEOUT_MS)
//!      nil ─► replay (another gateway has it)
//!  grant of a FLEET_GRANTS stanza ─► XADD <prefix>:grants {m, sig} ─► XREAD (thread) ─►
//!                                                     verify sig, deadline, nonce, own
//!                                                     access.conf ─► grant for what is left
//! ```
//!
//! The local replay store answers first and survives Redis outages. When Redis cannot
//! answer a claim in time, `FLEET_ON_REDIS_DOWN` decides: `closed` refuses new grants,
//! `local` goes on with the local store alone (a packet captured on its way to this
//! gateway could then be replayed at another one within its age window), loudly.
//! The stream is read by a thread of its own, which only hands message text to the main
//! loop: nothing from Redis is believed before the privileged part has checked it.

pub mod message;

use std::time::{Duration, Instant};

use postern_proto::ReplayKey;

use crate::config::server::{FleetConfig, OnRedisDown};
use crate::log;

/// The outcome of claiming one replay key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This gateway is the first: act.
    Won,
    /// Another gateway (or this one before) already accepted this packet.
    Lost,
    /// Redis did not answer in time.
    Down(String),
}

/// A Redis client for the fleet, with its connection and health.
pub struct Fleet {
    config: FleetConfig,
    client: redis::Client,
    con: Option<redis::Connection>,
    retry_at: Option<Instant>,
    backoff: Duration,
    last_error: Option<String>,
    /// Claims won, lost, and not answered; messages published and failed.
    pub counts: [u64; 5],
    warned: Option<Instant>,
    /// The grant stream: following it, its last error, and how late the last message
    /// was handled (ms after it was published), messages received.
    stream: (bool, Option<String>, Option<u64>, u64),
}

/// The Redis client a fleet configuration describes (password and TLS CA applied).
pub fn client(config: &FleetConfig) -> Result<redis::Client, String> {
    use redis::IntoConnectionInfo as _;
    let info = config
        .url
        .as_str()
        .into_connection_info()
        .map_err(|e| format!("FLEET_REDIS_URL: {e}"))?;
    let info = match &config.password {
        Some(pw) => {
            let pw = String::from_utf8_lossy(pw.as_bytes()).into_owned();
            let settings = info.redis_settings().clone().set_password(pw);
            info.set_redis_settings(settings)
        }
        None => info,
    };
    if config.url.starts_with("rediss://") {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let root_cert = match &config.ca_file {
            Some(p) => Some(
                std::fs::read(p)
                    .map_err(|e| format!("FLEET_REDIS_CA_FILE {}: {e}", p.display()))?,
            ),
            None => None,
        };
        redis::Client::build_with_tls(
            info,
            redis::TlsCertificates {
                client_tls: None,
                root_cert,
            },
        )
        .map_err(|e| format!("FLEET_REDIS_URL: {e}"))
    } else {
        redis::Client::open(info).map_err(|e| format!("FLEET_REDIS_URL: {e}"))
    }
}

impl Fleet {
    /// A client (nothing is connected yet).
    pub fn new(config: &FleetConfig) -> Result<Fleet, String> {
        Ok(Fleet {
            client: client(config)?,
            config: config.clone(),
            con: None,
            retry_at: None,
            backoff: Duration::from_millis(500),
            last_error: None,
            counts: [0; 5],
            warned: None,
            stream: (false, None, None, 0),
        })
    }

    /// The settings.
    pub fn config(&self) -> &FleetConfig {
        &self.config
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.config.timeout_ms)
    }

    /// Connect now (at start, for a clear error), bounded by a second. A refused
    /// password or ACL user is [`ConnectError::Auth`]: it will not fix itself.
    pub fn connect_at_start(&mut self) -> Result<(), ConnectError> {
        let t = self
            .timeout()
            .max(Duration::from_millis(200))
            .min(Duration::from_secs(1));
        match self.client.get_connection_with_timeout(t) {
            Ok(c) => {
                let _ = c.set_read_timeout(Some(self.timeout()));
                let _ = c.set_write_timeout(Some(self.timeout()));
                self.con = Some(c);
                Ok(())
            }
            Err(e) => {
                let auth = matches!(e.kind(), redis::ErrorKind::AuthenticationFailed)
                    || e.to_string().contains("WRONGPASS")
                    || e.to_string().contains("NOAUTH");
                let why = self.failed(format!("cannot connect to Redis: {e}"));
                Err(if auth {
                    ConnectError::Auth(why)
                } else {
                    ConnectError::Unreachable(why)
                })
            }
        }
    }

    /// Connect, bounded by a second.
    fn connect(&mut self) -> Result<(), String> {
        let t = self
            .timeout()
            .max(Duration::from_millis(200))
            .min(Duration::from_secs(1));
        match self.client.get_connection_with_timeout(t) {
            Ok(c) => {
                let _ = c.set_read_timeout(Some(self.timeout()));
                let _ = c.set_write_timeout(Some(self.timeout()));
                self.con = Some(c);
                self.last_error = None;
                self.backoff = Duration::from_millis(500);
                Ok(())
            }
            Err(e) => Err(self.failed(format!("cannot connect to Redis: {e}"))),
        }
    }

    fn failed(&mut self, why: String) -> String {
        self.con = None;
        self.retry_at = Some(Instant::now() + self.backoff);
        self.backoff = (self.backoff * 2).min(Duration::from_secs(30));
        self.last_error = Some(why.clone());
        why
    }

    /// A connection, reconnecting when the backoff allows (never blocking longer than
    /// the connect bound). `Err(None)`: not tried now (backing off).
    fn connection(&mut self) -> Result<&mut redis::Connection, Option<String>> {
        if self.con.is_none() {
            if self.retry_at.is_some_and(|t| Instant::now() < t) {
                return Err(None);
            }
            self.connect().map_err(Some)?;
        }
        self.con.as_mut().ok_or(None)
    }

    /// The reason for a failure: a fresh one backs off further, a skipped try does not.
    fn down(&mut self, e: Option<String>) -> String {
        match e {
            Some(e) => self.failed(e),
            None => self
                .last_error
                .clone()
                .unwrap_or_else(|| "Redis unreachable".into()),
        }
    }

    /// Claim every key for `ttl` (one pipelined round trip): who accepts each packet.
    pub fn claim(&mut self, keys: &[ReplayKey], ttl: Duration) -> Vec<Claim> {
        if keys.is_empty() {
            return Vec::new();
        }
        let ms = ttl.as_millis().max(1) as u64;
        let mut pipe = redis::pipe();
        for k in keys {
            pipe.cmd("SET")
                .arg(format!("{}:replay:{k}", self.config.prefix))
                .arg(&self.config.gateway)
                .arg("NX")
                .arg("PX")
                .arg(ms);
        }
        let wait = self.config.wait_replicas;
        if wait > 0 {
            pipe.cmd("WAIT").arg(wait).arg(self.config.timeout_ms);
        }
        let result = self.connection().and_then(|con| {
            pipe.query::<Vec<redis::Value>>(con)
                .map_err(|e| Some(format!("Redis: {e}")))
        });
        let values = match result {
            Ok(v) if v.len() == keys.len() + usize::from(wait > 0) => v,
            Ok(_) => {
                let why = self.failed("Redis: unexpected reply to the claims".into());
                return keys.iter().map(|_| Claim::Down(why.clone())).collect();
            }
            Err(e) => {
                let why = self.down(e);
                self.counts[2] += keys.len() as u64;
                return keys.iter().map(|_| Claim::Down(why.clone())).collect();
            }
        };
        if wait > 0 {
            let acked = match values.last() {
                Some(redis::Value::Int(n)) => u64::try_from(*n).unwrap_or(0),
                _ => 0,
            };
            if acked < wait {
                let why = format!("Redis: {acked} of {wait} replicas acknowledged the claims");
                self.last_error = Some(why.clone());
                self.counts[2] += keys.len() as u64;
                return keys.iter().map(|_| Claim::Down(why.clone())).collect();
            }
        }
        values
            .iter()
            .take(keys.len())
            .map(|v| match v {
                redis::Value::Okay | redis::Value::SimpleString(_) => {
                    self.counts[0] += 1;
                    Claim::Won
                }
                redis::Value::Nil => {
                    self.counts[1] += 1;
                    Claim::Lost
                }
                other => {
                    self.counts[2] += 1;
                    let _ = other;
                    Claim::Down("Redis: an unexpected reply to a claim".into())
                }
            })
            .collect()
    }

    /// What to do with a packet whose claim Redis did not answer: `true` to go on.
    pub fn proceed_when_down(&mut self, why: &str) -> bool {
        let local = self.config.on_down == OnRedisDown::Local;
        if self
            .warned
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(10))
        {
            self.warned = Some(Instant::now());
            if local {
                log::warn(&format!(
                    "{why}: FLEET_ON_REDIS_DOWN local: going on with the local replay store ALONE (a packet could be replayed at another gateway)"
                ));
            } else {
                log::error(&format!(
                    "{why}: FLEET_ON_REDIS_DOWN closed: new grants are refused until Redis answers"
                ));
            }
        }
        local
    }

    /// Publish a grant for the other gateways (bounded like a claim).
    pub fn publish(&mut self, m: &message::GrantMessage) -> Result<(), String> {
        let (text, sig) = m.seal(self.config.key.as_bytes());
        let stream = stream_key(&self.config);
        let r = self.connection().and_then(|con| {
            redis::cmd("XADD")
                .arg(&stream)
                .arg("MAXLEN")
                .arg("~")
                .arg(100_000)
                .arg("*")
                .arg("m")
                .arg(&text)
                .arg("sig")
                .arg(&sig)
                .query::<String>(con)
                .map_err(|e| Some(format!("Redis: {e}")))
        });
        match r {
            Ok(_) => {
                self.counts[3] += 1;
                Ok(())
            }
            Err(e) => {
                self.counts[4] += 1;
                Err(self.down(e))
            }
        }
    }

    /// The stream reader connected (`None`) or lost its connection (why).
    pub fn stream_state(&mut self, lost: Option<String>) {
        self.stream.0 = lost.is_none();
        if lost.is_some() {
            self.stream.1 = lost;
        }
    }

    /// A stream message arrived: its id (`<ms>-<seq>`) gives how late it is handled.
    pub fn stream_message(&mut self, id: &str) {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        if let Some(ms) = id.split('-').next().and_then(|m| m.parse::<u64>().ok()) {
            self.stream.2 = Some(now_ms.saturating_sub(ms));
        }
        self.stream.3 += 1;
    }

    /// For `posternd status`.
    pub fn health(&self) -> serde_json::Value {
        serde_json::json!({
            "gateway": self.config.gateway,
            "redis": redact(&self.config.url),
            "connected": self.con.is_some(),
            "on_redis_down": match self.config.on_down { OnRedisDown::Closed => "closed", OnRedisDown::Local => "local" },
            "last_error": self.last_error,
            "claims_won": self.counts[0],
            "claims_lost": self.counts[1],
            "claims_unanswered": self.counts[2],
            "published": self.counts[3],
            "publish_failed": self.counts[4],
            "stream_following": self.stream.0,
            "stream_last_error": self.stream.1,
            "stream_lag_ms": self.stream.2,
            "stream_messages": self.stream.3,
        })
    }
}

/// Why the fleet could not be reached at start.
#[derive(Debug)]
pub enum ConnectError {
    /// Redis refused the password or the ACL user.
    Auth(String),
    /// Redis did not answer (down, unreachable, timeout).
    Unreachable(String),
}

/// The stream grants are published on.
pub fn stream_key(c: &FleetConfig) -> String {
    format!("{}:grants", c.prefix)
}

/// A URL without any password in it.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let user = &url[s + 3..at];
            let user = user.split(':').next().unwrap_or("");
            format!("{}{user}@{}", &url[..s + 3], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

/// What the stream reader hands the main loop.
#[derive(Debug)]
pub enum StreamEvent {
    /// A message's text and signature, unverified.
    Message {
        /// Stream entry id.
        id: String,
        /// The `m` field.
        text: String,
        /// The `sig` field.
        sig: String,
    },
    /// Connected, after a start or an outage, and caught up to the stream's end.
    Connected,
    /// Lost the connection (why).
    Lost(String),
}

/// Read the grant stream on a thread of its own, from `since_ms` ago (catching up on
/// grants still open), then as messages arrive; reconnect with backoff forever.
pub fn follow(
    config: FleetConfig,
    since: Duration,
    report: impl Fn(StreamEvent) -> bool + Send + 'static,
) -> Result<(), String> {
    let client = client(&config)?;
    std::thread::spawn(move || {
        let stream = stream_key(&config);
        let now_ms = || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64)
        };
        let mut last = format!("{}-0", now_ms().saturating_sub(since.as_millis() as u64));
        let mut backoff = Duration::from_millis(500);
        loop {
            let con = client.get_connection_with_timeout(Duration::from_secs(1));
            let mut con = match con {
                Ok(c) => c,
                Err(e) => {
                    if !report(StreamEvent::Lost(format!("cannot connect to Redis: {e}"))) {
                        return;
                    }
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    continue;
                }
            };
            backoff = Duration::from_millis(500);
            let _ = con.set_read_timeout(Some(Duration::from_secs(5)));
            let mut announced = false;
            loop {
                // Catch up without blocking first; then block for new entries.
                let block = if announced { 1000 } else { 0 };
                let mut cmd = redis::cmd("XREAD");
                cmd.arg("COUNT").arg(512);
                if announced {
                    cmd.arg("BLOCK").arg(block);
                }
                cmd.arg("STREAMS").arg(&stream).arg(&last);
                let r: redis::RedisResult<redis::Value> = cmd.query(&mut con);
                let entries = match r {
                    Ok(v) => entries_of(&v),
                    Err(e) => {
                        if !report(StreamEvent::Lost(format!("Redis: {e}"))) {
                            return;
                        }
                        break;
                    }
                };
                if entries.is_empty() && !announced {
                    announced = true;
                    if !report(StreamEvent::Connected) {
                        return;
                    }
                }
                for (id, text, sig) in entries {
                    last = id.clone();
                    if !report(StreamEvent::Message { id, text, sig }) {
                        return;
                    }
                }
            }
            std::thread::sleep(backoff);
        }
    });
    Ok(())
}

/// The entries of an XREAD reply: (id, m, sig). Anything of another shape is skipped.
fn entries_of(v: &redis::Value) -> Vec<(String, String, String)> {
    use redis::Value;
    let text = |v: &Value| match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    };
    let mut out = Vec::new();
    let streams: Vec<&Value> = match v {
        Value::Array(a) => a.iter().collect(),
        Value::Map(m) => m.iter().map(|(_, v)| v).collect(),
        _ => return out,
    };
    for s in streams {
        let items = match s {
            Value::Array(pair) if pair.len() == 2 => &pair[1],
            other => other,
        };
        let Value::Array(items) = items else { continue };
        for item in items {
            let Value::Array(e) = item else { continue };
            let (Some(id), Some(Value::Array(fields))) = (e.first().and_then(text), e.get(1))
            else {
                continue;
            };
            let mut m = None;
            let mut sig = None;
            for pair in fields.chunks(2) {
                match (
                    pair.first().and_then(text).as_deref(),
                    pair.get(1).and_then(text),
                ) {
                    (Some("m"), Some(t)) => m = Some(t),
                    (Some("sig"), Some(t)) => sig = Some(t),
                    _ => {}
                }
            }
            out.push((id, m.unwrap_or_default(), sig.unwrap_or_default()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_never_show() {
        assert_eq!(
            super::redact("redis://gw:secret@198.18.40.50:6379/0"),
            "redis://gw@198.18.40.50:6379/0"
        );
        assert_eq!(
            super::redact("redis://198.18.40.50:6379"),
            "redis://198.18.40.50:6379"
        );
    }
}
