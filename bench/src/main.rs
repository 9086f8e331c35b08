//! postern-bench: posternd and fwknopd 2.6.10 measured under identical conditions in one
//! run. Each server runs in its own network namespace (198.18.0.1) behind a default-drop
//! firewall, protecting a TCP service on port 22; the client namespace (198.18.0.2, plus
//! 198.18.0.10–.99 for distinct knock sources) sends the same kinds of packets to each.
//! fwknopd runs twice per intake: with its defaults, and tuned to its fastest settings
//! (the `-fast` kinds, [`FWKNOPD_TUNED`]).
//!
//! Measured per server and run:
//! 0. offline: the same pcap file of junk read by each server's `--pcap-file` mode
//!    (packets per second, CPU per packet, peak RSS), then CPU while idle;
//! 1. knock-to-open latency: one valid SPA packet, then TCP connects polled until one
//!    completes (median, p99);
//! 2. a junk flood (random base64 of SPA length, as fast as one sender thread goes):
//!    packets examined per second, socket drops, CPU (per packet too) and RSS;
//! 3. legitimate knocks in the middle of that flood: opened on the first packet? how fast;
//! 4. distinct valid packets turned into grants per second, at a few and at many open
//!    grants (closed loop: the sender keeps a bounded number of packets in flight), and
//!    the server's CPU per grant.
//!
//! Every loop is bounded in count and time; namespaces and processes are removed by the
//! test kit's guards (processes by PID). Run as root: `sudo ./scripts/bench.sh`.

use std::collections::{BTreeMap, VecDeque};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use clap::Parser;
use postern_proto::{
    DigestType, EncryptionMode, HmacKey, Key, Keys, MessageType, RandomValue, SpaMessage,
};
use postern_testkit::{link, tcp_service, wait_for_line, Netns, Proc, TempDir};
use socket2::{Domain, Socket, Type};

const SRV: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const CLI: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const SPA_PORT: u16 = 62201;
const SERVICE_PORT: u16 = 22;
/// USER_HZ on Linux: the unit of the CPU times in /proc/PID/stat.
const USER_HZ: f64 = 100.0;

/// fwknopd at its fastest (the `-fast` kinds). Its defaults pace the pcap loop at
/// `PCAP_DISPATCH_COUNT 100` packets per `PCAP_LOOP_SLEEP 100000` µs (about 1,000 packets
/// per second), and every `RULES_CHECK_THRESHOLD` (20) loop iterations (UDP server: 20
/// packets) it lists its chain with a forked `iptables -L`; with a 1 µs loop sleep that
/// fork would run hundreds of times a second while idle, so it is switched off too.
const FWKNOPD_TUNED: &str =
    "PCAP_DISPATCH_COUNT 10000\nPCAP_LOOP_SLEEP 1\nRULES_CHECK_THRESHOLD 0\n";

#[derive(Parser, Debug, Clone)]
#[command(
    name = "postern-bench",
    about = "posternd against fwknopd 2.6.10 in network namespaces; writes bench/RESULTS.md"
)]
struct Cli {
    /// Runs of the whole set (figures are medians with min–max over runs).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Knocks for the latency figure.
    #[arg(long, default_value_t = 50)]
    knocks: usize,
    /// Length of the junk flood, seconds.
    #[arg(long, default_value_t = 10)]
    flood_secs: u64,
    /// TCP connect polling interval while waiting for a port to open, microseconds.
    #[arg(long, default_value_t = 100)]
    poll_us: u64,
    /// Open grants for the "few" grant-rate figure.
    #[arg(long, default_value_t = 2000)]
    grants_small: usize,
    /// Open grants for the "many" grant-rate figure (posternd).
    #[arg(long, default_value_t = 100_000)]
    grants_big: usize,
    /// Grants measured at each level (posternd).
    #[arg(long, default_value_t = 5000)]
    grants_step: usize,
    /// Grants measured at each level (fwknopd, which is much slower).
    #[arg(long, default_value_t = 200)]
    fwknopd_grants_step: usize,
    /// Junk packets in the pcap file of the offline figure (about 276 bytes each).
    #[arg(long, default_value_t = 400_000)]
    offline_packets: usize,
    /// Packets of that file read by fwknopd with its default pacing (`-C`; it examines
    /// about 1,000 per second, so the whole file would take minutes).
    #[arg(long, default_value_t = 10_000)]
    offline_paced_packets: usize,
    /// Seconds of idle CPU measured after the server starts.
    #[arg(long, default_value_t = 2)]
    idle_secs: u64,
    /// Where the report goes.
    #[arg(long, default_value = "bench/RESULTS.md")]
    out: PathBuf,
    /// Servers to measure.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "fwknopd-udp,fwknopd-udp-fast,fwknopd-pcap,fwknopd-pcap-fast,posternd-udp,posternd-afpacket,posternd-fleet,posternd-fleet-wait,posternd-iptables"
    )]
    servers: Vec<String>,
    /// The posternd binary (build it with --release first).
    #[arg(long, default_value = "target/release/posternd")]
    posternd: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    FwknopdUdp,
    FwknopdUdpFast,
    FwknopdPcap,
    FwknopdPcapFast,
    PosterndUdp,
    PosterndAfPacket,
    /// posternd-afpacket with the fleet's shared replay window (Redis in its namespace).
    PosterndFleet,
    /// posternd-fleet with `FLEET_REDIS_WAIT 1` and a replica.
    PosterndFleetWait,
    /// posternd-afpacket on the iptables backend (FWKNOP_INPUT and ipset), on the same
    /// iptables default-drop host as the fwknopd kinds.
    PosterndIptables,
}

impl Kind {
    const ALL: [Kind; 9] = [
        Kind::FwknopdUdp,
        Kind::FwknopdUdpFast,
        Kind::FwknopdPcap,
        Kind::FwknopdPcapFast,
        Kind::PosterndUdp,
        Kind::PosterndAfPacket,
        Kind::PosterndFleet,
        Kind::PosterndFleetWait,
        Kind::PosterndIptables,
    ];
    fn parse(s: &str) -> Result<Kind> {
        Kind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| anyhow!("unknown server '{s}'"))
    }
    fn name(self) -> &'static str {
        match self {
            Kind::FwknopdUdp => "fwknopd-udp",
            Kind::FwknopdUdpFast => "fwknopd-udp-fast",
            Kind::FwknopdPcap => "fwknopd-pcap",
            Kind::FwknopdPcapFast => "fwknopd-pcap-fast",
            Kind::PosterndUdp => "posternd-udp",
            Kind::PosterndAfPacket => "posternd-afpacket",
            Kind::PosterndFleet => "posternd-fleet",
            Kind::PosterndFleetWait => "posternd-fleet-wait",
            Kind::PosterndIptables => "posternd-iptables",
        }
    }
    fn is_fwknopd(self) -> bool {
        matches!(
            self,
            Kind::FwknopdUdp | Kind::FwknopdUdpFast | Kind::FwknopdPcap | Kind::FwknopdPcapFast
        )
    }
    fn is_udp(self) -> bool {
        matches!(
            self,
            Kind::FwknopdUdp | Kind::FwknopdUdpFast | Kind::PosterndUdp
        )
    }
    /// posternd with the fleet's shared replay window.
    fn is_fleet(self) -> bool {
        matches!(self, Kind::PosterndFleet | Kind::PosterndFleetWait)
    }
    /// fwknopd with [`FWKNOPD_TUNED`] (live and offline).
    fn is_tuned(self) -> bool {
        matches!(self, Kind::FwknopdUdpFast | Kind::FwknopdPcapFast)
    }
}

/// Key material shared by the server configs and the packet builder.
#[derive(Clone)]
struct Material {
    enc: Vec<u8>,
    hmac: Vec<u8>,
}

