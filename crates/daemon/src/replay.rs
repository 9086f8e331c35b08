//! The replay store: digests of every packet that decrypted, kept in memory and in a
//! file in fwknopd's `digest.cache` format (so an existing cache can be imported).
//!
//! * Keyed on the codec's canonical [`ReplayKey`]: a respelling never gets through.
//! * Crash-safe: a digest is appended to the file (`write`, which reports a full or
//!   read-only disk) *before* the packet is acted on, so a `kill -9` at any moment loses
//!   no digest of a packet that opened anything (the data is in the kernel's page cache);
//!   the group is `fdatasync`ed right after the firewall change. What a power loss could
//!   still take is covered by the clean-shutdown marker: `<file>.clean` is written at a
//!   clean stop and removed at start; a start without it (crash, power loss, `kill -9`)
//!   does not trust the file and, for one age window, accepts only packets stamped after
//!   the start.
//! * Bounded: an entry is kept for twice the age window after it was recorded (a packet
//!   older than that fails the age check anyway); the file is rewritten atomically when
//!   most of its lines are stale. Memory and disk stay proportional to the packets of
//!   the last window.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use postern_proto::ReplayKey;

const HEADER: &str = "# <digest> <proto> <src_ip> <src_port> <dst_ip> <dst_port> <time>";

/// What is written next to a digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    /// IP protocol of the carrier (17 for UDP).
    pub proto: u8,
    /// Packet source.
    pub src: SocketAddr,
    /// Packet destination.
    pub dst: SocketAddr,
}

/// The store.
#[derive(Debug)]
pub struct ReplayStore {
    path: Option<PathBuf>,
    file: Option<File>,
    seen: HashMap<ReplayKey, u64>,
    retain: u64,
    file_lines: usize,
    cap: usize,
    /// Appended since the last `fdatasync`.
    dirty: bool,
}

/// The clean-shutdown marker of a store file.
fn marker(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".clean");
    PathBuf::from(name)
}

fn sync_dir(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => File::open(dir)?.sync_all(),
        _ => Ok(()),
    }
}

/// A store as opened, with what the loading found.
#[derive(Debug)]
pub struct Opened {
    /// The store.
    pub store: ReplayStore,
    /// Lines that could not be read, as messages.
    pub warnings: Vec<String>,
    /// False when the file was missing, damaged or not closed cleanly: packets captured
    /// before this start could then be unknown to the store.
    pub trusted: bool,
    /// The file exists but the previous run did not stop cleanly.
    pub unclean: bool,
    /// Whether the file existed.
    pub existed: bool,
}

/// The result of parsing store text.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Loaded {
    /// Digests still within the retention, with their time.
    pub seen: HashMap<ReplayKey, u64>,
    /// Entry lines read.
    pub lines: usize,
    /// 1-based numbers of unreadable lines.
    pub bad_lines: Vec<usize>,
}

/// Parse store text (fwknopd's `digest.cache` format). Total: never panics.
pub fn parse(text: &str, now: u64, retain: u64) -> Loaded {
    let mut out = Loaded::default();
    for (i, line) in text.lines().enumerate() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        out.lines += 1;
        let f: Vec<&str> = line.split_whitespace().collect();
        let key = f.first().and_then(|k| parse_key(k));
        let time = f.get(6).and_then(|t| t.parse::<u64>().ok());
        match (key, time, f.len()) {
            (Some(k), Some(t), 7) => {
                // An entry from the future (clock stepped back) is kept for a full
                // retention from now.
                let t = t.min(now);
                if t.saturating_add(retain) >= now {
                    out.seen.insert(k, t);
                }
            }
            _ => out.bad_lines.push(i + 1),
        }
    }
    out
}

fn parse_key(s: &str) -> Option<ReplayKey> {
    let bytes = postern_proto::b64::decode_canonical(s.as_bytes()).ok()?;
    Some(ReplayKey(bytes.try_into().ok()?))
}

impl ReplayStore {
    /// A store that lives in memory only (`ENABLE_DIGEST_PERSISTENCE N`, `--test`).
    pub fn in_memory(retain: u64, cap: usize) -> ReplayStore {
        ReplayStore {
            path: None,
            file: None,
            seen: HashMap::new(),
            retain,
            file_lines: 0,
            cap,
            dirty: false,
        }
    }

