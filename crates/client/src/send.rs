//! Sending the packet: one UDP datagram, a TCP connection, an HTTP GET request (directly
//! or through a `-H` proxy), or a hand-built datagram on a raw socket (`raw`). Nothing
//! is read back: SPA servers never answer.

use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::time::Duration;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::knock::random_port;
use crate::plan::{Fail, Plan, Transport};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Resolve the server name to one socket address.
pub fn server_addr(server: &str, port: u16, ipv4_only: bool) -> Result<SocketAddr, Fail> {
    let literal = server.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = literal.parse::<IpAddr>() {
        if ipv4_only && ip.is_ipv6() {
            return Err(Fail(format!(
                "-D/--destination: '{server}' is IPv6 but --server-resolve-ipv4 was given"
            )));
        }
        return Ok(SocketAddr::new(ip, port));
    }
    let addrs: Vec<SocketAddr> = (server, port)
        .to_socket_addrs()
        .map_err(|e| Fail(format!("-D/--destination: cannot resolve '{server}': {e}")))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| if ipv4_only { None } else { addrs.first() })
        .copied()
        .ok_or_else(|| {
            Fail(format!(
                "-D/--destination: '{server}' has no usable address"
            ))
        })
}

fn local_addr(remote: &SocketAddr, port: u16) -> SocketAddr {
    match remote {
        SocketAddr::V4(_) => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port),
        SocketAddr::V6(_) => SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port),
    }
}

fn tcp_connect(remote: SocketAddr, source_port: Option<u16>) -> Result<TcpStream, Fail> {
    let sock = Socket::new(
        Domain::for_address(remote),
        Type::STREAM,
        Some(Protocol::TCP),
    )
    .map_err(|e| Fail(format!("cannot create a TCP socket: {e}")))?;
    if let Some(p) = source_port {
        sock.set_reuse_address(true).ok();
        sock.bind(&SockAddr::from(local_addr(&remote, p)))
            .map_err(|e| Fail(format!("-S/--source-port: cannot bind port {p}: {e}")))?;
    }
    sock.connect_timeout(&SockAddr::from(remote), CONNECT_TIMEOUT)
        .map_err(|e| Fail(format!("cannot connect to {remote}: {e} (TCP and HTTP transports need the server to accept the connection)")))?;
    Ok(TcpStream::from(sock))
}

/// The HTTP request fwknop sends: the packet in the path, `+`→`-`, `/`→`_`. Through a
/// proxy (`-H`) the path is the absolute URL `http://SERVER/...` and, as fwknop sends
/// it, `Host:` names the proxy.
pub fn http_request(wire: &str, server: &str, user_agent: &str, proxy: Option<&str>) -> String {
    let path: String = wire
        .chars()
        .map(|c| match c {
            '+' => '-',
            '/' => '_',
            c => c,
        })
        .collect();
    let (target, host) = match proxy {
        Some(p) => (format!("http://{server}/{path}"), p),
        None => (format!("/{path}"), server),
    };
    format!(
        "GET {target} HTTP/1.0\r\nUser-Agent: {user_agent}\r\nAccept: */*\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
}

/// Send `wire` as the plan says; returns a one-line report for -v.
pub fn send(plan: &Plan, wire: &str) -> Result<String, Fail> {
    let server = plan
        .server
        .as_deref()
        .ok_or_else(|| Fail("-D/--destination is required".into()))?;
    // 62201 for every transport, HTTP included, as fwknop; -H without a port uses it
    // for the proxy too.
    let port = match (plan.rand_port, plan.port) {
        (true, _) => random_port(),
        (false, Some(p)) => p,
        (false, None) => postern_proto::wire::DEFAULT_PORT,
    };
    if plan.transport.is_raw() {
        return crate::raw::send(plan, server, port, wire);
    }
    let remote = match &plan.http_proxy {
        Some((host, proxy_port)) => server_addr(host, proxy_port.unwrap_or(port), false)
            .map_err(|e| Fail(e.0.replacen("-D/--destination", "-H/--http-proxy", 1)))?,
        None => server_addr(server, port, plan.server_ipv4_only)?,
    };
    match plan.transport {
        Transport::Udp => {
            let local = local_addr(&remote, plan.source_port.unwrap_or(0));
            let sock = UdpSocket::bind(local).map_err(|e| match plan.source_port {
                Some(p) => Fail(format!("-S/--source-port: cannot bind port {p}: {e}")),
                None => Fail(format!("cannot create a UDP socket: {e}")),
            })?;
            let n = sock
                .send_to(wire.as_bytes(), remote)
                .map_err(|e| Fail(format!("cannot send to {remote}: {e}")))?;
            if n != wire.len() {
                return Err(Fail(format!(
                    "sent only {n} of {} bytes to {remote}",
                    wire.len()
                )));
            }
        }
        Transport::Tcp => {
            let mut s = tcp_connect(remote, plan.source_port)?;
            s.write_all(wire.as_bytes())
                .map_err(|e| Fail(format!("cannot send to {remote}: {e}")))?;
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
        Transport::Http => {
            let mut s = tcp_connect(remote, plan.source_port)?;
            let proxy = plan.http_proxy.as_ref().map(|(h, _)| h.as_str());
            let req = http_request(wire, server, &plan.user_agent, proxy);
            s.write_all(req.as_bytes())
                .map_err(|e| Fail(format!("cannot send to {remote}: {e}")))?;
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
        // Sent above, before an address for a socket was needed.
        Transport::UdpRaw | Transport::TcpRaw | Transport::Icmp => {}
    }
    Ok(format!(
        "sent {} bytes over {} to {remote}",
        wire.len(),
        plan.transport.name()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_request_maps_the_alphabet() {
        let r = http_request("ab+/cd", "srv", "Fwknop/2.6.10", None);
        assert!(r.starts_with("GET /ab-_cd HTTP/1.0\r\nUser-Agent: Fwknop/2.6.10\r\n"));
        assert!(r.ends_with("Host: srv\r\nConnection: close\r\n\r\n"));
        let r = http_request("ab+/cd", "srv", "ua", Some("proxy"));
        assert_eq!(
            r,
            "GET http://srv/ab-_cd HTTP/1.0\r\nUser-Agent: ua\r\nAccept: */*\r\nHost: proxy\r\nConnection: close\r\n\r\n"
        );
    }

    #[test]
    fn literal_addresses() {
        assert_eq!(
            server_addr("198.18.0.1", 62201, false).unwrap().to_string(),
            "198.18.0.1:62201"
        );
        assert_eq!(
            server_addr("2001:db8::1", 1, false).unwrap().to_string(),
            "[2001:db8::1]:1"
        );
        assert!(server_addr("2001:db8::1", 1, true).is_err());
    }
}
