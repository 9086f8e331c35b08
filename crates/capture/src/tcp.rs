//! The TCP server (`ENABLE_TCP_SERVER`, `TCPSERV_PORT`): a listener that accepts each
//! connection and closes it at once, never reading or writing a byte, so that a client
//! that must send over TCP (`fwknop -P tcp`) completes its handshake. The SPA data in
//! the connection is seen by the capture, as fwknopd sees it with pcap; this socket
//! only lets the handshake happen.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};

/// A bound, listening TCP socket.
#[derive(Debug)]
pub struct TcpServer {
    listener: TcpListener,
    port: u16,
}

impl TcpServer {
    /// Listen on `[::]:port` (IPv4 and IPv6), or `0.0.0.0:port` where IPv6 is
    /// unavailable.
    pub fn bind(port: u16) -> io::Result<TcpServer> {
        let listener = TcpListener::bind(SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port))
            .or_else(|_| {
                TcpListener::bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port))
            })?;
        let port = listener.local_addr()?.port();
        Ok(TcpServer { listener, port })
    }

    /// The port listened on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Accept one connection and close it (blocks). Whatever the peer sent is left
    /// unread; the close answers it.
    /// Only `accept4` and `close` are made (the worker's seccomp filter allows no more).
    pub fn accept_and_close(&self) -> io::Result<()> {
        use std::os::fd::AsRawFd as _;
        let fd = nix::sys::socket::accept4(
            self.listener.as_raw_fd(),
            nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        )?;
        nix::unistd::close(fd)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read as _, Write as _};
    use std::net::TcpStream;
    use std::time::Duration;

    #[test]
    fn accepts_and_closes_without_a_byte() {
        let server = TcpServer::bind(0).unwrap();
        let port = server.port();
        let t = std::thread::spawn(move || server.accept_and_close());
        let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = c.write_all(b"an SPA packet");
        let mut buf = [0u8; 16];
        // Closed by the server: end of stream (or a reset for the unread data), never data.
        match c.read(&mut buf) {
            Ok(n) => assert_eq!(n, 0),
            Err(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionReset),
        }
        t.join().unwrap().unwrap();
    }
}
