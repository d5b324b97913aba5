#![no_main]
//! Rule and host parsing: no panic; a host that parses as a name is a
//! normalised DNS name (lower-case ASCII, no empty labels).
use libfuzzer_sys::fuzz_target;
use runproof_net::policy::{EgressPolicy, Rule, Target};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let _ = Rule::parse(s);
    let _ = EgressPolicy::from_rules(&[s]);
    if let Some(Target::Name(n)) = Target::parse(s) {
        assert!(n.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-' || b == b'_'));
        assert!(!n.split('.').any(str::is_empty));
    }
});
