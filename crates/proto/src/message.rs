//! The inner SPA message: its fields, their `:`-joined "encoded data" form, and the
//! typed view of the access, command and NAT strings.
//!
//! [`SpaMessage::parse`] validates every field strictly (spec sections 2.1-2.5) and is
//! total: no input makes it panic. [`SpaMessage::encode`] checks the same rules, so
//! whatever it emits parses back to the same message.

use core::fmt;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::algo::MessageType;
use crate::b64;
use crate::error::{field, Error, Field};
use crate::wire;

/// The 16 decimal digits that start every SPA message.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct RandomValue([u8; wire::RANDOM_VALUE_LEN]);

impl RandomValue {
    /// Exactly 16 ASCII digits.
    pub fn from_digits(s: &str) -> Result<RandomValue, Error> {
        let b = s.as_bytes();
        if b.len() != wire::RANDOM_VALUE_LEN || !b.iter().all(u8::is_ascii_digit) {
            return Err(Error::BadRandomValue);
        }
        let mut v = [0u8; wire::RANDOM_VALUE_LEN];
        v.copy_from_slice(b);
        Ok(RandomValue(v))
    }

    /// A uniformly distributed value from a source of random bytes (the OS CSPRNG in
    /// real use; anything in tests). Rejection sampling keeps it unbiased.
    pub fn generate(mut fill: impl FnMut(&mut [u8])) -> RandomValue {
        const SPAN: u64 = 10_000_000_000_000_000; // 10^16
        const LIMIT: u64 = u64::MAX - (u64::MAX % SPAN);
        loop {
            let mut b = [0u8; 8];
            fill(&mut b);
            let v = u64::from_le_bytes(b);
            if v < LIMIT {
                let s = format!("{:016}", v % SPAN);
                let mut out = [0u8; wire::RANDOM_VALUE_LEN];
                out.copy_from_slice(s.as_bytes());
                return RandomValue(out);
            }
        }
    }

    /// The digits.
    pub fn as_str(&self) -> &str {
        // Only ASCII digits are ever stored.
        core::str::from_utf8(&self.0).unwrap_or("")
    }
}

impl fmt::Debug for RandomValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RandomValue({})", self.as_str())
    }
}

impl fmt::Display for RandomValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The inner SPA message, as the client builds it and the server reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpaMessage {
    /// 16 random digits.
    pub random_value: RandomValue,
    /// Username (fwknop: `-U`, `SPOOF_USER`, `LOGNAME`...).
    pub username: String,
    /// Seconds since the Unix epoch at the client.
    pub timestamp: u64,
    /// Protocol version text, `3.0.0`.
    pub version: String,
    /// Message type.
    pub message_type: MessageType,
    /// The access string (`allow-ip,proto/port,...`) or command string (`allow-ip,cmd`).
    pub message: String,
    /// NAT string `host,port` (NAT types only).
    pub nat_access: Option<String>,
    /// Server auth text (never produced by the stock client; ignored by servers).
    pub server_auth: Option<String>,
    /// Client-requested access time in seconds (timeout types only; 0 otherwise).
    pub client_timeout: u32,
}

/// An IP protocol an access request can open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// TCP (IP protocol 6).
    Tcp,
    /// UDP (IP protocol 17).
    Udp,
}

impl Protocol {
    /// Lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }

    /// IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
        }
    }
}

/// One `proto/port` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortSpec {
    /// Protocol.
    pub proto: Protocol,
    /// Port, 1..=65535.
    pub port: u16,
}

impl fmt::Display for PortSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.proto.name(), self.port)
    }
}

impl PortSpec {
    /// Parse `tcp/22` or `udp/53` (lower case, as on the wire; leading zeros allowed).
    pub fn parse(s: &str) -> Result<PortSpec, Error> {
        let (proto, port) = s
            .split_once('/')
            .ok_or(field(Field::Access, "expected proto/port"))?;
        let proto = match proto {
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            _ => return Err(field(Field::Access, "protocol must be tcp or udp")),
        };
        let port = parse_port(port).ok_or(field(Field::Access, "port must be 1 to 65535"))?;
        Ok(PortSpec { proto, port })
    }
}

