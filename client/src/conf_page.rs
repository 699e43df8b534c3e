//! knock-spa.conf(5), the manual page of the client configuration file (`knock-spa man
//! --section 5`): the table of every key a stanza may hold ([`KEY_DOCS`]) and the page around
//! it.
//!
//! Role: say, for a person, what `config` reads. The tests hold the table to the parser:
//! every key `config::KEYS` accepts has a row, each row's example parses and sets something,
//! and a key without a row is refused. The page is rendered with the same markup and escaping
//! as the daemon's knock-spad.conf(5) (`knock_shared::config::roff_prose`).
//!
//! It must not read files or parse configurations (`config` does).

use knock_shared::config::{roff_entry, roff_prose};

/// One key of a stanza, as the page shows it.
#[derive(Debug)]
pub struct KeyDoc {
    /// The key, as written (the parser takes any case).
    pub key: &'static str,
    /// The value's syntax.
    pub value: &'static str,
    /// What holds when the stanza does not set it.
    pub default: &'static str,
    /// A valid value (the tests parse it).
    pub example: &'static str,
    /// What it does: one paragraph.
    pub text: &'static str,
}

/// Every key, in the order the page lists them.
pub const KEY_DOCS: &[KeyDoc] = &[
    KeyDoc {
        key: "host",
        value: "a host name or IP address, no blanks",
        default: "the stanza name",
        example: "gw.example.org",
        text: "Where the packet goes. HOST on the command line is matched against stanza \
               names only, never against `host`.",
    },
    KeyDoc {
        key: "spa_port",
        value: "1..65535",
        default: "`62201`",
        example: "4000",
        text: "The UDP port the server's SPA listener watches (its `SpaPort`). `--spa-port` \
               overrides it.",
    },
    KeyDoc {
        key: "key",
        value: "a path; `~/` is `$HOME/`, a relative path is relative to this file's directory",
        default: "see [KEY FILE](#key-file)",
        example: "~/.knock/work.key",
        text: "The key file (from `knock-spa keygen`), which must be mode 0600 like any key \
               file. `--key` overrides it.",
    },
    KeyDoc {
        key: "admit",
        value: "`route`, `source`, or an IP address (not unspecified, not multicast)",
        default: "`route`",
        example: "source",
        text: "The address the server should admit: `route`, the local address packets to \
               the host leave from; `source`, whatever source address the packet arrives \
               from; an address, that address (your public address behind NAT, say). \
               `source` and an address need the server's `Allow_NAT = yes` for the key. \
               `--admit`, `--allow-ip` and `--use-source` override it.",
    },
    KeyDoc {
        key: "open_for",
        value: "seconds, 0..4294967295",
        default: "`0`: the server's default",
        example: "300",
        text: "The open time asked for; the server caps it (its `Max_Timeout`). `--for` \
               overrides it.",
    },
    KeyDoc {
        key: "services",
        value: "a SERVICE list as on the command line: names from `/etc/services`, `22`, \
                `22/tcp`, `53/udp`, comma-separated, 16 ports at most",
        default: "none: SERVICE must be given",
        example: "22/tcp,53/udp",
        text: "What `knock-spa open NAME` opens when SERVICE is left out. Names are checked \
               against `/etc/services` when the file is read.",
    },
    KeyDoc {
        key: "server_id",
        value: "a name, no control characters",
        default: "`host`, else the stanza name",
        example: "gw.example.org",
        text: "The server identity the packet is bound to, lower-cased when used; it must be \
               one of the server's `ServerName` values. `--server-id` overrides it.",
    },
    KeyDoc {
        key: "server_key",
        value: "base64 of 32 bytes",
        default: "none: needed only with a public-key keyfile",
        example: "teU8qb/tRYQ/3nDaEQcnlL8csu9xaQgiTYgNCHXXJm4=",
        text: "The server's public key, which packets from a public-key keyfile (`keygen \
               --public-key`) are sealed to, as `knock-spad server-key` prints it. \
               `--server-key` overrides it. A shared-secret keyfile ignores it.",
    },
    KeyDoc {
        key: "family",
        value: "`auto`, `both`, `v4` or `v6`",
        default: "`auto`",
        example: "both",
        text: "Which address families of the host `open` and `close` use. `auto`: one packet \
               per address family the host resolves to, each admitting its own source; \
               `both`: the same, but the host must have an IPv4 and an IPv6 address (an \
               error otherwise); `v4`, `v6`: that family only, as `-4` and `-6` do (which \
               override it).",
    },
];

