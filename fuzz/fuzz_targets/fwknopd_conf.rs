#![no_main]
libfuzzer_sys::fuzz_target!(|t: &str| { let _ = posternd::config::server::parse(t, std::path::Path::new("/etc/postern/fwknopd.conf")); });