impl Material {
    fn new() -> Result<Material> {
        let mut enc = vec![0; 32];
        let mut hmac = vec![0; 32];
        getrandom::getrandom(&mut enc).map_err(|e| anyhow!("{e}"))?;
        getrandom::getrandom(&mut hmac).map_err(|e| anyhow!("{e}"))?;
        Ok(Material { enc, hmac })
    }
    fn keys(&self) -> Result<Keys> {
        Keys::new(
            Key::from_bytes(self.enc.clone()),
            EncryptionMode::Cbc,
            Some(HmacKey {
                key: Key::from_bytes(self.hmac.clone()),
                digest: DigestType::Sha256,
            }),
        )
        .map_err(|e| anyhow!("{e}"))
    }
    fn access_conf(&self) -> String {
        use base64::Engine as _;
        let b = base64::engine::general_purpose::STANDARD;
        format!(
            "SOURCE ANY\nKEY_BASE64 {}\nHMAC_KEY_BASE64 {}\nHMAC_DIGEST_TYPE SHA256\n\
             FW_ACCESS_TIMEOUT 900\nMAX_FW_TIMEOUT 900\n",
            b.encode(&self.enc),
            b.encode(&self.hmac)
        )
    }
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A valid SPA packet opening tcp/22 for `allow`, fresh random value and salt.
fn valid_packet(keys: &Keys, allow: Ipv4Addr) -> Result<Vec<u8>> {
    let mut fill = |b: &mut [u8]| {
        let _ = getrandom::getrandom(b);
    };
    let m = SpaMessage {
        random_value: RandomValue::generate(&mut fill),
        username: "bench".into(),
        timestamp: now_unix(),
        version: postern_proto::wire::PROTOCOL_VERSION.to_owned(),
        message_type: MessageType::Access,
        message: format!("{allow},tcp/{SERVICE_PORT}"),
        nat_access: None,
        server_auth: None,
        client_timeout: 0,
    };
    let mut salt = [0u8; postern_proto::wire::SALT_LEN];
    fill(&mut salt);
    let wire = postern_proto::encode(&m, keys, DigestType::Sha256, salt)
        .map_err(|e| anyhow!("encode: {e}"))?;
    Ok(wire.into_bytes())
}

/// Junk that looks like SPA: canonical unpadded base64 of random bytes, 204–232 chars,
/// starting with a character a Rijndael packet can start with (the base64 of the end
/// of "Salted__" and the salt's first bits: `8`, `9`, `+` or `/`). So every junk packet
/// passes the key-independent checks and costs each server an HMAC before it is refused
/// (fwknopd computes the HMAC of any packet; posternd first refuses one that could not
/// be Rijndael, which random first characters would make 15 junk packets in 16).
fn junk_payloads(n: usize) -> Vec<Vec<u8>> {
    use base64::Engine as _;
    let b = base64::engine::general_purpose::STANDARD_NO_PAD;
    let first = postern_proto::wire::RIJNDAEL_FIRST_CHARS;
    (0..n)
        .map(|i| {
            let mut raw = vec![0u8; 153 + i % 22];
            let _ = getrandom::getrandom(&mut raw);
            let mut p = b.encode(&raw).into_bytes();
            p[0] = first[i % first.len()];
            p
        })
        .collect()
}

/// Run `f` on a thread that has entered network namespace `ns`.
fn in_ns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<Result<T>> {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let fd = std::fs::File::open(&path).with_context(|| path.clone())?;
        nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET).context("setns")?;
        Ok(f())
    })
}

fn join<T>(h: std::thread::JoinHandle<Result<T>>) -> Result<T> {
    h.join().map_err(|_| anyhow!("a client thread panicked"))?
}

/// Send one packet from `src`, then poll TCP connects from `src` to the service every
/// `poll` until one completes: the knock-to-open time, or None after `deadline`.
fn knock_and_wait(
    src: Ipv4Addr,
    payload: &[u8],
    poll: Duration,
    deadline: Duration,
) -> std::io::Result<Option<Duration>> {
    let udp = UdpSocket::bind((src, 0))?;
    let target: SocketAddr = (SRV, SERVICE_PORT).into();
    let local: SocketAddr = (src, 0).into();
    let t0 = Instant::now();
    udp.send_to(payload, (SRV, SPA_PORT))?;
    let mut live: VecDeque<(Instant, Socket)> = VecDeque::new();
    while t0.elapsed() < deadline {
        let s = Socket::new(Domain::IPV4, Type::STREAM, None)?;
        s.set_nonblocking(true)?;
        s.bind(&local.into())?;
        let _ = s.connect(&target.into()); // EINPROGRESS; a dropped SYN never answers
        live.push_back((Instant::now(), s));
        std::thread::sleep(poll);
        for (_, s) in &live {
            if s.peer_addr().is_ok() && matches!(s.take_error(), Ok(None)) {
                return Ok(Some(t0.elapsed()));
            }
        }
        // An attempt whose SYN was dropped stays pending for a second: forget it.
        while live
            .front()
            .is_some_and(|(t, _)| t.elapsed() > Duration::from_millis(5))
        {
            live.pop_front();
        }
    }
    Ok(None)
}

/// Counts something a server reports: grants or packets examined.
enum Counter {
    /// posternd's control socket.
    Posternd(PathBuf),
    /// Lines containing a needle in fwknopd's log (read incrementally).
    Log {
        path: PathBuf,
        needle: &'static str,
        offset: u64,
        count: u64,
        /// The last, unfinished line.
        partial: Vec<u8>,
    },
}

impl Counter {
    /// Count lines of `path` containing `needle`, from the start of the file.
    fn log(path: PathBuf, needle: &'static str) -> Counter {
        Counter::Log {
            path,
            needle,
            offset: 0,
            count: 0,
            partial: Vec::new(),
        }
    }

    fn posternd_json(sock: &Path) -> Result<serde_json::Value> {
        let text = posternd::control::request(sock, "counters-json")?;
        Ok(serde_json::from_str(&text)?)
    }
    fn log_lines(&mut self) -> Result<u64> {
        let Counter::Log {
            path,
            needle,
            offset,
            count,
            partial,
        } = self
        else {
            return Ok(0);
        };
        let mut f = std::fs::File::open(&*path)?;
        f.seek(SeekFrom::Start(*offset))?;
        // In pieces: a tuned fwknopd logs hundreds of megabytes during a flood.
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            *offset += n as u64;
            partial.extend_from_slice(&buf[..n]);
            if let Some(cut) = partial.iter().rposition(|&b| b == b'\n') {
                *count += String::from_utf8_lossy(&partial[..cut])
                    .lines()
                    .filter(|l| l.contains(*needle))
                    .count() as u64;
                partial.drain(..=cut);
            }
        }
        Ok(*count)
    }
    fn grants(&mut self) -> Result<u64> {
        match self {
            Counter::Posternd(sock) => Ok(Counter::posternd_json(sock)?["grants"]
                .as_u64()
                .unwrap_or(0)),
            Counter::Log { .. } => self.log_lines(),
        }
    }
}

/// One server under test, in its namespaces.
struct Lab {
    kind: Kind,
    dir: TempDir,
    srv: Netns,
    cli: Netns,
    _svc: Proc,
    /// The server's interface in its namespace.
    iface: String,
    server: Option<Proc>,
    /// The fleet's Redis, and its replica (posternd-fleet, posternd-fleet-wait).
    redis: Vec<Proc>,
    posternd: PathBuf,
}

/// The fleet's Redis port on the server namespace's loopback (posternd-fleet).
const FLEET_REDIS_PORT: u16 = 6379;
/// A fleet key for the benchmark only.
const FLEET_KEY: &str = "YmVuY2gtZmxlZXQta2V5LWJlbmNoLWZsZWV0LWtleS1iZW5jaA==";

fn write_600(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text)?;
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    Ok(())
}

impl Lab {
    /// Namespaces, addresses, the service, the firewall and the configuration files; the
    /// server itself is started by [`Lab::start`].
    fn new(kind: Kind, m: &Material, posternd: &Path) -> Result<Lab> {
        let dir = TempDir::new("bench");
        let srv = Netns::new("bs");
        let cli = Netns::new("bc");
        link(&srv, &SRV.to_string(), &cli, &CLI.to_string());
        let iface = postern_testkit::iface_with(&srv, &SRV.to_string());
        let cli_iface = postern_testkit::iface_with(&cli, &CLI.to_string());
        let batch: String = (10..100)
            .map(|i| format!("addr add 198.18.0.{i}/24 dev {cli_iface}\n"))
            .collect();
        let mut c = Command::new("ip");
        c.args(["-n", &cli.name, "-batch", "-"]);
        c.stdin(std::process::Stdio::piped());
        let mut child = c.spawn()?;
        std::io::Write::write_all(
            &mut child.stdin.take().context("ip stdin")?,
            batch.as_bytes(),
        )?;
        if !child.wait()?.success() {
            bail!("cannot add client addresses");
        }
        let svc = tcp_service(&srv, "0.0.0.0", &[SERVICE_PORT], &dir.join("svc.log"));
        let p = |n: &str| dir.join(n).display().to_string();
        if kind.is_fwknopd() || kind == Kind::PosterndIptables {
            let mut rules = vec![
                "-P INPUT DROP",
                "-A INPUT -i lo -j ACCEPT",
                "-A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT",
            ];
            if kind.is_udp() {
                rules.push("-A INPUT -p udp --dport 62201 -j ACCEPT");
            }
            for r in rules {
                let mut argv = vec!["iptables", "-w"];
                argv.extend(r.split(' '));
                srv.run(&argv);
            }
        }
        if kind.is_fwknopd() {
            let intake = if kind.is_udp() {
                "ENABLE_UDP_SERVER Y\n"
            } else {
                "PCAP_FILTER udp port 62201\n"
            };
            let tuning = if kind.is_tuned() { FWKNOPD_TUNED } else { "" };
            write_600(&dir.join("fwknopd.conf"), &format!("{intake}{tuning}"))?;
        } else {
            let intake = if kind.is_udp() {
                "ENABLE_UDP_SERVER Y\n".to_owned()
            } else {
                format!("PCAP_INTF {iface}\n")
            };
            let fleet = if kind.is_fleet() {
                format!(
                    "FLEET_REDIS_URL redis://127.0.0.1:{FLEET_REDIS_PORT}/0\nFLEET_KEY_BASE64 {FLEET_KEY}\nFLEET_GATEWAY_NAME bench\n{}",
                    if kind == Kind::PosterndFleetWait {
                        "FLEET_REDIS_WAIT 1\nFLEET_REDIS_TIMEOUT_MS 200\n"
                    } else {
                        ""
                    }
                )
            } else {
                String::new()
            };
            write_600(
                &dir.join("fwknopd.conf"),
                &format!(
                    "{intake}{}\nDIGEST_FILE {}\nMAX_REPLAY_ENTRIES 400000\nACCESS_FILE {}\n{fleet}",
                    if kind == Kind::PosterndIptables {
                        "FIREWALL_TYPE iptables"
                    } else {
                        "NFT_DEFAULT_DROP Y"
                    },
                    p("digest"),
                    p("access.conf")
                ),
            )?;
        }
        write_600(&dir.join("access.conf"), &m.access_conf())?;
        Ok(Lab {
            kind,
            dir,
            srv,
            cli,
            _svc: svc,
            iface,
            server: None,
            redis: Vec::new(),
            posternd: posternd.to_owned(),
        })
    }

