//! One-time sequences files (knockd's `One_Time_Sequences`): one sequence per line, a used
//! line disabled by a `#` over its first character.
//!
//! Role: parse the file's text ([`parse_one_time_sequences`]) and give the text with a used
//! line marked ([`mark_used`]); the server reads the file and writes it back.
//!
//! What it must not do: any I/O, or follow the knocks as they arrive (the server does).

use crate::types::PortSpec;

use super::error::{quoted, ConfigError};
use super::sequence::parse_sequence;

/// One usable line of a one-time sequences file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OneTimeSeq {
    /// 1-based line number.
    pub line: usize,
    /// Offset of the line's first byte in the text (where knockd writes its `#`).
    pub byte_offset: usize,
    /// The sequence.
    pub knocks: Vec<PortSpec>,
}

/// Parses a one-time sequences file (knockd's format): one sequence per line in `Sequence`
/// syntax; lines that are blank or whose first non-blank character is `#` (used or comment)
/// are skipped. Unlike knockd, which skips a malformed line silently, a malformed line is an
/// error. The usable lines are returned in file order; the first one is the current sequence.
pub fn parse_one_time_sequences(text: &str) -> Result<Vec<OneTimeSeq>, ConfigError> {
    let mut out = Vec::new();
    let mut offset = 0;
    for (idx, raw) in text.split_inclusive('\n').enumerate() {
        let line = idx + 1;
        let start = offset;
        offset += raw.len();
        let t = raw.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let knocks = parse_sequence(t).map_err(|e| ConfigError {
            line,
            message: format!("one-time sequence {}: {e}", quoted(t)),
        })?;
        out.push(OneTimeSeq {
            line,
            byte_offset: start,
            knocks,
        });
    }
    Ok(out)
}

/// Disables a used sequence as knockd does: the first character of line `line` (1-based)
/// becomes `#` (a multi-byte character is replaced whole). The text is returned unchanged if
/// the line does not exist or is empty (knockd would overwrite the newline; we do not). The
/// server writes the result atomically.
pub fn mark_used(text: &str, line: usize) -> String {
    let mut offset = 0;
    for (idx, raw) in text.split_inclusive('\n').enumerate() {
        if idx + 1 == line {
            // A blank line holds no sequence. Any other line is disabled by its first
            // character, whatever it is: a line starting with '\r' (or a blank) still parses
            // as a sequence once trimmed, so it must be marked too.
            let Some(first) = raw.chars().next().filter(|_| !raw.trim().is_empty()) else {
                break;
            };
            let mut out = String::with_capacity(text.len());
            out.push_str(&text[..offset]);
            out.push('#');
            out.push_str(&text[offset + first.len_utf8()..]);
            return out;
        }
        offset += raw.len();
    }
    text.to_owned()
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{ps, tcp};
    use super::*;
    use crate::types::Proto;

    #[test]
    fn mark_used_disables_a_line_starting_with_a_carriage_return() {
        // Found by the `config` fuzz target: "\r1111,2222" trims to a sequence, and was left
        // unmarked, so it stayed valid for ever.
        let text = "\r1111,2222\n3333,4444\n";
        let marked = mark_used(text, 1);
        assert_eq!(marked, "#1111,2222\n3333,4444\n");
        let left = parse_one_time_sequences(&marked).expect("parses");
        assert_eq!(left.len(), 1, "{left:?}");
        // Blank lines are left alone.
        assert_eq!(mark_used("\n \n", 1), "\n \n");
    }

    #[test]
    fn one_time_sequences() {
        let text =
            "# used ones start with #\n 7000,8000,9000\n\n#1234,5678\n 2222:udp, 3333\r\n   # x\n";
        let s = parse_one_time_sequences(text).expect("parses");
        assert_eq!(
            s,
            [
                OneTimeSeq {
                    line: 2,
                    byte_offset: 25,
                    knocks: tcp(&[7000, 8000, 9000])
                },
                OneTimeSeq {
                    line: 5,
                    byte_offset: 53,
                    knocks: vec![ps(2222, Proto::Udp), ps(3333, Proto::Tcp)]
                },
            ]
        );
        assert_eq!(&text[25..26], " ");

        // Using the first one: knockd writes `#` over the first character.
        let after = mark_used(text, 2);
        assert_eq!(after.len(), text.len());
        assert!(after.contains("\n#7000,8000,9000\n"));
        let s = parse_one_time_sequences(&after).expect("parses");
        assert_eq!(s.first().map(|s| s.line), Some(5));
        let after = mark_used(&after, 5);
        assert!(after.contains("\n#2222:udp, 3333\r\n"));
        assert_eq!(parse_one_time_sequences(&after), Ok(vec![]));

        // Without a leading blank the first digit is lost, exactly as in knockd.
        assert_eq!(mark_used("7000,8000\n9000,1\n", 1), "#000,8000\n9000,1\n");
        assert_eq!(mark_used("7000,8000\n9000,1", 2), "7000,8000\n#000,1");
        assert_eq!(mark_used("é1,2\n", 1), "#1,2\n");
        // Out of range or empty lines: unchanged.
        assert_eq!(mark_used("1,2\n\n3,4\n", 2), "1,2\n\n3,4\n");
        assert_eq!(mark_used("1,2\n", 9), "1,2\n");
        assert_eq!(mark_used("1,2\n", 0), "1,2\n");

        let e = parse_one_time_sequences("1,2\n3,0\n").expect_err("bad port");
        assert_eq!(e.line, 2);
        assert!(
            e.message
                .contains("one-time sequence \"3,0\": bad element \"0\""),
            "{e}"
        );
    }
}
