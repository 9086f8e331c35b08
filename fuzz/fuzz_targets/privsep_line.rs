#![no_main]
libfuzzer_sys::fuzz_target!(|b: &[u8]| {
    let mut r = std::io::BufReader::with_capacity(256, b);
    let mut line = Vec::new();
    while let Ok(true) = posternd::privsep::protocol::read_line(&mut r, &mut line) {
        if let Ok(m) = posternd::privsep::protocol::decode(&line) {
            let again = posternd::privsep::protocol::encode(&m);
            assert_eq!(posternd::privsep::protocol::decode(again.trim_end().as_bytes()).ok(), Some(m));
        }
    }
});
