#![no_main]
// Depth 3: any %include is refused before a file is read, so only the parser runs.
libfuzzer_sys::fuzz_target!(|t: &str| { let _ = posternd::config::access::parse_text(t, std::path::Path::new("/nonexistent/access.conf"), 3); });
