#![no_main]
libfuzzer_sys::fuzz_target!(|d: &[u8]| { let _ = postern_capture::frame::parse_ip(d, None); });