    /// Start the server and wait until it is ready.
    fn start(&mut self) -> Result<()> {
        let p = |n: &str| self.dir.join(n).display().to_string();
        let log = self.dir.join("server.log");
        let proc = if self.kind.is_fwknopd() {
            let proc = self.srv.spawn(
                &[
                    "fwknopd",
                    "-f",
                    "-c",
                    &p("fwknopd.conf"),
                    "-a",
                    &p("access.conf"),
                    "-d",
                    &p("digest.cache"),
                    "-p",
                    &p("fwknopd.pid"),
                    "-r",
                    &p("run"),
                    "-i",
                    &self.iface,
                ],
                &log,
            );
            let ready = if self.kind.is_udp() {
                "Kicking off UDP server"
            } else {
                "main event loop"
            };
            wait_for_line(&log, ready, Duration::from_secs(15));
            // The UDP server logs before it binds: give it a moment.
            std::thread::sleep(Duration::from_millis(300));
            proc
        } else {
            if self.kind.is_fleet() && self.redis.is_empty() {
                // The fleet's Redis, on the server namespace's loopback (and a replica of
                // it for FLEET_REDIS_WAIT).
                let replicas: &[u16] = if self.kind == Kind::PosterndFleetWait {
                    &[FLEET_REDIS_PORT + 1]
                } else {
                    &[]
                };
                for port in std::iter::once(FLEET_REDIS_PORT).chain(replicas.iter().copied()) {
                    let log = self.dir.join(&format!("redis-{port}.log"));
                    let dir = self.dir.join(&format!("redis-{port}"));
                    std::fs::create_dir_all(&dir)?;
                    let port_s = port.to_string();
                    let primary = format!("127.0.0.1 {FLEET_REDIS_PORT}");
                    let mut argv = vec![
                        "redis-server",
                        "--bind",
                        "127.0.0.1",
                        "--port",
                        &port_s,
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                    ];
                    let dir_s = dir.display().to_string();
                    argv.extend(["--dir", &dir_s]);
                    if port != FLEET_REDIS_PORT {
                        argv.extend(["--replicaof", &primary]);
                    }
                    let r = self.srv.spawn(&argv, &log);
                    let ready = if port == FLEET_REDIS_PORT {
                        "Ready to accept connections"
                    } else {
                        "MASTER <-> REPLICA sync: Finished with success"
                    };
                    wait_for_line(&log, ready, Duration::from_secs(15));
                    self.redis.push(r);
                }
            }
            let bin = self.posternd.display().to_string();
            let proc = self.srv.spawn(
                &[&bin, "-f", "-c", &p("fwknopd.conf"), "-r", &p("run")],
                &log,
            );
            wait_for_line(&log, "started (pid", Duration::from_secs(15));
            proc
        };
        self.server = Some(proc);
        Ok(())
    }

    fn sock(&self) -> PathBuf {
        self.dir.join("run").join("posternd.sock")
    }

    fn grant_counter(&self) -> Counter {
        if self.kind.is_fwknopd() {
            Counter::log(self.dir.join("server.log"), " rule to FWKNOP_INPUT for ")
        } else {
            Counter::Posternd(self.sock())
        }
    }

    fn examined_counter(&self) -> Counter {
        if self.kind.is_fwknopd() {
            Counter::log(
                self.dir.join("server.log"),
                "received with access source match",
            )
        } else {
            Counter::Posternd(self.sock())
        }
    }

    /// (examined, dropped-before-examination) as the server reports them.
    fn examined(&self, c: &mut Counter) -> Result<(u64, Option<u64>)> {
        match c {
            Counter::Posternd(sock) => {
                let v = Counter::posternd_json(sock)?;
                Ok((v["examined"].as_u64().unwrap_or(0), v["dropped"].as_u64()))
            }
            Counter::Log { .. } => Ok((c.log_lines()?, None)),
        }
    }

    /// The server's processes (posternd: privileged part and worker).
    fn pids(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self.server.iter().map(|p| p.child.id()).collect();
        if !self.kind.is_fwknopd() {
            if let Ok(s) = Counter::posternd_json(&self.sock()) {
                for part in s["parts"].as_array().into_iter().flatten().skip(1) {
                    if let Some(pid) = part["pid"].as_u64() {
                        v.push(pid as u32);
                    }
                }
            }
        }
        v
    }

