//! Errors and warnings of the configuration reader, and how a value is quoted in them.
//!
//! Role: the two kinds of message every part of the reader reports: [`ConfigError`] (the text
//! is refused) and [`Warning`] (a remark on a valid text), both shown as `line N: message`.
//!
//! What it must not do: depend on any other part of the reader (every other part uses it), or
//! carry secret key material: callers word the messages and never put a secret in one.

use std::fmt;

/// One error in a configuration text. `Display` gives `line N: message`; the caller prefixes
/// the file's path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong, naming the directive and the value (never a secret).
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for ConfigError {}

/// A non-fatal remark on a valid configuration (shown by `knock-spad check`, logged by the
/// daemon at start-up and at each reload).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    /// 1-based line number.
    pub line: usize,
    /// The remark.
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// A value as shown in a message: in double quotes, with Rust's escapes.
pub(super) fn quoted(v: &str) -> String {
    format!("{v:?}")
}

/// A would-be directive name (or a line that has none) as shown in a message, unless it may
/// hold a key: a `NAME:BASE64` pasted without `Keys =` reads as a directive named
/// `NAME:BASE64` (the `=` of the base64 padding splits it), and no directive name has a `:`.
pub(super) fn quoted_unless_key(v: &str) -> String {
    if v.contains(':') {
        "(not shown: it has a \":\" and may hold a key)".to_owned()
    } else {
        quoted(v)
    }
}
