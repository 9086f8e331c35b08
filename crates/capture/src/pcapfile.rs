//! Reading SPA candidates from a pcap capture file (`--pcap-file`): the classic pcap
//! format in either byte order, microsecond or nanosecond timestamps, with Ethernet
//! (with VLAN tags), Linux cooked (SLL, SLL2) or raw IP link types. Pure and total.

use crate::filter::Filter;
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
    /// A record longer than [`MAX_RECORD`].
    Oversized(usize),
    /// Reading the file failed.
    Io(std::io::ErrorKind),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::NotPcap => f.write_str(
                "not a pcap capture file (pcapng is not supported; convert with editcap -F pcap)",
            ),
            Error::LinkType(t) => write!(f, "unsupported link type {t}"),
            Error::Truncated => f.write_str("capture file is truncated"),
            Error::Oversized(n) => write!(f, "a record of {n} bytes (more than {MAX_RECORD})"),
            Error::Io(k) => write!(f, "read error: {k}"),
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

/// The largest record accepted (libpcap's maximum snapshot length).
pub const MAX_RECORD: usize = 262_144;

/// A capture file read record by record: memory stays at one record, whatever the
/// size of the file.
pub struct Reader<R> {
    input: R,
    le: bool,
    link: u32,
    port: Option<u16>,
    filter: Option<Filter>,
    frame: Vec<u8>,
}

/// Read exactly `buf.len()` bytes; `Ok(false)` at a clean end before the first byte.
fn fill(input: &mut impl std::io::Read, buf: &mut [u8]) -> Result<bool, Error> {
    let mut got = 0;
    while got < buf.len() {
        match input.read(&mut buf[got..]) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => return Err(Error::Truncated),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::Io(e.kind())),
        }
    }
    Ok(true)
}

impl<R: std::io::Read> Reader<R> {
    /// Read the file header.
    pub fn new(mut input: R, port: Option<u16>) -> Result<Reader<R>, Error> {
        let mut h = [0u8; 24];
        if !fill(&mut input, &mut h[..4])? {
            return Err(Error::Truncated);
        }
        let le = match h[..4] {
            [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => true,
            [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => false,
            _ => return Err(Error::NotPcap),
        };
        if !fill(&mut input, &mut h[4..])? {
            return Err(Error::Truncated);
        }
        let mut r = Reader {
            input,
            le,
            link: 0,
            port,
            filter: None,
            frame: Vec::new(),
        };
        r.link = r.u32_of(&h[20..24]) & 0x0fff_ffff;
        if !matches!(r.link, 1 | 12 | 101 | 113 | 228 | 229 | 276) {
            return Err(Error::LinkType(r.link));
        }
        Ok(r)
    }

    /// Read the file header; only the UDP datagrams `filter` admits are returned (the
    /// filter sees each record's network-layer packet, as the kernel's does).
    pub fn filtered(input: R, filter: Filter) -> Result<Reader<R>, Error> {
        let mut r = Reader::new(input, None)?;
        r.filter = Some(filter);
        Ok(r)
    }

    fn u32_of(&self, b: &[u8]) -> u32 {
        let b: [u8; 4] = [b[0], b[1], b[2], b[3]];
        if self.le {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        }
    }

    /// The next UDP datagram to the port, with its capture time; `None` at the end.
    pub fn next_datagram(&mut self) -> Result<Option<(u64, Datagram)>, Error> {
        loop {
            let mut h = [0u8; 16];
            if !fill(&mut self.input, &mut h)? {
                return Ok(None);
            }
            let secs = self.u32_of(&h[0..4]);
            let incl = self.u32_of(&h[8..12]) as usize;
            if incl > MAX_RECORD {
                return Err(Error::Oversized(incl));
            }
            self.frame.resize(incl, 0);
            let mut frame = std::mem::take(&mut self.frame);
            let complete = incl == 0 || fill(&mut self.input, &mut frame)?;
            if !complete {
                return Err(Error::Truncated);
            }
            let d = network_layer(self.link, &frame)
                .filter(|ip| self.filter.as_ref().is_none_or(|f| f.matches(ip)))
                .and_then(|ip| parse_ip(ip, self.port));
            self.frame = frame;
            if let Some(d) = d {
                return Ok(Some((u64::from(secs), d)));
            }
        }
    }
}

/// Every UDP datagram to `port` (any port with `None`) in the capture, with its capture
/// time in seconds.
pub fn read(bytes: &[u8], port: Option<u16>) -> Result<Vec<(u64, Datagram)>, Error> {
    let mut r = Reader::new(bytes, port)?;
    let mut out = Vec::new();
    while let Some(x) = r.next_datagram()? {
        out.push(x);
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
