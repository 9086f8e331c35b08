//! Reading SPA candidates from a pcap capture file (`--pcap-file`): the classic pcap
//! format in either byte order, microsecond or nanosecond timestamps, with Ethernet
//! (with VLAN tags), Linux cooked (SLL, SLL2) or raw IP link types. Pure and total.

use crate::frame::{parse_ip, Datagram};

/// Why a capture file cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// Not a pcap file (bad magic), or a pcapng file.
    NotPcap,
    /// A link type this reader does not know.
    LinkType(u32),
    /// The file ends inside a header or record.
    Truncated,
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::NotPcap => f.write_str(
                "not a pcap capture file (pcapng is not supported; convert with editcap -F pcap)",
            ),
            Error::LinkType(t) => write!(f, "unsupported link type {t}"),
            Error::Truncated => f.write_str("capture file is truncated"),
        }
    }
}

impl std::error::Error for Error {}

fn network_layer(link: u32, frame: &[u8]) -> Option<&[u8]> {
    match link {
        1 => {
            let mut off = 12;
            let mut ethertype = u16::from_be_bytes([*frame.get(off)?, *frame.get(off + 1)?]);
            while ethertype == 0x8100 || ethertype == 0x88a8 {
                off += 4;
                ethertype = u16::from_be_bytes([*frame.get(off)?, *frame.get(off + 1)?]);
            }
            frame.get(off + 2..)
        }
        113 => frame.get(16..),
        276 => frame.get(20..),
        12 | 101 | 228 | 229 => Some(frame),
        _ => None,
    }
}

/// Every UDP datagram to `port` (any port with `None`) in the capture, with its capture
/// time in seconds.
pub fn read(bytes: &[u8], port: Option<u16>) -> Result<Vec<(u64, Datagram)>, Error> {
    let magic = bytes.get(..4).ok_or(Error::Truncated)?;
    let le = match magic {
        [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => true,
        [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => false,
        _ => return Err(Error::NotPcap),
    };
    let u32_at = |at: usize| -> Result<u32, Error> {
        let b: [u8; 4] = bytes
            .get(at..at + 4)
            .ok_or(Error::Truncated)?
            .try_into()
            .map_err(|_| Error::Truncated)?;
        Ok(if le {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        })
    };
    let link = u32_at(20)? & 0x0fff_ffff;
    if !matches!(link, 1 | 12 | 101 | 113 | 228 | 229 | 276) {
        return Err(Error::LinkType(link));
    }
    let mut out = Vec::new();
    let mut at = 24;
    while at < bytes.len() {
        let secs = u32_at(at)?;
        let incl = u32_at(at + 8)? as usize;
        let start = at + 16;
        let frame = bytes
            .get(start..start.checked_add(incl).ok_or(Error::Truncated)?)
            .ok_or(Error::Truncated)?;
        if let Some(d) = network_layer(link, frame).and_then(|ip| parse_ip(ip, port)) {
            out.push((u64::from(secs), d));
        }
        at = start + incl;
    }
    Ok(out)
}

/// Write a pcap file (raw IPv4 link type) holding these packets; for tests and tools.
pub fn write_raw(packets: &[(u32, Vec<u8>)]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    v.extend_from_slice(&2u16.to_le_bytes());
    v.extend_from_slice(&4u16.to_le_bytes());
    v.extend_from_slice(&[0; 8]);
    v.extend_from_slice(&65535u32.to_le_bytes());
    v.extend_from_slice(&101u32.to_le_bytes());
    for (t, p) in packets {
        v.extend_from_slice(&t.to_le_bytes());
        v.extend_from_slice(&0u32.to_le_bytes());
        v.extend_from_slice(&(p.len() as u32).to_le_bytes());
        v.extend_from_slice(&(p.len() as u32).to_le_bytes());
        v.extend_from_slice(p);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::build_ipv4_udp;

    #[test]
    fn round_trip_and_truncation() {
        let p = build_ipv4_udp(
            "198.18.1.2:1".parse().unwrap(),
            "198.18.1.1:62201".parse().unwrap(),
            b"spa",
        );
        let q = build_ipv4_udp(
            "198.18.1.2:1".parse().unwrap(),
            "198.18.1.1:53".parse().unwrap(),
            b"dns",
        );
        let file = write_raw(&[(100, p), (101, q)]);
        let got = read(&file, Some(62201)).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, 100);
        assert_eq!(got[0].1.payload, b"spa");
        assert_eq!(read(&file, None).unwrap().len(), 2);
        assert_eq!(read(&file[..file.len() - 1], None), Err(Error::Truncated));
        assert_eq!(
            read(b"\x0a\x0d\x0d\x0aXXXXXXXXXXXXXXXXXXXX", None),
            Err(Error::NotPcap)
        );
        for n in 0..file.len() {
            let _ = read(&file[..n], None);
        }
    }
}
