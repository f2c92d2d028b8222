//! Fuzzes the stream framer: it must never panic, and how the input is chunked must not change
//! which frames come out (or where it fails).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ovsdb::framing::{Framer, FramingError};

#[derive(Debug, PartialEq)]
enum Outcome {
    /// A frame and whether it is valid JSON.
    Frame(Vec<u8>, bool),
    Error(FramingError),
}

/// Feeds `data` in chunks of the given sizes (cycled) and records everything that comes out.
fn run(data: &[u8], chunk_sizes: &[usize], max: usize) -> Vec<Outcome> {
    let mut framer = Framer::with_max_message_size(max);
    let mut out = Vec::new();
    let mut rest = data;
    let mut sizes = chunk_sizes.iter().copied().cycle();
    while !rest.is_empty() {
        let n = sizes.next().unwrap_or(rest.len()).clamp(1, rest.len());
        framer.push(&rest[..n]);
        rest = &rest[n..];
        loop {
            match framer.next_frame() {
                Ok(Some(frame)) => {
                    let frame = frame.to_vec();
                    let valid = parses(&frame);
                    out.push(Outcome::Frame(frame, valid));
                }
                Ok(None) => break,
                Err(e) => {
                    out.push(Outcome::Error(e));
                    return out;
                }
            }
        }
    }
    out
}

fn parses(frame: &[u8]) -> bool {
    let mut framer = Framer::new();
    framer.push(frame);
    framer.next_value().is_ok()
}

fuzz_target!(|input: &[u8]| {
    // First byte: message size limit; next bytes: chunk sizes; the rest: the stream.
    let Some((&limit, rest)) = input.split_first() else {
        return;
    };
    let split = rest.len().min(4);
    let (sizes, data) = rest.split_at(split);
    let sizes: Vec<usize> = sizes.iter().map(|&b| usize::from(b % 17) + 1).collect();
    let max = usize::from(limit) * 4 + 1;

    let whole = run(data, &[data.len().max(1)], max);
    let chunked = run(data, &sizes, max);
    let bytewise = run(data, &[1], max);
    assert_eq!(whole, chunked, "chunking changed the outcome");
    assert_eq!(whole, bytewise, "byte-wise feeding changed the outcome");
});
