//! Grants over a persistent nfnetlink socket: no process spawn per change.
//!
//! A change is one nfnetlink *batch* (`BATCH_BEGIN … BATCH_END`), which the kernel
//! commits as one transaction, exactly like `nft -f`. Refreshing a grant is three
//! element messages per set in that batch: add (creates it if missing), delete, add with
//! the new timeout, so an open element always ends with the new expiry and a missing one
//! is created; many grants share the same three messages.
//!
//! Message layout (all integers native-endian unless noted, attributes padded to 4):
//!
//! ```text
//!  nlmsghdr{len,type=NFNL_SUBSYS_NFTABLES<<8|NEWSETELEM,flags,seq,pid} nfgenmsg{family,0,res_id}
//!    NFTA_SET_ELEM_LIST_TABLE "postern\0"
//!    NFTA_SET_ELEM_LIST_SET   "allow4\0"
//!    NFTA_SET_ELEM_LIST_ELEMENTS (nested)
//!      NFTA_LIST_ELEM (nested)
//!        NFTA_SET_ELEM_KEY (nested) NFTA_DATA_VALUE  addr | proto 0 0 0 | port(be) 0 0
//!        NFTA_SET_ELEM_TIMEOUT    be64 milliseconds
//! ```
//!
//! The key is the concatenation `ipv4_addr . inet_proto . inet_service` (or ipv6), each
//! field padded to a 32-bit register as nftables lays concatenations out.

use std::net::IpAddr;
use std::os::fd::{AsRawFd as _, OwnedFd};
use std::time::Duration;

use nix::sys::socket::{
    bind, recv, send, setsockopt, socket, sockopt, AddressFamily, MsgFlags, NetlinkAddr, SockFlag,
    SockProtocol, SockType,
};
use nix::sys::time::TimeVal;

use crate::Error;

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_DELSETELEM: u16 = 14;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_CREATE: u16 = 0x400;
const NLA_F_NESTED: u16 = 0x8000;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_TIMEOUT: u16 = 4;
const NFTA_DATA_VALUE: u16 = 1;

/// nfgenmsg family of a table.
pub const NFPROTO_INET: u8 = 1;
/// nfgenmsg family `ip`.
pub const NFPROTO_IPV4: u8 = 2;
/// nfgenmsg family `ip6`.
pub const NFPROTO_IPV6: u8 = 10;

/// Elements per message: keeps a batch (three messages per set) well under the
/// netlink socket's default send buffer.
pub const MAX_ELEMENTS_PER_BATCH: usize = 512;

/// One set element: its concatenated key and its timeout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    /// `addr . proto . port`, register-padded.
    pub key: Vec<u8>,
    /// Timeout.
    pub timeout: Duration,
}

