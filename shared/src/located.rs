//! Where an error is: a file and a 1-based line, carried next to a typed error instead of
//! being spliced into its message. The parsers know the line, the caller that opened the file
//! adds the path ([`Located::in_file`]), and `Display` writes the form editors and `grep -n`
//! use: `FILE:LINE: message`.
//!
//! Pure data: it opens nothing (a path here is only a name).

use std::fmt;
use std::path::{Path, PathBuf};

/// An error `E` with the file and line it is about (either may be unknown).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Located<E> {
    /// The file, once the caller that read it said which.
    pub file: Option<PathBuf>,
    /// 1-based line number, when the error is about one line.
    pub line: Option<usize>,
    /// What is wrong.
    pub error: E,
}

impl<E> Located<E> {
    /// An error about a whole file, or about nothing in particular yet.
    pub fn new(error: E) -> Self {
        Self {
            file: None,
            line: None,
            error,
        }
    }

    /// An error about line `line` (1-based).
    pub fn at_line(line: usize, error: E) -> Self {
        Self {
            file: None,
            line: Some(line),
            error,
        }
    }

    /// The same error, said to be in `file` (a file already named is kept).
    #[must_use]
    pub fn in_file(mut self, file: &Path) -> Self {
        if self.file.is_none() {
            self.file = Some(file.to_owned());
        }
        self
    }

    /// The same place, another error.
    pub fn map<F>(self, f: impl FnOnce(E) -> F) -> Located<F> {
        Located {
            file: self.file,
            line: self.line,
            error: f(self.error),
        }
    }
}

impl<E: fmt::Display> fmt::Display for Located<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.file, self.line) {
            (Some(file), Some(line)) => write!(f, "{}:{line}: {}", file.display(), self.error),
            (Some(file), None) => write!(f, "{}: {}", file.display(), self.error),
            (None, Some(line)) => write!(f, "line {line}: {}", self.error),
            (None, None) => self.error.fmt(f),
        }
    }
}

impl<E: fmt::Debug + fmt::Display> std::error::Error for Located<E> {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_what_is_known() {
        let e = Located::at_line(12, "bad value");
        assert_eq!(e.to_string(), "line 12: bad value");
        let e = e.in_file(Path::new("/etc/knockd.conf"));
        assert_eq!(e.to_string(), "/etc/knockd.conf:12: bad value");
        // A file named first is kept: the innermost reader knows best.
        let e = e.in_file(Path::new("/other"));
        assert_eq!(e.file.as_deref(), Some(Path::new("/etc/knockd.conf")));
        let whole = Located::new("no doors configured").in_file(Path::new("k.conf"));
        assert_eq!(whole.to_string(), "k.conf: no doors configured");
        assert_eq!(Located::new("plain").to_string(), "plain");
        assert_eq!(whole.map(str::len).error, 19);
    }
}
