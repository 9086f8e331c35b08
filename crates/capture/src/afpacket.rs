//! AF_PACKET intake: a `SOCK_DGRAM` packet socket (network-layer frames, no link
//! header) with a classic BPF program attached in the kernel, so only UDP datagrams to
//! the SPA port ever reach user space. It sees packets before netfilter's input hook,
//! i.e. also the ones the firewall drops, and it listens on no port.
//!
//! The unsafe code is limited to the four syscalls (`socket`, `setsockopt`, `bind`,
//! `recvfrom`) and `if_nametoindex`, each wrapped so that callers see a safe API.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::frame::{parse_ip, Datagram};

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

const fn insn(code: u16, jt: u8, jf: u8, k: u32) -> Insn {
    Insn { code, jt, jf, k }
}

// Classic BPF opcodes.
const LDB_ABS: u16 = 0x30;
const LDH_ABS: u16 = 0x28;
const LDH_IND: u16 = 0x48;
const LDXB_MSH: u16 = 0xb1;
const AND_K: u16 = 0x54;
const JEQ_K: u16 = 0x15;
const JSET_K: u16 = 0x45;
const RET_K: u16 = 0x06;

/// The kernel filter: accept unfragmented IPv4 UDP and IPv6 UDP (no extension headers)
/// to `port`, drop everything else. Offsets are into the network-layer packet.
pub fn spa_filter(port: u16) -> Vec<Insn> {
    let p = u32::from(port);
    vec![
        insn(LDB_ABS, 0, 0, 0),     // 0: A = first byte
        insn(AND_K, 0, 0, 0xf0),    // 1: A &= version mask
        insn(JEQ_K, 0, 7, 0x40),    // 2: IPv4? else -> 10
        insn(LDB_ABS, 0, 0, 9),     // 3: A = protocol
        insn(JEQ_K, 0, 11, 17),     // 4: UDP? else drop
        insn(LDH_ABS, 0, 0, 6),     // 5: A = flags/fragment offset
        insn(JSET_K, 9, 0, 0x1fff), // 6: fragment? drop
        insn(LDXB_MSH, 0, 0, 0),    // 7: X = header length
        insn(LDH_IND, 0, 0, 2),     // 8: A = UDP destination port
        insn(JEQ_K, 5, 6, p),       // 9: port? accept : drop
        insn(JEQ_K, 0, 5, 0x60),    // 10: IPv6? else drop
        insn(LDB_ABS, 0, 0, 6),     // 11: A = next header
        insn(JEQ_K, 0, 3, 17),      // 12: UDP? else drop
        insn(LDH_ABS, 0, 0, 42),    // 13: A = UDP destination port
        insn(JEQ_K, 0, 1, p),       // 14: port? accept : drop
        insn(RET_K, 0, 0, 0xffff),  // 15: accept
        insn(RET_K, 0, 0, 0),       // 16: drop
    ]
}

/// Kernel counters of a packet socket since the last read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Packets that passed the filter.
    pub packets: u32,
    /// Packets dropped because the socket buffer was full.
    pub drops: u32,
}

/// A packet socket bound to one interface (or to all, for `any`).
#[derive(Debug)]
pub struct PacketSocket {
    fd: OwnedFd,
    port: u16,
    /// The interface name it listens on.
    pub iface: String,
}

const ETH_P_ALL_BE: u16 = (libc::ETH_P_ALL as u16).to_be();