/// The key of `addr . proto . port` as nftables stores it.
pub fn element_key(addr: IpAddr, proto: u8, port: u16) -> Vec<u8> {
    let mut k = match addr {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
    k.extend_from_slice(&[proto, 0, 0, 0]);
    k.extend_from_slice(&port.to_be_bytes());
    k.extend_from_slice(&[0, 0]);
    k
}

/// A netlink message under construction.
struct Msg {
    buf: Vec<u8>,
    start: usize,
}

impl Msg {
    fn begin(buf: Vec<u8>, ty: u16, flags: u16, seq: u32, family: u8, res_id: u16) -> Msg {
        let mut buf = buf;
        let start = buf.len();
        buf.extend_from_slice(&0u32.to_ne_bytes());
        buf.extend_from_slice(&ty.to_ne_bytes());
        buf.extend_from_slice(&flags.to_ne_bytes());
        buf.extend_from_slice(&seq.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes());
        buf.push(family);
        buf.push(0); // NFNETLINK_V0
        buf.extend_from_slice(&res_id.to_be_bytes());
        Msg { buf, start }
    }

    fn attr(&mut self, ty: u16, data: &[u8]) {
        let len = 4 + data.len();
        self.buf
            .extend_from_slice(&u16::try_from(len).unwrap_or(u16::MAX).to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.pad();
    }

    fn nest(&mut self, ty: u16) -> usize {
        let at = self.buf.len();
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf
            .extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
        at
    }

    fn end_nest(&mut self, at: usize) {
        let len = u16::try_from(self.buf.len() - at).unwrap_or(u16::MAX);
        self.buf[at..at + 2].copy_from_slice(&len.to_ne_bytes());
    }

    fn pad(&mut self) {
        while self.buf.len() % 4 != 0 {
            self.buf.push(0);
        }
    }

    fn finish(mut self) -> Vec<u8> {
        self.pad();
        let len = u32::try_from(self.buf.len() - self.start).unwrap_or(u32::MAX);
        self.buf[self.start..self.start + 4].copy_from_slice(&len.to_ne_bytes());
        self.buf
    }
}

fn cstr(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

/// One element list message (add or delete) for `table`/`set`.
fn elements_msg(
    buf: Vec<u8>,
    delete: bool,
    seq: u32,
    family: u8,
    table: &str,
    set: &str,
    elements: &[Element],
) -> Vec<u8> {
    let (ty, flags) = if delete {
        (NFT_MSG_DELSETELEM, NLM_F_REQUEST | NLM_F_ACK)
    } else {
        (NFT_MSG_NEWSETELEM, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE)
    };
    let mut m = Msg::begin(buf, NFNL_SUBSYS_NFTABLES << 8 | ty, flags, seq, family, 0);
    m.attr(NFTA_SET_ELEM_LIST_TABLE, &cstr(table));
    m.attr(NFTA_SET_ELEM_LIST_SET, &cstr(set));
    let list = m.nest(NFTA_SET_ELEM_LIST_ELEMENTS);
    for e in elements {
        let item = m.nest(NFTA_LIST_ELEM);
        let key = m.nest(NFTA_SET_ELEM_KEY);
        m.attr(NFTA_DATA_VALUE, &e.key);
        m.end_nest(key);
        if !delete {
            let ms = u64::try_from(e.timeout.as_millis()).unwrap_or(u64::MAX);
            m.attr(NFTA_SET_ELEM_TIMEOUT, &ms.to_be_bytes());
        }
        m.end_nest(item);
    }
    m.end_nest(list);
    m.finish()
}

/// The batch that opens or refreshes `elements` in each `(set, elements)` group of one
/// table. Returns the bytes and the sequence numbers that expect an answer.
pub fn refresh_batch(
    family: u8,
    table: &str,
    groups: &[(&str, Vec<Element>)],
    first_seq: u32,
) -> (Vec<u8>, Vec<u32>) {
    let mut seq = first_seq;
    let mut buf = Msg::begin(
        Vec::new(),
        NFNL_MSG_BATCH_BEGIN,
        NLM_F_REQUEST,
        seq,
        0,
        NFNL_SUBSYS_NFTABLES,
    )
    .finish();
    let mut acked = Vec::new();
    for (set, elements) in groups {
        if elements.is_empty() {
            continue;
        }
        for delete in [false, true, false] {
            seq = seq.wrapping_add(1);
            buf = elements_msg(buf, delete, seq, family, table, set, elements);
            acked.push(seq);
        }
    }
    seq = seq.wrapping_add(1);
    buf = Msg::begin(
        buf,
        NFNL_MSG_BATCH_END,
        NLM_F_REQUEST,
        seq,
        0,
        NFNL_SUBSYS_NFTABLES,
    )
    .finish();
    (buf, acked)
}

/// Read the kernel's answers from `data`: `(seq, errno)` for every NLMSG_ERROR (errno 0
/// is an acknowledgement).
pub fn parse_answers(data: &[u8]) -> Vec<(u32, i32)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 16 <= data.len() {
        let word = |i: usize| [data[i], data[i + 1], data[i + 2], data[i + 3]];
        let len = u32::from_ne_bytes(word(at)) as usize;
        let ty = u16::from_ne_bytes([data[at + 4], data[at + 5]]);
        let seq = u32::from_ne_bytes(word(at + 8));
        if len < 16 || at + len > data.len() {
            break;
        }
        if ty == NLMSG_ERROR && len >= 20 {
            out.push((seq, i32::from_ne_bytes(word(at + 16))));
        }
        at += (len + 3) & !3;
    }
    out
}

/// A netfilter netlink socket, opened once and kept.
#[derive(Debug)]
pub struct NfSocket {
    fd: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
}

fn errno_text(e: i32) -> String {
    let errno = nix::errno::Errno::from_raw(e.saturating_abs());
    match errno {
        nix::errno::Errno::ENOENT => {
            "No such file or directory (the table or set is gone)".to_owned()
        }
        other => other.desc().to_owned(),
    }
}

impl NfSocket {
    /// Open and bind the socket (needs CAP_NET_ADMIN to change anything later).
    pub fn open() -> Result<NfSocket, Error> {
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkNetFilter,
        )
        .map_err(|e| Error::Spawn(format!("netlink socket: {e}")))?;
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0))
            .map_err(|e| Error::Spawn(format!("netlink bind: {e}")))?;
        setsockopt(&fd, sockopt::ReceiveTimeout, &TimeVal::new(2, 0))
            .map_err(|e| Error::Spawn(format!("netlink timeout: {e}")))?;
        // Larger buffers when allowed (root); the defaults work too.
        let _ = setsockopt(&fd, sockopt::SndBufForce, &(1 << 20));
        let _ = setsockopt(&fd, sockopt::RcvBufForce, &(1 << 20));
        Ok(NfSocket {
            fd,
            seq: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as u32)
                .unwrap_or(1),
            buf: vec![0; 1 << 16],
        })
    }

    /// Open or refresh elements in one transaction: everything or nothing.
    pub fn refresh(
        &mut self,
        family: u8,
        table: &str,
        groups: &[(&str, Vec<Element>)],
    ) -> Result<(), Error> {
        let (batch, mut waiting) = refresh_batch(family, table, groups, self.seq);
        self.seq = self.seq.wrapping_add(waiting.len() as u32 + 2);
        if waiting.is_empty() {
            return Ok(());
        }
        let batch_begin = waiting[0].wrapping_sub(1);
        send(self.fd.as_raw_fd(), &batch, MsgFlags::empty())
            .map_err(|e| Error::Refused(format!("netlink send: {e}")))?;
        let mut first_error = None;
        while !waiting.is_empty() {
            let n = recv(self.fd.as_raw_fd(), &mut self.buf, MsgFlags::empty()).map_err(|e| {
                Error::Refused(format!("no answer from the kernel over netlink: {e}"))
            })?;
            for (seq, err) in parse_answers(&self.buf[..n]) {
                if seq == batch_begin && err != 0 {
                    // The whole batch was refused before any message was looked at.
                    return Err(Error::Refused(errno_text(err)));
                }
                if let Some(i) = waiting.iter().position(|&s| s == seq) {
                    waiting.swap_remove(i);
                    if err != 0 && first_error.is_none() {
                        first_error = Some(err);
                    }
                }
            }
        }
        match first_error {
            None => Ok(()),
            Some(e) => Err(Error::Refused(errno_text(e))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_register_padded() {
        assert_eq!(
            element_key("198.18.1.2".parse().unwrap(), 6, 22),
            vec![198, 18, 1, 2, 6, 0, 0, 0, 0, 22, 0, 0]
        );
        assert_eq!(
            element_key("2001:db8::1".parse().unwrap(), 17, 443).len(),
            24
        );
    }

    #[test]
    fn a_batch_has_three_acked_messages_per_set() {
        let e = Element {
            key: element_key("198.18.1.2".parse().unwrap(), 6, 22),
            timeout: Duration::from_secs(30),
        };
        let (bytes, acked) = refresh_batch(NFPROTO_INET, "postern", &[("allow4", vec![e])], 7);
        assert_eq!(acked, vec![8, 9, 10]);
        // begin + 3 messages + end, each length-prefixed and 4-aligned.
        let mut at = 0;
        let mut types = Vec::new();
        while at < bytes.len() {
            let len = u32::from_ne_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
            assert_eq!(len % 4, 0);
            types.push(u16::from_ne_bytes([bytes[at + 4], bytes[at + 5]]));
            at += len;
        }
        assert_eq!(at, bytes.len());
        assert_eq!(types, vec![0x10, 0xa0c, 0xa0e, 0xa0c, 0x11]);
        // The timeout travels as big-endian milliseconds.
        let ms = 30_000u64.to_be_bytes();
        assert!(bytes.windows(8).any(|w| w == ms));
    }

    #[test]
    fn answers_are_parsed_and_truncation_is_safe() {
        let mut m = Vec::new();
        m.extend_from_slice(&36u32.to_ne_bytes());
        m.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        m.extend_from_slice(&0u16.to_ne_bytes());
        m.extend_from_slice(&5u32.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(&(-2i32).to_ne_bytes());
        m.extend_from_slice(&[0; 16]);
        assert_eq!(parse_answers(&m), vec![(5, -2)]);
        assert_eq!(parse_answers(&m[..20]), vec![]);
        assert_eq!(parse_answers(&[]), vec![]);
    }
}