    /// UDP receive-buffer drops in the server namespace (`Udp: RcvbufErrors`).
    fn udp_rcvbuf_errors(&self) -> u64 {
        let out = self.srv.run(&["cat", "/proc/net/snmp"]);
        let text = String::from_utf8_lossy(&out.stdout);
        let rows: Vec<Vec<&str>> = text
            .lines()
            .filter(|l| l.starts_with("Udp:"))
            .map(|l| l.split_whitespace().collect())
            .collect();
        if rows.len() < 2 {
            return 0;
        }
        rows[0]
            .iter()
            .position(|h| *h == "RcvbufErrors")
            .and_then(|i| rows[1].get(i))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Ok(dir) = std::env::var("BENCH_KEEP_LOGS") {
            for log in ["server", "offline"] {
                let _ = std::fs::copy(
                    self.dir.join(&format!("{log}.log")),
                    Path::new(&dir).join(format!("{}-{log}.log", self.kind.name())),
                );
            }
        }
        if let Some(mut p) = self.server.take() {
            // SIGTERM first so each server removes its own rules.
            let _ = Command::new("kill").arg(p.child.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = p.child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
    }
}

/// State letter and CPU time (clock ticks) of a process from the text of its
/// /proc/PID/stat: utime + stime + cutime + cstime, so children it has reaped count too
/// (fwknopd forks `iptables` for every rule it adds, removes or lists). The times are
/// still there while the process is a zombie, so a run's total can be read after exit.
fn parse_stat(s: &str) -> Option<(char, u64)> {
    let after = s.rfind(')').and_then(|i| s.get(i + 2..))?;
    let f: Vec<&str> = after.split_whitespace().collect();
    let state = f.first()?.chars().next()?;
    // Fields 14–17 of stat (utime, stime, cutime, cstime) are 11–14 after the name.
    let ticks = (11..=14)
        .map(|i| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0))
        .sum();
    Some((state, ticks))
}

fn proc_stat(pid: u32) -> Option<(char, u64)> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

fn cpu_ticks(pid: u32) -> u64 {
    proc_stat(pid).map_or(0, |(_, t)| t)
}

fn cpu_of(pids: &[u32]) -> u64 {
    pids.iter().map(|&p| cpu_ticks(p)).sum()
}

/// Microseconds of CPU per item, from a difference of clock ticks.
fn us_per(ticks: u64, items: u64) -> Option<f64> {
    (items > 0).then(|| ticks as f64 / USER_HZ * 1e6 / items as f64)
}

/// A `kB` line of /proc/PID/status (`VmRSS:`, `VmHWM:`).
fn status_kb(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn rss_kb(pid: u32) -> u64 {
    status_kb(pid, "VmRSS:")
}

/// Figures of one server in one run.
#[derive(Debug, Default, Clone)]
struct Figures {
    idle_cpu_pct: Option<f64>,
    lat_median_ms: Option<f64>,
    lat_p99_ms: Option<f64>,
    lat_opened: usize,
    lat_tried: usize,
    flood_sent_per_s: f64,
    examined_per_s: f64,
    socket_drops: Option<u64>,
    flood_cpu_pct: f64,
    /// Server CPU over the flood and its grace period, per packet examined in them.
    flood_cpu_us: Option<f64>,
    flood_rss_mb: f64,
    flood_knocks_opened: usize,
    flood_knocks_tried: usize,
    flood_knock_max_ms: Option<f64>,
    offline_per_s: Option<f64>,
    offline_cpu_us: Option<f64>,
    offline_hwm_mb: Option<f64>,
    grants_first: Option<f64>,
    /// Server CPU per grant over the "first grants" phase.
    grant_cpu_us: Option<f64>,
    grants_at_small: Option<f64>,
    grants_at_big: Option<f64>,
    notes: Vec<String>,
}

fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied()
}

fn measure_latency(lab: &Lab, m: &Material, cli: &Cli, f: &mut Figures) -> Result<()> {
    let keys = m.keys()?;
    let n = cli.knocks.min(50);
    let packets: Vec<(Ipv4Addr, Vec<u8>)> = (0..n)
        .map(|i| {
            let a = Ipv4Addr::new(198, 18, 0, 10 + i as u8);
            valid_packet(&keys, a).map(|p| (a, p))
        })
        .collect::<Result<_>>()?;
    let poll = Duration::from_micros(cli.poll_us);
    let times = join(in_ns(&lab.cli.name, move || {
        let mut v = Vec::new();
        for (src, p) in packets {
            v.push(knock_and_wait(src, &p, poll, Duration::from_secs(3)));
            std::thread::sleep(Duration::from_millis(20));
        }
        v
    }))?;
    let mut ms: Vec<f64> = Vec::new();
    for t in times {
        if let Some(d) = t? {
            ms.push(d.as_secs_f64() * 1e3);
        }
    }
    if std::env::var_os("BENCH_VERBOSE").is_some() {
        eprintln!("  knock-to-open (ms, in order): {ms:.2?}");
    }
    f.lat_tried = n;
    f.lat_opened = ms.len();
    ms.sort_by(f64::total_cmp);
    f.lat_median_ms = percentile(&ms, 0.5);
    f.lat_p99_ms = percentile(&ms, 0.99);
    Ok(())
}

fn measure_flood(lab: &Lab, m: &Material, cli: &Cli, f: &mut Figures) -> Result<()> {
    let secs = cli.flood_secs;
    let payloads = junk_payloads(4096);
    let mut counter = lab.examined_counter();
    let pids = lab.pids();
    let (ex0, drop0) = lab.examined(&mut counter)?;
    let udp0 = lab.udp_rcvbuf_errors();
    let cpu0 = cpu_of(&pids);
    let start = Instant::now();
    let sender = in_ns(
        &lab.cli.name,
        move || -> std::io::Result<(u64, Duration)> {
            let s = UdpSocket::bind((CLI, 0))?;
            s.connect((SRV, SPA_PORT))?;
            let t0 = Instant::now();
            let (limit, max) = (Duration::from_secs(secs), 100_000_000u64);
            let mut sent = 0u64;
            // sendmmsg, 64 datagrams per system call: on a small machine the sender is
            // the limit of this measure, so it wastes as little as it can.
            const BATCH: usize = 64;
            let fd = std::os::fd::AsRawFd::as_raw_fd(&s);
            let addrs = vec![None::<nix::sys::socket::SockaddrIn>; BATCH];
            'outer: while sent < max {
                for chunk in payloads.chunks(BATCH) {
                    let iovs: Vec<[std::io::IoSlice<'_>; 1]> =
                        chunk.iter().map(|p| [std::io::IoSlice::new(p)]).collect();
                    let mut hdrs = nix::sys::socket::MultiHeaders::preallocate(chunk.len(), None);
                    // A full queue (ENOBUFS) is the sender's limit, not an error.
                    if let Ok(r) = nix::sys::socket::sendmmsg(
                        fd,
                        &mut hdrs,
                        &iovs,
                        &addrs[..chunk.len()],
                        [],
                        nix::sys::socket::MsgFlags::empty(),
                    ) {
                        sent += r.count() as u64;
                    }
                }
                if t0.elapsed() >= limit {
                    break 'outer;
                }
            }
            Ok((sent, t0.elapsed()))
        },
    );
    // Legitimate knocks at 30 %, 50 % and 70 % of the flood, one packet each.
    let mut knocks = Vec::new();
    for (k, at) in [0.3, 0.5, 0.7].into_iter().enumerate() {
        let src = Ipv4Addr::new(198, 18, 0, 60 + k as u8);
        let delay = Duration::from_secs_f64(secs as f64 * at);
        let mat = m.clone();
        let poll = Duration::from_micros(cli.poll_us);
        knocks.push(in_ns(&lab.cli.name, move || -> Result<Option<Duration>> {
            std::thread::sleep(delay);
            let p = valid_packet(&mat.keys()?, src)?;
            Ok(knock_and_wait(src, &p, poll, Duration::from_secs(3))?)
        }));
    }
    // BENCH_PERF=DIR: a CPU profile of the server during the flood (perf record).
    let perf = std::env::var("BENCH_PERF").ok().map(|dir| {
        let pid_list: Vec<String> = pids.iter().map(u32::to_string).collect();
        Command::new("perf")
            .args(["record", "-q", "-F", "1999", "-o"])
            .arg(Path::new(&dir).join(format!("{}.perf", lab.kind.name())))
            .args(["-p", &pid_list.join(","), "--", "sleep"])
            .arg(secs.to_string())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
    });
    let mut rss_max = 0u64;
    while start.elapsed() < Duration::from_secs(secs) {
        let rss: u64 = pids.iter().map(|&p| rss_kb(p)).sum();
        rss_max = rss_max.max(rss);
        std::thread::sleep(Duration::from_millis(100));
    }
    let (sent, took) = join(sender)??;
    if let Some(Ok(mut p)) = perf {
        let _ = p.wait();
    }
    let cpu1 = cpu_of(&pids);
    // What was queued when the sender stopped is examined within this grace period.
    std::thread::sleep(Duration::from_secs(2));
    let (ex1, drop1) = lab.examined(&mut counter)?;
    // CPU per examined packet: both over the flood and its grace period.
    let cpu2 = cpu_of(&pids);
    let udp1 = lab.udp_rcvbuf_errors();
    let mut opened = Vec::new();
    for k in knocks {
        if let Some(d) = join(k)?? {
            opened.push(d.as_secs_f64() * 1e3);
        }
    }
    let t = took.as_secs_f64();
    f.flood_sent_per_s = sent as f64 / t;
    // Saturating: a posternd worker that restarts takes its counters and its CPU time
    // with it (the report's notes call such a run out).
    let examined = ex1.saturating_sub(ex0);
    f.examined_per_s = examined as f64 / t;
    f.socket_drops = if lab.kind.is_udp() {
        Some(udp1.saturating_sub(udp0) + drop1.unwrap_or(0).saturating_sub(drop0.unwrap_or(0)))
    } else {
        match (drop0, drop1) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a)),
            _ => None,
        }
    };
    f.flood_cpu_pct = cpu1.saturating_sub(cpu0) as f64 / USER_HZ / t * 100.0;
    f.flood_cpu_us = us_per(cpu2.saturating_sub(cpu0), examined);
    f.flood_rss_mb = rss_max as f64 / 1024.0;
    f.flood_knocks_tried = 3;
    f.flood_knocks_opened = opened.len();
    f.flood_knock_max_ms = opened.iter().copied().reduce(f64::max);
    Ok(())
}

/// Send `count` distinct valid packets (allow addresses from `first`), keeping at most
/// `window` of them ungranted; the grant rate from the first packet to the last grant,
/// the grants, and the server's CPU (clock ticks) while they were sent and granted.
fn grant_phase(
    lab: &Lab,
    m: &Material,
    first: u32,
    count: usize,
    window: u64,
    limit: Duration,
) -> Result<(f64, u64, u64)> {
    let keys = m.keys()?;
    let base_ip = u32::from(Ipv4Addr::new(10, 0, 0, 1));
    let packets: Vec<Vec<u8>> = (0..count as u32)
        .map(|i| valid_packet(&keys, Ipv4Addr::from(base_ip + first + i)))
        .collect::<Result<_>>()?;
    let mut progress = lab.grant_counter();
    let base = progress.grants()?;
    let pids = lab.pids();
    let cpu0 = cpu_of(&pids);
    let handle = in_ns(&lab.cli.name, move || -> Result<(f64, u64)> {
        let s = UdpSocket::bind((CLI, 0))?;
        s.connect((SRV, SPA_PORT))?;
        let t0 = Instant::now();
        let mut sent = 0u64;
        let mut granted = 0u64;
        let mut last_progress = Instant::now();
        let mut last_seen = 0u64;
        let total = packets.len() as u64;
        while granted < total && t0.elapsed() < limit {
            while sent < total && sent - granted < window {
                if s.send(&packets[sent as usize]).is_ok() {
                    sent += 1;
                }
            }
            std::thread::sleep(Duration::from_millis(1));
            granted = progress.grants()?.saturating_sub(base);
            if granted > last_seen {
                last_seen = granted;
                last_progress = Instant::now();
            } else if last_progress.elapsed() > Duration::from_secs(5) {
                break; // lost packets: stop and report what was granted
            }
        }
        let t = last_progress.duration_since(t0).as_secs_f64().max(1e-6);
        Ok((granted as f64 / t, granted))
    });
    let (rate, granted) = join(handle)??;
    Ok((rate, granted, cpu_of(&pids).saturating_sub(cpu0)))
}

