//! The JSONC stripper keeps length and line structure for any input, and
//! parsing never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let stripped = runproof_scan::jsonc::strip(s);
    assert_eq!(stripped.len(), s.len());
    assert_eq!(stripped.matches('\n').count(), s.matches('\n').count());
    let _ = runproof_scan::jsonc::parse(s);
});
