//! What goes on the wire: the packet reaches the server by IPv6 literal, by a name
//! that resolves to IPv6 (AAAA) or IPv4, over UDP, TCP and HTTP, exactly as built.

use std::time::Duration;

use postern_testkit::{can_run, wait_for_line, Netns, TempDir};

/// A receiver in `ns` that logs each UDP datagram / TCP stream payload on one line.
fn receiver(ns: &Netns, dir: &TempDir) -> postern_testkit::Proc {
    let script = r#"
import socket, selectors, sys
sel = selectors.DefaultSelector()
u = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
u.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
u.bind(('::', 62201)); sel.register(u, selectors.EVENT_READ)
for port in (62201, 80):
    t = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    t.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    t.bind(('::', port)); t.listen(8); sel.register(t, selectors.EVENT_READ)
print('ready', flush=True)
while True:
    for k, _ in sel.select():
        s = k.fileobj
        if s.type == socket.SOCK_DGRAM:
            data, addr = s.recvfrom(4096)
            print('udp', addr[0], data.decode(), flush=True)
        else:
            c, addr = s.accept(); c.settimeout(2); data = b''
            while True:
                try:
                    d = c.recv(4096)
                except Exception:
                    break
                if not d:
                    break
                data += d
            c.close()
            print('tcp', addr[0], data.decode().split('\r\n')[0], flush=True)
"#;
    let p = ns.spawn(&["python3", "-c", script], &dir.join("rx.log"));
    wait_for_line(&dir.join("rx.log"), "ready", Duration::from_secs(10));
    p
}

#[test]
fn reaches_the_server_over_ipv6_ipv4_names_and_every_transport() {
    if !can_run(
        "reaches_the_server_over_ipv6_ipv4_names_and_every_transport",
        &["ip", "python3"],
    ) {
        return;
    }
    let dir = TempDir::new("transport");
    let srv = Netns::new("s");
    let cli = Netns::new("c");
    postern_testkit::link(&srv, "198.18.4.1", &cli, "198.18.4.2");
    let si = postern_testkit::iface_with(&srv, "198.18.4.1");
    let ci = postern_testkit::iface_with(&cli, "198.18.4.2");
    srv.add_addr6("2001:db8:4::1/64", &si);
    cli.add_addr6("2001:db8:4::2/64", &ci);
    cli.set_hosts("198.18.4.1 spa4.test\n2001:db8:4::1 spa6.test\n");
    let _rx = receiver(&srv, &dir);
    let send = |args: &[&str]| {
        let out = cli
            .cmd(env!("CARGO_BIN_EXE_postern"))
            .args([
                "--no-rc-file",
                "--no-save-args",
                "--key-rijndael",
                "k",
                "--key-hmac",
                "h",
                "-A",
                "tcp/22",
                "-v",
            ])
            .args(args)
            .env("HOME", &dir.0)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8(out.stdout).unwrap();
        stdout
            .lines()
            .find_map(|l| l.trim().strip_prefix("Final SPA Data: "))
            .expect("packet in -v output")
            .to_owned()
    };
    let cases: [(&[&str], &str); 6] = [
        (
            &["-D", "2001:db8:4::1", "-a", "2001:db8:4::2"],
            "udp 2001:db8:4::2 ",
        ),
        (
            &["-D", "spa6.test", "-a", "198.18.4.2"],
            "udp 2001:db8:4::2 ",
        ),
        (
            &["-D", "spa6.test", "-a", "198.18.4.2", "-P", "tcp"],
            "tcp 2001:db8:4::2 ",
        ),
        (
            &["-D", "spa4.test", "-a", "198.18.4.2"],
            "udp ::ffff:198.18.4.2 ",
        ),
        (
            &["-D", "spa4.test", "-s", "-P", "http"],
            "tcp ::ffff:198.18.4.2 GET /",
        ),
        (
            &[
                "-D",
                "198.18.4.1",
                "-a",
                "198.18.4.2",
                "-P",
                "tcp",
                "-S",
                "45001",
            ],
            "tcp ::ffff:198.18.4.2 ",
        ),
    ];
    for (args, want) in cases {
        let packet = send(args);
        let expect = if want.ends_with("GET /") {
            format!("{want}{}", packet.replace('+', "-").replace('/', "_"))
        } else {
            format!("{want}{packet}")
        };
        wait_for_line(&dir.join("rx.log"), &expect, Duration::from_secs(5));
    }
}
