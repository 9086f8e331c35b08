//! Parsing IP packets into [`Datagram`]s: IPv4 (no fragments) and IPv6 (UDP directly
//! after the fixed header), UDP only. Total: any byte string gives `None` or a datagram.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// One received SPA candidate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    /// Source address and port.
    pub src: SocketAddr,
    /// Destination address and port (`0.0.0.0:port` when the intake cannot know it).
    pub dst: SocketAddr,
    /// The UDP payload.
    pub payload: Vec<u8>,
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// Parse a network-layer packet; `Some` only for UDP to `port` (any port with `None`).
pub fn parse_ip(pkt: &[u8], port: Option<u16>) -> Option<Datagram> {
    let version = pkt.first()? >> 4;
    let (src, dst, l4) = match version {
        4 => {
            let ihl = usize::from(pkt[0] & 0x0f) * 4;
            if ihl < 20 || pkt.len() < ihl || *pkt.get(9)? != 17 {
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
                &pkt[ihl..total],
            )
        }
        6 => {
            if pkt.len() < 40 || pkt[6] != 17 {
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
                &pkt[40..40 + plen],
            )
        }
        _ => return None,
    };
    let sport = be16(l4, 0)?;
    let dport = be16(l4, 2)?;
    let ulen = usize::from(be16(l4, 4)?);
    if ulen < 8 || ulen > l4.len() || port.is_some_and(|p| p != dport) {
        return None;
    }
    Some(Datagram {
        src: SocketAddr::new(src, sport),
        dst: SocketAddr::new(dst, dport),
        payload: l4[8..ulen].to_vec(),
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
