#![no_main]
// The capture's frame parser (UDP, TCP, ICMP) and the HTTP unwrapping of a payload.
libfuzzer_sys::fuzz_target!(|d: &[u8]| {
    let _ = postern_capture::frame::parse_ip(d, None);
    let _ = posternd::pipeline::decode::unwrap_http(d);
});
