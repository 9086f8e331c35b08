//! `--pcap-file`: the packets of a capture file through the whole pipeline, one line of
//! outcome each, then exit. The file is read record by record (memory stays flat
//! whatever its size).

use std::io::Write;
use std::path::Path;

use crate::clock::Now;
use crate::config::Config;
use crate::daemon::{Daemon, Outcome};
use crate::log;
use crate::replay::ReplayStore;

/// Run every UDP datagram of `path` that the capture filter admits through `daemon`;
/// the number handled.
pub fn run(daemon: &mut Daemon, path: &Path, out: &mut impl Write) -> Result<u64, String> {
    run_limited(daemon, path, out, None)
}

/// [`run`], stopping after `limit` datagrams (`-C`/`--packet-limit`).
pub fn run_limited(
    daemon: &mut Daemon,
    path: &Path,
    out: &mut impl Write,
    limit: Option<u64>,
) -> Result<u64, String> {
    let file =
        std::fs::File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut reader = postern_capture::pcapfile::Reader::filtered(
        std::io::BufReader::with_capacity(1 << 20, file),
        crate::pipeline::capture::filter(&daemon.config),
    )
    .map_err(|e| format!("{}: {e}", path.display()))?;
    let mut n = 0u64;
    let io = |e: std::io::Error| format!("cannot write the outcome: {e}");
    while let Some((_, dg)) = reader
        .next_datagram()
        .map_err(|e| format!("{}: {e}", path.display()))?
    {
        if limit.is_some_and(|l| n >= l) {
            break;
        }
        n += 1;
        let text = match daemon.handle(&dg, Now::read()) {
            Outcome::Refused(r) => format!("refused: {r}"),
            Outcome::Granted(g) => format!("granted: {}", g.join(", ")),
            Outcome::Command => "command run".into(),
            Outcome::Cycle(n) => format!("cycle: {n} command(s)"),
            Outcome::WouldAct(w) => format!("would act: {}", log::clean(&w)),
        };
        writeln!(out, "{} -> {}: {text}", dg.src, dg.dst).map_err(io)?;
    }
    writeln!(out, "{n} packet(s) processed").map_err(io)?;
    out.flush().map_err(io)?;
    Ok(n)
}

/// The replay store as configured, and whether it can be trusted. When its file was
/// missing, damaged, unclean, or cannot be written, the caller refuses packets stamped
/// before the start for one age window (anything captured earlier could be unknown to
/// the store). Never an error: a disk that fails locks nobody out.
pub fn open_replay(config: &Config, test: bool) -> (ReplayStore, bool) {
    let retain = 2 * config.server.max_packet_age;
    let cap = config.server.max_replay_entries;
    if test || !config.server.digest_persistence {
        return (ReplayStore::in_memory(retain, cap), true);
    }
    let path = &config.server.digest_file;
    let flag = config.server.run_dir.join("replay.untrusted");
    let opened = ReplayStore::open(path, Some(&flag), Now::read(), retain, cap);
    opened.warnings.iter().for_each(|w| log::warn(w));
    if let Some(why) = opened.store.degraded() {
        log::error(&format!(
            "{why}: the replay store runs IN MEMORY ONLY (replays are still refused; posternd status shows it)"
        ));
    }
    if opened.trusted {
        return (opened.store, true);
    }
    log::warn(&format!(
        "the replay store {} {}: for the next {} s only packets stamped after this start are accepted",
        path.display(),
        if !opened.existed {
            "did not exist (first start?)"
        } else if opened.store.degraded().is_some() {
            "cannot be written"
        } else if opened.unclean {
            "was not closed cleanly (crash, power loss or kill -9)"
        } else {
            "is damaged or was not kept on disk by the previous run"
        },
        config.server.max_packet_age
    ));
    (opened.store, false)
}