impl PacketSocket {
    /// Open a packet socket on `iface` (`any` for every interface) that receives only
    /// UDP datagrams to `port`. Needs CAP_NET_RAW.
    pub fn open(iface: &str, port: u16) -> io::Result<PacketSocket> {
        // SAFETY: plain syscall with constant arguments; the result is checked.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                i32::from(ETH_P_ALL_BE),
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh, valid descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let prog: Vec<libc::sock_filter> = spa_filter(port)
            .iter()
            .map(|i| libc::sock_filter {
                code: i.code,
                jt: i.jt,
                jf: i.jf,
                k: i.k,
            })
            .collect();
        let fprog = libc::sock_fprog {
            len: prog.len() as u16,
            filter: prog.as_ptr().cast_mut(),
        };
        // SAFETY: `fprog` points to `prog`, which outlives the call; the size is correct.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_ATTACH_FILTER,
                (&fprog as *const libc::sock_fprog).cast(),
                std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        if iface != "any" {
            let name = CString::new(iface).map_err(|_| {
                io::Error::new(io::ErrorKind::InvalidInput, "interface name contains NUL")
            })?;
            // SAFETY: `name` is a valid NUL-terminated string.
            let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
            if index == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("no interface named '{iface}'"),
                ));
            }
            // SAFETY: all-zero is a valid sockaddr_ll; fields are then set.
            let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_protocol = ETH_P_ALL_BE;
            sll.sll_ifindex = index as i32;
            // SAFETY: `sll` is a properly initialised sockaddr_ll of the given size.
            let rc = unsafe {
                libc::bind(
                    fd.as_raw_fd(),
                    (&sll as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
                )
            };
            if rc < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(PacketSocket {
            fd,
            port,
            iface: iface.to_owned(),
        })
    }

    /// Receive the next datagram to the SPA port that arrived *to* this host (packets it
    /// sends are skipped). Blocks.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<Datagram> {
        loop {
            // SAFETY: all-zero is a valid sockaddr_ll.
            let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            // SAFETY: `buf` and `sll` are valid for writes of the sizes passed.
            let n = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    0,
                    (&mut sll as *mut libc::sockaddr_ll).cast(),
                    &mut len,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if sll.sll_pkttype == libc::PACKET_OUTGOING {
                continue;
            }
            let n = usize::try_from(n).unwrap_or(0).min(buf.len());
            if let Some(d) = parse_ip(&buf[..n], Some(self.port)) {
                return Ok(d);
            }
        }
    }

    /// Set the receive buffer (see [`crate::set_receive_buffer`]).
    pub fn set_receive_buffer(&self, bytes: usize) -> io::Result<usize> {
        use std::os::fd::AsFd as _;
        crate::set_receive_buffer(self.fd.as_fd(), bytes)
    }

    /// Read and reset the kernel's packet and drop counters.
    pub fn stats(&self) -> io::Result<Stats> {
        let mut st = libc::tpacket_stats {
            tp_packets: 0,
            tp_drops: 0,
        };
        let mut len = std::mem::size_of::<libc::tpacket_stats>() as libc::socklen_t;
        // SAFETY: `st` is valid for writes of `len` bytes.
        let rc = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                (&mut st as *mut libc::tpacket_stats).cast(),
                &mut len,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Stats {
            packets: st.tp_packets,
            drops: st.tp_drops,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny classic-BPF interpreter, enough to check the filter's jumps.
    fn run(prog: &[Insn], pkt: &[u8]) -> u32 {
        let (mut a, mut x, mut pc) = (0u32, 0u32, 0usize);
        let byte = |i: usize| u32::from(*pkt.get(i).unwrap_or(&0));
        let half = |i: usize| (byte(i) << 8) | byte(i + 1);
        loop {
            let i = prog[pc];
            pc += 1;
            match i.code {
                LDB_ABS => a = byte(i.k as usize),
                LDH_ABS => a = half(i.k as usize),
                LDH_IND => a = half((x + i.k) as usize),
                LDXB_MSH => x = (byte(i.k as usize) & 0xf) * 4,
                AND_K => a &= i.k,
                JEQ_K => pc += usize::from(if a == i.k { i.jt } else { i.jf }),
                JSET_K => pc += usize::from(if a & i.k != 0 { i.jt } else { i.jf }),
                RET_K => return i.k,
                _ => panic!("unknown opcode"),
            }
        }
    }

    #[test]
    fn filter_accepts_only_udp_to_the_port() {
        let prog = spa_filter(62201);
        let p = crate::frame::build_ipv4_udp(
            "198.18.1.2:5".parse().unwrap(),
            "198.18.1.1:62201".parse().unwrap(),
            b"x",
        );
        assert_eq!(run(&prog, &p), 0xffff);
        let other = crate::frame::build_ipv4_udp(
            "198.18.1.2:5".parse().unwrap(),
            "198.18.1.1:53".parse().unwrap(),
            b"x",
        );
        assert_eq!(run(&prog, &other), 0);
        let mut tcp = p.clone();
        tcp[9] = 6;
        assert_eq!(run(&prog, &tcp), 0);
        let mut frag = p.clone();
        frag[7] = 1;
        assert_eq!(run(&prog, &frag), 0);
        let mut opts = p.clone();
        opts[0] = 0x46;
        opts.splice(20..20, [0u8; 4]);
        assert_eq!(
            run(&prog, &opts),
            0xffff,
            "IPv4 options move the UDP header"
        );
        let mut v6 = vec![0x60, 0, 0, 0, 0, 9, 17, 64];
        v6.extend_from_slice(&[0; 32]);
        v6.extend_from_slice(&[0, 5, 0xf2, 0xf9, 0, 9, 0, 0, b'x']);
        assert_eq!(run(&prog, &v6), 0xffff);
        v6[6] = 6;
        assert_eq!(run(&prog, &v6), 0);
        assert_eq!(run(&prog, &[0x00]), 0);
    }
}