fn measure_grants(lab: &Lab, m: &Material, cli: &Cli, f: &mut Figures) -> Result<()> {
    let fw = lab.kind.is_fwknopd();
    let (step, window) = if fw {
        (cli.fwknopd_grants_step, 8)
    } else {
        (cli.grants_step, 128)
    };
    let limit = Duration::from_secs(if fw { 240 } else { 120 });
    let mut next = 0u32;
    let (r, n, ticks) = grant_phase(lab, m, next, step, window, limit)?;
    next += n as u32;
    f.grants_first = Some(r);
    f.grant_cpu_us = us_per(ticks, n);
    // Fill to the "few" level, then measure.
    if (next as usize) < cli.grants_small {
        let (_, n, _) = grant_phase(
            lab,
            m,
            next,
            cli.grants_small - next as usize,
            window,
            limit,
        )?;
        next += n as u32;
    }
    let (r, n, _) = grant_phase(lab, m, next, step, window, limit)?;
    next += n as u32;
    f.grants_at_small = Some(r);
    if fw {
        let minutes = cli.grants_big as f64 / r.max(1e-3) / 60.0;
        f.notes.push(format!(
            "{}: not filled to {} grants (about {minutes:.0} min at its measured rate)",
            lab.kind.name(),
            cli.grants_big
        ));
        return Ok(());
    }
    // Fill to the "many" level in chunks (packets must stay within the age window).
    while (next as usize) < cli.grants_big {
        let chunk = (cli.grants_big - next as usize).min(20_000);
        let (_, n, _) = grant_phase(lab, m, next, chunk, window, limit)?;
        if n == 0 {
            break;
        }
        next += n as u32;
    }
    let (r, _, _) = grant_phase(lab, m, next, step, window, limit)?;
    f.grants_at_big = Some(r);
    Ok(())
}

/// The global header of a pcap file: Ethernet frames, microsecond timestamps.
fn pcap_header() -> Vec<u8> {
    let mut out = Vec::with_capacity(24);
    // magic, version 2.4 (two u16), thiszone, sigfigs, snaplen, linktype Ethernet
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    for v in [0u32, 0, 65535, 1] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// Append pcap records (Ethernet, IPv4, UDP to the SPA port) holding `payloads`, the
/// first being packet number `first` of the file (its timestamp: 1,000 packets a second).
fn pcap_records(out: &mut Vec<u8>, first: usize, payloads: &[Vec<u8>]) {
    for (j, p) in payloads.iter().enumerate() {
        let i = first + j;
        let udp_len = 8 + p.len();
        let ip_len = 20 + udp_len;
        let frame_len = (14 + ip_len) as u32;
        for v in [
            1_700_000_000u32 + (i / 1000) as u32,
            (i % 1000) as u32 * 1000,
            frame_len,
            frame_len,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&[2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00]);
        let mut ip = vec![0x45, 0];
        ip.extend_from_slice(&(ip_len as u16).to_be_bytes());
        ip.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0]);
        ip.extend_from_slice(&CLI.octets());
        ip.extend_from_slice(&SRV.octets());
        let sum: u32 = ip
            .chunks(2)
            .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
            .sum();
        let sum = (sum & 0xffff) + (sum >> 16);
        let sum = !(((sum & 0xffff) + (sum >> 16)) as u16);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
        out.extend_from_slice(&ip);
        out.extend_from_slice(&40000u16.to_be_bytes());
        out.extend_from_slice(&SPA_PORT.to_be_bytes());
        out.extend_from_slice(&(udp_len as u16).to_be_bytes());
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(p);
    }
}

/// The capture file of the offline figure, written once and read by every server.
struct OfflineFile {
    _dir: TempDir,
    path: PathBuf,
    packets: usize,
    bytes: u64,
}

impl OfflineFile {
    /// `packets` junk datagrams, generated and written in chunks (the bench's own memory
    /// stays small whatever the size).
    fn write(packets: usize) -> Result<OfflineFile> {
        let dir = TempDir::new("bench-offline");
        let path = dir.join("junk.pcap");
        let mut w = std::io::BufWriter::new(std::fs::File::create(&path)?);
        w.write_all(&pcap_header())?;
        let mut buf = Vec::new();
        let mut done = 0;
        while done < packets {
            let n = (packets - done).min(4096);
            buf.clear();
            pcap_records(&mut buf, done, &junk_payloads(n));
            w.write_all(&buf)?;
            done += n;
        }
        w.flush()?;
        drop(w);
        let bytes = std::fs::metadata(&path)?.len();
        Ok(OfflineFile {
            _dir: dir,
            path,
            packets,
            bytes,
        })
    }
}

