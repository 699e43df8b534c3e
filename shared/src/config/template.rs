//! Command templates: the argv words of `Start_Command` and the other commands, with their
//! placeholders.
//!
//! Role: commands are parsed into [`CommandTemplate`]s: argv words (quotes group, no shell)
//! with `%IP%`, `%PORT%` and `%PROTO%` placeholders, rendered by the server after it validated
//! the address. Substitution happens inside a word and can never split or add words.
//!
//! What it must not do: run anything or involve a shell; know doors or directives (the parser
//! decides where `%PORT%` is allowed and words the messages).

use std::fmt;
use std::net::IpAddr;

use crate::types::PortSpec;

/// One piece of an argv word.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Lit(String),
    Ip,
    Port,
    Proto,
}

/// Why a command template was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TemplateError {
    /// A quote opened and never closed.
    #[error("unterminated {0} quote")]
    UnterminatedQuote(char),
    /// A `%NAME%` in capitals that is not a known placeholder.
    #[error("unknown placeholder %{0}% (only %IP%, %PORT% and %PROTO% are substituted)")]
    UnknownPlaceholder(String),
    /// A known placeholder written in the wrong case (`%ip%`).
    #[error("placeholder %{0}% must be written in capitals: %{1}%")]
    PlaceholderCase(String, &'static str),
}

/// A command to run later: argv words (no shell) with `%IP%`, `%PORT%`, `%PROTO%`.
///
/// Tokenizing: words are separated by blanks; `'...'` groups literally; `"..."` groups with
/// `\"` and `\\` as the only escapes; a backslash elsewhere is literal; an unquoted word that
/// begins with `#` begins a comment to the end of the text, which is dropped (as knockd's
/// `/bin/sh` dropped it; `a#b` and `'#'` are words); there is no other shell syntax (`;`, `|`,
/// `&&`, `$(...)`, `>` are ordinary characters). Placeholders are substituted inside a word,
/// quoted or not, and never split or add words.
///
/// A `%NAME%` where NAME is two or more capitals, digits or underscores starting with a letter
/// must be a known placeholder; lower-case names (`%s%`) and single letters (`+%Y%m%d`) are
/// left alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandTemplate {
    text: String,
    words: Vec<Vec<Piece>>,
    shell_syntax: Option<String>,
    /// Where in `text` the dropped comment begins.
    comment_at: Option<usize>,
}

impl CommandTemplate {
    /// Parses a template. An empty (or blank) text gives an empty template, which means
    /// "run nothing" (knockd: "You can use empty value to force doing nothing").
    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        let text = text.trim();
        let mut words = Vec::new();
        let mut shell_syntax = None;
        let (tokens, comment_at) = tokenize(text)?;
        for (word, quoted) in tokens {
            if !quoted && shell_syntax.is_none() && looks_like_shell(&word) {
                shell_syntax = Some(word.clone());
            }
            words.push(pieces(&word)?);
        }
        Ok(Self {
            text: text.to_owned(),
            words,
            shell_syntax,
            comment_at,
        })
    }

    /// The original text (with its comment, if any).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The text without its comment: what is run.
    pub fn code(&self) -> &str {
        match self.comment_at {
            Some(at) => self.text[..at].trim_end(),
            None => &self.text,
        }
    }

    /// The comment that was dropped (from its `#` to the end), if any. The parser warns
    /// about it: knockd's shell dropped it too, but it may be an argument someone meant.
    pub fn comment(&self) -> Option<&str> {
        self.comment_at.map(|at| &self.text[at..])
    }

    /// No words: nothing to run.
    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// Whether `%PORT%` or `%PROTO%` appears (allowed in SPA doors only).
    pub fn uses_port(&self) -> bool {
        self.words
            .iter()
            .flatten()
            .any(|p| matches!(p, Piece::Port | Piece::Proto))
    }

    /// Whether `%IP%` appears.
    pub fn uses_ip(&self) -> bool {
        self.words.iter().flatten().any(|p| matches!(p, Piece::Ip))
    }

    /// The first unquoted word that a shell would have treated as syntax (`;`, `|`, `&&`,
    /// `$(`, a redirection...), if any. It is passed literally; the parser warns about it.
    pub fn shell_syntax(&self) -> Option<&str> {
        self.shell_syntax.as_deref()
    }

    /// The argv with placeholders substituted: `%IP%` by `ip`, `%PORT%` by the port number and
    /// `%PROTO%` by `tcp`/`udp` (both empty when `port` is `None`). Empty for an empty
    /// template. The caller validates `ip` (it is typed, so it cannot carry anything else).
    pub fn render(&self, ip: IpAddr, port: Option<PortSpec>) -> Vec<String> {
        self.render_admitted(crate::types::Admitted::host(ip), port)
    }

    /// [`render`](Self::render) with `%IP%` what a grant admits: an address, or a network as
    /// `198.51.100.0/24` (a door's `Admit_Prefix`).
    pub fn render_admitted(
        &self,
        admitted: crate::types::Admitted,
        port: Option<PortSpec>,
    ) -> Vec<String> {
        let ip = admitted.to_string();
        self.words
            .iter()
            .map(|word| {
                let mut s = String::new();
                for piece in word {
                    match piece {
                        Piece::Lit(l) => s.push_str(l),
                        Piece::Ip => s.push_str(&ip),
                        Piece::Port => {
                            if let Some(p) = port {
                                s.push_str(&p.port.to_string());
                            }
                        }
                        Piece::Proto => {
                            if let Some(p) = port {
                                s.push_str(p.proto.as_str());
                            }
                        }
                    }
                }
                s
            })
            .collect()
    }
}

