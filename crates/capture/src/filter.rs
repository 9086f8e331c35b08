//! `PCAP_FILTER` / `-P`: the part of the pcap-filter language that fwknopd users write,
//! compiled into the classic BPF program the AF_PACKET socket attaches in the kernel,
//! with the meaning libpcap gives it on a raw-IP link (our `SOCK_DGRAM` packet socket
//! hands the filter the network-layer packet, as libpcap's `DLT_RAW` does).
//!
//! ```text
//!  "udp dst portrange 10000-65535"  ─► tokens ─► Expr ─► Cond (loads and tests) ─► [Insn]
//!                                                  └──► UDP ports it admits (the intake, status)
//! ```
//!
//! Supported: `udp`, `tcp`, `icmp`, `icmp6`, `ip`, `ip6`, `[udp|tcp] [src|dst] port N`,
//! `[udp|tcp] [src|dst] portrange A-B`, `[src|dst] host ADDR`, `[src|dst] net ADDR/LEN`
//! (IPv4 or IPv6), `src|dst ADDR`,
//! combined with `and`/`&&`, `or`/`||`, `not`/`!` and parentheses; a bare value repeats
//! the previous primitive's qualifiers (`udp port 62201 or 62202`). As in libpcap, `and`
//! and `or` have the same precedence and group from the left, `not` binds tightest, a
//! port test on IPv4 skips non-first fragments, and one on IPv6 reads the transport header
//! right after the fixed header; `port N` without a protocol means TCP, UDP or SCTP port N.
//! Host names, service names and everything else of the language (`sctp`, `len`,
//! `udp[8:2]`, ...) are refused with the forms above. (fwknopd takes SPA data from UDP,
//! TCP and ICMP packets its filter admits: `udp port 62201 or tcp port 62201` is the
//! filter of a server that also takes `fwknop -P tcp`.)
//!
//! Nothing here touches a socket: [`Filter::matches`] runs the program in user space
//! exactly as the kernel does (an out-of-packet load rejects), for pcap files and for the
//! check after `recv`.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::RangeInclusive;

/// One classic BPF instruction (`struct sock_filter`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    /// Opcode.
    pub code: u16,
    /// Jump if true (relative).
    pub jt: u8,
    /// Jump if false (relative).
    pub jf: u8,
    /// Constant.
    pub k: u32,
}

// Classic BPF opcodes (the few the compiler emits).
const LD_ABS: u16 = 0x20;
const LDH_ABS: u16 = 0x28;
const LDB_ABS: u16 = 0x30;
const LDH_IND: u16 = 0x48;
const LDXB_MSH: u16 = 0xb1;
const AND_K: u16 = 0x54;
const JA: u16 = 0x05;
const JEQ_K: u16 = 0x15;
const JGT_K: u16 = 0x25;
const JGE_K: u16 = 0x35;
const JSET_K: u16 = 0x45;
const RET_K: u16 = 0x06;

/// What an accepting program returns: the bytes kept (more than any datagram).
const ACCEPT: u32 = 0xffff;
/// The kernel's limit on a classic BPF program (`BPF_MAXINSNS`).
const MAX_INSNS: usize = 4096;

/// The forms the compiler takes, for error messages and documentation.
pub const SUPPORTED: &str = "udp|tcp [src|dst] port N, udp|tcp [src|dst] portrange A-B, \
[src|dst] port N, [src|dst] portrange A-B, udp, tcp, icmp, icmp6, ip, ip6, [src|dst] host ADDR, \
[src|dst] net ADDR/LEN (IPv4 or IPv6), combined with and (&&), or (||), not (!) and parentheses";

/// Why a filter expression is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FilterError {
    /// The expression is empty.
    Empty,
    /// A word or construct outside the supported subset (named).
    Unsupported(String),
    /// The expression does not parse: what was found, and what was expected there.
    Syntax {
        /// The token found (`end of the filter` at the end).
        found: String,
        /// What the grammar wanted.
        expected: &'static str,
    },
    /// A port that is not a decimal number from 1 to 65535.
    BadPort(String),
    /// An address or network that does not parse, or has bits set past its prefix.
    BadAddress(String),
    /// The compiled program is longer than the kernel takes, or jumps too far.
    TooLong,
}

impl fmt::Display for FilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FilterError::Empty => f.write_str("empty filter"),
            FilterError::Unsupported(what) => write!(f, "{what} is not supported"),
            FilterError::Syntax { found, expected } => {
                write!(f, "expected {expected}, found {found}")
            }
            FilterError::BadPort(p) => {
                write!(f, "'{p}' is not a port (a decimal number from 1 to 65535)")
            }
            FilterError::BadAddress(a) => write!(f, "{a}"),
            FilterError::TooLong => {
                f.write_str("the filter compiles to a program too long for the kernel")
            }
        }?;
        write!(f, " (supported: {SUPPORTED})")
    }
}

impl std::error::Error for FilterError {}

/// A compiled filter: the expression, its kernel program and the UDP destination ports it
/// can let through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    text: String,
    program: Vec<Insn>,
    ports: Vec<RangeInclusive<u16>>,
}

