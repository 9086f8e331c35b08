//! Carry out a [`Plan`]: get the keys, find the allow address, build and seal the
//! message, then print it (`-T`), save it (`-B`) and send it.

use std::io::BufRead;
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use postern_proto::{
    seal, DigestType, EncryptionMode, HmacKey, Key, Keys, MessageType, RandomValue, Sealed,
    SpaMessage,
};
use zeroize::Zeroizing;

use crate::plan::{bad, Allow, Ask, Fail, KeySource, Nat, NatPort, Plan};
use crate::{resolve, send};

/// Options that only matter at run time.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// `-T`: do not send.
    pub test: bool,
    /// `--stdin` (fd 0) or `--fd N`: read the keys that are not configured from there
    /// (the descriptor and the flag, for messages).
    pub key_fd: Option<(u32, &'static str)>,
    /// `-B`: save the packet here.
    pub save_packet: Option<std::path::PathBuf>,
    /// `-b`: append to the -B file.
    pub append: bool,
}

/// Fill `buf` from the OS CSPRNG.
pub fn random(buf: &mut [u8]) {
    if let Err(e) = getrandom::getrandom(buf) {
        // No secure randomness means no safe packet: stop rather than degrade.
        eprintln!("postern: the operating system's random number generator failed: {e}");
        std::process::exit(1);
    }
}

/// A random port in 10000..=65534, as fwknop's --rand-port uses.
pub fn random_port() -> u16 {
    let mut b = [0u8; 2];
    random(&mut b);
    10000 + u16::from_le_bytes(b) % (65535 - 10000)
}

/// The most bytes of a key read from `--stdin`/`--fd` that fwknop keeps.
pub const MAX_FD_KEY_LEN: usize = 127;

/// Keys read line by line from `--stdin` or `--fd N`, as fwknop reads them: the bytes
/// up to the newline (a carriage return is kept), cut at a NUL byte and at 127 bytes.
struct FdKeys {
    flag: &'static str,
    from: String,
    reader: Box<dyn BufRead>,
    lines_read: usize,
}

impl FdKeys {
    fn open(fd: u32, flag: &'static str) -> Result<FdKeys, Fail> {
        let (reader, from): (Box<dyn BufRead>, String) = if fd == 0 {
            (Box::new(std::io::stdin().lock()), "standard input".into())
        } else {
            // Adopting a raw descriptor needs unsafe; /proc/self/fd/N opens what it refers
            // to (the same pipe; a file from its start).
            let f = std::fs::File::open(format!("/proc/self/fd/{fd}"))
                .map_err(|e| Fail(format!("{flag}: cannot read file descriptor {fd}: {e}")))?;
            (
                Box::new(std::io::BufReader::new(f)),
                format!("file descriptor {fd}"),
            )
        };
        Ok(FdKeys {
            flag,
            from,
            reader,
            lines_read: 0,
        })
    }

    /// The next key line; an empty or missing line is an error naming what was wanted.
    fn next_key(&mut self, what: &str) -> Result<Key, Fail> {
        let mut line = Zeroizing::new(Vec::new());
        self.reader
            .read_until(b'\n', &mut line)
            .map_err(|e| Fail(format!("{}: cannot read {}: {e}", self.flag, self.from)))?;
        self.lines_read += 1;
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        if let Some(nul) = line.iter().position(|&b| b == 0) {
            line.truncate(nul);
        }
        line.truncate(MAX_FD_KEY_LEN);
        if line.is_empty() {
            return Err(Fail(format!(
                "{}: no {what} on line {} of {}",
                self.flag, self.lines_read, self.from
            )));
        }
        Ok(Key::from_bytes(std::mem::take(&mut *line)))
    }
}

fn from_key_file(
    path: &str,
    server: Option<&str>,
    origin: &crate::settings::Origin,
) -> Result<Key, Fail> {
    let text = Zeroizing::new(
        std::fs::read_to_string(path)
            .map_err(|e| bad(origin, format_args!("cannot read '{path}': {e}")))?,
    );
    let server =
        server.ok_or_else(|| bad(origin, "needs -D/--destination to pick the key line"))?;
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('#') {
            continue;
        }
        if let Some((host, key)) = t.split_once(':') {
            if host.trim() == server {
                return Ok(Key::from_passphrase(key.trim()));
            }
        }
    }
    Err(bad(
        origin,
        format_args!("no '{server}: <key>' line in '{path}'"),
    ))
}

fn get_key(src: &KeySource, what: &str, plan: &Plan, fd: &mut Option<FdKeys>) -> Result<Key, Fail> {
    match src {
        KeySource::Text(t, _) => Ok(Key::from_passphrase(t)),
        KeySource::Base64(t, o) => crate::plan::base64_key(t, o),
        KeySource::File(p, o) => from_key_file(p, plan.server.as_deref(), o),
        KeySource::Ask => {
            if let Some(f) = fd {
                return f.next_key(what);
            }
            let prompt = format!("Enter {what}: ");
            let text = Zeroizing::new(rpassword::prompt_password(&prompt).map_err(|e| {
                Fail(format!(
                    "no {what} configured and none could be read from the terminal ({e}); give it with a flag, the rc file, --stdin or --fd"
                ))
            })?);
            if text.is_empty() {
                return Err(Fail(format!("empty {what}")));
            }
            Ok(Key::from_passphrase(&text))
        }
    }
}