/// What a message asks for, parsed from its message string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Open these ports for `allow`.
    Access {
        /// Address to open for; `0.0.0.0` (or `::`) means "the packet's source".
        allow: IpAddr,
        /// Requested ports, in message order.
        ports: Vec<PortSpec>,
    },
    /// Run a command.
    Command {
        /// Address the command is on behalf of; `0.0.0.0` means "the packet's source".
        allow: IpAddr,
        /// The command text.
        command: String,
    },
}

/// A parsed NAT string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatTarget {
    /// Host name or address.
    pub host: String,
    /// Port, 1..=65535.
    pub port: u16,
}

fn parse_port(s: &str) -> Option<u16> {
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    match s.parse::<u32>() {
        Ok(p @ 1..=65535) => u16::try_from(p).ok(),
        _ => None,
    }
}

/// Parse an allow address: a strict dotted-quad IPv4 address (no leading zeros, which
/// inet_aton would read as octal) or, a postern extension, an IPv6 address.
pub fn parse_allow_ip(s: &str) -> Result<IpAddr, Error> {
    if s.contains(':') {
        return s
            .parse::<Ipv6Addr>()
            .map(IpAddr::V6)
            .map_err(|_| field(Field::AllowIp, "not an IPv4 or IPv6 address"));
    }
    if !(7..=15).contains(&s.len()) || s.bytes().filter(|&b| b == b'.').count() != 3 {
        return Err(field(Field::AllowIp, "not an IPv4 address"));
    }
    s.parse::<Ipv4Addr>()
        .map(IpAddr::V4)
        .map_err(|_| field(Field::AllowIp, "not an IPv4 address"))
}

fn parse_request(kind: MessageType, message: &str) -> Result<Request, Error> {
    let (allow, rest) = message.split_once(',').ok_or(field(
        Field::Message,
        "expected allow-ip followed by a comma",
    ))?;
    let allow = parse_allow_ip(allow)?;
    if kind == MessageType::Command {
        if rest.is_empty() {
            return Err(field(Field::Command, "empty command"));
        }
        return Ok(Request::Command {
            allow,
            command: rest.to_owned(),
        });
    }
    let ports = rest
        .split(',')
        .map(PortSpec::parse)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Request::Access { allow, ports })
}

/// Parse a NAT string `host,port`.
pub fn parse_nat(s: &str) -> Result<NatTarget, Error> {
    let (host, port) = s
        .split_once(',')
        .ok_or(field(Field::NatAccess, "expected host,port"))?;
    if host.is_empty() || host.len() > wire::MAX_NAT_HOST_LEN {
        return Err(field(Field::NatAccess, "host must be 1 to 70 characters"));
    }
    if host
        .bytes()
        .any(|b| b" /?\"'\\,".contains(&b) || !b.is_ascii_graphic())
    {
        return Err(field(
            Field::NatAccess,
            "host contains a forbidden character",
        ));
    }
    let port = parse_port(port).ok_or(field(Field::NatAccess, "port must be 1 to 65535"))?;
    Ok(NatTarget {
        host: host.to_owned(),
        port,
    })
}

fn is_printable(s: &str) -> bool {
    s.bytes().all(|b| (0x20..=0x7e).contains(&b))
}

fn check_username(u: &str) -> Result<(), Error> {
    if u.is_empty() {
        return Err(field(Field::Username, "empty"));
    }
    if u.bytes()
        .any(|b| !(0x20..=0x7e).contains(&b) || b"\"/\\[]:;|=,+*?<>".contains(&b))
    {
        return Err(field(Field::Username, "contains a forbidden character"));
    }
    Ok(())
}