impl Filter {
    /// `udp port N`, fwknopd's default form (`udp port 62201`).
    pub fn udp_port(port: u16) -> Filter {
        // A single port always compiles; the fallback only keeps this total.
        compile(&format!("udp port {}", port.max(1))).unwrap_or_else(|_| Filter {
            text: String::new(),
            program: vec![ret(0)],
            ports: Vec::new(),
        })
    }

    /// The expression, blanks collapsed.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The classic BPF program (offsets into the network-layer packet).
    pub fn program(&self) -> &[Insn] {
        &self.program
    }

    /// Whether the program accepts this network-layer packet (run as the kernel runs it).
    pub fn matches(&self, packet: &[u8]) -> bool {
        run(&self.program, packet) != 0
    }

    /// The UDP destination ports a datagram the filter accepts can have, as sorted,
    /// disjoint ranges (empty: none). `port N` counts as destination port N: an SPA
    /// datagram goes *to* the port, although the filter, like libpcap's, also admits
    /// datagrams *from* port N. A test the analysis cannot bound (`not ...`, `src port`,
    /// `host`, `udp`) admits every port.
    pub fn udp_ports(&self) -> &[RangeInclusive<u16>] {
        &self.ports
    }

    /// The one UDP destination port the filter admits, if it admits exactly one (what a
    /// UDP socket would bind and what status shows as the SPA port).
    pub fn single_udp_port(&self) -> Option<u16> {
        match self.ports.as_slice() {
            [r] if r.start() == r.end() => Some(*r.start()),
            _ => None,
        }
    }
}

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Compile a filter expression (see the module documentation for the forms).
pub fn compile(expr: &str) -> Result<Filter, FilterError> {
    let tokens = lex(expr)?;
    if tokens.is_empty() {
        return Err(FilterError::Empty);
    }
    let mut p = Parser {
        tokens,
        at: 0,
        last: None,
    };
    let e = p.expr()?;
    if let Some(t) = p.peek() {
        return Err(FilterError::Syntax {
            found: t.describe(),
            expected: "and, or or the end of the filter",
        });
    }
    let program = codegen(&lower(&e))?;
    Ok(Filter {
        text: expr.split_whitespace().collect::<Vec<_>>().join(" "),
        program,
        ports: normalise(dst_ports(&e)),
    })
}

// ── tokens ────────────────────────────────────────────────────────────────────────

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Word(String),
    Open,
    Close,
    Bang,
    AndAnd,
    OrOr,
}

impl Tok {
    fn describe(&self) -> String {
        match self {
            Tok::Word(w) => format!("'{w}'"),
            Tok::Open => "'('".into(),
            Tok::Close => "')'".into(),
            Tok::Bang => "'!'".into(),
            Tok::AndAnd => "'&&'".into(),
            Tok::OrOr => "'||'".into(),
        }
    }
}

fn lex(s: &str) -> Result<Vec<Tok>, FilterError> {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b' ' | b'\t' | b'\n' | b'\r' => i += 1,
            b'(' => {
                out.push(Tok::Open);
                i += 1;
            }
            b')' => {
                out.push(Tok::Close);
                i += 1;
            }
            b'!' if b.get(i + 1) != Some(&b'=') => {
                out.push(Tok::Bang);
                i += 1;
            }
            b'&' if b.get(i + 1) == Some(&b'&') => {
                out.push(Tok::AndAnd);
                i += 2;
            }
            b'|' if b.get(i + 1) == Some(&b'|') => {
                out.push(Tok::OrOr);
                i += 2;
            }
            c if c.is_ascii_alphanumeric() || matches!(c, b'.' | b':' | b'/' | b'-' | b'_') => {
                let start = i;
                while i < b.len()
                    && (b[i].is_ascii_alphanumeric()
                        || matches!(b[i], b'.' | b':' | b'/' | b'-' | b'_'))
                {
                    i += 1;
                }
                out.push(Tok::Word(s[start..i].to_owned()));
            }
            _ => {
                let ch = s[i..].chars().next().unwrap_or('?');
                let what = match ch {
                    '[' | ']' => "packet indexing (proto[offset:size])".to_owned(),
                    '<' | '>' | '=' | '!' => "comparison (<, >, =, !=)".to_owned(),
                    _ => format!("'{ch}'"),
                };
                return Err(FilterError::Unsupported(what));
            }
        }
    }
    Ok(out)
}

// ── syntax ────────────────────────────────────────────────────────────────────────

/// Direction qualifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    Src,
    Dst,
    Either,
}

