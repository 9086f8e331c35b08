//! The replay store: digests of every packet that decrypted, kept in memory and in a
//! file in fwknopd's `digest.cache` format (so an existing cache can be imported).
//!
//! * Keyed on the codec's canonical [`ReplayKey`]: a respelling never gets through.
//! * Crash-safe: a digest is appended to the file (`write`) *before* the packet is
//!   acted on, so a `kill -9` at any moment loses no digest of a packet that opened
//!   anything (the data is in the kernel's page cache); the group is `fdatasync`ed right
//!   after the firewall change. What a power loss could still take is covered by the
//!   clean-shutdown marker: `<file>.clean` is written at a clean stop and removed at
//!   start; a start without it (crash, power loss, `kill -9`) does not trust the file
//!   and, for one age window, accepts only packets stamped after the start.
//! * Bounded: every entry counts against `MAX_REPLAY_ENTRIES`; a file holding more is
//!   treated as damaged. An entry is kept for twice the age window after it was
//!   recorded, measured on the clock that never steps ([`Now::mono`]): a wall-clock step
//!   forward cannot prune a digest that is still needed.
//! * Persistence is never a condition for access: when the file cannot be created or
//!   written (full disk, read-only file system, I/O error), the store goes on in memory
//!   ([`ReplayStore::degraded`] says why), never leaves the clean-shutdown marker, and
//!   raises a flag in the run directory, so the next start does not trust the file.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use postern_proto::ReplayKey;

use crate::clock::Now;

const HEADER: &str = "# <digest> <proto> <src_ip> <src_port> <dst_ip> <dst_port> <time>";

/// The largest store file read (far above any `MAX_REPLAY_ENTRIES` in use: ~120 bytes a
/// line); a larger file is damaged.
const MAX_FILE: u64 = 256 << 20;

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

/// When an entry was recorded, on both clocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Unix seconds (written to the file).
    pub wall: u64,
    /// Monotonic seconds (retention).
    pub mono: u64,
}

/// The store.
#[derive(Debug)]
pub struct ReplayStore {
    path: Option<PathBuf>,
    file: Option<File>,
    flag: Option<PathBuf>,
    seen: HashMap<ReplayKey, Stamp>,
    retain: u64,
    file_lines: usize,
    cap: usize,
    /// Appended since the last `fdatasync`.
    dirty: bool,
    degraded: Option<String>,
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
    /// Lines that could not be read, and other findings, as messages.
    pub warnings: Vec<String>,
    /// False when the file was missing, damaged, over the cap, not closed cleanly, or
    /// the previous run lost its persistence: packets captured before this start could
    /// then be unknown to the store.
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
    pub seen: HashMap<ReplayKey, Stamp>,
    /// Entry lines read.
    pub lines: usize,
    /// 1-based numbers of unreadable lines.
    pub bad_lines: Vec<usize>,
}

/// Parse store text (fwknopd's `digest.cache` format). Total: never panics. An entry's
/// age is taken from its wall-clock stamp once, here; an entry from the future (the
/// clock stepped back) counts as recorded now.
pub fn parse(text: &str, now: Now, retain: u64) -> Loaded {
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
                let age = now.wall.saturating_sub(t);
                if age <= retain {
                    let stamp = Stamp {
                        wall: t.min(now.wall),
                        mono: now.mono.saturating_sub(age),
                    };
                    out.seen.insert(k, stamp);
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

/// Read a store file without following a final symlink and with a size limit.
pub fn read_store(path: &Path) -> io::Result<Vec<u8>> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a regular file",
        ));
    }
    let mut bytes = Vec::new();
    f.take(MAX_FILE + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_FILE {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "too large"));
    }
    Ok(bytes)
}