/// knock-spa.conf(5) before its KEYS.
const HEAD: &str = "\
# NAME
knock-spa.conf - configuration file of the knock-spa client: named server stanzas
# SYNOPSIS
`~/.config/knock-spa/config`, `~/.knock/config`
# DESCRIPTION
The configuration file holds named server stanzas. When HOST, on the command line of \
`knock-spa open`, `close` or `proxy`, is the name of a stanza, the stanza supplies the \
host, SPA port, key, address to admit, open time, services, server identity and address \
families; flags given on the command line override it. So `knock-spa open myserver` can \
stand for `knock-spa open --spa-port 4000 --key ~/.knock/work.key --for 300 --use-source \
--server-id gw.example.org ssh gw.example.org`. A HOST that names no stanza is a host name, \
and the file plays no part. Only `open`, `close`, `proxy` and `config` read the file; \
`knock-spa config` prints which files were read.
## Which file
- `--config FILE`; the file must exist. `--config /dev/null` reads no stanzas.
- Else `$KNOCK_SPA_CONFIG`, when set and not empty; the file must exist.
- Else the first of these that exists: `$XDG_CONFIG_HOME/knock-spa/config` \
(`~/.config/knock-spa/config` when `XDG_CONFIG_HOME` is unset, empty or relative), then \
`~/.knock/config`. When neither exists there are no stanzas.
## Format
- Each line is trimmed. Blank lines and lines whose first non-blank character is `#` are \
skipped. There are no trailing comments: in `spa_port = 62201 # default` the value is \
`62201 # default`, an error.
- `[name]` alone on its line starts a stanza. Names are case-sensitive and unique, and \
contain no blanks, `[`, `]` or `#`: they are what you type as HOST. A setting before the \
first stanza is an error. A stanza may be empty: HOST is then its name, everything else a \
default.
- Inside a stanza each line is `key = value`. The value is everything after the first `=`, \
trimmed, and must not be empty. Keys are case-insensitive, at most once per stanza.
- Numbers are plain decimal digits: no sign and no unit (`300`, not `5m`).
## Precedence
For each value the first that is set wins: the command-line flag, then the stanza, then the \
built-in default.
# KEYS
";

/// knock-spa.conf(5) after its KEYS.
const TAIL: &str = "\
# KEY FILE
The key file `open`, `close` and `proxy` use: `--key FILE`, else the stanza's `key`, else \
the first of `$XDG_CONFIG_HOME/knock-spa/key` (`~/.config/knock-spa/key` when \
`XDG_CONFIG_HOME` is unset, empty or relative) and `~/.knock/key` that exists. `keygen` \
writes a new key into `$XDG_CONFIG_HOME/knock-spa/` when that directory exists, else into \
`~/.knock/`. It must be a regular file that neither group nor others can \
access (mode 0600). The secret never goes in the configuration file.
# PERMISSIONS
The configuration holds no secret, so group and others may read it. It must not be \
writable by group or others: whoever can edit it could send your packets elsewhere or make \
them admit an address of their choosing. Such a file is refused (exit status 1, with the \
hint `chmod go-w FILE`), as is a path that is not a regular file (except `/dev/null`) and a \
file larger than 1 MiB.
# ERRORS
The whole file is checked whenever `open`, `close`, `proxy` or `config` runs, not only \
the stanza in use. Every problem is printed on its own line as `FILE:LINE: message` (unknown keys, keys given \
twice, empty values, bad numbers, addresses and service lists, bad or duplicate stanza \
names, settings outside a stanza, lines that are neither `[name]` nor `key = value`), and \
the command exits with status 2 without sending anything.
# EXAMPLE
```
[myserver]
host      = gw.example.org
spa_port  = 62201
key       = ~/.knock/work.key
admit     = route
open_for  = 300
services  = ssh
server_id = gw.example.org

# Behind NAT, at home: let the server admit what it sees.
[home]
host     = home.example.net
admit    = source
services = ssh,53/udp

[build.example.org]
```
# FILES
- `~/.config/knock-spa/config`, `~/.knock/config`: the configuration.
- `~/.config/knock-spa/key`, `~/.knock/key`: the key file.
# SEE ALSO
**knock-spa**(1), **knock-spa-open**(1), **knock-spad**(8), **knock-spad.conf**(5)
";

