#![no_main]
libfuzzer_sys::fuzz_target!(|t: &str| { let _ = posternd::replay::parse(t, posternd::clock::Now { wall: 1_795_000_000, mono: 1000 }, 240); });