impl ReplayStore {
    /// A store that lives in memory only (`ENABLE_DIGEST_PERSISTENCE N`, `--test`).
    pub fn in_memory(retain: u64, cap: usize) -> ReplayStore {
        ReplayStore {
            path: None,
            file: None,
            flag: None,
            seen: HashMap::new(),
            retain,
            file_lines: 0,
            cap,
            dirty: false,
            degraded: None,
        }
    }

    /// Open (or create, mode 0600) the store file and load the entries still in the
    /// window. Never fails: when the file cannot be read or written the store runs in
    /// memory, untrusted, with [`ReplayStore::degraded`] saying why. `flag` (in the run
    /// directory) marks a run that lost its persistence, for the next start.
    pub fn open(path: &Path, flag: Option<&Path>, now: Now, retain: u64, cap: usize) -> Opened {
        let mut warnings = Vec::new();
        let mut damaged = false;
        let (loaded, existed) = match read_store(path) {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(text) => (parse(&text, now, retain), true),
                Err(_) => {
                    damaged = true;
                    warnings.push(format!("{}: not text: every entry skipped", path.display()));
                    (Loaded::default(), true)
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => (Loaded::default(), false),
            Err(e) => {
                damaged = true;
                warnings.push(format!("{}: cannot be read ({e})", path.display()));
                (Loaded::default(), true)
            }
        };
        warnings.extend(
            loaded
                .bad_lines
                .iter()
                .map(|n| format!("{}:{n}: unreadable replay entry skipped", path.display())),
        );
        let mut seen = loaded.seen;
        if seen.len() > cap {
            damaged = true;
            warnings.push(format!(
                "{}: {} entries, more than MAX_REPLAY_ENTRIES ({cap}): treated as damaged, the newest {cap} kept",
                path.display(),
                seen.len()
            ));
            let mut v: Vec<(ReplayKey, Stamp)> = seen.into_iter().collect();
            v.sort_by_key(|(_, t)| std::cmp::Reverse(t.mono));
            v.truncate(cap);
            seen = v.into_iter().collect();
        }
        let flagged = flag.is_some_and(Path::exists);
        if flagged {
            warnings.push("the previous run kept its replay store in memory only".into());
        }
        let mut store = ReplayStore {
            path: Some(path.to_owned()),
            file: None,
            flag: flag.map(Path::to_owned),
            seen,
            retain,
            file_lines: loaded.lines,
            cap,
            dirty: false,
            degraded: None,
        };
        let clean = match store.open_file(path) {
            Ok(clean) => clean,
            Err(e) => {
                store.degrade(format!("cannot write {}: {e}", path.display()));
                false
            }
        };
        let unclean = existed && !clean;
        let trusted = existed
            && loaded.bad_lines.is_empty()
            && !damaged
            && clean
            && !flagged
            && store.degraded.is_none();
        // The flag spoke for the previous run; this run raises it again if it loses
        // persistence too.
        if flagged && store.degraded.is_none() {
            if let Some(f) = &store.flag {
                let _ = std::fs::remove_file(f);
            }
        }
        Opened {
            store,
            warnings,
            trusted,
            unclean,
            existed,
        }
    }

    /// Open the file for appending (creating it), repair a cut last line, and take the
    /// clean-shutdown marker away. Whether the marker was there.
    fn open_file(&mut self, path: &Path) -> io::Result<bool> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)?;
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "not a regular file",
            ));
        }
        if meta.len() == 0 {
            writeln!(file, "{HEADER}")?;
            file.sync_data()?;
        } else if !read_store(path)?.ends_with(b"\n") {
            // A line cut short by a crash: never glue the next entry onto it.
            writeln!(file)?;
            file.sync_data()?;
        }
        // The marker says the previous run synced and closed the file. It is removed by
        // `begin`, when this run starts acting, so a start that fails before that (a bad
        // interface, a firewall error) leaves it, and a crash from then on is seen.
        let clean = marker(path).exists();
        self.file = Some(file);
        Ok(clean)
    }

    /// This run starts acting on packets: take the clean-shutdown marker away, so a
    /// crash from now on is seen at the next start. A failure switches the store to
    /// memory only (the next start will not trust the file).
    pub fn begin(&mut self) {
        let Some(path) = self.path.clone() else {
            return;
        };
        if self.degraded.is_some() {
            return;
        }
        let r = match std::fs::remove_file(marker(&path)) {
            Ok(()) => sync_dir(&path),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        };
        if let Err(e) = r {
            self.degrade(format!("cannot remove the clean-shutdown marker: {e}"));
        }
    }

    /// Go on in memory only, for the rest of this run.
    fn degrade(&mut self, why: String) {
        self.file = None;
        self.dirty = false;
        if let Some(f) = &self.flag {
            if let Some(dir) = f.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            let _ = OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true)
                .mode(0o600)
                .open(f);
        }
        self.degraded = Some(why);
    }

    /// Why the store runs in memory only, when it does (the file could not be created
    /// or written); `None` while it persists (or was configured in memory).
    pub fn degraded(&self) -> Option<&str> {
        self.degraded.as_deref()
    }

    /// The configured capacity (`MAX_REPLAY_ENTRIES`).
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// Whether the store is full (new packets must then be refused, not forgotten).
    pub fn is_full(&self) -> bool {
        self.seen.len() >= self.cap
    }

    /// An in-memory store holding what `parse` read (the worker's filter).
    pub fn from_loaded(loaded: Loaded, retain: u64, cap: usize) -> ReplayStore {
        let mut s = ReplayStore::in_memory(retain, cap);
        s.seen = loaded.seen;
        s
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
    pub fn record(&mut self, key: ReplayKey, meta: Meta, now: Now) -> Option<String> {
        let lost = self.record_many(&[(key, meta)], now);
        lost.or_else(|| self.sync())
    }

    /// `fdatasync` what was appended since the last sync. A failure switches the store
    /// to memory only and is returned (once).
    pub fn sync(&mut self) -> Option<String> {
        let r = match (&self.file, self.dirty) {
            (Some(f), true) => f.sync_data(),
            _ => Ok(()),
        };
        self.dirty = false;
        match r {
            Ok(()) => None,
            Err(e) => {
                let why = format!("cannot sync the replay store: {e}");
                self.degrade(why.clone());
                Some(why)
            }
        }
    }

    /// A clean stop: sync the file and leave the marker that lets the next start trust
    /// it, unless persistence was lost during this run.
    pub fn close(&mut self) -> io::Result<()> {
        if let Some(why) = self.sync() {
            return Err(io::Error::other(why));
        }
        if self.degraded.is_some() {
            return Err(io::Error::other(
                "the replay store ran in memory only: no clean-shutdown marker left",
            ));
        }
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

    /// Record several digests, appending them with one `write` (group commit);
    /// [`ReplayStore::sync`] makes them durable. They are in the store when this
    /// returns, whatever the disk says: a failed write switches the store to memory
    /// only, and the reason is returned (once) for the log.
    pub fn record_many(&mut self, items: &[(ReplayKey, Meta)], now: Now) -> Option<String> {
        let mut lost = None;
        if let Some(f) = &mut self.file {
            use std::fmt::Write as _;
            let mut text = String::with_capacity(items.len() * 120);
            for (key, meta) in items {
                let _ = writeln!(
                    text,
                    "{key} {} {} {} {} {} {}",
                    meta.proto,
                    meta.src.ip(),
                    meta.src.port(),
                    meta.dst.ip(),
                    meta.dst.port(),
                    now.wall
                );
            }
            match f.write_all(text.as_bytes()) {
                Ok(()) => {
                    self.dirty = true;
                    self.file_lines += items.len();
                }
                Err(e) => lost = Some(format!("cannot append to the replay store: {e}")),
            }
        }
        if let Some(why) = &lost {
            self.degrade(why.clone());
        }
        let stamp = Stamp {
            wall: now.wall,
            mono: now.mono,
        };
        for (key, _) in items {
            self.seen.insert(*key, stamp);
        }
        lost
    }

    /// Forget entries older than the retention (on the monotonic clock), and compact
    /// the file when most of its lines are stale.
    pub fn prune(&mut self, now: Now) -> io::Result<()> {
        let retain = self.retain;
        self.seen
            .retain(|_, t| t.mono.saturating_add(retain) >= now.mono);
        if self.file.is_some() && self.file_lines > 1024 && self.file_lines > 2 * self.seen.len() {
            if let Err(e) = self.rewrite() {
                self.degrade(format!("cannot compact the replay store: {e}"));
                return Err(e);
            }
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
                .custom_flags(libc::O_NOFOLLOW)
                .open(&tmp)?;
            let mut text = format!("{HEADER}\n");
            for (k, t) in &self.seen {
                text.push_str(&format!("{k} 0 0.0.0.0 0 0.0.0.0 0 {}\n", t.wall));
            }
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &path)?;
        sync_dir(&path)?;
        self.file = Some(
            OpenOptions::new()
                .append(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&path)?,
        );
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

    fn at(t: u64) -> Now {
        Now { wall: t, mono: t }
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
        let o = ReplayStore::open(&path, None, at(1000), 240, 100_000);
        assert!(o.warnings.is_empty());
        assert!(!o.trusted, "a missing store is not trusted");
        let mut s = o.store;
        assert!(s.record(key(1), meta(), at(1000)).is_none());
        assert!(s.record_many(&[(key(2), meta())], at(1200)).is_none());
        // Appended (a kill -9 now loses nothing) before it is synced.
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with(HEADER));
        assert!(text.contains(" 17 198.18.1.2 4000 0.0.0.0 62201 1000\n"));
        assert_eq!(text.lines().count(), 3);
        // Not closed cleanly: the next start sees it, and still knows both digests.
        drop(s);
        let o = ReplayStore::open(&path, None, at(1100), 240, 100_000);
        assert!(!o.trusted && o.unclean);
        assert!(o.store.contains(&key(1)) && o.store.contains(&key(2)));
        // A clean stop leaves the marker; the next start trusts the file and removes it.
        let mut s = o.store;
        s.close().unwrap();
        assert!(marker(&path).exists());
        let o = ReplayStore::open(&path, None, at(1100), 240, 100_000);
        assert!(o.trusted && !o.unclean);
        // A start that fails before acting leaves the marker for the next one.
        drop(o);
        let mut o = ReplayStore::open(&path, None, at(1100), 240, 100_000);
        assert!(
            o.trusted,
            "a failed start made the next one distrust the file"
        );
        o.store.begin();
        assert!(!marker(&path).exists(), "a crash from now on must be seen");
        assert!(o.store.contains(&key(1)) && o.store.contains(&key(2)));
        let mut s = ReplayStore::open(&path, None, at(1300), 240, 100_000).store;
        assert!(!s.contains(&key(1)) && s.contains(&key(2)));
        // Compaction keeps the live entries only.
        for i in 0..2000u32 {
            let mut k = [0u8; 32];
            k[..4].copy_from_slice(&i.to_le_bytes());
            k[31] = 9;
            s.record(ReplayKey(k), meta(), at(1300));
        }
        s.prune(at(1300 + 241)).unwrap();
        assert!(s.is_empty());
        s.prune(at(1300 + 241)).unwrap();
        let lines = std::fs::read_to_string(&path).unwrap().lines().count();
        assert_eq!(lines, 1, "only the header is left");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn parse_is_total_and_bounded() {
        assert_eq!(parse("x y z\n\u{0}\n", at(10), 10).bad_lines, [1, 2]);
        let huge = format!("{} 17 a b c d 18446744073709551615\n", key(1));
        assert_eq!(
            parse(&huge, at(10), 10).seen.len(),
            1,
            "future time kept, no overflow"
        );
        let mut s = ReplayStore::in_memory(10, 2);
        s.record(key(1), meta(), at(1));
        assert!(!s.is_full());
        s.record(key(2), meta(), at(1));
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
        let o = ReplayStore::open(&path, None, at(1_795_745_900), 240, 100_000);
        assert_eq!(o.store.len(), 1);
        assert_eq!(o.warnings.len(), 1);
        assert!(!o.trusted, "a damaged store is not trusted");
        // A line cut short by a crash is terminated before the next append.
        std::fs::write(&path, format!("{HEADER}\nS2BwL9d1X765do6253L2MjXZ1I6PjcS1")).unwrap();
        let mut o = ReplayStore::open(&path, None, at(1_795_745_900), 240, 100_000);
        assert!(!o.trusted);
        o.store.record(key(3), meta(), at(1_795_745_900));
        let reread = parse(
            &std::fs::read_to_string(&path).unwrap(),
            at(1_795_745_900),
            240,
        );
        assert_eq!(reread.seen.len(), 1);
        assert_eq!(reread.bad_lines, [2]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn retention_is_measured_on_the_clock_that_never_steps() {
        let mut s = ReplayStore::in_memory(240, 100);
        s.record(
            key(1),
            meta(),
            Now {
                wall: 5000,
                mono: 100,
            },
        );
        // The wall clock jumps a day ahead; the monotonic clock moved 10 s: kept.
        s.prune(Now {
            wall: 5000 + 86_400,
            mono: 110,
        })
        .unwrap();
        assert!(s.contains(&key(1)));
        // The wall clock steps back: still kept until 240 monotonic seconds have passed.
        s.prune(Now {
            wall: 4000,
            mono: 340,
        })
        .unwrap();
        assert!(s.contains(&key(1)));
        s.prune(Now {
            wall: 4000,
            mono: 341,
        })
        .unwrap();
        assert!(!s.contains(&key(1)));
    }

    #[test]
    fn a_store_over_the_cap_is_damaged_and_an_unwritable_one_goes_on_in_memory() {
        let dir = std::env::temp_dir().join(format!("posternd-replay-cap-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("digest.cache");
        let flag = dir.join("run/replay.untrusted");
        let mut text = format!("{HEADER}\n");
        for n in 0..5u8 {
            text.push_str(&format!("{} 17 1.2.3.4 1 0.0.0.0 62201 1000\n", key(n)));
        }
        std::fs::write(&path, text).unwrap();
        std::fs::write(marker(&path), "").unwrap();
        let o = ReplayStore::open(&path, Some(&flag), at(1000), 240, 3);
        assert!(
            !o.trusted,
            "over the cap: not trusted, even with the marker"
        );
        assert_eq!(o.store.len(), 3);
        // A store whose file is a directory (as good as unwritable): memory only, loud.
        let bad = dir.join("as-dir");
        std::fs::create_dir_all(&bad).unwrap();
        let mut o = ReplayStore::open(&bad, Some(&flag), at(1000), 240, 3);
        assert!(!o.trusted);
        assert!(o.store.degraded().is_some());
        assert!(flag.exists(), "the next start must know");
        assert!(o.store.record(key(9), meta(), at(1001)).is_none());
        assert!(o.store.contains(&key(9)));
        assert!(
            o.store.close().is_err(),
            "no clean marker after a run in memory"
        );
        // The flag makes the next start distrust an otherwise clean file, once.
        let mut good = ReplayStore::open(&path, None, at(1000), 240, 10).store;
        good.close().unwrap();
        let o = ReplayStore::open(&path, Some(&flag), at(1000), 240, 10);
        assert!(!o.trusted, "flagged by a run that lost persistence");
        let mut good = o.store;
        good.close().unwrap();
        assert!(ReplayStore::open(&path, Some(&flag), at(1000), 240, 10).trusted);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
