//! Splitting a remote command's byte stream into lines and keeping only the last few.
//!
//! SSH delivers output in arbitrary chunks, so a line can span several packets; memory per
//! host must stay bounded whatever the remote side prints.

use std::collections::VecDeque;

/// Lines longer than this are cut (the rest of the line is dropped), so a command that prints
/// megabytes without a newline cannot grow the buffer without bound.
pub const MAX_LINE_BYTES: usize = 4096;

#[derive(Debug)]
pub struct LineSplitter {
    partial: Vec<u8>,
    truncated: bool,
}

impl LineSplitter {
    pub fn new() -> Self {
        Self {
            partial: Vec::new(),
            truncated: false,
        }
    }

    /// Feeds a chunk; calls `line` for every completed line (without the newline and any `\r`).
    pub fn push(&mut self, chunk: &[u8], mut line: impl FnMut(String)) {
        for piece in chunk.split_inclusive(|&b| b == b'\n') {
            let (body, complete) = match piece.strip_suffix(b"\n") {
                Some(body) => (body, true),
                None => (piece, false),
            };
            let room = MAX_LINE_BYTES.saturating_sub(self.partial.len());
            if body.len() > room {
                self.truncated = true;
            }
            self.partial
                .extend_from_slice(&body[..body.len().min(room)]);
            if complete {
                line(self.take());
            }
        }
    }

    /// Flushes a final line that had no trailing newline.
    pub fn finish(&mut self, line: impl FnOnce(String)) {
        if !self.partial.is_empty() || self.truncated {
            line(self.take());
        }
    }

    fn take(&mut self) -> String {
        let bytes = std::mem::take(&mut self.partial);
        let mut text =
            String::from_utf8_lossy(bytes.strip_suffix(b"\r").unwrap_or(&bytes)).into_owned();
        if std::mem::take(&mut self.truncated) {
            text.push_str(" [line truncated]");
        }
        text
    }
}

impl Default for LineSplitter {
    fn default() -> Self {
        Self::new()
    }
}

/// The last `capacity` lines seen.
#[derive(Debug)]
pub struct Tail {
    lines: VecDeque<String>,
    capacity: usize,
}

impl Tail {
    /// Allocates nothing up front: most commands print a line or none, and a fan-out keeps one
    /// tail per stream for every host until it ends.
    pub fn new(capacity: usize) -> Self {
        Self {
            lines: VecDeque::new(),
            capacity,
        }
    }

    pub fn push(&mut self, line: String) {
        if self.capacity == 0 {
            return;
        }
        if self.lines.len() == self.capacity {
            self.lines.pop_front();
        }
        self.lines.push_back(line);
    }

    /// The lines, oldest first, in an allocation of exactly their number (the result outlives
    /// the session).
    pub fn into_vec(self) -> Vec<String> {
        let mut lines: Vec<String> = self.lines.into();
        lines.shrink_to_fit();
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]]) -> Vec<String> {
        let mut out = Vec::new();
        let mut s = LineSplitter::new();
        for c in chunks {
            s.push(c, |l| out.push(l));
        }
        s.finish(|l| out.push(l));
        out
    }

    #[test]
    fn lines_across_chunks() {
        assert_eq!(
            split(&[b"ab", b"c\nde", b"f\n\ng"]),
            ["abc", "def", "", "g"]
        );
        assert_eq!(split(&[b"crlf\r\n"]), ["crlf"]);
        assert_eq!(split(&[b""]), Vec::<String>::new());
        assert_eq!(split(&[b"\xff\n"]), ["\u{fffd}"]);
    }

    #[test]
    fn long_lines_are_cut() {
        let long = vec![b'x'; MAX_LINE_BYTES * 3];
        let lines = split(&[&long, &long, b"\nok\n"]);
        assert_eq!(lines.len(), 2);
        assert!(lines[0].ends_with(" [line truncated]"));
        assert_eq!(lines[0].len(), MAX_LINE_BYTES + " [line truncated]".len());
        assert_eq!(lines[1], "ok");
    }

    #[test]
    fn tail_keeps_last_lines() {
        let mut t = Tail::new(2);
        for l in ["a", "b", "c"] {
            t.push(l.into());
        }
        assert_eq!(t.into_vec(), ["b", "c"]);
        let mut many = Tail::new(20);
        for i in 0..1000 {
            many.push(format!("line {i}"));
        }
        let kept = many.into_vec();
        assert_eq!(kept.len(), 20);
        assert_eq!(kept[0], "line 980");
        assert_eq!(kept.capacity(), 20, "no room kept beyond the tail");
        let mut one = Tail::new(20);
        one.push("ok".into());
        let kept = one.into_vec();
        assert_eq!((kept.len(), kept.capacity()), (1, 1));
        let mut none = Tail::new(0);
        none.push("a".into());
        assert!(none.into_vec().is_empty());
    }
}
