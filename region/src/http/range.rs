//! `Range: bytes=…` (RFC 9110 §14) for release downloads: a site whose link dropped mid-download
//! asks for the rest instead of starting a target of hundreds of megabytes again.
//!
//! One range per request, which is all a resuming client sends; a request for several ranges gets
//! the whole file (RFC 9110 allows a server to ignore `Range`), never a multipart body.

/// What to send for a file of `length` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    /// 200 with the whole file: no `Range`, one this module does not serve, or one covering it all.
    Whole,
    /// 206 with bytes `first..=last`.
    Part {
        /// First byte.
        first: u64,
        /// Last byte, inclusive.
        last: u64,
    },
    /// 416: the range starts at or past the end.
    Unsatisfiable,
}

/// Reads a `Range` header value for a file of `length` bytes.
pub(crate) fn answer(header: Option<&str>, length: u64) -> Answer {
    header
        .and_then(|value| value.trim().strip_prefix("bytes="))
        .and_then(|spec| single_range(spec, length))
        .unwrap_or(Answer::Whole)
}

/// `None` for what is served whole: several ranges, a malformed one, one ending before it starts.
fn single_range(spec: &str, length: u64) -> Option<Answer> {
    if spec.contains(',') {
        return None;
    }
    let (first, last) = spec.split_once('-')?;
    let (first, last) = (first.trim(), last.trim());
    let (first, last) = match (first.is_empty(), last.is_empty()) {
        (false, _) => {
            let first = number(first)?;
            if first >= length {
                return Some(Answer::Unsatisfiable);
            }
            let end = length - 1;
            let last = if last.is_empty() {
                end
            } else {
                number(last)?.min(end)
            };
            if last < first {
                return None;
            }
            (first, last)
        }
        // `bytes=-n`: the last n bytes.
        (true, false) => {
            let suffix = number(last)?;
            if suffix == 0 || length == 0 {
                return Some(Answer::Unsatisfiable);
            }
            (length.saturating_sub(suffix), length - 1)
        }
        (true, true) => return None,
    };
    Some(if first == 0 && last + 1 == length {
        Answer::Whole
    } else {
        Answer::Part { first, last }
    })
}

fn number(text: &str) -> Option<u64> {
    if text.bytes().all(|b| b.is_ascii_digit()) {
        text.parse().ok()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resumed_download_gets_the_rest() {
        assert_eq!(
            answer(Some("bytes=100-"), 1000),
            Answer::Part {
                first: 100,
                last: 999
            }
        );
        assert_eq!(
            answer(Some("bytes=100-199"), 1000),
            Answer::Part {
                first: 100,
                last: 199
            }
        );
        // A last byte past the end is cut to the end.
        assert_eq!(
            answer(Some("bytes=900-5000"), 1000),
            Answer::Part {
                first: 900,
                last: 999
            }
        );
        assert_eq!(
            answer(Some("bytes=-10"), 1000),
            Answer::Part {
                first: 990,
                last: 999
            }
        );
    }

    #[test]
    fn no_range_the_whole_range_and_ranges_not_served_get_the_whole_file() {
        for header in [
            None,
            Some("bytes=0-"),
            Some("bytes=0-999"),
            Some("bytes=0-10,20-30"),
            Some("items=0-10"),
            Some("bytes=abc-"),
            Some("bytes=20-10"),
            Some("bytes=-"),
            Some("bytes=+5-"),
        ] {
            assert_eq!(answer(header, 1000), Answer::Whole, "{header:?}");
        }
    }

    #[test]
    fn a_range_past_the_end_is_unsatisfiable() {
        assert_eq!(answer(Some("bytes=1000-"), 1000), Answer::Unsatisfiable);
        assert_eq!(answer(Some("bytes=5000-6000"), 1000), Answer::Unsatisfiable);
        assert_eq!(answer(Some("bytes=-0"), 1000), Answer::Unsatisfiable);
        assert_eq!(answer(Some("bytes=0-"), 0), Answer::Unsatisfiable);
    }
}