/// Offline: the same file of junk read by each server's pcap-file mode, one thread, no
/// socket in the way, in test mode (no firewall change). Wall time from start to exit,
/// CPU time of the process (read from its zombie, so up to its last instruction), and
/// its peak RSS (`VmHWM`, sampled every 5 ms while it runs: a high-water mark, so the
/// last sample holds the peak unless it grew in the last 5 ms). fwknopd exits after
/// `-C` packets (without it, it would wait at the end of the file for ever); with its
/// default pacing it reads only the first `--offline-paced-packets`.
fn measure_offline(lab: &Lab, file: &OfflineFile, cli: &Cli, f: &mut Figures) -> Result<()> {
    let p = |n: &str| lab.dir.join(n).display().to_string();
    let log_path = lab.dir.join("offline.log");
    let log = std::fs::File::create(&log_path)?;
    let fw = lab.kind.is_fwknopd();
    let want = if fw && !lab.kind.is_tuned() {
        file.packets.min(cli.offline_paced_packets)
    } else {
        file.packets
    };
    let pcap = file.path.display().to_string();
    let mut c = if fw {
        // Its UDP-server setting would refuse a capture file: a configuration of its own.
        let tuning = if lab.kind.is_tuned() {
            FWKNOPD_TUNED
        } else {
            ""
        };
        write_600(
            &lab.dir.join("offline.conf"),
            &format!("PCAP_FILTER udp port 62201\n{tuning}"),
        )?;
        let mut c = lab.srv.cmd("fwknopd");
        c.args(["-f", "-t", "--pcap-file", &pcap, "-c", &p("offline.conf")])
            .args(["-a", &p("access.conf"), "-d", &p("offline.cache")])
            .args(["-p", &p("offline.pid"), "-r", &p("offline-run")])
            .args(["-C", &want.to_string()]);
        c
    } else {
        let mut c = lab.srv.cmd(&lab.posternd.display().to_string());
        c.args(["-c", &p("fwknopd.conf"), "--pcap-file", &pcap, "-t"]);
        c
    };
    c.stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    let t0 = Instant::now();
    let mut child = c.spawn()?;
    // `ip netns exec` replaces itself with the server: the child is the server.
    let pid = child.id();
    let (mut ticks, mut hwm_kb) = (0u64, 0u64);
    let (mut log_len, mut grew) = (0u64, t0);
    let (took, exited) = loop {
        let exited = match proc_stat(pid) {
            Some((state, t)) => {
                ticks = t;
                matches!(state, 'Z' | 'X')
            }
            None => true,
        };
        let took = t0.elapsed();
        if exited {
            break (took, true);
        }
        hwm_kb = hwm_kb.max(status_kb(pid, "VmHWM:"));
        let len = std::fs::metadata(&log_path).map_or(0, |m| m.len());
        if len > log_len {
            (log_len, grew) = (len, Instant::now());
        }
        // Bounded: a run that stops making progress (or takes too long) is killed.
        if took > Duration::from_secs(600) || grew.elapsed() > Duration::from_secs(10) {
            break (took, false);
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    if !exited {
        let _ = child.kill();
    }
    let status = child.wait()?;
    let mut counter = Counter::log(
        log_path,
        if fw {
            "received with access source match"
        } else {
            ": refused: "
        },
    );
    let examined = counter.log_lines()?;
    if !exited || !status.success() || examined < want as u64 {
        f.notes.push(format!(
            "{}: offline run examined {examined} of {want} ({})",
            lab.kind.name(),
            if exited {
                format!("{status}")
            } else {
                "did not exit: killed".into()
            }
        ));
    }
    f.offline_per_s = Some(examined as f64 / took.as_secs_f64().max(1e-6));
    f.offline_cpu_us = us_per(ticks, examined);
    f.offline_hwm_mb = (hwm_kb > 0).then(|| hwm_kb as f64 / 1024.0);
    Ok(())
}

/// CPU of the idle server (no packet sent), % of one core.
fn measure_idle(lab: &Lab, cli: &Cli, f: &mut Figures) {
    let pids = lab.pids();
    let (cpu0, t0) = (cpu_of(&pids), Instant::now());
    std::thread::sleep(Duration::from_secs(cli.idle_secs));
    let ticks = cpu_of(&pids).saturating_sub(cpu0);
    f.idle_cpu_pct = Some(ticks as f64 / USER_HZ / t0.elapsed().as_secs_f64() * 100.0);
}

/// posternd's own account of how it ran (privilege separation, sandbox, worker restarts,
/// replay store), as a note; a worker restart is called out (its figures may be off).
fn posternd_state(lab: &Lab, f: &mut Figures) {
    let Ok(v) = Counter::posternd_json(&lab.sock()) else {
        f.notes.push(format!(
            "{}: no status from the control socket after the run",
            lab.kind.name()
        ));
        return;
    };
    let s = |x: &serde_json::Value| x.as_str().map_or_else(|| x.to_string(), str::to_owned);
    let name = lab.kind.name();
    match v["parts"].as_array().and_then(|p| p.get(1)) {
        Some(w) => {
            f.notes.push(format!(
                "{name}: privilege separated; worker landlock {}, seccomp {} (kernel seccomp mode {}); replay store {}",
                s(&w["landlock"]),
                s(&w["seccomp"]),
                s(&w["kernel_seccomp_mode"]),
                s(&v["replay_store"])
            ));
            let restarts = w["restarts"].as_u64().unwrap_or(0);
            if restarts > 0 {
                f.notes.push(format!(
                    "{name}: the worker RESTARTED {restarts} time(s) during a run (see the server log, BENCH_KEEP_LOGS): that run's figures are suspect (a new worker starts its examined counter from 0, and the CPU of the dead one is lost)"
                ));
            }
        }
        None => f.notes.push(format!(
            "{name}: NOT privilege separated; replay store {}",
            s(&v["replay_store"])
        )),
    }
}

fn run_one(kind: Kind, m: &Material, cli: &Cli, file: &OfflineFile) -> Result<Figures> {
    let mut lab = Lab::new(kind, m, &cli.posternd)?;
    let mut f = Figures::default();
    // Before the live server starts, so that it takes no CPU from the offline run.
    measure_offline(&lab, file, cli, &mut f)?;
    lab.start()?;
    measure_idle(&lab, cli, &mut f);
    measure_latency(&lab, m, cli, &mut f)?;
    measure_flood(&lab, m, cli, &mut f)?;
    measure_grants(&lab, m, cli, &mut f)?;
    if !kind.is_fwknopd() {
        posternd_state(&lab, &mut f);
    }
    Ok(f)
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| s.lines().next().map(|l| l.to_owned()))
        .unwrap_or_default();
    let kernel = Command::new("uname")
        .arg("-r")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    format!(
        "{cores} cores ({cpu}), {}, Linux {kernel}",
        mem.replace("MemTotal:", "memory")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    )
}

/// Median, min and max of the present values.
fn stats(v: &[Option<f64>]) -> Option<(f64, f64, f64)> {
    let mut x: Vec<f64> = v.iter().flatten().copied().collect();
    if x.is_empty() {
        return None;
    }
    x.sort_by(f64::total_cmp);
    Some((x[x.len() / 2], x[0], x[x.len() - 1]))
}

fn fmt_num(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

fn cell(v: &[Option<f64>]) -> String {
    match stats(v) {
        None => "—".into(),
        Some((med, lo, hi)) if v.len() > 1 => {
            format!("{} ({}–{})", fmt_num(med), fmt_num(lo), fmt_num(hi))
        }
        Some((med, _, _)) => fmt_num(med),
    }
}

struct Row {
    name: String,
    get: fn(&Figures) -> Option<f64>,
    higher_is_better: bool,
}

fn rows(cli: &Cli) -> Vec<Row> {
    let row = |name: &str, get: fn(&Figures) -> Option<f64>, higher_is_better: bool| Row {
        name: name.to_owned(),
        get,
        higher_is_better,
    };
    vec![
        row(
            &format!("CPU while idle (% of one core, {} s)", cli.idle_secs),
            |f| f.idle_cpu_pct,
            false,
        ),
        row("knock-to-open median (ms)", |f| f.lat_median_ms, false),
        row("knock-to-open p99 (ms)", |f| f.lat_p99_ms, false),
        row(
            "knocks that opened (%)",
            |f| Some(f.lat_opened as f64 / f.lat_tried.max(1) as f64 * 100.0),
            true,
        ),
        row(
            "junk sent by the flooder (packets/s)",
            |f| Some(f.flood_sent_per_s),
            true,
        ),
        row(
            "junk examined (packets/s)",
            |f| Some(f.examined_per_s),
            true,
        ),
        row(
            "socket / ring drops during the flood",
            |f| f.socket_drops.map(|d| d as f64),
            false,
        ),
        row(
            "CPU during the flood (% of one core)",
            |f| Some(f.flood_cpu_pct),
            false,
        ),
        row(
            "CPU per examined junk packet, flood (µs)",
            |f| f.flood_cpu_us,
            false,
        ),
        row(
            "RSS during the flood (MB, max)",
            |f| Some(f.flood_rss_mb),
            false,
        ),
        row(
            "knocks in the flood opened on the first packet (%)",
            |f| Some(f.flood_knocks_opened as f64 / f.flood_knocks_tried.max(1) as f64 * 100.0),
            true,
        ),
        row(
            "slowest of those knocks (ms)",
            |f| f.flood_knock_max_ms,
            false,
        ),
        row(
            "offline: junk examined from a pcap file (packets/s, one thread)",
            |f| f.offline_per_s,
            true,
        ),
        row(
            "offline: CPU per examined packet (µs)",
            |f| f.offline_cpu_us,
            false,
        ),
        row("offline: peak RSS (MB, VmHWM)", |f| f.offline_hwm_mb, false),
        row(
            &format!(
                "grants/s, first grants (fwknopd: {}, posternd: {})",
                cli.fwknopd_grants_step, cli.grants_step
            ),
            |f| f.grants_first,
            true,
        ),
        row(
            "CPU per granted knock, first grants (µs)",
            |f| f.grant_cpu_us,
            false,
        ),
        row(
            &format!("grants/s at ~{} open", cli.grants_small),
            |f| f.grants_at_small,
            true,
        ),
        row(
            &format!("grants/s at ~{} open (posternd only)", cli.grants_big),
            |f| f.grants_at_big,
            true,
        ),
    ]
}

/// The ratio columns: posternd against each fwknopd it is compared with.
const RATIOS: [(Kind, Kind); 10] = [
    (Kind::PosterndFleet, Kind::PosterndAfPacket),
    (Kind::PosterndFleetWait, Kind::PosterndFleet),
    (Kind::PosterndUdp, Kind::FwknopdUdp),
    (Kind::PosterndUdp, Kind::FwknopdUdpFast),
    (Kind::PosterndAfPacket, Kind::FwknopdUdp),
    (Kind::PosterndAfPacket, Kind::FwknopdPcap),
    (Kind::PosterndAfPacket, Kind::FwknopdPcapFast),
    (Kind::PosterndIptables, Kind::PosterndAfPacket),
    (Kind::PosterndIptables, Kind::FwknopdPcap),
    (Kind::PosterndIptables, Kind::FwknopdPcapFast),
];

fn report(
    cli: &Cli,
    file: &OfflineFile,
    all: &BTreeMap<Kind, Vec<Figures>>,
    took: Duration,
) -> String {
    let rows = rows(cli);
    let kinds: Vec<Kind> = all.keys().copied().collect();
    let mut s = String::new();
    s.push_str("# postern benchmark results\n\n");
    s.push_str("Regenerated by `sudo ./scripts/bench.sh` (`postern-bench`, in `bench/`). Do not edit by hand.\n\n");
    s.push_str(&format!(
        "- date: {}\n- machine: {}\n- fwknopd: {}\n- posternd: {} (release build)\n- runs: {} (each cell: median, and min–max over the runs)\n- knocks for latency: {}; flood: {} s from one sender thread; TCP connect polled every {} µs\n",
        Command::new("date").arg("-u").arg("+%Y-%m-%d %H:%M UTC").output().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned()).unwrap_or_default(),
        machine(),
        Command::new("fwknopd").arg("--version").output().map(|o| String::from_utf8_lossy(&o.stdout).trim().replace('\n', " ")).unwrap_or_default(),
        env!("CARGO_PKG_VERSION"),
        cli.runs,
        cli.knocks,
        cli.flood_secs,
        cli.poll_us,
    ));
    s.push_str(&format!(
        "- fwknopd settings: `fwknopd-udp` and `fwknopd-pcap` run its defaults (pcap loop: `PCAP_DISPATCH_COUNT 100` packets per `PCAP_LOOP_SLEEP 100000` µs; a forked `iptables -L` every `RULES_CHECK_THRESHOLD 20` loop iterations, in UDP mode every 20 packets); the `-fast` kinds its fastest settings: `{}`\n",
        FWKNOPD_TUNED.trim_end().replace('\n', "`, `")
    ));
    s.push_str(&format!(
        "- offline capture: {} junk packets ({:.0} MB) read in test mode; posternd and tuned fwknopd read all of them, fwknopd with its default pacing the first {} (`-C`)\n",
        file.packets,
        file.bytes as f64 / 1e6,
        file.packets.min(cli.offline_paced_packets)
    ));
    s.push_str("- CPU: user + system time of the server's processes and of the children they reaped (fwknopd's `iptables` commands), from /proc/PID/stat (10 ms ticks)\n");
    s.push_str(&format!("- total time: {:.0} s\n\n", took.as_secs_f64()));
    s.push_str("| figure |");
    for k in &kinds {
        s.push_str(&format!(" {} |", k.name()));
    }
    let ratios: Vec<(Kind, Kind)> = RATIOS
        .into_iter()
        .filter(|(a, b)| all.contains_key(a) && all.contains_key(b))
        .collect();
    for (a, b) in &ratios {
        s.push_str(&format!(" {} / {} |", a.name(), b.name()));
    }
    s.push('\n');
    s.push_str(&"|---".repeat(1 + kinds.len() + ratios.len()));
    s.push_str("|\n");
    for row in &rows {
        s.push_str(&format!("| {} |", row.name));
        for k in &kinds {
            let v: Vec<Option<f64>> = all[k].iter().map(row.get).collect();
            s.push_str(&format!(" {} |", cell(&v)));
        }
        for (a, b) in &ratios {
            let va: Vec<Option<f64>> = all[a].iter().map(row.get).collect();
            let vb: Vec<Option<f64>> = all[b].iter().map(row.get).collect();
            let r = match (stats(&va), stats(&vb)) {
                (Some((x, _, _)), Some((y, _, _))) if y > 0.0 => {
                    let r = x / y;
                    let better = if row.higher_is_better {
                        r > 1.0
                    } else {
                        r < 1.0
                    };
                    format!(
                        "{}×{}",
                        fmt_num(r),
                        if better && (r - 1.0).abs() > 0.05 {
                            " ✓"
                        } else {
                            ""
                        }
                    )
                }
                _ => "—".into(),
            };
            s.push_str(&format!(" {r} |"));
        }
        s.push('\n');
    }
    s.push_str(&targets(all));
    s.push_str(&fastest(all));
    let mut notes: Vec<String> = all
        .values()
        .flatten()
        .flat_map(|f| f.notes.clone())
        .collect();
    notes.sort();
    notes.dedup();
    if !notes.is_empty() {
        s.push_str("\nNotes:\n");
        for n in notes {
            s.push_str(&format!("- {n}\n"));
        }
    }
    s.push_str("\nHow each figure is taken: see `bench/README.md`.\n");
    s
}

/// The median of one figure over the runs of `k`.
fn median(
    all: &BTreeMap<Kind, Vec<Figures>>,
    k: Kind,
    get: fn(&Figures) -> Option<f64>,
) -> Option<f64> {
    all.get(&k)
        .and_then(|v| stats(&v.iter().map(get).collect::<Vec<_>>()))
        .map(|(m, _, _)| m)
}

/// The issue's targets, checked against the medians.
fn targets(all: &BTreeMap<Kind, Vec<Figures>>) -> String {
    let mut s = String::from("\nTargets (posternd, medians of the runs above):\n\n");
    let mark = |ok: bool| if ok { "met" } else { "NOT met" };
    let fw_udp = median(all, Kind::FwknopdUdp, |f| Some(f.examined_per_s));
    for k in [
        Kind::PosterndUdp,
        Kind::PosterndAfPacket,
        Kind::PosterndIptables,
    ] {
        if !all.contains_key(&k) {
            continue;
        }
        let n = k.name();
        let get = |g: fn(&Figures) -> Option<f64>| median(all, k, g);
        if let (Some(med), Some(p99)) = (get(|f| f.lat_median_ms), get(|f| f.lat_p99_ms)) {
            s.push_str(&format!(
                "- {n}: knock-to-open median {med:.2} ms (target ≤ 1 ms: {}), p99 {p99:.2} ms (target ≤ 3 ms: {})\n",
                mark(med <= 1.0),
                mark(p99 <= 3.0)
            ));
        }
        if let (Some(ex), Some(drops)) = (
            get(|f| Some(f.examined_per_s)),
            get(|f| f.socket_drops.map(|d| d as f64)),
        ) {
            let ratio = fw_udp.map(|b| ex / b.max(1e-9));
            s.push_str(&format!(
                "- {n}: junk examined {ex:.0}/s = {} the rate of fwknopd-udp with its defaults (target ≥ 50×: {}; against fwknopd tuned, see below); drops at the sender's rate: {drops:.0} (target 0: {})\n",
                ratio.map_or("—".into(), |r| format!("{r:.0}×")),
                if ratio.is_some() { mark(ratio.is_some_and(|r| r >= 50.0)) } else { "fwknopd-udp not measured" },
                mark(drops == 0.0)
            ));
        }
        let runs = &all[&k];
        let all_opened = runs
            .iter()
            .all(|f| f.flood_knocks_opened == f.flood_knocks_tried);
        let slowest = runs
            .iter()
            .filter_map(|f| f.flood_knock_max_ms)
            .fold(0.0, f64::max);
        s.push_str(&format!(
            "- {n}: knocks inside the flood, all runs: {} opened on the first packet, slowest {slowest:.2} ms (target: all, ≤ 10 ms: {})\n",
            if all_opened { "all" } else { "NOT all" },
            mark(all_opened && slowest <= 10.0)
        ));
        if let (Some(a), Some(b)) = (get(|f| f.grants_at_small), get(|f| f.grants_at_big)) {
            s.push_str(&format!(
                "- {n}: grants/s {a:.0} at the small level, {b:.0} at the large one (target ≥ 10,000 and flat: {})\n",
                mark(a >= 10_000.0 && b >= 10_000.0 && b >= 0.8 * a)
            ));
        }
        if let Some(rss) = get(|f| Some(f.flood_rss_mb)) {
            s.push_str(&format!(
                "- {n}: RSS during the flood {rss:.1} MB, both processes (target ≤ 10 MB: {})\n",
                mark(rss <= 10.0)
            ));
        }
    }
    s
}

/// "a×" of two figures, or "—".
fn times(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{}×", fmt_num(a / b)),
        _ => "—".into(),
    }
}

