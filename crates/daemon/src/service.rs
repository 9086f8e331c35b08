//! Running as a service: systemd's notification protocol (readiness, watchdog,
//! stopping), the pid file, and detaching into the background the way fwknopd does.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::log;

/// Tell systemd something (`READY=1`, `WATCHDOG=1`, `STOPPING=1`), when it listens.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(sock) = std::os::unix::net::UnixDatagram::unbound() else {
        return;
    };
    let p = path.to_string_lossy().into_owned();
    let sent = if let Some(name) = p.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt as _;
        std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
            .and_then(|a| sock.send_to_addr(state.as_bytes(), &a))
            .is_ok()
    } else {
        sock.send_to(state.as_bytes(), &p).is_ok()
    };
    if !sent {
        log::warn("cannot notify systemd");
    }
}

/// How often to send `WATCHDOG=1`: half of systemd's `WATCHDOG_USEC`, when it asks
/// this process for pings.
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Some(pid) = std::env::var("WATCHDOG_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
    {
        if pid != std::process::id() {
            return None;
        }
    }
    Some(Duration::from_micros(usec / 2).max(Duration::from_millis(100)))
}

/// Refuse to start when the pid file names a running posternd.
pub fn check_pid_file(path: &Path) -> Result<(), String> {
    if let Ok(text) = std::fs::read_to_string(path) {
        if let Ok(pid) = text.trim().parse::<u32>() {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if pid != std::process::id() && comm.trim() == "posternd" {
                return Err(format!(
                    "posternd is already running (pid {pid}, {})",
                    path.display()
                ));
            }
        }
    }
    Ok(())
}

/// Start this program again in the background (`-f` added, its own process group,
/// logs to syslog) and wait until it answers on `control_socket`. Its pid.
pub fn detach(control_socket: &Path) -> Result<u32, String> {
    use std::os::unix::process::CommandExt as _;
    let exe = std::env::current_exe().map_err(|e| format!("cannot find my own executable: {e}"))?;
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    args.push("-f".into());
    args.push("--syslog-internal".into());
    let mut child = std::process::Command::new(exe)
        .args(&args)
        .process_group(0)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start in the background: {e}"))?;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if let Ok(Some(st)) = child.try_wait() {
            return Err(format!(
                "posternd exited at start ({st}); see the system log, or run with -f"
            ));
        }
        if crate::control::request(control_socket, "ping").is_ok() {
            return Ok(child.id());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err("posternd did not become ready within 10 s; see the system log".into())
}
