//! Every test-report parser on arbitrary bytes: must not panic, must respect
//! the id-length and test-count bounds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use runproof_task::parse::{MAX_ID_BYTES, ParseInput, TestFormat, parse};

fuzz_target!(|data: &[u8]| {
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    let names = TestFormat::NAMES;
    let f: TestFormat = names[sel as usize % names.len()].parse().unwrap();
    let r = parse(
        f,
        &ParseInput {
            log: body,
            reports: vec![("report.xml".into(), body)],
            known_files: None,
        },
    );
    assert!(
        r.tests
            .keys()
            .all(|k| k.len() <= MAX_ID_BYTES && !k.is_empty())
    );
});
