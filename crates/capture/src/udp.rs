//! UDP-socket intake (`--udp-server`, `ENABLE_UDP_SERVER`): a dual-stack socket on the
//! SPA port. The destination address is not known here (reported as the unspecified
//! address, as fwknopd does).

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};

use crate::frame::Datagram;

/// A bound UDP intake socket.
#[derive(Debug)]
pub struct UdpIntake {
    sock: UdpSocket,
    port: u16,
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
        Ok(UdpIntake { sock, port })
    }

    /// Set the receive buffer (see [`crate::set_receive_buffer`]).
    pub fn set_receive_buffer(&self, bytes: usize) -> io::Result<usize> {
        use std::os::fd::AsFd as _;
        crate::set_receive_buffer(self.sock.as_fd(), bytes)
    }

    /// Receive one datagram (blocking). Payloads longer than `buf` are truncated, as in
    /// fwknopd's listener; the codec then refuses them by size.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<Datagram> {
        let (n, from) = self.sock.recv_from(buf)?;
        let src = SocketAddr::new(unmap(from.ip()), from.port());
        let dst = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), self.port);
        Ok(Datagram {
            src,
            dst,
            payload: buf[..n].to_vec(),
        })
    }
}
