#![no_main]
//! SSE splitting and metering: no panic; the forwarded events plus the rest
//! reassemble the input exactly, whatever the chunking; usage never panics or
//! overflows for any API.
use libfuzzer_sys::fuzz_target;
use runproof_net::gateway::meter::{Api, StreamMeter};
use runproof_net::gateway::sse::Splitter;

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    // First byte picks the chunk size and the API.
    let chunk = (data[0] as usize % 17) + 1;
    let api = [Api::OpenAiChat, Api::OpenAiResponses, Api::AnthropicMessages][data[0] as usize % 3];
    let body = &data[1..];
    let mut s = Splitter::default();
    let mut m = StreamMeter::new(api, data[0] & 0x80 != 0, 10);
    let mut out = Vec::new();
    for c in body.chunks(chunk) {
        s.push(c);
        while let Some(ev) = s.next_event() {
            m.observe(&ev);
            out.extend_from_slice(&ev);
        }
    }
    out.extend_from_slice(&s.take_rest());
    assert_eq!(out, body);
    let (u, _) = m.usage_so_far();
    let _ = u.total();
});
