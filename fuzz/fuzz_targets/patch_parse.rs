//! The diff parser on arbitrary text: must not panic; whatever it accepts has
//! only paths that either pass `check_path` or are reported by it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use runproof_task::patch::{check_path, parse};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(p) = parse(&text) {
        for f in &p.files {
            for path in f.paths() {
                let _ = check_path(path);
            }
        }
    }
});