fn keys(plan: &Plan, opts: &RunOptions) -> Result<Keys, Fail> {
    // The descriptor is opened only when a key has to be read from it.
    let asks = plan.key == KeySource::Ask || plan.hmac_key == Some(KeySource::Ask);
    let mut fd = match opts.key_fd {
        Some((n, flag)) if asks => Some(FdKeys::open(n, flag)?),
        _ => None,
    };
    let enc = get_key(&plan.key, "encryption key", plan, &mut fd)?;
    let hmac = plan
        .hmac_key
        .as_ref()
        .map(|src| get_key(src, "HMAC key", plan, &mut fd))
        .transpose()?;
    let key_origin = |src: &KeySource, fallback: &'static str| match src {
        KeySource::Text(_, o) | KeySource::Base64(_, o) | KeySource::File(_, o) => o.to_string(),
        KeySource::Ask => fallback.to_owned(),
    };
    Keys::new(
        enc,
        plan.mode,
        hmac.map(|key| HmacKey {
            key,
            digest: plan.hmac_digest,
        }),
    )
    .map_err(|e| match e {
        postern_proto::Error::HmacKeyEqualsEncryptionKey => Fail(format!(
            "the HMAC key ({}) must differ from the encryption key ({})",
            plan.hmac_key
                .as_ref()
                .map_or("prompt".into(), |s| key_origin(s, "prompt")),
            key_origin(&plan.key, "prompt")
        )),
        postern_proto::Error::InvalidKeyLength { len } => Fail(format!(
            "{}: the encryption key is {len} bytes; Rijndael keys must be 1 to 32 bytes",
            key_origin(&plan.key, "encryption key")
        )),
        postern_proto::Error::InvalidHmacKeyLength { len } => Fail(format!(
            "{}: the HMAC key is {len} bytes; HMAC keys must be 1 to 128 bytes",
            plan.hmac_key
                .as_ref()
                .map_or("HMAC key".into(), |s| key_origin(s, "HMAC key"))
        )),
        other => Fail(other.to_string()),
    })
}

/// The user name fwknop would send: SPOOF_USER, LOGNAME, the effective user, USER.
fn default_user() -> String {
    for var in ["SPOOF_USER", "LOGNAME"] {
        if let Ok(v) = std::env::var(var) {
            if !v.is_empty() {
                return v;
            }
        }
    }
    if let Ok(uid) = std::fs::metadata("/proc/self").map(|m| m.uid()) {
        if let Ok(passwd) = std::fs::read_to_string("/etc/passwd") {
            for line in passwd.lines() {
                let f: Vec<&str> = line.split(':').collect();
                if f.len() > 2 && f[2].parse() == Ok(uid) && !f[0].is_empty() {
                    return f[0].to_owned();
                }
            }
        }
    }
    std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "NO_USER".into())
}

