#![no_main]
libfuzzer_sys::fuzz_target!(|t: &str| { let _ = posternd::replay::parse(t, 1_795_000_000, 240); });
