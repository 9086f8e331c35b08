//! Raw transports (`-P udpraw|tcpraw|icmp`, optionally with `-Q` to spoof the source):
//! the SPA packet in one IPv4 datagram built here, IP header included, sent on a raw
//! socket (needs root). The datagram looks like fwknop's: TTL 255, no fragmentation
//! flags, a random IP id; TCP is a lone SYN segment (sequence 1, window 32767) carrying
//! the packet; ICMP defaults to an echo reply (type 0, code 0, id and sequence 0).
//! Unlike fwknop, the UDP and TCP checksums are filled in.
//!
//! ```text
//!  wire ─► build(transport, src, dst, ports, icmp) ─► IPv4 | UDP/TCP/ICMP | wire
//!       ─► socket(AF_INET, SOCK_RAW, IPPROTO_RAW).send_to(dst)
//! ```

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::knock::{random, random_port};
use crate::plan::{Fail, Plan, Transport};

const TTL: u8 = 255;
const TCP_SYN: u8 = 0x02;
const TCP_WINDOW: u16 = 32767;

/// The ones'-complement sum of 16-bit words, folded (RFC 1071).
fn sum(data: &[u8], mut acc: u32) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for w in &mut chunks {
        acc += u32::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = chunks.remainder() {
        acc += u32::from(*last) << 8;
    }
    acc
}

fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// One raw datagram: header fields as fwknop sets them.
#[derive(Debug, Clone, Copy)]
pub struct Datagram {
    /// udpraw, tcpraw or icmp.
    pub transport: Transport,
    /// IP source (the real one, or `-Q`).
    pub src: Ipv4Addr,
    /// IP destination.
    pub dst: Ipv4Addr,
    /// UDP/TCP source port.
    pub sport: u16,
    /// UDP/TCP destination port.
    pub dport: u16,
    /// ICMP type and code.
    pub icmp: (u8, u8),
    /// The IP identification field.
    pub id: u16,
}

/// Build the whole IPv4 datagram carrying `payload`.
pub fn build(d: &Datagram, payload: &[u8]) -> Vec<u8> {
    let (proto, mut l4) = match d.transport {
        Transport::TcpRaw => {
            let mut h = Vec::with_capacity(20 + payload.len());
            h.extend_from_slice(&d.sport.to_be_bytes());
            h.extend_from_slice(&d.dport.to_be_bytes());
            h.extend_from_slice(&1u32.to_be_bytes()); // sequence
            h.extend_from_slice(&0u32.to_be_bytes()); // acknowledgement
            h.push(5 << 4); // data offset: 20 bytes, no options
            h.push(TCP_SYN);
            h.extend_from_slice(&TCP_WINDOW.to_be_bytes());
            h.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
            (6u8, h)
        }
        Transport::Icmp => {
            let mut h = vec![d.icmp.0, d.icmp.1, 0, 0, 0, 0, 0, 0];
            h.reserve(payload.len());
            (1u8, h)
        }
        _ => {
            let mut h = Vec::with_capacity(8 + payload.len());
            h.extend_from_slice(&d.sport.to_be_bytes());
            h.extend_from_slice(&d.dport.to_be_bytes());
            h.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
            h.extend_from_slice(&[0, 0]);
            (17u8, h)
        }
    };
    l4.extend_from_slice(payload);
    let check_at = match proto {
        6 => 16,
        1 => 2,
        _ => 6,
    };
    let check = if proto == 1 {
        fold(sum(&l4, 0))
    } else {
        let mut pseudo = Vec::with_capacity(12);
        pseudo.extend_from_slice(&d.src.octets());
        pseudo.extend_from_slice(&d.dst.octets());
        pseudo.extend_from_slice(&[0, proto]);
        pseudo.extend_from_slice(&(l4.len() as u16).to_be_bytes());
        match fold(sum(&l4, sum(&pseudo, 0))) {
            // A UDP checksum of zero means "none"; all ones is the same value.
            0 if proto == 17 => 0xffff,
            c => c,
        }
    };
    l4[check_at..check_at + 2].copy_from_slice(&check.to_be_bytes());
    let total = (20 + l4.len()) as u16;
    let mut ip = Vec::with_capacity(total.into());
    ip.extend_from_slice(&[0x45, 0]);
    ip.extend_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&d.id.to_be_bytes());
    ip.extend_from_slice(&[0, 0, TTL, proto, 0, 0]);
    ip.extend_from_slice(&d.src.octets());
    ip.extend_from_slice(&d.dst.octets());
    let ck = fold(sum(&ip, 0));
    ip[10..12].copy_from_slice(&ck.to_be_bytes());
    ip.extend_from_slice(&l4);
    ip
}