/// What a primitive tests (also the qualifiers a bare value inherits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `port` / `portrange`, with the protocol qualifier (`None`: tcp, udp or sctp).
    Port {
        proto: Option<u8>,
        range: bool,
    },
    Host,
    Net,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Prim {
    /// `udp` (17), `tcp` (6), `icmp` (1, IPv4 only), `icmp6` (58, IPv6 only).
    Proto(u8),
    Ip4,
    Ip6,
    Port {
        proto: Option<u8>,
        dir: Dir,
        lo: u16,
        hi: u16,
    },
    Host {
        dir: Dir,
        addr: IpAddr,
    },
    Net {
        dir: Dir,
        addr: IpAddr,
        len: u8,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Expr {
    Prim(Prim),
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
}

struct Parser {
    tokens: Vec<Tok>,
    at: usize,
    /// The qualifiers of the last primitive, for a bare value (`port 1 or 2`).
    last: Option<(Kind, Dir)>,
}

fn word(t: Option<&Tok>) -> Option<&str> {
    match t {
        Some(Tok::Word(w)) => Some(w.as_str()),
        _ => None,
    }
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.tokens.get(self.at)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.tokens.get(self.at).cloned();
        self.at += 1;
        t
    }

    fn found(&self) -> String {
        self.peek()
            .map_or_else(|| "the end of the filter".to_owned(), Tok::describe)
    }

    /// `factor { (and|or) factor }`: one precedence level, grouped from the left.
    fn expr(&mut self) -> Result<Expr, FilterError> {
        let mut left = self.factor()?;
        loop {
            let op = match self.peek() {
                Some(Tok::AndAnd) => true,
                Some(Tok::OrOr) => false,
                Some(Tok::Word(w)) if w == "and" => true,
                Some(Tok::Word(w)) if w == "or" => false,
                _ => return Ok(left),
            };
            self.at += 1;
            let right = self.factor()?;
            left = if op {
                Expr::And(Box::new(left), Box::new(right))
            } else {
                Expr::Or(Box::new(left), Box::new(right))
            };
        }
    }

    fn factor(&mut self) -> Result<Expr, FilterError> {
        match self.peek() {
            Some(Tok::Bang) => {
                self.at += 1;
                Ok(Expr::Not(Box::new(self.factor()?)))
            }
            Some(Tok::Word(w)) if w == "not" => {
                self.at += 1;
                Ok(Expr::Not(Box::new(self.factor()?)))
            }
            Some(Tok::Open) => {
                self.at += 1;
                let e = self.expr()?;
                if self.next() != Some(Tok::Close) {
                    self.at -= 1;
                    return Err(FilterError::Syntax {
                        found: self.found(),
                        expected: "')'",
                    });
                }
                // As in libpcap, qualifiers do not carry past a closing parenthesis.
                self.last = None;
                Ok(e)
            }
            Some(Tok::Word(_)) => self.primitive().map(Expr::Prim),
            _ => Err(FilterError::Syntax {
                found: self.found(),
                expected: "a primitive (udp, port N, host ADDR, ...), not, !, or '('",
            }),
        }
    }

    fn primitive(&mut self) -> Result<Prim, FilterError> {
        let first = word(self.peek()).unwrap_or("").to_owned();
        // The protocol qualifier of a port test (`udp port N`, `tcp port N`).
        let mut qualified: Option<u8> = None;
        match first.as_str() {
            "udp" | "tcp" | "icmp" | "icmp6" => {
                self.at += 1;
                let number = match first.as_str() {
                    "udp" => 17,
                    "tcp" => 6,
                    "icmp" => 1,
                    _ => 58,
                };
                let ported = number == 17 || number == 6;
                if !ported
                    || !matches!(
                        word(self.peek()),
                        Some("src" | "dst" | "port" | "portrange")
                    )
                {
                    // The protocol alone; `udp host ...` is refused as libpcap refuses it.
                    if let Some(w @ ("host" | "net" | "src" | "dst" | "port" | "portrange")) =
                        word(self.peek())
                    {
                        return Err(FilterError::Unsupported(format!(
                            "'{first} {w}' (a protocol qualifier applies to port and portrange of udp and tcp only)"
                        )));
                    }
                    self.last = None;
                    return Ok(Prim::Proto(number));
                }
                qualified = Some(number);
            }
            "ip" | "ip6" => {
                self.at += 1;
                if let Some(w @ ("src" | "dst" | "host" | "net" | "port" | "portrange" | "proto")) =
                    word(self.peek())
                {
                    return Err(FilterError::Unsupported(format!(
                        "'{first} {w}' (write it without '{first}')"
                    )));
                }
                self.last = None;
                return Ok(if first == "ip" { Prim::Ip4 } else { Prim::Ip6 });
            }
            _ => {}
        }
        let mut dir = None;
        if let Some(d @ ("src" | "dst")) = word(self.peek()) {
            dir = Some(if d == "src" { Dir::Src } else { Dir::Dst });
            self.at += 1;
            if word(self.peek()) == Some("or") || word(self.peek()) == Some("and") {
                // `src or dst port N`: libpcap reads a direction pair here.
                return Err(FilterError::Unsupported(
                    "'src or dst' / 'src and dst' as a qualifier (write 'port N' for either direction)".into(),
                ));
            }
        }
        let kind_word = word(self.peek()).map(str::to_owned);
        let kind = match kind_word.as_deref() {
            Some("port") => Some(Kind::Port {
                proto: qualified,
                range: false,
            }),
            Some("portrange") => Some(Kind::Port {
                proto: qualified,
                range: true,
            }),
            Some("host") if qualified.is_none() => Some(Kind::Host),
            Some("net") if qualified.is_none() => Some(Kind::Net),
            _ => None,
        };
        let (kind, dir) = match (kind, dir) {
            (Some(k), d) => {
                self.at += 1;
                (k, d.unwrap_or(Dir::Either))
            }
            // `src ADDR` / `dst ADDR`: host implied.
            (None, Some(d)) if qualified.is_none() => (Kind::Host, d),
            (None, None) if qualified.is_none() && dir.is_none() => {
                // A bare value: the previous primitive's qualifiers.
                let Some(w) = kind_word else {
                    return Err(FilterError::Syntax {
                        found: self.found(),
                        expected: "a primitive",
                    });
                };
                match self.last {
                    Some(q) if looks_like_value(&w) => q,
                    _ => return Err(unsupported_word(&w)),
                }
            }
            _ => {
                return Err(FilterError::Syntax {
                    found: self.found(),
                    expected: if qualified.is_some() {
                        "port or portrange after 'udp'/'tcp'"
                    } else {
                        "port, portrange, host, net or an address after 'src'/'dst'"
                    },
                })
            }
        };
        let Some(Tok::Word(value)) = self.next() else {
            self.at -= 1;
            return Err(FilterError::Syntax {
                found: self.found(),
                expected: match kind {
                    Kind::Port { range: false, .. } => "a port number",
                    Kind::Port { range: true, .. } => "a port range A-B",
                    Kind::Host => "an IPv4 or IPv6 address",
                    Kind::Net => "a network ADDR/LEN",
                },
            });
        };
        self.last = Some((kind, dir));
        match kind {
            Kind::Port { proto, range } => {
                let (lo, hi) = if range {
                    port_range(&value)?
                } else {
                    let p = port(&value)?;
                    (p, p)
                };
                Ok(Prim::Port { proto, dir, lo, hi })
            }
            Kind::Host => Ok(Prim::Host {
                dir,
                addr: host(&value)?,
            }),
            Kind::Net => {
                let (addr, len) = net(&value)?;
                Ok(Prim::Net { dir, addr, len })
            }
        }
    }
}

fn looks_like_value(w: &str) -> bool {
    w.starts_with(|c: char| c.is_ascii_digit()) || w.contains(':')
}

fn unsupported_word(w: &str) -> FilterError {
    let known = [
        "sctp",
        "arp",
        "rarp",
        "ether",
        "len",
        "less",
        "greater",
        "proto",
        "protochain",
        "broadcast",
        "multicast",
        "gateway",
        "vlan",
        "mpls",
        "inbound",
        "outbound",
        "ifname",
        "on",
        "link",
        "igmp",
        "pim",
        "ah",
        "esp",
        "vrrp",
        "decnet",
        "atalk",
        "ipx",
        "iso",
        "wlan",
        "type",
        "subtype",
        "dir",
        "mask",
    ];
    if known.contains(&w) {
        FilterError::Unsupported(format!("'{w}'"))
    } else if w.starts_with(|c: char| c.is_ascii_alphabetic()) && w.contains('.') {
        FilterError::Unsupported(format!("the host name '{w}' (write an address)"))
    } else {
        FilterError::Unsupported(format!("'{w}'"))
    }
}

fn port(s: &str) -> Result<u16, FilterError> {
    let ok = !s.is_empty()
        && s.bytes().all(|c| c.is_ascii_digit())
        && !(s.len() > 1 && s.starts_with('0'));
    if !ok && s.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return Err(FilterError::Unsupported(format!(
            "the service name '{s}' (write the port number)"
        )));
    }
    s.parse::<u16>()
        .ok()
        .filter(|p| ok && *p > 0)
        .ok_or_else(|| FilterError::BadPort(s.to_owned()))
}

