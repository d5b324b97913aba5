//! Server-sent events: split a byte stream into whole events (each kept as
//! its raw bytes so it can be forwarded untouched) and read the `event:` and
//! `data:` fields of one event. Pure functions over buffers, fuzzed.

use std::borrow::Cow;

/// Largest event held while waiting for its end. Past this the buffer is
/// passed through raw (and the stream counted as malformed) rather than
/// growing without bound.
pub const MAX_EVENT: usize = 4 * 1024 * 1024;

/// Accumulates bytes and hands out complete events.
#[derive(Debug, Default)]
pub struct Splitter {
    buf: Vec<u8>,
    /// Where the pending (not yet handed out) bytes of `buf` start. Handed
    /// out events stay in `buf` until the next push, so taking an event
    /// copies nothing.
    start: usize,
    /// How far the pending bytes have been searched for a boundary
    /// (resumes there), relative to `start`.
    scanned: usize,
}

/// Find the end (exclusive, including the blank line) of the first event.
fn boundary(buf: &[u8], from: usize) -> Option<usize> {
    // An event ends at an empty line: "\n\n", "\r\n\r\n", "\r\r", or the
    // mixed "\r\n\n" / "\n\r\n".
    let start = from.saturating_sub(3);
    let mut i = start;
    while i < buf.len() {
        let b = buf[i];
        if b == b'\n' || b == b'\r' {
            // Length of this line terminator.
            let t1 = if b == b'\r' && buf.get(i + 1) == Some(&b'\n') {
                2
            } else {
                1
            };
            let j = i + t1;
            match buf.get(j) {
                Some(b'\n') => return Some(j + 1),
                Some(b'\r') => {
                    if buf.get(j + 1) == Some(&b'\n') {
                        return Some(j + 2);
                    }
                    if j + 1 < buf.len() {
                        return Some(j + 1);
                    }
                    // "\r" at the very end: could be the start of "\r\n".
                    return None;
                }
                Some(_) => {}
                None => return None,
            }
            i = j;
        } else {
            i += 1;
        }
    }
    None
}

impl Splitter {
    pub fn push(&mut self, data: &[u8]) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// Where the next complete event lies in [`Splitter::bytes`], raw
    /// bytes including its terminating blank line. The range holds until
    /// the next push.
    pub fn next_range(&mut self) -> Option<std::ops::Range<usize>> {
        let pending = &self.buf[self.start..];
        match boundary(pending, self.scanned) {
            Some(end) => {
                let r = self.start..self.start + end;
                self.start += end;
                self.scanned = 0;
                Some(r)
            }
            None => {
                self.scanned = pending.len();
                None
            }
        }
    }

    /// The buffer that [`Splitter::next_range`]'s ranges index.
    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }

    /// The next complete event, raw bytes including its terminating blank line.
    pub fn next_event(&mut self) -> Option<Vec<u8>> {
        self.next_range().map(|r| self.buf[r].to_vec())
    }

    /// True when the pending partial event is larger than [`MAX_EVENT`].
    pub fn overflowing(&self) -> bool {
        self.pending() > MAX_EVENT
    }

    /// Take whatever is pending (the stream ended or overflowed).
    pub fn take_rest(&mut self) -> Vec<u8> {
        let mut rest = std::mem::take(&mut self.buf);
        rest.drain(..self.start);
        self.start = 0;
        self.scanned = 0;
        rest
    }

    pub fn pending(&self) -> usize {
        self.buf.len() - self.start
    }
}

/// The fields of one event that matter here, borrowed from the raw event
/// where they can be (valid UTF-8, one `data:` line).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Event<'a> {
    pub event: Option<Cow<'a, str>>,
    pub data: Cow<'a, str>,
}

impl Event<'_> {
    fn into_owned(self) -> Event<'static> {
        Event {
            event: self.event.map(|e| Cow::Owned(e.into_owned())),
            data: Cow::Owned(self.data.into_owned()),
        }
    }
}

/// Parse one raw event. Lines starting with `:` are comments; `data:` lines
/// are joined with `\n`; one space after the colon is dropped. Bytes that are
/// not UTF-8 are read as U+FFFD.
pub fn parse_event(raw: &[u8]) -> Event<'_> {
    match std::str::from_utf8(raw) {
        Ok(text) => parse_text(text),
        Err(_) => parse_text(&String::from_utf8_lossy(raw)).into_owned(),
    }
}

fn parse_text(text: &str) -> Event<'_> {
    let mut ev = Event::default();
    let mut first_data = true;
    for line in text.split(['\n', '\r']) {
        if line.is_empty() || line.starts_with(':') {
            continue;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => ev.event = Some(Cow::Borrowed(value)),
            "data" => {
                if first_data {
                    ev.data = Cow::Borrowed(value);
                } else {
                    let d = ev.data.to_mut();
                    d.push('\n');
                    d.push_str(value);
                }
                first_data = false;
            }
            _ => {}
        }
    }
    ev
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(input: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut s = Splitter::default();
        let mut out = Vec::new();
        for chunk in input {
            s.push(chunk);
            while let Some(e) = s.next_event() {
                out.push(e);
            }
        }
        out
    }

    #[test]
    fn splits_on_each_line_ending_and_across_chunks() {
        let evs = all(&[b"data: a\n\nda", b"ta: b\r\n\r\ndata: c\r\rdata: d\n"]);
        assert_eq!(
            evs,
            vec![
                b"data: a\n\n".to_vec(),
                b"data: b\r\n\r\n".to_vec(),
                b"data: c\r\r".to_vec()
            ]
        );
        // Byte-at-a-time delivery gives the same events.
        let whole: &[u8] = b"event: x\ndata: 1\n\ndata: 2\r\n\r\n";
        let pieces: Vec<&[u8]> = whole.chunks(1).collect();
        assert_eq!(
            all(&pieces),
            vec![
                b"event: x\ndata: 1\n\n".to_vec(),
                b"data: 2\r\n\r\n".to_vec()
            ]
        );
    }

    #[test]
    fn cr_at_end_waits_for_possible_lf() {
        let mut s = Splitter::default();
        s.push(b"data: a\r\n\r");
        assert_eq!(s.next_event(), None);
        s.push(b"\n");
        assert_eq!(s.next_event(), Some(b"data: a\r\n\r\n".to_vec()));
    }

    #[test]
    fn parses_fields() {
        let e = parse_event(b"event: message_delta\n: comment\ndata: {\"a\":\ndata:1}\n\n");
        assert_eq!(e.event.as_deref(), Some("message_delta"));
        assert_eq!(e.data, "{\"a\":\n1}");
        assert_eq!(parse_event(b"data: [DONE]\n\n").data, "[DONE]");
    }
}
