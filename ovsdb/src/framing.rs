//! Splitting the OVSDB byte stream into JSON messages.
//!
//! RFC 7047 sends JSON-RPC messages back to back on one stream with no length prefix and no
//! delimiter, so the only way to know where a message ends is to follow the JSON syntax far enough
//! to see its outermost bracket close. [`Framer`] does exactly that and nothing more: it tracks
//! bracket depth and whether it is inside a string (and after a backslash there), which is enough
//! because brackets inside strings do not count and every multi-byte UTF-8 sequence consists of
//! bytes ≥ 0x80 that can never be mistaken for `"`, `\`, `{`, `}`, `[` or `]`. Full validation is
//! left to `serde_json` once a frame is complete.

use thiserror::Error;

/// The message size limit used when none is configured.
///
/// A full OVN Northbound `monitor_cond` reply for a large deployment runs into tens of megabytes;
/// 64 MiB leaves headroom for that while still bounding what a broken or hostile peer can make us
/// buffer.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 64 * 1024 * 1024;

/// Why the stream cannot be split into messages any more.
///
/// Every variant is fatal for the connection: once framing is lost there is no way to find the
/// start of the next message, so the caller must drop the connection (and the framer).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum FramingError {
    /// A message grew past the configured limit before it was complete.
    #[error(
        "JSON-RPC message exceeds the {limit}-byte limit ({size} bytes buffered without the \
         message being complete)"
    )]
    MessageTooLarge {
        /// The configured maximum message size in bytes.
        limit: usize,
        /// How many bytes of the unfinished message were buffered when the limit was hit.
        size: usize,
    },
    /// Something other than whitespace, `{` or `[` appeared between messages.
    #[error("unexpected byte {byte:#04x} between JSON-RPC messages (at stream offset {offset})")]
    UnexpectedByte {
        /// The offending byte.
        byte: u8,
        /// Its offset from the start of the stream.
        offset: u64,
    },
    /// A closing bracket appeared with no message open.
    #[error("unbalanced closing bracket at stream offset {offset}")]
    Unbalanced {
        /// Offset of the bracket from the start of the stream.
        offset: u64,
    },
    /// A complete frame was found but is not valid JSON (e.g. mismatched bracket kinds, bad UTF-8).
    #[error("JSON-RPC message is not valid JSON: {reason}")]
    InvalidJson {
        /// What `serde_json` said.
        reason: String,
    },
}

/// Incremental splitter of a delimiter-less stream of JSON values.
///
/// Pure and synchronous so that it can be unit-tested byte by byte and fuzzed without any I/O;
/// the connection's reader task feeds it whatever `read` returned and drains complete messages.
#[derive(Debug)]
pub struct Framer {
    /// Bytes received and not yet handed out; `buf[..consumed]` belongs to frames already returned.
    buf: Vec<u8>,
    /// Prefix of `buf` already returned by [`Framer::next_frame`], dropped on the next call.
    consumed: usize,
    /// Position up to which `buf` has been scanned.
    scan: usize,
    /// Start of the message being scanned, if one has begun.
    start: Option<usize>,
    /// Bracket nesting depth of the message being scanned.
    depth: usize,
    in_string: bool,
    escaped: bool,
    max_message_size: usize,
    /// Stream offset of `buf[0]`, for error messages.
    base_offset: u64,
    /// Once an error happened it is returned forever: the stream position is lost.
    failed: Option<FramingError>,
}

impl Default for Framer {
    fn default() -> Self {
        Self::new()
    }
}

impl Framer {
    /// A framer with the default 64 MiB message limit.
    pub fn new() -> Self {
        Self::with_max_message_size(DEFAULT_MAX_MESSAGE_SIZE)
    }

    /// A framer that refuses messages longer than `max_message_size` bytes, so that a peer cannot
    /// make us buffer without bound.
    pub fn with_max_message_size(max_message_size: usize) -> Self {
        Self {
            buf: Vec::new(),
            consumed: 0,
            scan: 0,
            start: None,
            depth: 0,
            in_string: false,
            escaped: false,
            max_message_size: max_message_size.max(1),
            base_offset: 0,
            failed: None,
        }
    }

    /// The configured limit, so the connection can report it.
    pub fn max_message_size(&self) -> usize {
        self.max_message_size
    }

