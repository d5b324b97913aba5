#![no_main]
//! SOCKS5 greeting and request parsers: no panic on any input, consumed
//! lengths within the buffer, and a parse of a prefix never contradicts the
//! parse of the whole.
use libfuzzer_sys::fuzz_target;
use runproof_net::socks::{parse_greeting, parse_request};

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((methods, used))) = parse_greeting(data) {
        assert!(used <= data.len());
        assert_eq!(methods.len() + 2, used);
    }
    match parse_request(data) {
        Ok(Some((_, used))) => {
            assert!(used <= data.len());
            // Every strict prefix is incomplete, never an error.
            for cut in 0..used {
                assert_eq!(parse_request(&data[..cut]).map(|o| o.is_none()), Ok(true), "cut {cut}");
            }
        }
        Ok(None) | Err(_) => {}
    }
});