fn port_range(s: &str) -> Result<(u16, u16), FilterError> {
    let (a, b) = s
        .split_once('-')
        .ok_or_else(|| FilterError::BadPort(format!("{s}' is not a range A-B; '{s}")))?;
    let (a, b) = (port(a)?, port(b)?);
    // libpcap takes the two ends in either order.
    Ok((a.min(b), a.max(b)))
}

fn host(s: &str) -> Result<IpAddr, FilterError> {
    if s.contains('/') {
        return Err(FilterError::BadAddress(format!(
            "'{s}': a /LEN mask needs 'net' (net {s})"
        )));
    }
    s.parse::<IpAddr>().map_err(|_| {
        if s.starts_with(|c: char| c.is_ascii_alphabetic()) {
            FilterError::Unsupported(format!("the host name '{s}' (write an address)"))
        } else {
            FilterError::BadAddress(format!("'{s}' is not an IPv4 or IPv6 address"))
        }
    })
}

/// `ADDR/LEN`, a full address (all bits), or an abbreviated IPv4 network as libpcap
/// reads it (`10` is 10.0.0.0/8, `10.1` is 10.1.0.0/16, `10.1/16` too).
fn net(s: &str) -> Result<(IpAddr, u8), FilterError> {
    let bad = || FilterError::BadAddress(format!("'{s}' is not a network ADDR/LEN"));
    let (a, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let (addr, max, written) = if a.contains(':') {
        (
            IpAddr::V6(a.parse::<Ipv6Addr>().map_err(|_| bad())?),
            128u8,
            128u8,
        )
    } else {
        let parts: Vec<&str> = a.split('.').collect();
        if parts.is_empty() || parts.len() > 4 {
            return Err(bad());
        }
        let mut o = [0u8; 4];
        for (i, p) in parts.iter().enumerate() {
            if p.is_empty()
                || !p.bytes().all(|c| c.is_ascii_digit())
                || (p.len() > 1 && p.starts_with('0'))
            {
                return Err(bad());
            }
            o[i] = p.parse().map_err(|_| bad())?;
        }
        (IpAddr::V4(Ipv4Addr::from(o)), 32, 8 * parts.len() as u8)
    };
    let len = match len {
        Some(l) => l.parse::<u8>().ok().filter(|l| *l <= max).ok_or_else(bad)?,
        None => written,
    };
    let bits = match addr {
        IpAddr::V4(v) => u128::from(u32::from(v)) << 96,
        IpAddr::V6(v) => u128::from(v),
    };
    let host_bits = bits.checked_shl(u32::from(len)).unwrap_or(0);
    if host_bits != 0 {
        return Err(FilterError::BadAddress(format!(
            "'{s}': bits set past the /{len} prefix"
        )));
    }
    Ok((addr, len))
}

// ── meaning: tests on the packet ──────────────────────────────────────────────────

/// Where a value is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Load {
    Byte(u32),
    Half(u32),
    Word(u32),
    /// A half-word at X + k, X being the IPv4 header length.
    HalfAfterIp4(u32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Gt,
    Ge,
    Set,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Test {
    load: Load,
    mask: Option<u32>,
    op: Op,
    k: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Cond {
    Test(Test),
    And(Box<Cond>, Box<Cond>),
    Or(Box<Cond>, Box<Cond>),
    Not(Box<Cond>),
}

fn t(load: Load, op: Op, k: u32) -> Cond {
    Cond::Test(Test {
        load,
        mask: None,
        op,
        k,
    })
}

fn and(a: Cond, b: Cond) -> Cond {
    Cond::And(Box::new(a), Box::new(b))
}

fn or(a: Cond, b: Cond) -> Cond {
    Cond::Or(Box::new(a), Box::new(b))
}

fn all(v: Vec<Cond>) -> Option<Cond> {
    v.into_iter().reduce(and)
}

fn any(v: Vec<Cond>) -> Option<Cond> {
    v.into_iter().reduce(or)
}

fn version(v: u32) -> Cond {
    Cond::Test(Test {
        load: Load::Byte(0),
        mask: Some(0xf0),
        op: Op::Eq,
        k: v,
    })
}

fn range(load: Load, lo: u16, hi: u16) -> Cond {
    if lo == hi {
        t(load, Op::Eq, u32::from(lo))
    } else {
        and(
            t(load, Op::Ge, u32::from(lo)),
            Cond::Not(Box::new(t(load, Op::Gt, u32::from(hi)))),
        )
    }
}

fn by_dir(dir: Dir, src: Cond, dst: Cond) -> Cond {
    match dir {
        Dir::Src => src,
        Dir::Dst => dst,
        Dir::Either => or(src, dst),
    }
}

/// Masked comparisons of the 32-bit words of an address at `at` (`len` prefix bits).
fn words(at: u32, octets: &[u8], len: u8) -> Option<Cond> {
    let mut v = Vec::new();
    for (i, w) in octets.chunks(4).enumerate() {
        let bits = (u32::from(len)).saturating_sub(32 * i as u32).min(32);
        if bits == 0 {
            continue;
        }
        let value = u32::from_be_bytes([w[0], w[1], w[2], w[3]]);
        let mask = if bits == 32 {
            u32::MAX
        } else {
            !(u32::MAX >> bits)
        };
        v.push(Cond::Test(Test {
            load: Load::Word(at + 4 * i as u32),
            mask: (mask != u32::MAX).then_some(mask),
            op: Op::Eq,
            k: value & mask,
        }));
    }
    all(v)
}

fn address(dir: Dir, addr: IpAddr, len: u8) -> Cond {
    let (ver, src, dst, octets) = match addr {
        IpAddr::V4(a) => (0x40, 12, 16, a.octets().to_vec()),
        IpAddr::V6(a) => (0x60, 8, 24, a.octets().to_vec()),
    };
    match (words(src, &octets, len), words(dst, &octets, len)) {
        (Some(s), Some(d)) => and(version(ver), by_dir(dir, s, d)),
        _ => version(ver),
    }
}

fn lower_prim(p: &Prim) -> Cond {
    match *p {
        Prim::Ip4 => version(0x40),
        Prim::Ip6 => version(0x60),
        Prim::Proto(p) => {
            let p = u32::from(p);
            // As libpcap: the IPv6 next header, or the one after a fragment header.
            let six = and(
                version(0x60),
                or(
                    t(Load::Byte(6), Op::Eq, p),
                    and(t(Load::Byte(6), Op::Eq, 44), t(Load::Byte(40), Op::Eq, p)),
                ),
            );
            let four = and(version(0x40), t(Load::Byte(9), Op::Eq, p));
            match p {
                1 => four,
                58 => six,
                _ => or(four, six),
            }
        }
        Prim::Port { proto, dir, lo, hi } => {
            let one;
            let protos: &[u32] = match proto {
                Some(p) => {
                    one = [u32::from(p)];
                    &one
                }
                None => &[132, 6, 17],
            };
            let proto = |at: u32| {
                any(protos
                    .iter()
                    .map(|&p| t(Load::Byte(at), Op::Eq, p))
                    .collect())
                .unwrap_or_else(|| version(0))
            };
            let six = and(
                and(version(0x60), proto(6)),
                by_dir(
                    dir,
                    range(Load::Half(40), lo, hi),
                    range(Load::Half(42), lo, hi),
                ),
            );
            let four = and(
                and(
                    and(version(0x40), proto(9)),
                    Cond::Not(Box::new(t(Load::Half(6), Op::Set, 0x1fff))),
                ),
                by_dir(
                    dir,
                    range(Load::HalfAfterIp4(0), lo, hi),
                    range(Load::HalfAfterIp4(2), lo, hi),
                ),
            );
            or(six, four)
        }
        Prim::Host { dir, addr } => {
            let len = if addr.is_ipv4() { 32 } else { 128 };
            address(dir, addr, len)
        }
        Prim::Net { dir, addr, len } => address(dir, addr, len),
    }
}

fn lower(e: &Expr) -> Cond {
    match e {
        Expr::Prim(p) => lower_prim(p),
        Expr::Not(a) => Cond::Not(Box::new(lower(a))),
        Expr::And(a, b) => and(lower(a), lower(b)),
        Expr::Or(a, b) => or(lower(a), lower(b)),
    }
}

// ── code generation ───────────────────────────────────────────────────────────────

/// A jump target: a label, resolved to an instruction index at the end.
type Target = usize;

enum Item {
    Plain(Insn),
    Jump {
        code: u16,
        k: u32,
        jt: Target,
        jf: Target,
    },
    Label(usize),
}

struct Gen {
    items: Vec<Item>,
    labels: usize,
    /// What A holds on the fall-through path (`None` after a label: unknown).
    a: Option<(Load, Option<u32>)>,
    /// Whether X holds the IPv4 header length on the fall-through path.
    x: bool,
}

impl Gen {
    fn label(&mut self) -> usize {
        self.labels += 1;
        self.labels - 1
    }

    fn place(&mut self, l: usize) {
        self.items.push(Item::Label(l));
        self.a = None;
        self.x = false;
    }

    fn test(&mut self, test: &Test, jt: Target, jf: Target) {
        if self.a != Some((test.load, test.mask)) {
            let (code, k) = match test.load {
                Load::Byte(k) => (LDB_ABS, k),
                Load::Half(k) => (LDH_ABS, k),
                Load::Word(k) => (LD_ABS, k),
                Load::HalfAfterIp4(k) => {
                    if !self.x {
                        self.items.push(Item::Plain(insn(LDXB_MSH, 0, 0, 0)));
                        self.x = true;
                    }
                    (LDH_IND, k)
                }
            };
            self.items.push(Item::Plain(insn(code, 0, 0, k)));
            if let Some(m) = test.mask {
                self.items.push(Item::Plain(insn(AND_K, 0, 0, m)));
            }
            self.a = Some((test.load, test.mask));
        }
        let code = match test.op {
            Op::Eq => JEQ_K,
            Op::Gt => JGT_K,
            Op::Ge => JGE_K,
            Op::Set => JSET_K,
        };
        self.items.push(Item::Jump {
            code,
            k: test.k,
            jt,
            jf,
        });
    }

    /// Code that goes to `yes` when `c` holds and to `no` when it does not.
    fn cond(&mut self, c: &Cond, yes: Target, no: Target) {
        match c {
            Cond::Test(test) => self.test(test, yes, no),
            Cond::Not(a) => self.cond(a, no, yes),
            Cond::And(a, b) => {
                let m = self.label();
                self.cond(a, m, no);
                self.place(m);
                self.cond(b, yes, no);
            }
            Cond::Or(a, b) => {
                let m = self.label();
                self.cond(a, yes, m);
                self.place(m);
                self.cond(b, yes, no);
            }
        }
    }
}

const fn insn(code: u16, jt: u8, jf: u8, k: u32) -> Insn {
    Insn { code, jt, jf, k }
}

fn ret(k: u32) -> Insn {
    insn(RET_K, 0, 0, k)
}

fn codegen(c: &Cond) -> Result<Vec<Insn>, FilterError> {
    let mut g = Gen {
        items: Vec::new(),
        labels: 0,
        a: None,
        x: false,
    };
    let (yes, no) = (g.label(), g.label());
    g.cond(c, yes, no);
    // Every path ends in a jump to one of the two; `yes` comes first.
    g.place(yes);
    g.items.push(Item::Plain(ret(ACCEPT)));
    g.place(no);
    g.items.push(Item::Plain(ret(0)));
    // Resolve labels to instruction indexes.
    let mut at = vec![0usize; g.labels];
    let mut n = 0;
    for it in &g.items {
        match it {
            Item::Label(l) => at[*l] = n,
            _ => n += 1,
        }
    }
    if n > MAX_INSNS {
        return Err(FilterError::TooLong);
    }
    let mut out = Vec::with_capacity(n);
    for it in &g.items {
        match it {
            Item::Label(_) => {}
            Item::Plain(i) => out.push(*i),
            Item::Jump { code, k, jt, jf } => {
                let here = out.len() + 1;
                let off = |l: &Target| -> Result<u8, FilterError> {
                    at[*l]
                        .checked_sub(here)
                        .and_then(|d| u8::try_from(d).ok())
                        .ok_or(FilterError::TooLong)
                };
                out.push(insn(*code, off(jt)?, off(jf)?, *k));
            }
        }
    }
    Ok(out)
}

/// Run a classic BPF program over `pkt` as the kernel does: loads past the end reject.
pub fn run(prog: &[Insn], pkt: &[u8]) -> u32 {
    let (mut a, mut x, mut pc) = (0u32, 0u32, 0usize);
    let get = |at: u32, n: usize| -> Option<u32> {
        let at = usize::try_from(at).ok()?;
        let b = pkt.get(at..at.checked_add(n)?)?;
        Some(b.iter().fold(0u32, |v, &c| (v << 8) | u32::from(c)))
    };
    // Every jump is forward and bounded, so this ends within prog.len() steps.
    while let Some(i) = prog.get(pc) {
        pc += 1;
        let jump = |cond: bool| usize::from(if cond { i.jt } else { i.jf });
        match i.code {
            LD_ABS | LDH_ABS | LDB_ABS => {
                let n = match i.code {
                    LD_ABS => 4,
                    LDH_ABS => 2,
                    _ => 1,
                };
                match get(i.k, n) {
                    Some(v) => a = v,
                    None => return 0,
                }
            }
            LDH_IND => match x.checked_add(i.k).and_then(|at| get(at, 2)) {
                Some(v) => a = v,
                None => return 0,
            },
            LDXB_MSH => match get(i.k, 1) {
                Some(v) => x = (v & 0xf) * 4,
                None => return 0,
            },
            AND_K => a &= i.k,
            JA => pc += i.k as usize,
            JEQ_K => pc += jump(a == i.k),
            JGT_K => pc += jump(a > i.k),
            JGE_K => pc += jump(a >= i.k),
            JSET_K => pc += jump(a & i.k != 0),
            RET_K => return i.k,
            _ => return 0,
        }
    }
    0
}

// ── which UDP destination ports get through ───────────────────────────────────────

type Ranges = Vec<(u16, u16)>;

fn every() -> Ranges {
    vec![(0, u16::MAX)]
}

fn dst_ports(e: &Expr) -> Ranges {
    match e {
        // A test that only TCP or ICMP passes admits no UDP datagram.
        Expr::Prim(Prim::Port { proto: Some(p), .. } | Prim::Proto(p)) if *p != 17 => Vec::new(),
        Expr::Prim(Prim::Port {
            dir: Dir::Dst | Dir::Either,
            lo,
            hi,
            ..
        }) => vec![(*lo, *hi)],
        Expr::Prim(_) | Expr::Not(_) => every(),
        Expr::And(a, b) => intersect(&normalise_raw(dst_ports(a)), &normalise_raw(dst_ports(b))),
        Expr::Or(a, b) => {
            let mut v = dst_ports(a);
            v.extend(dst_ports(b));
            normalise_raw(v)
        }
    }
}

fn normalise_raw(mut v: Ranges) -> Ranges {
    v.sort_unstable();
    let mut out: Ranges = Vec::new();
    for (lo, hi) in v {
        match out.last_mut() {
            Some((_, h)) if u32::from(lo) <= u32::from(*h) + 1 => *h = (*h).max(hi),
            _ => out.push((lo, hi)),
        }
    }
    out
}

fn intersect(a: &Ranges, b: &Ranges) -> Ranges {
    let mut out = Vec::new();
    for &(al, ah) in a {
        for &(bl, bh) in b {
            let (lo, hi) = (al.max(bl), ah.min(bh));
            if lo <= hi {
                out.push((lo, hi));
            }
        }
    }
    normalise_raw(out)
}

fn normalise(v: Ranges) -> Vec<RangeInclusive<u16>> {
    normalise_raw(v).into_iter().map(|(l, h)| l..=h).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::build_ipv4_udp;

    fn v4(src: &str, dst: &str) -> Vec<u8> {
        build_ipv4_udp(src.parse().unwrap(), dst.parse().unwrap(), b"x")
    }

    fn v6(src: &str, dst: &str, sport: u16, dport: u16) -> Vec<u8> {
        let mut p = vec![0x60, 0, 0, 0, 0, 9, 17, 64];
        p.extend_from_slice(&src.parse::<Ipv6Addr>().unwrap().octets());
        p.extend_from_slice(&dst.parse::<Ipv6Addr>().unwrap().octets());
        p.extend_from_slice(&sport.to_be_bytes());
        p.extend_from_slice(&dport.to_be_bytes());
        p.extend_from_slice(&[0, 9, 0, 0, b'x']);
        p
    }

    fn m(expr: &str, pkt: &[u8]) -> bool {
        compile(expr).unwrap().matches(pkt)
    }

    #[test]
    fn udp_port_is_the_default_form() {
        let f = Filter::udp_port(62201);
        assert_eq!(f.text(), "udp port 62201");
        assert_eq!(f.single_udp_port(), Some(62201));
        assert!(f.matches(&v4("198.18.1.2:5", "198.18.1.1:62201")));
        assert!(!f.matches(&v4("198.18.1.2:5", "198.18.1.1:53")));
        assert!(f.matches(&v6("2001:db8::2", "2001:db8::1", 5, 62201)));
        let mut tcp = v4("198.18.1.2:5", "198.18.1.1:62201");
        tcp[9] = 6;
        assert!(!f.matches(&tcp));
        let mut frag = v4("198.18.1.2:5", "198.18.1.1:62201");
        frag[7] = 1;
        assert!(
            !f.matches(&frag),
            "a non-first fragment carries no UDP header"
        );
        let mut opts = v4("198.18.1.2:5", "198.18.1.1:62201");
        opts[0] = 0x46;
        opts.splice(20..20, [0u8; 4]);
        assert!(f.matches(&opts), "IPv4 options move the UDP header");
        assert!(!f.matches(&[0x45]), "a load past the end rejects");
        assert!(!f.matches(&[]));
    }

    #[test]
    fn forms_and_precedence() {
        let p = v4("198.18.1.2:40000", "198.18.1.1:20000");
        assert!(m("udp dst portrange 10000-65535", &p));
        assert!(!m("udp src portrange 10000-20000 and dst port 1", &p));
        assert!(m("udp portrange 65535-10000", &p), "ends in either order");
        assert!(m("src host 198.18.1.2 && dst net 198.18.0.0/15", &p));
        assert!(!m("!(udp)", &p));
        assert!(
            m("udp port 1 or 20000", &p),
            "a bare value repeats the qualifiers"
        );
        assert!(m("src 198.18.1.2", &p));
        assert!(m("net 198.18", &p));
        assert!(m("net 0.0.0.0/0", &p));
        assert!(!m("ip6", &p));
        // `and` and `or` group from the left: (ip6 or ip) and not udp.
        assert!(!m("ip6 or ip and not udp", &p));
        assert!(m("not udp or ip", &p));
    }

    #[test]
    fn ports_for_the_intake() {
        let ports = |e: &str| compile(e).unwrap().udp_ports().to_vec();
        assert_eq!(ports("udp dst port 40000"), vec![40000..=40000]);
        assert_eq!(ports("udp dst portrange 10000-65535"), vec![10000..=65535]);
        assert_eq!(ports("udp port 1 or 2 or 3"), vec![1..=3]);
        assert_eq!(ports("udp and host 198.18.0.1"), vec![0..=65535]);
        assert_eq!(ports("udp port 5 and src host 198.18.0.1"), vec![5..=5]);
        assert_eq!(ports("udp port 5 and udp port 6"), vec![]);
        assert_eq!(compile("udp port 1 or 2").unwrap().single_udp_port(), None);
        // TCP and ICMP admit no UDP datagram: the SPA port of a TCP-server filter.
        assert_eq!(
            ports("udp port 62201 or tcp port 62201"),
            vec![62201..=62201]
        );
        assert_eq!(ports("tcp port 80"), vec![]);
        assert_eq!(ports("icmp or tcp"), vec![]);
        assert_eq!(ports("port 80"), vec![80..=80]);
    }

    #[test]
    fn refusals_name_the_supported_forms() {
        for (e, want) in [
            ("", "empty filter"),
            ("sctp port 22", "'sctp' is not supported"),
            ("tcp host 198.18.0.1", "'tcp host'"),
            ("icmp port 5", "'icmp port'"),
            ("udp port domain", "service name 'domain'"),
            ("udp port 0", "'0' is not a port"),
            ("udp port 70000", "'70000' is not a port"),
            ("udp port 010", "'010' is not a port"),
            ("host example.org", "host name 'example.org'"),
            ("udp host 198.18.0.1", "'udp host'"),
            ("net 198.18.0.1/15", "bits set past the /15 prefix"),
            ("host 198.18.0.0/15", "needs 'net'"),
            ("udp[8:2] = 1", "packet indexing"),
            ("udp port 1 and", "found the end of the filter"),
            ("(udp port 1", "expected ')'"),
            ("(udp port 1) or 2", "'2' is not supported"),
            ("udp or 5", "'5' is not supported"),
            ("src or dst port 5", "'src or dst'"),
            ("udp port", "expected a port number"),
        ] {
            let err = compile(e).unwrap_err().to_string();
            assert!(err.contains(want), "{e}: {err}");
            assert!(
                err.contains("(supported: udp|tcp [src|dst] port N"),
                "{e}: {err}"
            );
        }
    }

    /// Any sequence of the language's words compiles or is refused, never panics, and a
    /// program that compiles runs on any bytes.
    #[test]
    fn total_on_word_soup() {
        let words = [
            "udp",
            "tcp",
            "icmp",
            "icmp6",
            "port",
            "portrange",
            "host",
            "net",
            "src",
            "dst",
            "and",
            "or",
            "not",
            "!",
            "(",
            ")",
            "&&",
            "||",
            "62201",
            "1-2",
            "10.0.0.0/8",
            "::1",
            "2001:db8::/32",
            "ip",
            "ip6",
            "0",
            "65536",
            "198.18.0.1",
            "x",
        ];
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..20_000 {
            let n = (next() % 9) as usize;
            let e: Vec<&str> = (0..n)
                .map(|_| words[(next() % words.len() as u64) as usize])
                .collect();
            if let Ok(f) = compile(&e.join(" ")) {
                let len = (next() % 80) as usize;
                let pkt: Vec<u8> = (0..len).map(|_| next() as u8).collect();
                let _ = f.matches(&pkt);
                let _ = f.single_udp_port();
            }
        }
    }

    #[test]
    fn long_filters_are_refused_not_miscompiled() {
        let many: Vec<String> = (1..=200).map(|i| format!("host 198.18.0.{i}")).collect();
        let e = many.join(" or ");
        match compile(&e) {
            Ok(f) => assert!(f.matches(&v4("198.18.0.77:1", "198.18.1.1:2"))),
            Err(err) => assert_eq!(err, FilterError::TooLong),
        }
    }
}
