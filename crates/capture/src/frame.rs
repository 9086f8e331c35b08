//! Parsing IP packets into [`Datagram`]s: IPv4 (no fragments) and IPv6 (the transport
//! header directly after the fixed header); the payload of UDP, of TCP (one segment, as
//! fwknopd takes it from pcap: no reassembly, segments without data skipped) and of ICMP
//! and ICMPv6 (after the 8-byte header; ports 0). Total: any byte string gives `None` or
//! a datagram.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// One received SPA candidate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    /// Source address and port.
    pub src: SocketAddr,
    /// Destination address and port (`0.0.0.0:port` when the intake cannot know it).
    pub dst: SocketAddr,
    /// The IP protocol it came over: 17 (UDP), 6 (TCP), 1 (ICMP) or 58 (ICMPv6).
    pub proto: u8,
    /// The UDP payload (or TCP segment data, or ICMP data).
    pub payload: Vec<u8>,
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// IP protocol numbers of the transports SPA data is taken from.
pub const ICMP: u8 = 1;
/// TCP.
pub const TCP: u8 = 6;
/// UDP.
pub const UDP: u8 = 17;
/// ICMPv6.
pub const ICMPV6: u8 = 58;

/// Parse a network-layer packet; `Some` for UDP, TCP with data, ICMP and ICMPv6, and
/// with `port` only for UDP or TCP to that port.
pub fn parse_ip(pkt: &[u8], port: Option<u16>) -> Option<Datagram> {
    let version = pkt.first()? >> 4;
    let (src, dst, proto, l4) = match version {
        4 => {
            let ihl = usize::from(pkt[0] & 0x0f) * 4;
            let proto = *pkt.get(9)?;
            if ihl < 20 || pkt.len() < ihl || !matches!(proto, UDP | TCP | ICMP) {
                return None;
            }
            if be16(pkt, 6)? & 0x3fff != 0 {
                return None; // fragment (MF set or non-zero offset)
            }
            let total = usize::from(be16(pkt, 2)?);
            if total < ihl || total > pkt.len() {
                return None;
            }
            let s: [u8; 4] = pkt[12..16].try_into().ok()?;
            let d: [u8; 4] = pkt[16..20].try_into().ok()?;
            (
                IpAddr::V4(Ipv4Addr::from(s)),
                IpAddr::V4(Ipv4Addr::from(d)),
                proto,
                &pkt[ihl..total],
            )
        }
        6 => {
            if pkt.len() < 40 || !matches!(pkt[6], UDP | TCP | ICMPV6) {
                return None;
            }
            let plen = usize::from(be16(pkt, 4)?);
            if 40 + plen > pkt.len() {
                return None;
            }
            let s: [u8; 16] = pkt[8..24].try_into().ok()?;
            let d: [u8; 16] = pkt[24..40].try_into().ok()?;
            (
                IpAddr::V6(Ipv6Addr::from(s)),
                IpAddr::V6(Ipv6Addr::from(d)),
                pkt[6],
                &pkt[40..40 + plen],
            )
        }
        _ => return None,
    };
    let (sport, dport, data) = match proto {
        UDP => {
            let ulen = usize::from(be16(l4, 4)?);
            if ulen < 8 || ulen > l4.len() {
                return None;
            }
            (be16(l4, 0)?, be16(l4, 2)?, &l4[8..ulen])
        }
        TCP => {
            let off = usize::from(*l4.get(12)? >> 4) * 4;
            if off < 20 || off >= l4.len() {
                return None; // no data: the handshake, acknowledgements, the close
            }
            (be16(l4, 0)?, be16(l4, 2)?, &l4[off..])
        }
        _ => {
            if l4.len() <= 8 || port.is_some() {
                return None;
            }
            (0, 0, &l4[8..])
        }
    };
    if port.is_some_and(|p| p != dport) {
        return None;
    }
    Some(Datagram {
        src: SocketAddr::new(src, sport),
        dst: SocketAddr::new(dst, dport),
        proto,
        payload: data.to_vec(),
    })
}

