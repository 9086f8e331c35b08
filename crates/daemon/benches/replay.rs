//! Micro-benchmarks of the replay store (`cargo bench -p posternd`): the lookup every
//! packet that passes the cheap checks pays, and recording, in memory and on disk (one
//! append per group, then one fdatasync).

#![allow(missing_docs, clippy::unwrap_used)]

use postern_proto::ReplayKey;
use posternd::clock::Now;
use posternd::replay::{Meta, ReplayStore};

fn main() {
    divan::main();
}

fn key(i: u64) -> ReplayKey {
    let mut k = [0u8; 32];
    k[..8].copy_from_slice(&i.to_le_bytes());
    k[31] = 0xa5;
    ReplayKey(k)
}

fn meta() -> Meta {
    Meta {
        proto: 17,
        src: "198.18.1.2:40000".parse().unwrap(),
        dst: "198.18.0.1:62201".parse().unwrap(),
    }
}

const NOW: Now = Now {
    wall: 1000,
    mono: 1000,
};

/// A store holding `n` entries.
fn filled(n: u64) -> ReplayStore {
    let mut s = ReplayStore::in_memory(240, 1_000_000);
    for i in 0..n {
        s.record(key(i), meta(), NOW);
    }
    s
}

#[divan::bench(args = [1_000, 100_000])]
fn lookup_miss(b: divan::Bencher, n: u64) {
    let s = filled(n);
    let mut i = n;
    b.bench_local(|| {
        i += 1;
        s.contains(&key(i))
    });
}

#[divan::bench(args = [1_000, 100_000])]
fn lookup_hit(b: divan::Bencher, n: u64) {
    let s = filled(n);
    let mut i = 0;
    b.bench_local(|| {
        i = (i + 7919) % n;
        s.contains(&key(i))
    });
}

#[divan::bench]
fn record_in_memory(b: divan::Bencher) {
    let mut s = filled(10_000);
    let mut i = 1_000_000;
    b.bench_local(|| {
        i += 1;
        s.record_many(&[(key(i), meta())], NOW);
    });
}

/// One group of 64 digests appended and synced to a file in the temp directory.
#[divan::bench(sample_count = 20, sample_size = 5)]
fn record_group_of_64_to_disk(b: divan::Bencher) {
    let dir = std::env::temp_dir().join(format!("posternd-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut s =
        ReplayStore::open(&dir.join("digest.cache"), None, NOW, 1_000_000, 10_000_000).store;
    assert!(s.degraded().is_none());
    let mut i = 0;
    b.bench_local(|| {
        let group: Vec<(ReplayKey, Meta)> = (0..64)
            .map(|_| {
                i += 1;
                (key(i), meta())
            })
            .collect();
        assert!(s.record_many(&group, NOW).is_none());
        assert!(s.sync().is_none());
    });
    let _ = std::fs::remove_dir_all(&dir);
}