/// knock-spa.conf(5), roff.
pub fn man_page() -> Vec<u8> {
    let mut out = format!(
        ".TH knock-spa.conf 5 \"\" \"knock-spa {}\" \"knock-spa manual\"\n",
        env!("CARGO_PKG_VERSION")
    );
    out.push_str(&roff_prose(HEAD));
    for doc in KEY_DOCS {
        let facts = [("Value", doc.value), ("Default", doc.default)];
        out.push_str(&roff_entry(&[doc.key], &facts, doc.text));
    }
    out.push_str(&roff_prose(TAIL));
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::{self, ParseContext, KEYS};
    use crate::services;

    fn parse(text: &str) -> Result<config::Config, config::ConfigErrors> {
        let services = services::parse("ssh 22/tcp\n");
        config::parse(
            text,
            &ParseContext {
                source: "cfg",
                base_dir: Path::new("/etc"),
                home: Some(Path::new("/home/u")),
                services: &services,
            },
        )
    }

    /// The page's EXAMPLE is a file the client accepts.
    #[test]
    fn the_example_parses() {
        let example = TAIL
            .split("```\n")
            .nth(1)
            .expect("TAIL has a fenced example");
        let cfg = parse(example).unwrap_or_else(|e| panic!("the example: {e}"));
        assert_eq!(cfg.stanzas.len(), 3);
    }

    /// Every key the parser reads has a row; every row is a key the parser reads, whose
    /// example it accepts and stores; a key without a row is refused.
    #[test]
    fn the_table_is_the_parsers_keys() {
        let documented: Vec<&str> = KEY_DOCS.iter().map(|d| d.key).collect();
        for key in KEYS {
            assert!(documented.contains(&key), "`{key}` has no row in KEY_DOCS");
        }
        let empty = parse("[s]\n").expect("valid");
        for doc in KEY_DOCS {
            assert!(
                KEYS.contains(&doc.key),
                "`{}` is no key of config::KEYS",
                doc.key
            );
            let cfg = parse(&format!("[s]\n{} = {}\n", doc.key, doc.example))
                .unwrap_or_else(|e| panic!("{}: {e}", doc.key));
            assert_ne!(cfg.stanzas, empty.stanzas, "`{}` set nothing", doc.key);
        }
        let e = parse("[s]\nfrobnicate = 1\n").expect_err("undocumented key");
        assert!(e.to_string().contains("unknown key `frobnicate`"), "{e}");
    }

    #[test]
    fn the_page_has_every_key_and_its_sections() {
        let page = String::from_utf8(man_page()).expect("utf-8");
        assert!(page.starts_with(".TH knock-spa.conf 5 "), "{}", &page[..60]);
        for doc in KEY_DOCS {
            let entry = format!(".TP\n\\fB{}\\fR\n", doc.key.replace('-', "\\-"));
            assert!(page.contains(&entry), "lacks {entry}");
        }
        for heading in [
            "NAME",
            "SYNOPSIS",
            "DESCRIPTION",
            "KEYS",
            "KEY FILE",
            "FILES",
            "SEE ALSO",
        ] {
            assert!(
                page.contains(&format!(".SH \"{heading}\"\n")),
                "lacks {heading}"
            );
        }
        let see_also = &page[page.find(".SH \"SEE ALSO\"").expect("SEE ALSO")..];
        for name in [
            "knock\\-spa\\fR(1)",
            "knock\\-spad\\fR(8)",
            "knock\\-spad.conf\\fR(5)",
        ] {
            assert!(see_also.contains(name), "SEE ALSO lacks {name}");
        }
        // The requests the shared renderer writes (groff checks them in the daemon's
        // knock-spad.conf(5) test, which is rendered by the same functions).
        for line in page.lines().filter(|l| l.starts_with('.')) {
            let request = line.split(' ').next().unwrap_or(line);
            assert!(
                [".TH", ".SH", ".SS", ".TP", ".IP", ".PP", ".br", ".nf", ".fi"].contains(&request),
                "unexpected request: {line}"
            );
        }
        for line in page.lines().filter(|l| !l.starts_with('.')) {
            assert!(
                !line.replace("\\-", "").contains('-'),
                "unescaped hyphen: {line}"
            );
        }
        for path in [
            "$XDG_CONFIG_HOME/knock\\-spa/config",
            "$KNOCK_SPA_CONFIG",
            "~/.knock/key",
        ] {
            assert!(page.contains(path), "lacks {path}");
        }
    }
}