    /// Bytes buffered but not yet returned as frames; lets the reader know whether a closed stream
    /// ended in the middle of a message.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.consumed
    }

    /// Appends received bytes. Scanning happens lazily in [`Framer::next_frame`].
    pub fn push(&mut self, bytes: &[u8]) {
        self.compact();
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete message as raw bytes, `Ok(None)` if more input is needed.
    ///
    /// The slice borrows the framer's buffer and is valid until the next call.
    pub fn next_frame(&mut self) -> Result<Option<&[u8]>, FramingError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        // No compaction here: draining after every frame would move the rest of a read full of
        // small messages once per message. `push` compacts once per read instead.
        match self.scan_frame() {
            Ok(Some((start, end))) => Ok(Some(&self.buf[start..end])),
            Ok(None) => Ok(None),
            Err(err) => {
                self.failed = Some(err.clone());
                Err(err)
            }
        }
    }

    /// The next complete message parsed as JSON, `Ok(None)` if more input is needed.
    pub fn next_value(&mut self) -> Result<Option<serde_json::Value>, FramingError> {
        let parsed = match self.next_frame()? {
            None => return Ok(None),
            Some(frame) => serde_json::from_slice(frame),
        };
        match parsed {
            Ok(value) => Ok(Some(value)),
            Err(err) => {
                let err = FramingError::InvalidJson {
                    reason: err.to_string(),
                };
                self.failed = Some(err.clone());
                Err(err)
            }
        }
    }

    /// Drops bytes of frames already returned, keeping indices consistent.
    fn compact(&mut self) {
        if self.consumed == 0 {
            return;
        }
        self.buf.drain(..self.consumed);
        self.base_offset += self.consumed as u64;
        self.scan -= self.consumed;
        if let Some(start) = self.start.as_mut() {
            *start -= self.consumed;
        }
        self.consumed = 0;
    }

    /// Advances the scanner; returns the bounds of a complete frame if one ended.
    fn scan_frame(&mut self) -> Result<Option<(usize, usize)>, FramingError> {
        while self.scan < self.buf.len() {
            let pos = self.scan;
            let byte = self.buf[pos];
            self.scan += 1;
            let Some(start) = self.start else {
                match byte {
                    b' ' | b'\t' | b'\r' | b'\n' => {
                        // Whitespace between messages: nothing to keep.
                        self.consumed = self.scan;
                    }
                    b'{' | b'[' => {
                        self.start = Some(pos);
                        self.depth = 1;
                    }
                    b'}' | b']' => {
                        return Err(FramingError::Unbalanced {
                            offset: self.base_offset + pos as u64,
                        });
                    }
                    _ => {
                        return Err(FramingError::UnexpectedByte {
                            byte,
                            offset: self.base_offset + pos as u64,
                        });
                    }
                }
                continue;
            };
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                } else if byte == b'\\' {
                    self.escaped = true;
                } else if byte == b'"' {
                    self.in_string = false;
                }
            } else {
                match byte {
                    b'"' => self.in_string = true,
                    b'{' | b'[' => self.depth = self.depth.saturating_add(1),
                    b'}' | b']' => {
                        self.depth -= 1;
                        if self.depth == 0 {
                            self.start = None;
                            self.consumed = self.scan;
                            return Ok(Some((start, self.scan)));
                        }
                    }
                    _ => {}
                }
            }
            if self.scan - start > self.max_message_size {
                return Err(FramingError::MessageTooLarge {
                    limit: self.max_message_size,
                    size: self.scan - start,
                });
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn drain(framer: &mut Framer) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        while let Some(v) = framer.next_value().expect("valid stream") {
            out.push(v);
        }
        out
    }

    #[test]
    fn splits_at_every_byte_boundary() {
        let messages = [
            json!({"id": 1, "method": "echo", "params": ["a}b", "c\"{d", "\\", "é✓"]}),
            json!({"id": null, "method": "update2", "params": ["m", {"T": {"u": {"modify": {"x": ["set", [1, 2.5, true]]}}}}]}),
            json!([1, [2, [3, {"}": "]"}]]]),
        ];
        let stream: Vec<u8> = messages
            .iter()
            .map(|m| serde_json::to_string(m).expect("serialise"))
            .collect::<Vec<_>>()
            .join(" \n")
            .into_bytes();
        for split in 0..=stream.len() {
            let mut framer = Framer::new();
            framer.push(&stream[..split]);
            let mut got = drain(&mut framer);
            framer.push(&stream[split..]);
            got.extend(drain(&mut framer));
            assert_eq!(got, messages, "split at {split}");
            assert_eq!(framer.buffered(), 0);
        }
    }

    #[test]
    fn byte_by_byte() {
        let stream = br#"{"a":"\\\""}{"b":"\"}"}[]  {}"#;
        let mut framer = Framer::new();
        let mut got = Vec::new();
        for b in stream {
            framer.push(std::slice::from_ref(b));
            got.extend(drain(&mut framer));
        }
        assert_eq!(
            got,
            vec![
                json!({"a": "\\\""}),
                json!({"b": "\"}"}),
                json!([]),
                json!({})
            ]
        );
    }

    #[test]
    fn several_values_in_one_chunk_and_raw_frames() {
        let mut framer = Framer::new();
        framer.push(b"{\"x\":1}{\"y\":[2]}\n{\"z\"");
        assert_eq!(
            framer.next_frame().expect("ok").expect("frame"),
            b"{\"x\":1}"
        );
        assert_eq!(
            framer.next_frame().expect("ok").expect("frame"),
            b"{\"y\":[2]}"
        );
        assert_eq!(framer.next_frame().expect("ok"), None);
        assert_eq!(framer.buffered(), 4);
        framer.push(b":3}");
        assert_eq!(framer.next_value().expect("ok"), Some(json!({"z": 3})));
    }

    #[test]
    fn size_limit() {
        let mut framer = Framer::with_max_message_size(16);
        framer.push(br#"{"a":"0123456789"}"#);
        let err = framer.next_frame().expect_err("too large");
        assert!(matches!(
            err,
            FramingError::MessageTooLarge { limit: 16, .. }
        ));
        assert!(err.to_string().contains("16-byte limit"));
        // Sticky: the stream position is lost.
        framer.push(b"{}");
        assert!(framer.next_frame().is_err());

        // Exactly at the limit is fine, and whitespace in between does not count.
        let mut framer = Framer::with_max_message_size(8);
        framer.push(b"         {\"a\":12}          {\"b\":1}");
        assert_eq!(drain(&mut framer), vec![json!({"a": 12}), json!({"b": 1})]);
    }

    #[test]
    fn unfinished_oversized_message_is_caught_before_it_completes() {
        let mut framer = Framer::with_max_message_size(1024);
        framer.push(b"[");
        for _ in 0..100 {
            framer.push(&[b'1', b','][..]);
            framer.push(&[b' '; 20][..]);
            if framer.next_frame().is_err() {
                return;
            }
        }
        panic!("limit not enforced");
    }

    #[test]
    fn garbage() {
        for input in [&b"x"[..], b"1", b"\"s\"", b"}", b"]", b"\0"] {
            let mut framer = Framer::new();
            framer.push(input);
            assert!(framer.next_frame().is_err(), "{input:?}");
        }
        let mut framer = Framer::new();
        framer.push(b"{]");
        assert!(matches!(
            framer.next_value(),
            Err(FramingError::InvalidJson { .. })
        ));
        let mut framer = Framer::new();
        framer.push(b"{\"a\":\xff}");
        assert!(framer.next_value().is_err());
    }

    #[test]
    fn error_reports_stream_offset() {
        let mut framer = Framer::new();
        framer.push(b"{}  ");
        assert!(framer.next_frame().expect("ok").is_some());
        assert!(framer.next_frame().expect("ok").is_none());
        framer.push(b"  x");
        assert_eq!(
            framer.next_frame(),
            Err(FramingError::UnexpectedByte {
                byte: b'x',
                offset: 6
            })
        );
    }

    proptest::proptest! {
        #[test]
        fn never_panics(chunks in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 0..64), 0..16)) {
            let mut framer = Framer::with_max_message_size(256);
            for chunk in &chunks {
                framer.push(chunk);
                while let Ok(Some(_)) = framer.next_value() {}
            }
        }
    }
}
