#![no_main]
libfuzzer_sys::fuzz_target!(|d: &[u8]| { let _ = postern_capture::pcapfile::read(d, None); });