    /// Open (or create, mode 0600) the store file and load the entries still in the
    /// window (at most `cap`).
    pub fn open(path: &Path, now: u64, retain: u64, cap: usize) -> io::Result<Opened> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let (loaded, existed) = match std::fs::read_to_string(path) {
            Ok(text) => (parse(&text, now, retain), true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => (Loaded::default(), false),
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                // Not even text: treat every line as unreadable.
                (
                    Loaded {
                        bad_lines: vec![0],
                        ..Loaded::default()
                    },
                    true,
                )
            }
            Err(e) => return Err(e),
        };
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)?;
        let len = file.metadata()?.len();
        if len == 0 {
            writeln!(file, "{HEADER}")?;
            file.sync_data()?;
        } else if !std::fs::read(path)?.ends_with(b"\n") {
            // A line cut short by a crash: never glue the next entry onto it.
            writeln!(file)?;
            file.sync_data()?;
        }
        let warnings = loaded
            .bad_lines
            .iter()
            .map(|n| format!("{}:{n}: unreadable replay entry skipped", path.display()))
            .collect();
        // The marker says the previous run synced and closed the file; it is removed now,
        // so a crash from here on is seen at the next start.
        let clean = match std::fs::remove_file(marker(path)) {
            Ok(()) => {
                sync_dir(path)?;
                true
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => return Err(e),
        };
        let unclean = existed && !clean;
        let trusted = existed && loaded.bad_lines.is_empty() && clean;
        let mut seen = loaded.seen;
        if seen.len() > cap {
            let mut v: Vec<(ReplayKey, u64)> = seen.into_iter().collect();
            v.sort_by_key(|(_, t)| std::cmp::Reverse(*t));
            v.truncate(cap);
            seen = v.into_iter().collect();
        }
        let store = ReplayStore {
            path: Some(path.to_owned()),
            file: Some(file),
            seen,
            retain,
            file_lines: loaded.lines,
            cap,
            dirty: false,
        };
        Ok(Opened {
            store,
            warnings,
            trusted,
            unclean,
            existed,
        })
    }

    /// The configured capacity (`MAX_REPLAY_ENTRIES`).
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// Whether the store is full (new packets must then be refused, not forgotten).
    pub fn is_full(&self) -> bool {
        self.seen.len() >= self.cap
    }

    /// An in-memory store holding what `parse` read (the worker's mirror).
    pub fn from_loaded(loaded: Loaded, retain: u64, cap: usize) -> ReplayStore {
        ReplayStore {
            path: None,
            file: None,
            seen: loaded.seen,
            retain,
            file_lines: 0,
            cap,
            dirty: false,
        }
    }

    /// Whether this packet was seen.
    pub fn contains(&self, key: &ReplayKey) -> bool {
        self.seen.contains_key(key)
    }

    /// Number of digests held.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// Record a digest and `fdatasync` it.
    pub fn record(&mut self, key: ReplayKey, meta: Meta, now: u64) -> io::Result<()> {
        self.record_many(&[(key, meta)], now)?;
        self.sync()
    }

    /// `fdatasync` what was appended since the last sync.
    pub fn sync(&mut self) -> io::Result<()> {
        if let (Some(f), true) = (&self.file, self.dirty) {
            f.sync_data()?;
        }
        self.dirty = false;
        Ok(())
    }

    /// A clean stop: sync the file and leave the marker that lets the next start trust it.
    pub fn close(&mut self) -> io::Result<()> {
        self.sync()?;
        if let Some(path) = &self.path {
            let m = marker(path);
            let f = OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .mode(0o600)
                .open(&m)?;
            f.sync_all()?;
            sync_dir(path)?;
        }
        Ok(())
    }

    /// Append several digests with one `write` (group commit); [`ReplayStore::sync`]
    /// makes them durable. Only after this returns `Ok` may any of these packets be acted
    /// on: a full or read-only disk fails here.
    pub fn record_many(&mut self, items: &[(ReplayKey, Meta)], now: u64) -> io::Result<()> {
        if let Some(f) = &mut self.file {
            use std::fmt::Write as _;
            let mut text = String::with_capacity(items.len() * 120);
            for (key, meta) in items {
                let _ = writeln!(
                    text,
                    "{key} {} {} {} {} {} {now}",
                    meta.proto,
                    meta.src.ip(),
                    meta.src.port(),
                    meta.dst.ip(),
                    meta.dst.port()
                );
            }
            f.write_all(text.as_bytes())?;
            self.dirty = true;
            self.file_lines += items.len();
        }
        for (key, _) in items {
            self.seen.insert(*key, now);
        }
        Ok(())
    }

    /// Forget entries older than the retention, and compact the file when most of its
    /// lines are stale.
    pub fn prune(&mut self, now: u64) -> io::Result<()> {
        let retain = self.retain;
        // A time ahead of now (the clock stepped back) is kept: fail closed.
        self.seen.retain(|_, t| t.saturating_add(retain) >= now);
        if self.file_lines > 1024 && self.file_lines > 2 * self.seen.len() {
            self.rewrite()?;
        }
        Ok(())
    }

    fn rewrite(&mut self) -> io::Result<()> {
        let Some(path) = self.path.clone() else {
            return Ok(());
        };
        let tmp = path.with_extension("tmp");
        {
            let mut f = OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            let mut text = format!("{HEADER}\n");
            for (k, t) in &self.seen {
                text.push_str(&format!("{k} 0 0.0.0.0 0 0.0.0.0 0 {t}\n"));
            }
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &path)?;
        if let Some(dir) = path.parent() {
            File::open(dir)?.sync_all()?;
        }
        self.file = Some(OpenOptions::new().append(true).open(&path)?);
        self.file_lines = self.seen.len();
        self.dirty = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> ReplayKey {
        ReplayKey([n; 32])
    }

    fn meta() -> Meta {
        Meta {
            proto: 17,
            src: "198.18.1.2:4000".parse().unwrap(),
            dst: "0.0.0.0:62201".parse().unwrap(),
        }
    }

    #[test]
    fn persists_and_bounds() {
        let dir = std::env::temp_dir().join(format!("posternd-replay-{}", std::process::id()));
        let path = dir.join("digest.cache");
        let _ = std::fs::remove_dir_all(&dir);
        let o = ReplayStore::open(&path, 1000, 240, 100_000).unwrap();
        assert!(o.warnings.is_empty());
        assert!(!o.trusted, "a missing store is not trusted");
        let mut s = o.store;
        s.record(key(1), meta(), 1000).unwrap();
        s.record_many(&[(key(2), meta())], 1200).unwrap();
        // Appended (a kill -9 now loses nothing) before it is synced.
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with(HEADER));
        assert!(text.contains(" 17 198.18.1.2 4000 0.0.0.0 62201 1000\n"));
        assert_eq!(text.lines().count(), 3);
        // Not closed cleanly: the next start sees it, and still knows both digests.
        drop(s);
        let o = ReplayStore::open(&path, 1100, 240, 100_000).unwrap();
        assert!(!o.trusted && o.unclean);
        assert!(o.store.contains(&key(1)) && o.store.contains(&key(2)));
        // A clean stop leaves the marker; the next start trusts the file and removes it.
        let mut s = o.store;
        s.close().unwrap();
        assert!(marker(&path).exists());
        let o = ReplayStore::open(&path, 1100, 240, 100_000).unwrap();
        assert!(o.trusted && !o.unclean);
        assert!(!marker(&path).exists(), "a crash from now on must be seen");
        assert!(o.store.contains(&key(1)) && o.store.contains(&key(2)));
        let mut s = ReplayStore::open(&path, 1300, 240, 100_000).unwrap().store;
        assert!(!s.contains(&key(1)) && s.contains(&key(2)));
        // Compaction keeps the live entries only.
        for i in 0..2000u32 {
            let mut k = [0u8; 32];
            k[..4].copy_from_slice(&i.to_le_bytes());
            k[31] = 9;
            s.record(ReplayKey(k), meta(), 1300).unwrap();
        }
        s.prune(1300 + 241).unwrap();
        assert!(s.is_empty());
        s.prune(1300 + 241).unwrap();
        let lines = std::fs::read_to_string(&path).unwrap().lines().count();
        assert_eq!(lines, 1, "only the header is left");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn parse_is_total_and_bounded() {
        assert_eq!(parse("x y z\n\u{0}\n", 10, 10).bad_lines, [1, 2]);
        let huge = format!("{} 17 a b c d 18446744073709551615\n", key(1));
        assert_eq!(
            parse(&huge, 10, 10).seen.len(),
            1,
            "future time kept, no overflow"
        );
        let mut s = ReplayStore::in_memory(10, 2);
        s.record(key(1), meta(), 1).unwrap();
        assert!(!s.is_full());
        s.record(key(2), meta(), 1).unwrap();
        assert!(s.is_full());
    }

    #[test]
    fn reads_fwknop_caches_and_skips_garbage() {
        let dir = std::env::temp_dir().join(format!("posternd-replay-fw-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("digest.cache");
        std::fs::write(
            &path,
            format!("{HEADER}\nS2BwL9d1X765do6253L2MjXZ1I6PjcS145m26ijgHSw 17 127.0.0.1 39174 0.0.0.0 62201 1795745890\nnot a line\n"),
        )
        .unwrap();
        let o = ReplayStore::open(&path, 1_795_745_900, 240, 100_000).unwrap();
        assert_eq!(o.store.len(), 1);
        assert_eq!(o.warnings.len(), 1);
        assert!(!o.trusted, "a damaged store is not trusted");
        // A line cut short by a crash is terminated before the next append.
        std::fs::write(&path, format!("{HEADER}\nS2BwL9d1X765do6253L2MjXZ1I6PjcS1")).unwrap();
        let mut o = ReplayStore::open(&path, 1_795_745_900, 240, 100_000).unwrap();
        assert!(!o.trusted);
        o.store.record(key(3), meta(), 1_795_745_900).unwrap();
        let reread = parse(&std::fs::read_to_string(&path).unwrap(), 1_795_745_900, 240);
        assert_eq!(reread.seen.len(), 1);
        assert_eq!(reread.bad_lines, [2]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
