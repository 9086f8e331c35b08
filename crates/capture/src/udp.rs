//! UDP-socket intake (`--udp-server`, `ENABLE_UDP_SERVER`): a dual-stack socket on the
//! SPA port. The destination address is not known here (reported as the unspecified
//! address, as fwknopd does).

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd as _;
use std::sync::atomic::{AtomicU64, Ordering};

use nix::sys::socket::{
    recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags, SockaddrStorage,
};

use crate::frame::Datagram;

/// A bound UDP intake socket.
#[derive(Debug)]
pub struct UdpIntake {
    sock: UdpSocket,
    port: u16,
    /// Datagrams the kernel dropped because the receive buffer was full (`SO_RXQ_OVFL`).
    drops: AtomicU64,
}

/// Turn an IPv4-mapped IPv6 address back into IPv4.
pub fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

impl UdpIntake {
    /// Bind `[::]:port` (IPv4 and IPv6), or `0.0.0.0:port` where IPv6 is unavailable.
    pub fn bind(port: u16) -> io::Result<UdpIntake> {
        let sock = UdpSocket::bind(SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port))
            .or_else(|_| {
                UdpSocket::bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port))
            })?;
        // Every datagram then carries the socket's running count of drops.
        let _ = setsockopt(&sock, sockopt::RxqOvfl, &1);
        Ok(UdpIntake {
            sock,
            port,
            drops: AtomicU64::new(0),
        })
    }

    /// Datagrams dropped by the kernel so far because the receive buffer was full, as of
    /// the last datagram received.
    pub fn drops(&self) -> u64 {
        self.drops.load(Ordering::Relaxed)
    }

    /// Set the receive buffer (see [`crate::set_receive_buffer`]).
    pub fn set_receive_buffer(&self, bytes: usize) -> io::Result<usize> {
        use std::os::fd::AsFd as _;
        crate::set_receive_buffer(self.sock.as_fd(), bytes)
    }

    /// Receive one datagram (blocking). Payloads longer than `buf` are truncated, as in
    /// fwknopd's listener; the codec then refuses them by size.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<Datagram> {
        let mut cmsg = nix::cmsg_space!(u32);
        let mut iov = [io::IoSliceMut::new(buf)];
        let msg = loop {
            match recvmsg::<SockaddrStorage>(
                self.sock.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::empty(),
            ) {
                Err(nix::errno::Errno::EINTR) => continue,
                other => break other.map_err(io::Error::from)?,
            }
        };
        if let Ok(cmsgs) = msg.cmsgs() {
            for c in cmsgs {
                if let ControlMessageOwned::RxqOvfl(n) = c {
                    self.drops.fetch_max(u64::from(n), Ordering::Relaxed);
                }
            }
        }
        let n = msg.bytes;
        let from = msg
            .address
            .and_then(|a| {
                a.as_sockaddr_in6()
                    .map(|s| SocketAddr::from(std::net::SocketAddrV6::from(*s)))
                    .or_else(|| {
                        a.as_sockaddr_in()
                            .map(|s| SocketAddr::from(std::net::SocketAddrV4::from(*s)))
                    })
            })
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no source address"))?;
        let src = SocketAddr::new(unmap(from.ip()), from.port());
        let dst = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), self.port);
        Ok(Datagram {
            src,
            dst,
            proto: crate::frame::UDP,
            payload: buf[..n].to_vec(),
        })
    }
}