/// The source address the kernel would use towards `dst` (nothing is sent).
fn local_source(dst: Ipv4Addr, port: u16) -> Result<Ipv4Addr, Fail> {
    let route = || -> std::io::Result<SocketAddr> {
        let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
        s.connect((dst, port.max(1)))?;
        s.local_addr()
    };
    match route() {
        Ok(SocketAddr::V4(a)) => Ok(*a.ip()),
        Ok(other) => Err(Fail(format!(
            "no IPv4 source address towards {dst} ({other})"
        ))),
        Err(e) => Err(Fail(format!("no route to {dst}: {e}"))),
    }
}

/// Send `wire` as the plan's raw transport to `server`:`port`.
pub fn send(plan: &Plan, server: &str, port: u16, wire: &str) -> Result<String, Fail> {
    let name = plan.transport.name();
    let dst = match crate::send::server_addr(server, port, true)?.ip() {
        IpAddr::V4(v4) => v4,
        IpAddr::V6(_) => return Err(Fail(format!("-P/--server-proto: {name} sends IPv4 only"))),
    };
    let src = match plan.spoof_source {
        Some(s) => s,
        None => local_source(dst, port)?,
    };
    let mut id = [0u8; 2];
    random(&mut id);
    let d = Datagram {
        transport: plan.transport,
        src,
        dst,
        sport: plan.source_port.unwrap_or_else(random_port),
        dport: port,
        icmp: plan.icmp,
        id: u16::from_be_bytes(id),
    };
    let datagram = build(&d, wire.as_bytes());
    let sock = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(255))).map_err(|e| {
        Fail(format!(
            "-P/--server-proto: {name} needs a raw socket (root): {e}"
        ))
    })?;
    let n = sock
        .send_to(&datagram, &SockAddr::from(SocketAddrV4::new(dst, 0)))
        .map_err(|e| Fail(format!("cannot send to {dst}: {e}")))?;
    if n != datagram.len() {
        return Err(Fail(format!(
            "sent only {n} of {} bytes to {dst}",
            datagram.len()
        )));
    }
    let from = if plan.spoof_source.is_some() {
        format!(" from {src} (spoofed)")
    } else {
        String::new()
    };
    Ok(format!(
        "sent {} bytes over {name} to {dst}:{port}{from}",
        wire.len()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(transport: Transport) -> Datagram {
        Datagram {
            transport,
            src: Ipv4Addr::new(198, 18, 5, 77),
            dst: Ipv4Addr::new(198, 18, 5, 1),
            sport: 4000,
            dport: 62201,
            icmp: (8, 3),
            id: 0x1234,
        }
    }

    /// Every header and checksum verifies: the folded sum over it is zero.
    fn verifies(data: &[u8], init: u32) -> bool {
        fold(sum(data, init)) == 0
    }

    #[test]
    fn datagrams_look_like_fwknops_and_check_out() {
        let payload = b"8R9bqg32kB8pDOEXHnHQZ5jcsf";
        for t in [Transport::UdpRaw, Transport::TcpRaw, Transport::Icmp] {
            let p = build(&d(t), payload);
            assert_eq!(&p[..2], &[0x45, 0]);
            assert_eq!(usize::from(u16::from_be_bytes([p[2], p[3]])), p.len());
            assert_eq!(&p[4..9], &[0x12, 0x34, 0, 0, 255]);
            assert_eq!(&p[12..16], &[198, 18, 5, 77]);
            assert!(verifies(&p[..20], 0), "{t:?} IP checksum");
            assert!(p.ends_with(payload));
            let l4 = &p[20..];
            let proto = p[9];
            let mut pseudo = vec![];
            pseudo.extend_from_slice(&p[12..20]);
            pseudo.extend_from_slice(&[0, proto]);
            pseudo.extend_from_slice(&(l4.len() as u16).to_be_bytes());
            match t {
                Transport::UdpRaw => {
                    assert_eq!(proto, 17);
                    assert_eq!(&l4[..4], &[0x0f, 0xa0, 0xf2, 0xf9]);
                    assert!(verifies(l4, sum(&pseudo, 0)));
                }
                Transport::TcpRaw => {
                    assert_eq!(proto, 6);
                    assert_eq!(&l4[4..8], &[0, 0, 0, 1], "sequence 1");
                    assert_eq!(&l4[12..16], &[0x50, 0x02, 0x7f, 0xff], "SYN, window");
                    assert!(verifies(l4, sum(&pseudo, 0)));
                }
                _ => {
                    assert_eq!(proto, 1);
                    assert_eq!(&l4[..2], &[8, 3]);
                    assert!(verifies(l4, 0));
                }
            }
        }
    }
}