impl fmt::Display for CommandTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The words; each with whether any part of it was quoted.
type Words = Vec<(String, bool)>;

/// Splits into words, and where a comment begins: an unquoted `#` at the start of a word (as
/// in sh) ends the words; the rest of the text is not read, quotes included.
fn tokenize(text: &str) -> Result<(Words, Option<usize>), TemplateError> {
    let mut words = Vec::new();
    let mut cur: Option<(String, bool)> = None;
    let mut chars = text.char_indices();
    while let Some((at, c)) = chars.next() {
        match c {
            '#' if cur.is_none() => return Ok((words, Some(at))),
            c if c.is_whitespace() => {
                if let Some(w) = cur.take() {
                    words.push(w);
                }
            }
            '\'' => {
                let w = cur.get_or_insert_with(|| (String::new(), true));
                w.1 = true;
                loop {
                    match chars.next().map(|(_, ch)| ch) {
                        Some('\'') => break,
                        Some(ch) => w.0.push(ch),
                        None => return Err(TemplateError::UnterminatedQuote('\'')),
                    }
                }
            }
            '"' => {
                let w = cur.get_or_insert_with(|| (String::new(), true));
                w.1 = true;
                loop {
                    match chars.next().map(|(_, ch)| ch) {
                        Some('"') => break,
                        Some('\\') => match chars.next().map(|(_, ch)| ch) {
                            Some(ch @ ('"' | '\\')) => w.0.push(ch),
                            Some(ch) => {
                                w.0.push('\\');
                                w.0.push(ch);
                            }
                            None => return Err(TemplateError::UnterminatedQuote('"')),
                        },
                        Some(ch) => w.0.push(ch),
                        None => return Err(TemplateError::UnterminatedQuote('"')),
                    }
                }
            }
            c => cur.get_or_insert_with(|| (String::new(), false)).0.push(c),
        }
    }
    if let Some(w) = cur.take() {
        words.push(w);
    }
    Ok((words, None))
}

fn looks_like_shell(word: &str) -> bool {
    matches!(word, ";" | "|" | "||" | "&" | "&&" | "<" | "&>")
        || word.starts_with('>')
        || word.starts_with("2>")
        || word.ends_with(';')
        || word.starts_with('$')
        || word.contains("$(")
        || word.contains('`')
}

const PLACEHOLDERS: [(&str, Piece); 3] = [
    ("IP", Piece::Ip),
    ("PORT", Piece::Port),
    ("PROTO", Piece::Proto),
];

