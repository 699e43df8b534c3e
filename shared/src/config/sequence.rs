//! Knock sequences in knockd's syntax: parsing, formatting, and the warnings a sequence
//! deserves.
//!
//! Role: a `Sequence` value and each line of a one-time sequences file go through
//! [`parse_sequence`]; log lines and `knock-spad check` print sequences with
//! [`format_sequence`].
//!
//! What it must not do: know doors, directives or line numbers (callers add them), or track
//! knocks as they arrive (that is the crate's `sequence` module).

use crate::types::{PortSpec, PortSpecError, Proto};

use super::model::MAX_SEQUENCE_LEN;

/// Why a knock sequence was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SequenceError {
    /// Nothing given.
    #[error("the sequence is empty")]
    Empty,
    /// Two commas in a row, or a leading/trailing comma.
    #[error("element {0} is empty")]
    EmptyElement(usize),
    /// An element is not `port[:tcp|udp]`.
    #[error("bad element {element:?}: {reason}")]
    Element {
        /// The element as written.
        element: String,
        /// What is wrong with it.
        reason: PortSpecError,
    },
    /// More than [`MAX_SEQUENCE_LEN`] ports.
    #[error("{0} ports, at most {MAX_SEQUENCE_LEN} are allowed")]
    TooLong(usize),
}

/// Parses knockd's sequence syntax: `port[:tcp|udp]` elements separated by commas (TCP by
/// default; `port/proto` is accepted too).
pub fn parse_sequence(text: &str) -> Result<Vec<PortSpec>, SequenceError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(SequenceError::Empty);
    }
    let mut out = Vec::new();
    for (i, element) in text.split(',').enumerate() {
        let element = element.trim();
        if element.is_empty() {
            return Err(SequenceError::EmptyElement(i + 1));
        }
        let spec = element
            .parse::<PortSpec>()
            .map_err(|reason| SequenceError::Element {
                element: element.to_owned(),
                reason,
            })?;
        out.push(spec);
    }
    if out.len() > MAX_SEQUENCE_LEN {
        return Err(SequenceError::TooLong(out.len()));
    }
    Ok(out)
}

/// Formats a sequence in knockd's notation: `7000,8000:udp` (TCP elements without suffix).
pub fn format_sequence(sequence: &[PortSpec]) -> String {
    let mut out = String::new();
    for (i, p) in sequence.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&p.port.to_string());
        if p.proto == Proto::Udp {
            out.push_str(":udp");
        }
    }
    out
}

/// Whether a plain sequential port scan completes this sequence: two or more ports of one
/// protocol in strictly ascending order (`7000,8000,9000`). `knock-spad check` warns about it.
pub fn is_scan_order(sequence: &[PortSpec]) -> bool {
    sequence.len() >= 2
        && sequence.windows(2).all(|w| match w {
            [a, b] => a.proto == b.proto && a.port < b.port,
            _ => false,
        })
}

/// The warnings a sequence deserves (pure; also used for one-time sequences).
pub fn sequence_warnings(sequence: &[PortSpec]) -> Vec<String> {
    let mut out = Vec::new();
    let text = format_sequence(sequence);
    if is_scan_order(sequence) {
        out.push(format!(
            "sequence {text} is ascending: a sequential port scan completes it; \
             use an order a scanner does not follow"
        ));
    }
    if sequence.len() == 1 {
        out.push(format!(
            "sequence {text} has a single port: any connection attempt to it opens the door"
        ));
    }
    for w in sequence.windows(2) {
        if let [a, b] = w {
            if a == b {
                out.push(format!(
                    "sequence {text} repeats {a} twice in a row: a retransmitted or \
                     duplicated packet can count as both hits"
                ));
                break;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{ps, tcp};
    use super::*;

    #[test]
    fn scan_order() {
        assert!(is_scan_order(&tcp(&[7000, 8000, 9000])));
        assert!(is_scan_order(&tcp(&[1, 2])));
        assert!(!is_scan_order(&tcp(&[9000, 8000, 7000])));
        assert!(!is_scan_order(&tcp(&[7000, 9000, 8000])));
        assert!(!is_scan_order(&tcp(&[7000, 7000, 8000])));
        assert!(!is_scan_order(&tcp(&[7000])));
        assert!(!is_scan_order(&[]));
        // A TCP scan never completes a sequence that needs a UDP hit.
        assert!(!is_scan_order(&[
            ps(1000, Proto::Tcp),
            ps(2000, Proto::Udp)
        ]));
        assert!(is_scan_order(&[ps(1000, Proto::Udp), ps(2000, Proto::Udp)]));
        assert_eq!(
            format_sequence(&[ps(1, Proto::Tcp), ps(2, Proto::Udp)]),
            "1,2:udp"
        );
        assert_eq!(
            parse_sequence(&"1,".repeat(33)),
            Err(SequenceError::EmptyElement(34))
        );
        let long = (1..=33)
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join(",");
        assert_eq!(parse_sequence(&long), Err(SequenceError::TooLong(33)));
        let max = (1..=32)
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join(",");
        assert_eq!(parse_sequence(&max).map(|s| s.len()), Ok(32));
    }
}
