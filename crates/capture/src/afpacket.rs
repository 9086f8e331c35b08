//! AF_PACKET intake: a `SOCK_DGRAM` packet socket (network-layer frames, no link
//! header) with a classic BPF program attached in the kernel (compiled from the
//! `PCAP_FILTER` expression by [`crate::filter`]), so only the datagrams the filter
//! admits ever reach user space. It sees packets before netfilter's input hook,
//! i.e. also the ones the firewall drops, and it listens on no port.
//!
//! The unsafe code is limited to the four syscalls (`socket`, `setsockopt`, `bind`,
//! `recvfrom`) and `if_nametoindex`, each wrapped so that callers see a safe API.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::filter::Filter;
use crate::frame::{parse_ip, Datagram};

pub use crate::filter::Insn;

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
    filter: Filter,
    /// The interface name it listens on.
    pub iface: String,
}

const ETH_P_ALL_BE: u16 = (libc::ETH_P_ALL as u16).to_be();

impl PacketSocket {
    /// Open a packet socket on `iface` (`any` for every interface) that receives only
    /// UDP datagrams to `port` (`udp port N`). Needs CAP_NET_RAW.
    pub fn open(iface: &str, port: u16) -> io::Result<PacketSocket> {
        PacketSocket::open_filtered(iface, &Filter::udp_port(port))
    }

    /// Open a packet socket on `iface` (`any` for every interface) with `filter`
    /// attached in the kernel. Needs CAP_NET_RAW.
    pub fn open_filtered(iface: &str, filter: &Filter) -> io::Result<PacketSocket> {
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
        let prog: Vec<libc::sock_filter> = filter
            .program()
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
            filter: filter.clone(),
            iface: iface.to_owned(),
        })
    }

    /// Receive the next UDP datagram the filter admits that arrived *to* this host
    /// (packets it sends are skipped). The filter is checked again here: packets queued
    /// between `socket` and `SO_ATTACH_FILTER` were not filtered. Blocks.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<Datagram> {
        loop {
            let n = self.recv_packet(buf)?;
            let pkt = &buf[..n];
            if !self.filter.matches(pkt) {
                continue;
            }
            if let Some(d) = parse_ip(pkt, None) {
                return Ok(d);
            }
        }
    }

    /// Receive the next network-layer packet that the kernel filter passed and that
    /// arrived *to* this host, as it came (no check in user space); its length in `buf`.
    /// Blocks (up to the read timeout, if one is set).
    pub fn recv_packet(&self, buf: &mut [u8]) -> io::Result<usize> {
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
            return Ok(usize::try_from(n).unwrap_or(0).min(buf.len()));
        }
    }

    /// Make `recv`/`recv_packet` fail with `WouldBlock` after `timeout` without a packet
    /// (`None`: block for ever).
    pub fn set_read_timeout(&self, timeout: Option<std::time::Duration>) -> io::Result<()> {
        let t = timeout.unwrap_or_default();
        let tv = libc::timeval {
            tv_sec: libc::time_t::try_from(t.as_secs()).unwrap_or(libc::time_t::MAX),
            tv_usec: libc::suseconds_t::from(t.subsec_micros() as i32),
        };
        // SAFETY: `tv` is a valid timeval for reads of the size passed.
        let rc = unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// The filter attached to this socket.
    pub fn filter(&self) -> &Filter {
        &self.filter
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