/// Build an IPv4/UDP packet (checksum zero); for tests and tools.
pub fn build_ipv4_udp(src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let (IpAddr::V4(s), IpAddr::V4(d)) = (src.ip(), dst.ip()) else {
        return Vec::new();
    };
    let total = (20 + 8 + payload.len()) as u16;
    let mut p = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0];
    p[2..4].copy_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&s.octets());
    p.extend_from_slice(&d.octets());
    p.extend_from_slice(&src.port().to_be_bytes());
    p.extend_from_slice(&dst.port().to_be_bytes());
    p.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(payload);
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_udp() {
        let s: SocketAddr = "198.18.1.2:40000".parse().unwrap();
        let d: SocketAddr = "198.18.1.1:62201".parse().unwrap();
        let p = build_ipv4_udp(s, d, b"hello");
        let g = parse_ip(&p, Some(62201)).unwrap();
        assert_eq!((g.src, g.dst, g.payload.as_slice()), (s, d, &b"hello"[..]));
        assert!(parse_ip(&p, Some(1)).is_none());
        let mut frag = p.clone();
        frag[6] = 0x20; // MF
        assert!(parse_ip(&frag, None).is_none());
        for n in 0..p.len() {
            let _ = parse_ip(&p[..n], None);
        }
    }

    #[test]
    fn tcp_data_and_icmp() {
        let s: SocketAddr = "198.18.1.2:40000".parse().unwrap();
        let d: SocketAddr = "198.18.1.1:62201".parse().unwrap();
        let mut p = build_ipv4_udp(s, d, b"");
        p.truncate(20);
        p[9] = 6;
        // TCP header with 4 bytes of options (data offset 6), then data.
        p.extend_from_slice(&[0x9c, 0x40, 0xf2, 0xf9, 0, 0, 0, 1, 0, 0, 0, 0, 0x60, 0x18]);
        p.extend_from_slice(&[0xff, 0xff, 0, 0, 0, 0, 1, 1, 1, 1]);
        let handshake = {
            let mut h = p.clone();
            let n = h.len() as u16;
            h[2..4].copy_from_slice(&n.to_be_bytes());
            h
        };
        assert!(parse_ip(&handshake, None).is_none(), "no data, no datagram");
        p.extend_from_slice(b"hello");
        let n = p.len() as u16;
        p[2..4].copy_from_slice(&n.to_be_bytes());
        let g = parse_ip(&p, Some(62201)).unwrap();
        assert_eq!((g.src, g.dst, g.payload.as_slice()), (s, d, &b"hello"[..]));
        assert_eq!(g.proto, TCP);
        assert!(parse_ip(&p, Some(62202)).is_none());
        for n in 0..p.len() {
            let _ = parse_ip(&p[..n], None);
        }
        let mut icmp = p[..20].to_vec();
        icmp[9] = 1;
        icmp.extend_from_slice(&[8, 0, 0, 0, 0, 1, 0, 1]);
        icmp.extend_from_slice(b"spa");
        let n = icmp.len() as u16;
        icmp[2..4].copy_from_slice(&n.to_be_bytes());
        let g = parse_ip(&icmp, None).unwrap();
        assert_eq!((g.src.port(), g.payload.as_slice()), (0, &b"spa"[..]));
        assert!(parse_ip(&icmp, Some(62201)).is_none(), "ICMP has no port");
        icmp[9] = 132; // SCTP
        assert!(parse_ip(&icmp, None).is_none());
    }

    #[test]
    fn ipv6_udp() {
        let mut p = vec![0x60, 0, 0, 0, 0, 13, 17, 64];
        p.extend_from_slice(&"2001:db8::2".parse::<Ipv6Addr>().unwrap().octets());
        p.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        p.extend_from_slice(&[0x9c, 0x40, 0xf2, 0xf9, 0, 13, 0, 0]);
        p.extend_from_slice(b"hello");
        let g = parse_ip(&p, Some(62201)).unwrap();
        assert_eq!(g.src.to_string(), "[2001:db8::2]:40000");
        assert_eq!(g.payload, b"hello");
    }
}