fn check_version(v: &str) -> Result<(), Error> {
    if v.is_empty() || v.len() > wire::MAX_VERSION_LEN || !is_printable(v) || v.contains(':') {
        return Err(field(Field::Version, "must be 1 to 8 printable characters"));
    }
    Ok(())
}

fn decode_text(text: &str, limit: usize, which: Field) -> Result<String, Error> {
    if text.is_empty() {
        return Err(field(which, "empty"));
    }
    if text.len() > limit {
        return Err(field(which, "too long"));
    }
    let raw =
        b64::decode_canonical(text.as_bytes()).map_err(|_| field(which, "not canonical base64"))?;
    let s = String::from_utf8(raw).map_err(|_| field(which, "not printable text"))?;
    if !is_printable(&s) {
        return Err(field(which, "not printable text"));
    }
    Ok(s)
}

fn parse_decimal(s: &str, max_len: usize) -> Option<u64> {
    if s.is_empty() || s.len() > max_len || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

impl SpaMessage {
    /// The parsed access or command request of the message string.
    pub fn request(&self) -> Result<Request, Error> {
        parse_request(self.message_type, &self.message)
    }

    /// The parsed NAT target, if the message has one.
    pub fn nat(&self) -> Result<Option<NatTarget>, Error> {
        self.nat_access.as_deref().map(parse_nat).transpose()
    }

    /// Check every field against the rules both ends share.
    fn validate(&self) -> Result<(), Error> {
        check_username(&self.username)?;
        check_version(&self.version)?;
        if !is_printable(&self.message) {
            return Err(field(Field::Message, "not printable text"));
        }
        self.request()?;
        match (self.message_type.has_nat(), &self.nat_access) {
            (true, Some(n)) => {
                parse_nat(n)?;
            }
            (true, None) => return Err(field(Field::NatAccess, "missing for a NAT message type")),
            (false, Some(_)) => {
                return Err(field(
                    Field::NatAccess,
                    "present on a message type without NAT",
                ))
            }
            (false, None) => {}
        }
        if let Some(a) = &self.server_auth {
            if a.is_empty() || !is_printable(a) {
                return Err(field(Field::ServerAuth, "must be printable text"));
            }
        }
        if self.client_timeout > wire::MAX_CLIENT_TIMEOUT {
            return Err(field(Field::ClientTimeout, "larger than 65536"));
        }
        if !self.message_type.has_timeout() && self.client_timeout != 0 {
            return Err(field(
                Field::ClientTimeout,
                "present on a message type without timeout",
            ));
        }
        Ok(())
    }

    /// The `:`-joined encoded data, without the digest.
    ///
    /// Refuses messages that a decoder would refuse, and the encoder limits of the spec
    /// (username 1..=48 bytes, message < 193, NAT < 128, server auth < 64 bytes).
    pub fn encode(&self) -> Result<String, Error> {
        self.validate()?;
        if self.username.len() > 48 {
            return Err(field(Field::Username, "longer than 48 bytes"));
        }
        if self.message.len() > 192 {
            return Err(field(Field::Message, "longer than 192 bytes"));
        }
        if let Some(n) = &self.nat_access {
            if n.len() >= wire::MAX_NAT_LEN {
                return Err(field(Field::NatAccess, "longer than 127 bytes"));
            }
        }
        if let Some(a) = &self.server_auth {
            if a.len() >= wire::MAX_SERVER_AUTH_LEN {
                return Err(field(Field::ServerAuth, "longer than 63 bytes"));
            }
        }
        let mut e = format!(
            "{}:{}:{}:{}:{}:{}",
            self.random_value,
            b64::encode(self.username.as_bytes()),
            self.timestamp,
            self.version,
            self.message_type.id(),
            b64::encode(self.message.as_bytes()),
        );
        if let Some(n) = &self.nat_access {
            e.push(':');
            e.push_str(&b64::encode(n.as_bytes()));
        }
        if let Some(a) = &self.server_auth {
            e.push(':');
            e.push_str(&b64::encode(a.as_bytes()));
        }
        if self.message_type.has_timeout() {
            e.push(':');
            e.push_str(&self.client_timeout.to_string());
        }
        Ok(e)
    }

    /// Parse and validate encoded data (the plaintext before its `:digest`).
    pub fn parse(encoded: &str) -> Result<SpaMessage, Error> {
        let f: Vec<&str> = encoded.split(':').collect();
        if f.len() < 6 {
            return Err(field(Field::FieldCount, "fewer than 6 fields"));
        }
        let random_value = RandomValue::from_digits(f[0])?;
        let username = decode_text(f[1], wire::MAX_USERNAME_B64, Field::Username)?;
        check_username(&username)?;
        let timestamp = parse_decimal(f[2], wire::MAX_TIMESTAMP_LEN)
            .ok_or(field(Field::Timestamp, "must be up to 12 decimal digits"))?;
        check_version(f[3])?;
        let message_type = parse_decimal(f[4], 2)
            .and_then(|t| u8::try_from(t).ok())
            .and_then(MessageType::from_id)
            .ok_or(field(Field::MessageType, "must be 0 to 6"))?;
        let rest = &f[6..];
        let (nat, auth, timeout) = match (message_type.has_nat(), message_type.has_timeout(), rest)
        {
            (false, false, []) => (None, None, None),
            (false, false, [a]) => (None, Some(*a), None),
            (true, false, [n]) => (Some(*n), None, None),
            (true, false, [n, a]) => (Some(*n), Some(*a), None),
            (false, true, [t]) => (None, None, Some(*t)),
            (false, true, [a, t]) => (None, Some(*a), Some(*t)),
            (true, true, [n, t]) => (Some(*n), None, Some(*t)),
            (true, true, [n, a, t]) => (Some(*n), Some(*a), Some(*t)),
            _ => {
                return Err(field(
                    Field::FieldCount,
                    "wrong number of fields for the message type",
                ))
            }
        };
        let message = decode_text(f[5], wire::MAX_B64_FIELD, Field::Message)?;
        let nat_access = nat
            .map(|n| decode_text(n, wire::MAX_B64_FIELD, Field::NatAccess))
            .transpose()?;
        let server_auth = auth
            .map(|a| decode_text(a, wire::MAX_B64_FIELD, Field::ServerAuth))
            .transpose()?;
        let client_timeout = match timeout {
            None => 0,
            Some(t) => parse_decimal(t, 5)
                .and_then(|t| u32::try_from(t).ok())
                .filter(|&t| t <= wire::MAX_CLIENT_TIMEOUT)
                .ok_or(field(Field::ClientTimeout, "must be 0 to 65536"))?,
        };
        let msg = SpaMessage {
            random_value,
            username,
            timestamp,
            version: f[3].to_owned(),
            message_type,
            message,
            nat_access,
            server_auth,
            client_timeout,
        };
        msg.validate()?;
        Ok(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SpaMessage {
        SpaMessage {
            random_value: RandomValue::from_digits("3010134742443322").unwrap(),
            username: "root".into(),
            timestamp: 1795746503,
            version: "3.0.0".into(),
            message_type: MessageType::ClientTimeoutLocalNatAccess,
            message: "10.1.2.3,tcp/22".into(),
            nat_access: Some("127.0.0.1,22".into()),
            server_auth: None,
            client_timeout: 45,
        }
    }

    #[test]
    fn spec_example_round_trips() {
        let e =
            "3010134742443322:cm9vdA:1795746503:3.0.0:6:MTAuMS4yLjMsdGNwLzIy:MTI3LjAuMC4xLDIy:45";
        assert_eq!(sample().encode().unwrap(), e);
        assert_eq!(SpaMessage::parse(e).unwrap(), sample());
    }

    #[test]
    fn server_auth_disambiguation() {
        let mut m = sample();
        m.server_auth = Some("secret".into());
        let e = m.encode().unwrap();
        assert_eq!(SpaMessage::parse(&e).unwrap(), m);
        m.message_type = MessageType::Access;
        m.nat_access = None;
        m.client_timeout = 0;
        let e = m.encode().unwrap();
        assert_eq!(SpaMessage::parse(&e).unwrap(), m);
    }

    #[test]
    fn access_strings() {
        let ok = |s: &str| parse_request(MessageType::Access, s);
        assert!(ok("10.1.2.3,tcp/22,udp/53,tcp/022").is_ok());
        assert!(ok("2001:db8::1,tcp/22").is_ok());
        for bad in [
            "10.1.2.3,tcp/0",
            "10.1.2.3,tcp/65536",
            "10.1.2.3,TCP/22",
            "10.1.2.3,icmp/1",
            "10.1.2.3,none/0",
            "10.1.2.300,tcp/22",
            "10.1.2,tcp/22",
            "010.1.2.3,tcp/22",
            "10.1.2.3,",
            "10.1.2.3,tcp/22,",
            "10.1.2.3",
            "10.1.2.3,tcp/",
            "10.1.2.3,tcp/+22",
        ] {
            assert!(ok(bad).is_err(), "{bad}");
        }
        assert!(parse_request(MessageType::Command, "10.1.2.3,").is_err());
        assert_eq!(
            parse_request(MessageType::Command, "0.0.0.0,echo a,b").unwrap(),
            Request::Command {
                allow: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                command: "echo a,b".into()
            }
        );
    }

    #[test]
    fn nat_strings() {
        assert_eq!(parse_nat("192.168.1.2,22").unwrap().port, 22);
        for bad in [
            "192.168.1.2",
            "a,b,22",
            "h,0",
            "h,65536",
            "a b,22",
            ",22",
            "h,",
        ] {
            assert!(parse_nat(bad).is_err(), "{bad}");
        }
        assert!(parse_nat(&format!("{},22", "h".repeat(71))).is_err());
    }

    #[test]
    fn field_errors() {
        let base = "9813144424737021:Y3JhZnRlZA:1795746964:3.0.0:1:MTAuMS4yLjMsdGNwLzIy";
        assert!(SpaMessage::parse(base).is_ok());
        for bad in [
            "981314442473702:Y3JhZnRlZA:1795746964:3.0.0:1:MTAuMS4yLjMsdGNwLzIy",
            "9813144424737021:!!!!:1795746964:3.0.0:1:MTAuMS4yLjMsdGNwLzIy",
            "9813144424737021:Y3JhZnRlZA:-5:3.0.0:1:MTAuMS4yLjMsdGNwLzIy",
            "9813144424737021:Y3JhZnRlZA:1795746964:3.0.0:7:MTAuMS4yLjMsdGNwLzIy",
            "9813144424737021:Y3JhZnRlZA:1795746964:3.0.0:1:MTAuMS4yLjMsdGNwLzIy:eA:eQ:eg",
            "9813144424737021:Y3JhZnRlZA:1795746964:3.0.0:2:MTAuMS4yLjMsdGNwLzIy",
            "9813144424737021:Y3JhZnRlZA:1795746964::1:MTAuMS4yLjMsdGNwLzIy",
            "9813144424737021:Y3JhZnRlZA:1795746964:3.0.0:3:MTAuMS4yLjMsdGNwLzIy:65537",
            "9813144424737021:Y3JhZnRlZA:1795746964:3.0.0:1",
        ] {
            assert!(SpaMessage::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn random_value_generation_is_16_digits() {
        let mut n = 0u8;
        let r = RandomValue::generate(|b| {
            n = n.wrapping_add(1);
            b.fill(n);
        });
        assert_eq!(r.as_str().len(), 16);
        // An all-0xff draw is above the rejection limit and must be redrawn.
        let mut first = true;
        let r = RandomValue::generate(|b| {
            b.fill(if first { 0xff } else { 0 });
            first = false;
        });
        assert_eq!(r.as_str(), "0000000000000000");
    }
}
