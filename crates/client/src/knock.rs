//! Carry out a [`Plan`]: get the keys, find the allow address, build and seal the
//! message, then print it (`-T`), save it (`-B`) and send it.

use std::io::BufRead as _;
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
    /// `--stdin`: read keys from standard input.
    pub stdin: bool,
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

struct StdinKeys {
    lines: Vec<Zeroizing<String>>,
}

impl StdinKeys {
    fn read() -> Result<StdinKeys, Fail> {
        let mut lines = Vec::new();
        for line in std::io::stdin().lock().lines().take(2) {
            let line =
                line.map_err(|e| Fail(format!("--stdin: cannot read standard input: {e}")))?;
            lines.push(Zeroizing::new(
                line.trim_end_matches(['\r', '\n']).to_owned(),
            ));
        }
        Ok(StdinKeys { lines })
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

fn get_key(
    src: &KeySource,
    what: &str,
    plan: &Plan,
    stdin: &mut Option<StdinKeys>,
    index: usize,
) -> Result<Key, Fail> {
    match src {
        KeySource::Text(t, _) => Ok(Key::from_passphrase(t)),
        KeySource::Base64(t, o) => {
            Key::from_base64(t).map_err(|_| bad(o, "key is not valid base64"))
        }
        KeySource::File(p, o) => from_key_file(p, plan.server.as_deref(), o),
        KeySource::Ask => {
            if let Some(s) = stdin {
                return s
                    .lines
                    .get(index)
                    .filter(|l| !l.is_empty())
                    .map(|l| Key::from_passphrase(l))
                    .ok_or_else(|| {
                        Fail(format!(
                            "--stdin: no {what} on line {} of standard input",
                            index + 1
                        ))
                    });
            }
            let prompt = format!("Enter {what}: ");
            let text = Zeroizing::new(rpassword::prompt_password(&prompt).map_err(|e| {
                Fail(format!(
                    "no {what} configured and none could be read from the terminal ({e}); give it with a flag, the rc file or --stdin"
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
    let mut stdin = if opts.stdin {
        Some(StdinKeys::read()?)
    } else {
        None
    };
    let enc = get_key(&plan.key, "encryption key", plan, &mut stdin, 0)?;
    let hmac_index = usize::from(plan.key == KeySource::Ask);
    let hmac = plan
        .hmac_key
        .as_ref()
        .map(|src| get_key(src, "HMAC key", plan, &mut stdin, hmac_index))
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