fn allow_ip(plan: &Plan) -> Result<IpAddr, Fail> {
    match &plan.allow {
        Allow::Ip(ip) => Ok(*ip),
        Allow::Source => Ok(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
        Allow::Resolve { url } => resolve::external_ip(url, &plan.user_agent),
    }
}

/// Build the inner message. `now` is the Unix time; randomness comes from the OS.
pub fn build_message(plan: &Plan, allow: IpAddr, now: u64) -> Result<SpaMessage, Fail> {
    let (user, user_origin) = match &plan.user {
        Some((u, o)) => (u.clone(), o.to_string()),
        None => (
            default_user(),
            "username (set one with -U/--spoof-user)".to_owned(),
        ),
    };
    let timestamp = now
        .checked_add_signed(plan.time_offset)
        .ok_or_else(|| Fail("--time-offset-minus: the timestamp would be before 1970".into()))?;
    let nat_port = match plan.nat_port {
        NatPort::Same => None,
        NatPort::Fixed(p) => Some(p),
        NatPort::Random => Some(crate::knock::random_port()),
    };
    let (kind, message, nat_access) = match &plan.ask {
        Ask::Command(cmd) => (MessageType::Command, format!("{allow},{cmd}"), None),
        Ask::Access(ports) => {
            let mut ports = ports.clone();
            let kind = match &plan.nat {
                Nat::None => MessageType::Access,
                Nat::Forward { .. } => MessageType::NatAccess,
                Nat::Local { .. } => MessageType::LocalNatAccess,
            };
            let nat = match &plan.nat {
                Nat::None => None,
                Nat::Forward { host, port } | Nat::Local { host, port } => {
                    if let Some(p) = nat_port {
                        ports[0].port = p;
                    }
                    Some(format!("{host},{port}"))
                }
            };
            let list: Vec<String> = ports.iter().map(ToString::to_string).collect();
            (
                kind.with_timeout(plan.fw_timeout),
                format!("{allow},{}", list.join(",")),
                nat,
            )
        }
    };
    let mut rv_bytes = |b: &mut [u8]| random(b);
    let m = SpaMessage {
        random_value: RandomValue::generate(&mut rv_bytes),
        username: user,
        timestamp,
        version: postern_proto::wire::PROTOCOL_VERSION.to_owned(),
        message_type: kind,
        message,
        nat_access,
        server_auth: None,
        client_timeout: if kind.has_timeout() {
            plan.fw_timeout
        } else {
            0
        },
    };
    m.encode().map_err(|e| match e {
        postern_proto::Error::BadField { field, why } => {
            let origin = match field {
                postern_proto::Field::Username => user_origin,
                postern_proto::Field::Command => "-C/--server-cmd".into(),
                postern_proto::Field::NatAccess => "-N/--nat-access".into(),
                postern_proto::Field::AllowIp => "-a/--allow-ip".into(),
                postern_proto::Field::Message => if kind == MessageType::Command {
                    "-C/--server-cmd"
                } else {
                    "-A/--access"
                }
                .into(),
                _ => "message".into(),
            };
            Fail(format!("{origin}: {} {why}", field.name()))
        }
        other => Fail(other.to_string()),
    })?;
    Ok(m)
}

fn mode_label(mode: EncryptionMode) -> String {
    format!("{} ({})", mode.id(), mode.display_name())
}

fn digest_label(d: DigestType) -> String {
    format!("{} ({})", d.id(), d.display_name())
}

/// The field dump of `-T`/`-v`, one field per line, with fwknop's labels.
pub fn dump(m: &SpaMessage, keys: &Keys, digest: DigestType, sealed: &Sealed) -> String {
    let null = |o: &Option<String>| o.clone().unwrap_or_else(|| "<NULL>".into());
    let rows = [
        ("Random Value", m.random_value.to_string()),
        ("Username", m.username.clone()),
        ("Timestamp", m.timestamp.to_string()),
        ("FKO Version", m.version.clone()),
        (
            "Message Type",
            format!("{} ({})", m.message_type.id(), m.message_type.description()),
        ),
        ("Message String", m.message.clone()),
        ("Nat Access", null(&m.nat_access)),
        ("Server Auth", null(&m.server_auth)),
        ("Client Timeout", m.client_timeout.to_string()),
        ("Digest Type", digest_label(digest)),
        (
            "HMAC Type",
            keys.hmac_type().map_or("0 (None)".into(), digest_label),
        ),
        ("Encryption Type", "1 (Rijndael)".into()),
        ("Encryption Mode", mode_label(keys.mode())),
        ("Encoded Data", sealed.encoded.clone()),
        ("SPA Data Digest", sealed.digest.clone()),
        ("HMAC", null(&sealed.hmac)),
        ("Final SPA Data", sealed.wire.clone()),
    ];
    let mut out = String::from("SPA Field Values:\n=================\n");
    for (label, value) in rows {
        out.push_str(&format!("{label:>15}: {value}\n"));
    }
    out
}

fn save_packet(path: &Path, wire: &str, append: bool) -> Result<(), Fail> {
    crate::args::write_private(path, &format!("{wire}\n"), append).map_err(|e| {
        Fail(format!(
            "-B/--save-packet: cannot write '{}': {e}",
            path.display()
        ))
    })
}

/// Run the knock. Returns what to print on standard output.
pub fn run(plan: &Plan, opts: &RunOptions) -> Result<String, Fail> {
    let keys = keys(plan, opts)?;
    let allow = allow_ip(plan)?;
    if allow.is_ipv6() && !opts.test {
        eprintln!("postern: note: an IPv6 allow address is understood by postern's daemon only; fwknopd 2.6 will refuse this packet");
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|_| Fail("the system clock is before 1970".into()))?
        .as_secs();
    let message = build_message(plan, allow, now)?;
    let mut salt = [0u8; 8];
    random(&mut salt);
    let sealed = seal(&message, &keys, plan.digest, salt).map_err(|e| match e {
        postern_proto::Error::PacketTooLongForFwknop { len } => Fail(format!(
            "the SPA packet would be {len} characters; fwknop servers cannot decode Rijndael packets of 400 or more: shorten -A/-C/-N, or use a shorter -m/--digest-type or --hmac-digest-type"
        )),
        other => Fail(other.to_string()),
    })?;
    // Self-check: what we send must decode with the same keys.
    postern_proto::decode(sealed.wire.as_bytes(), &keys)
        .map_err(|e| Fail(format!("internal error: the packet does not decode ({e})")))?;
    let mut out = String::new();
    if opts.test || plan.verbose {
        out.push_str(&dump(&message, &keys, plan.digest, &sealed));
    }
    if let Some(path) = &opts.save_packet {
        save_packet(path, &sealed.wire, opts.append)?;
    }
    if opts.test {
        out.push_str("\ntest mode: the SPA packet was not sent.");
        return Ok(out);
    }
    let report = send::send(plan, &sealed.wire)?;
    if plan.verbose {
        out.push('\n');
        out.push_str(&report);
    }
    Ok(out.trim_end().to_owned())
}
