//! The control socket: a Unix stream socket (mode 0600, so root only) that answers
//! `status`, `status-json`, `stop` and `reload`, one request per connection.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::mpsc::{self, SyncSender};
use std::time::Duration;

/// A request to the main loop, with where to send the answer.
#[derive(Debug)]
pub struct Request {
    /// The command word.
    pub command: String,
    /// Answer channel.
    pub reply: mpsc::Sender<String>,
}

/// Bind the socket (replacing a stale one) and serve it on a thread.
pub fn serve<T: Send + 'static>(
    path: &Path,
    tx: SyncSender<T>,
    wrap: fn(Request) -> T,
) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    if UnixStream::connect(path).is_ok() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            format!("{} is in use: is posternd already running?", path.display()),
        ));
    }
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
            let mut line = String::new();
            if BufReader::new(&conn)
                .take(256)
                .read_line(&mut line)
                .is_err()
            {
                continue;
            }
            let (rtx, rrx) = mpsc::channel();
            if tx
                .send(wrap(Request {
                    command: line.trim().to_owned(),
                    reply: rtx,
                }))
                .is_err()
            {
                break;
            }
            let answer = rrx
                .recv_timeout(Duration::from_secs(10))
                .unwrap_or_else(|_| "error: no answer\n".into());
            let _ = conn.write_all(answer.as_bytes());
        }
    });
    Ok(())
}

/// Send one request and return the answer.
pub fn request(path: &Path, command: &str) -> std::io::Result<String> {
    let mut s = UnixStream::connect(path)?;
    s.set_read_timeout(Some(Duration::from_secs(15)))?;
    s.write_all(format!("{command}\n").as_bytes())?;
    s.shutdown(std::net::Shutdown::Write)?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}