fn num(x: Option<f64>) -> String {
    x.map_or("—".into(), fmt_num)
}

/// The comparison with fwknopd at its fastest settings, which the ≥ 50× target (stated
/// against fwknopd-udp with its defaults) does not show.
fn fastest(all: &BTreeMap<Kind, Vec<Figures>>) -> String {
    let mut s = String::from(
        "\nAgainst fwknopd at its fastest settings (the `-fast` columns; not one of the issue's targets):\n\n",
    );
    let m = |k: Kind, g: fn(&Figures) -> Option<f64>| median(all, k, g);
    let have = |k: Kind| all.contains_key(&k);
    let mut any = false;
    for (p, fw) in [
        (Kind::PosterndUdp, Kind::FwknopdUdpFast),
        (Kind::PosterndAfPacket, Kind::FwknopdPcapFast),
    ] {
        if !(have(p) && have(fw)) {
            continue;
        }
        any = true;
        let ex = |k| m(k, |f| Some(f.examined_per_s));
        let cpu = |k| m(k, |f| f.flood_cpu_us);
        s.push_str(&format!(
            "- flood: {} examined {}/s = {} {} ({}/s); CPU per examined junk packet {} µs against {} µs (fwknopd uses {} as much)\n",
            p.name(),
            num(ex(p)),
            times(ex(p), ex(fw)),
            fw.name(),
            num(ex(fw)),
            num(cpu(p)),
            num(cpu(fw)),
            times(cpu(fw), cpu(p)),
        ));
    }
    let tuned = [Kind::FwknopdPcapFast, Kind::FwknopdUdpFast]
        .into_iter()
        .find(|&k| have(k));
    if let Some(fw) = tuned {
        for p in [Kind::PosterndUdp, Kind::PosterndAfPacket] {
            if !have(p) {
                continue;
            }
            any = true;
            let rate = |k| m(k, |f| f.offline_per_s);
            let cpu = |k| m(k, |f| f.offline_cpu_us);
            let rss = |k| m(k, |f| f.offline_hwm_mb);
            s.push_str(&format!(
                "- offline, one thread, no socket: {} {}/s = {} tuned fwknopd ({}: {}/s) by wall time; CPU per packet {} µs against {} µs ({} by CPU); peak RSS {} MB against {} MB\n",
                p.name(),
                num(rate(p)),
                times(rate(p), rate(fw)),
                fw.name(),
                num(rate(fw)),
                num(cpu(p)),
                num(cpu(fw)),
                times(cpu(fw), cpu(p)),
                num(rss(p)),
                num(rss(fw)),
            ));
        }
    }
    for (fw, fast) in [
        (Kind::FwknopdUdp, Kind::FwknopdUdpFast),
        (Kind::FwknopdPcap, Kind::FwknopdPcapFast),
    ] {
        if have(fw) && have(fast) {
            any = true;
            s.push_str(&format!(
                "- {} with its defaults examines {}/s in the flood and {}/s offline, tuned ({}) {}/s and {}/s: the defaults' figures measure its pcap loop's sleep (offline, pcap intake) and its forked `iptables -L` (live), not the cost of examining a packet, so the ratios against the default columns overstate posternd's advantage\n",
                fw.name(),
                num(m(fw, |f| Some(f.examined_per_s))),
                num(m(fw, |f| f.offline_per_s)),
                fast.name(),
                num(m(fast, |f| Some(f.examined_per_s))),
                num(m(fast, |f| f.offline_per_s)),
            ));
        }
    }
    if let Some(fw) = tuned {
        if let Some(idle) = m(fw, |f| f.idle_cpu_pct) {
            s.push_str(&format!(
                "- the price of fwknopd's fastest settings: its 1 µs loop sleep polls, {} % of one core while idle ({})\n",
                fmt_num(idle),
                fw.name()
            ));
        }
    }
    if !any {
        s.push_str("- no `-fast` fwknopd kind was measured in this run\n");
    }
    s
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let kinds: Vec<Kind> = cli
        .servers
        .iter()
        .map(|s| Kind::parse(s))
        .collect::<Result<_>>()?;
    if !postern_testkit::can_run("postern-bench", &["ip", "nft", "iptables", "fwknopd"]) {
        bail!("the benchmark needs root, ip, nft, iptables and fwknopd");
    }
    if !cli.posternd.is_file() {
        bail!(
            "{} not found: build it with `cargo build --release -p posternd`",
            cli.posternd.display()
        );
    }
    let m = Material::new()?;
    let start = Instant::now();
    eprintln!(
        "writing the offline capture ({} junk packets) ...",
        cli.offline_packets
    );
    let file = OfflineFile::write(cli.offline_packets)?;
    let mut all: BTreeMap<Kind, Vec<Figures>> = BTreeMap::new();
    for run in 1..=cli.runs {
        for &k in &kinds {
            eprintln!("run {run}/{}: {} ...", cli.runs, k.name());
            let t = Instant::now();
            let f =
                run_one(k, &m, &cli, &file).with_context(|| format!("{} run {run}", k.name()))?;
            eprintln!("  {:.0} s: {f:?}", t.elapsed().as_secs_f64());
            all.entry(k).or_default().push(f);
        }
    }
    let text = report(&cli, &file, &all, start.elapsed());
    if let Some(dir) = cli.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&cli.out, &text)?;
    print!("{text}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pcap_file_reads_back_as_the_same_datagrams() {
        let payloads = junk_payloads(50);
        let mut file = pcap_header();
        pcap_records(&mut file, 0, &payloads[..20]);
        pcap_records(&mut file, 20, &payloads[20..]);
        let read = postern_capture::pcapfile::read(&file, Some(SPA_PORT)).expect("pcap");
        assert_eq!(read.len(), 50);
        for ((_, d), p) in read.iter().zip(&payloads) {
            assert_eq!(&d.payload, p);
            assert_eq!(d.src.ip(), std::net::IpAddr::V4(CLI));
            assert_eq!(d.dst, SocketAddr::from((SRV, SPA_PORT)));
        }
    }

    #[test]
    fn junk_looks_like_spa_and_valid_packets_decode() {
        for p in junk_payloads(100) {
            assert!((204..=232).contains(&p.len()), "{}", p.len());
            assert!(p
                .iter()
                .all(|c| c.is_ascii_alphanumeric() || *c == b'+' || *c == b'/'));
        }
        let m = Material::new().expect("keys");
        let keys = m.keys().expect("keys");
        // Every junk packet is refused only by its HMAC.
        for p in junk_payloads(64) {
            assert!(
                matches!(
                    postern_proto::decode(&p, &keys),
                    Err(postern_proto::Error::HmacMismatch)
                ),
                "{}",
                String::from_utf8_lossy(&p)
            );
        }
        let p = valid_packet(&keys, Ipv4Addr::new(10, 0, 0, 1)).expect("encode");
        let opened = postern_proto::decode(&p, &keys).expect("decode");
        assert_eq!(opened.message.message, "10.0.0.1,tcp/22");
    }

    #[test]
    fn the_offline_file_is_written_in_chunks_and_reads_back_whole() {
        let file = OfflineFile::write(5000).expect("write");
        let bytes = std::fs::read(&file.path).expect("read");
        let read = postern_capture::pcapfile::read(&bytes, Some(SPA_PORT)).expect("pcap");
        assert_eq!(read.len(), 5000);
        assert!(read
            .iter()
            .all(|(_, d)| (204..=232).contains(&d.payload.len())));
        assert_eq!(
            file.bytes,
            std::fs::metadata(&file.path).expect("metadata").len()
        );
    }

    #[test]
    fn kinds_parse_back_from_their_names() {
        for k in Kind::ALL {
            assert_eq!(Kind::parse(k.name()).expect("parse"), k);
        }
        assert!(Kind::parse("fwknopd").is_err());
        let tuned: Vec<Kind> = Kind::ALL.into_iter().filter(|k| k.is_tuned()).collect();
        assert_eq!(tuned, [Kind::FwknopdUdpFast, Kind::FwknopdPcapFast]);
        assert!(tuned.iter().all(|k| k.is_fwknopd()));
        assert!(Kind::FwknopdUdpFast.is_udp() && !Kind::FwknopdPcapFast.is_udp());
        // The default server list names every kind.
        let cli = Cli::parse_from(["postern-bench"]);
        let kinds: Vec<Kind> = cli
            .servers
            .iter()
            .map(|s| Kind::parse(s).unwrap())
            .collect();
        assert_eq!(kinds, Kind::ALL);
    }

    #[test]
    fn stat_lines_give_state_and_cpu_with_reaped_children() {
        // pid (comm) state ppid ... utime stime cutime cstime ...; a comm with ") ".
        let line = "42 (a) b) S 1 42 42 0 -1 4194560 100 0 0 0 7 3 20 5 20 0 1 0 99 0";
        assert_eq!(parse_stat(line), Some(('S', 35)));
        assert_eq!(parse_stat("42 (z) Z 1"), Some(('Z', 0)));
        assert_eq!(parse_stat("garbage"), None);
        // This process: running, and the zombie-safe reader agrees with it.
        let (state, _) = proc_stat(std::process::id()).expect("own stat");
        assert!(matches!(state, 'R' | 'S'), "{state}");
        assert_eq!(us_per(150, 1000), Some(1500.0));
        assert_eq!(us_per(5, 0), None);
    }

    #[test]
    fn the_zombie_keeps_its_cpu_time_for_the_offline_figure() {
        let mut child = Command::new("sh")
            .args(["-c", "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done"])
            .spawn()
            .expect("sh");
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut last = None;
        while Instant::now() < deadline {
            last = proc_stat(child.id());
            if matches!(last, Some(('Z', _)) | None) {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        child.wait().expect("wait");
        let (state, ticks) = last.expect("stat");
        assert_eq!(state, 'Z');
        assert!(ticks > 0, "a busy loop used no CPU?");
    }

    fn figures(examined: f64, flood_us: f64, offline: f64, offline_us: f64) -> Figures {
        Figures {
            lat_median_ms: Some(0.5),
            lat_p99_ms: Some(0.9),
            lat_opened: 50,
            lat_tried: 50,
            examined_per_s: examined,
            socket_drops: Some(0),
            flood_cpu_us: Some(flood_us),
            flood_rss_mb: 8.0,
            flood_knocks_opened: 3,
            flood_knocks_tried: 3,
            flood_knock_max_ms: Some(1.0),
            offline_per_s: Some(offline),
            offline_cpu_us: Some(offline_us),
            offline_hwm_mb: Some(4.0),
            grants_at_small: Some(39_000.0),
            grants_at_big: Some(38_000.0),
            idle_cpu_pct: Some(28.0),
            ..Figures::default()
        }
    }

    #[test]
    fn the_targets_name_fwknopd_udp_and_the_tuned_comparison_is_stated() {
        let mut all = BTreeMap::new();
        all.insert(Kind::FwknopdUdp, vec![figures(7_000.0, 30.0, 990.0, 20.0)]);
        all.insert(Kind::FwknopdPcap, vec![figures(1_000.0, 10.0, 990.0, 20.0)]);
        all.insert(
            Kind::FwknopdPcapFast,
            vec![figures(50_000.0, 12.0, 100_000.0, 9.0)],
        );
        all.insert(
            Kind::PosterndAfPacket,
            vec![figures(250_000.0, 2.0, 700_000.0, 1.5)],
        );
        let t = targets(&all);
        assert!(
            t.contains(
                "250000/s = 36× the rate of fwknopd-udp with its defaults (target ≥ 50×: NOT met"
            ),
            "{t}"
        );
        let f = fastest(&all);
        assert!(
            f.contains("posternd-afpacket examined 250000/s = 5.00× fwknopd-pcap-fast"),
            "{f}"
        );
        assert!(
            f.contains("CPU per examined junk packet 2.00 µs against 12.0 µs"),
            "{f}"
        );
        assert!(f.contains("700000/s = 7.00× tuned fwknopd"), "{f}");
        assert!(f.contains("(6.00× by CPU)"), "{f}");
        assert!(
            f.contains("fwknopd-pcap with its defaults examines 1000/s"),
            "{f}"
        );
        assert!(f.contains("28.0 % of one core while idle"), "{f}");
        let mut none = all.clone();
        none.remove(&Kind::FwknopdPcapFast);
        assert!(fastest(&none).contains("no `-fast` fwknopd kind"));
    }

    #[test]
    fn log_lines_are_counted_across_reads_and_unfinished_lines() {
        let dir = TempDir::new("bench-test");
        let path = dir.join("log");
        let mut c = Counter::log(path.clone(), "match");
        std::fs::write(&path, "a match\nno\nmat").expect("write");
        assert_eq!(c.log_lines().expect("count"), 1);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("open");
        f.write_all(b"ch here\n").expect("append");
        let big = "match\n".repeat(400_000); // more than one read
        f.write_all(big.as_bytes()).expect("append");
        assert_eq!(c.log_lines().expect("count"), 400_002);
    }

    #[test]
    fn medians_ranges_and_percentiles() {
        assert_eq!(
            stats(&[Some(3.0), None, Some(1.0), Some(2.0)]),
            Some((2.0, 1.0, 3.0))
        );
        assert_eq!(stats(&[None]), None);
        let v: Vec<f64> = (1..=50).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), Some(26.0));
        assert_eq!(percentile(&v, 0.99), Some(50.0));
        assert_eq!(cell(&[Some(1.5), Some(2.5), Some(2.0)]), "2.00 (1.50–2.50)");
    }
}
