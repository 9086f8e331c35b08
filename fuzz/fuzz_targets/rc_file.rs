#![no_main]
libfuzzer_sys::fuzz_target!(|t: &str| { let _ = postern::rc::parse(t, std::path::Path::new("fwknoprc")); });