/// Splits a word into literal text and placeholders.
fn pieces(word: &str) -> Result<Vec<Piece>, TemplateError> {
    let mut out = Vec::new();
    let mut lit = String::new();
    let mut rest = word;
    while let Some(pos) = rest.find('%') {
        lit.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        let name_len = after
            .bytes()
            .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
            .count();
        let name = &after[..name_len];
        let closed = after.as_bytes().get(name_len) == Some(&b'%');
        let candidate =
            closed && name_len >= 2 && name.bytes().next().is_some_and(|b| b.is_ascii_alphabetic());
        if candidate {
            if let Some((_, piece)) = PLACEHOLDERS.iter().find(|(n, _)| *n == name) {
                if !lit.is_empty() {
                    out.push(Piece::Lit(std::mem::take(&mut lit)));
                }
                out.push(piece.clone());
                rest = &after[name_len + 1..];
                continue;
            }
            if let Some((known, _)) = PLACEHOLDERS
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
            {
                return Err(TemplateError::PlaceholderCase(name.to_owned(), known));
            }
            if name
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
            {
                return Err(TemplateError::UnknownPlaceholder(name.to_owned()));
            }
        }
        lit.push('%');
        rest = after;
    }
    lit.push_str(rest);
    if !lit.is_empty() || out.is_empty() {
        out.push(Piece::Lit(lit));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{ps, v4};
    use super::*;
    use crate::types::Proto;

    // ---- Command templates ----
    #[test]
    fn template_tokenizing() {
        let ip = v4(192, 0, 2, 1);
        let t = CommandTemplate::parse(
            r#"/usr/bin/logger -t "knock door" 'opened for %IP%' -s%IP%/32 "a\"b\\c\d" '' x"y"'z'"#,
        )
        .expect("parses");
        assert_eq!(
            t.render(ip, None),
            [
                "/usr/bin/logger",
                "-t",
                "knock door",
                "opened for 192.0.2.1",
                "-s192.0.2.1/32",
                r#"a"b\c\d"#,
                "",
                "xyz"
            ]
        );
        assert!(t.uses_ip() && !t.uses_port());
        assert_eq!(t.shell_syntax(), None);
        // Display is the original text.
        assert_eq!(
            t.to_string(),
            r#"/usr/bin/logger -t "knock door" 'opened for %IP%' -s%IP%/32 "a\"b\\c\d" '' x"y"'z'"#
        );

        // Shell syntax is not interpreted: each piece is an argv word, and it is flagged.
        let t = CommandTemplate::parse("/bin/echo %IP% ; rm -rf / && $(reboot) | tee x")
            .expect("parses");
        assert_eq!(
            t.render(ip, None),
            [
                "/bin/echo",
                "192.0.2.1",
                ";",
                "rm",
                "-rf",
                "/",
                "&&",
                "$(reboot)",
                "|",
                "tee",
                "x"
            ]
        );
        assert_eq!(t.shell_syntax(), Some(";"));
        // Quoted for an explicit `sh -c`: not flagged.
        let t = CommandTemplate::parse("/bin/sh -c 'a %IP% | b'").expect("parses");
        assert_eq!(t.shell_syntax(), None);
        assert_eq!(t.render(ip, None), ["/bin/sh", "-c", "a 192.0.2.1 | b"]);

        // Placeholders with ports; lower-case or single-letter %...% left alone.
        let t =
            CommandTemplate::parse("f %PORT%/%PROTO% %s%s% +%Y%m%d 100% %20x%").expect("parses");
        assert!(t.uses_port());
        assert_eq!(
            t.render(ip, Some(ps(53, Proto::Udp))),
            ["f", "53/udp", "%s%s%", "+%Y%m%d", "100%", "%20x%"]
        );
        assert_eq!(t.render(ip, None)[1], "/");
        // IPv6 addresses render in their canonical form.
        let v6: IpAddr = "2001:0db8:0:0::1".parse().expect("ip");
        assert_eq!(
            CommandTemplate::parse("-s %IP%")
                .expect("parses")
                .render(v6, None),
            ["-s", "2001:db8::1"]
        );

        // Empty means nothing to run.
        let t = CommandTemplate::parse("   ").expect("parses");
        assert!(t.is_empty());
        assert!(t.render(ip, None).is_empty());

        // An unquoted word starting with `#` begins a comment, as in sh: it and the rest are
        // dropped (quotes in it are not read), and the template remembers it.
        let t = CommandTemplate::parse(
            "/sbin/iptables -A INPUT -s %IP% -j ACCEPT   # open ssh; don't 'log",
        )
        .expect("parses");
        assert_eq!(
            t.render(ip, None),
            [
                "/sbin/iptables",
                "-A",
                "INPUT",
                "-s",
                "192.0.2.1",
                "-j",
                "ACCEPT"
            ]
        );
        assert_eq!(t.comment(), Some("# open ssh; don't 'log"));
        assert_eq!(t.code(), "/sbin/iptables -A INPUT -s %IP% -j ACCEPT");
        assert_eq!(t.shell_syntax(), None, "nothing in the comment is flagged");
        assert_eq!(
            t.as_str(),
            "/sbin/iptables -A INPUT -s %IP% -j ACCEPT   # open ssh; don't 'log"
        );
        // Unknown placeholders in a comment are not read either.
        let t = CommandTemplate::parse("/bin/true #%HOST%").expect("parses");
        assert_eq!(t.render(ip, None), ["/bin/true"]);
        assert_eq!(t.comment(), Some("#%HOST%"));
        // Only a whole comment: nothing to run.
        let t = CommandTemplate::parse("# disabled").expect("parses");
        assert!(t.is_empty());
        assert_eq!(t.code(), "");
        // Inside a word or quoted, `#` is an ordinary character.
        for (text, want) in [
            ("echo a#b", vec!["echo", "a#b"]),
            ("echo '#x' y", vec!["echo", "#x", "y"]),
            ("echo \"# x\"", vec!["echo", "# x"]),
            ("echo ''#x", vec!["echo", "#x"]),
            ("echo x# y", vec!["echo", "x#", "y"]),
        ] {
            let t = CommandTemplate::parse(text).expect("parses");
            assert_eq!(t.render(ip, None), want, "{text}");
            assert_eq!(t.comment(), None, "{text}");
            assert_eq!(t.code(), text);
        }

        for (bad, err) in [
            ("a 'b", TemplateError::UnterminatedQuote('\'')),
            ("a \"b", TemplateError::UnterminatedQuote('"')),
            ("a \"b\\", TemplateError::UnterminatedQuote('"')),
            ("x %HOST%", TemplateError::UnknownPlaceholder("HOST".into())),
            (
                "x %DOOR_NAME%",
                TemplateError::UnknownPlaceholder("DOOR_NAME".into()),
            ),
            (
                "x '%Port%'",
                TemplateError::PlaceholderCase("Port".into(), "PORT"),
            ),
        ] {
            assert_eq!(CommandTemplate::parse(bad), Err(err), "{bad}");
        }
    }
}
