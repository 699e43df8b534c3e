//! The reference documentation of every directive: one row per [`Directive`], the single
//! source of the directive tables in docs/CONFIG.md ([`markdown`]) and of the DIRECTIVES
//! section of knock-spad.conf(5) (rendered by the server's `knock-spad man --section 5`).
//!
//! Role: say, for a person, what each directive of the table in `directives` means: where it
//! may appear, its value, its default, and what it does. The name and the place come from the
//! directive table itself, so they cannot drift; the tests check that every directive has
//! exactly one row, that the aliases are the table's, that the numbers quoted as defaults are
//! the model's constants, and that docs/CONFIG.md holds exactly what [`markdown`] renders.
//!
//! The text uses a small markup both renderers know: `` `code` ``, `**strong**`, `*emphasis*`
//! and `[text](#anchor)` (a section of docs/CONFIG.md; the man page has a section of that
//! name). ASCII only, so the man page needs no input encoding. The roff renderers
//! ([`roff_prose`], [`roff_entry`], [`roff_directives`]) also render the rest of
//! knock-spad.conf(5) and the client's knock-spa.conf(5), so both binaries' configuration
//! pages share one escaping.
//!
//! What it must not do: parse or validate anything (the reader does), or do I/O.

use super::directives::{Directive, Scope};

/// Where a directive may appear: one table of docs/CONFIG.md each, in this order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    /// The `[options]` section.
    Options,
    /// Any door, knock-sequence or SPA.
    EveryDoor,
    /// Knock-sequence doors only.
    KnockDoor,
    /// SPA doors only.
    SpaDoor,
}

impl Place {
    /// Every place, in the order the tables come.
    pub const ALL: [Place; 4] = [
        Place::Options,
        Place::EveryDoor,
        Place::KnockDoor,
        Place::SpaDoor,
    ];

    /// The heading of its table.
    pub fn heading(self) -> &'static str {
        match self {
            Place::Options => "In `[options]`",
            Place::EveryDoor => "In every door",
            Place::KnockDoor => "In knock-sequence doors",
            Place::SpaDoor => "In SPA doors",
        }
    }

    fn of(scope: Scope) -> Place {
        match scope {
            Scope::Options => Place::Options,
            Scope::Both => Place::EveryDoor,
            Scope::Legacy => Place::KnockDoor,
            Scope::Spa => Place::SpaDoor,
        }
    }
}

/// One directive, as its documentation shows it.
#[derive(Debug)]
pub struct DirectiveDoc {
    directive: Directive,
    /// Other spellings the reader accepts (knockd's), as the documentation writes them.
    pub aliases: &'static [&'static str],
    /// The value's syntax.
    pub value: &'static str,
    /// What holds when the directive is absent.
    pub default: &'static str,
    /// knockd 0.8 has it too (false: a knock-spa addition, which knockd refuses).
    pub knockd: bool,
    /// What it does: one paragraph.
    pub text: &'static str,
}

impl DirectiveDoc {
    /// The name as the documentation writes it (the reader takes any case).
    pub fn name(&self) -> &'static str {
        self.directive.name()
    }

    /// Where it may appear.
    pub fn place(&self) -> Place {
        Place::of(self.directive.scope())
    }

    /// The text, after `*knock-spa.*` for a knock-spa addition.
    pub fn marked_text(&self) -> String {
        if self.knockd {
            self.text.to_owned()
        } else {
            format!("*knock-spa.* {}", self.text)
        }
    }
}

const fn row(
    directive: Directive,
    aliases: &'static [&'static str],
    value: &'static str,
    default: &'static str,
    knockd: bool,
    text: &'static str,
) -> DirectiveDoc {
    DirectiveDoc {
        directive,
        aliases,
        value,
        default,
        knockd,
        text,
    }
}

const KNOCKD: bool = true;
const OURS: bool = false;

/// Every directive, in the order each table lists them.
pub const DIRECTIVE_DOCS: &[DirectiveDoc] = &[
    // [options]
    row(
        Directive::UseSyslog,
        &[],
        "flag",
        "off",
        KNOCKD,
        "Log through syslog (`/dev/log`, facility daemon, tagged `knock-spad[PID]`). knockd \
         accepts the bare flag in any section; so does knock-spad, with a warning when it is \
         inside a door.",
    ),
    row(
        Directive::LogFile,
        &[],
        "path",
        "none",
        KNOCKD,
        "Append log lines to this file, in knockd's line format (`[YYYY-MM-DD HH:MM] \
         message`).",
    ),
    row(
        Directive::PidFile,
        &[],
        "path",
        "none: `-p`, else no pid file",
        KNOCKD,
        "Where the pid is written (in the foreground or with `-d`), created exclusively, mode \
         0644; removed at exit if it still holds the daemon's pid.",
    ),
    row(
        Directive::Interface,
        &[],
        "name, 1 to 15 characters, no blanks or `/`",
        "none: `-i`, else `any` (knockd's default is `eth0`)",
        KNOCKD,
        "The capture interface; `any` captures on all interfaces (Linux cooked headers). \
         Ethernet (and `lo`, which Linux presents with Ethernet headers), `any` and raw-IP \
         interfaces (`tun`, WireGuard, OpenVPN) are supported; Ethernet, `any` and `tun` are \
         tested end to end. `-i` overrides it.",
    ),
    row(
        Directive::SpaPort,
        &[],
        "1..65535",
        "`62201`",
        OURS,
        "The UDP port the SPA listener watches.",
    ),
    row(
        Directive::ServerKey,
        &[],
        "absolute path",
        "none (public-key doors need it)",
        OURS,
        "The server's X25519 key file, made by `knock-spad server-key -o FILE`, which prints \
         the public key clients seal their packets to (`knock-spa --server-key`, the client \
         stanza's `server_key`). Mode 0600 or stricter, owned by root or the daemon's user \
         ([Files that hold secrets](#files-that-hold-secrets)).",
    ),
    row(
        Directive::StateDir,
        &[],
        "absolute path",
        "`/var/lib/knock-spa`",
        OURS,
        "The directory of the persisted replay cache and open grants, and of the status file \
         and control socket.",
    ),
    row(
        Directive::ServerName,
        &[],
        "comma list of names",
        "empty: the host name",
        OURS,
        "The identities this server answers to. A packet is bound to one server identity (a \
         digest of the name, case-insensitive); packets bound to any name not listed here are \
         rejected, so one key used for a fleet cannot be replayed from one host to another. \
         List several names if clients address this host by several (e.g. `gw.example.org, \
         gw`).",
    ),
    row(
        Directive::SpaWindow,
        &[],
        "1..3600 seconds",
        "`60`",
        OURS,
        "A packet's timestamp must be within this many seconds of the server's clock, either \
         way. Also how long a packet's digest stays in the replay cache.",
    ),
    row(
        Directive::Capture,
        &[],
        "`pcap` or `udp`",
        "`pcap`",
        OURS,
        "`pcap`: libpcap on the interface with a BPF filter for the SPA port; no socket is \
         opened, so the port can stay closed or dropped. `udp`: a plain UDP socket bound to \
         `SpaPort` (the firewall must admit it), for hosts where capture is not wanted.",
    ),
    row(
        Directive::MaxGrants,
        &[],
        "1..1048576 grants",
        "`4096`",
        OURS,
        "Open grants in all, at most. An open beyond it is refused and logged (`not opened: \
         ... (MaxGrants N)`, at most one report per 10 s): anyone who saw a knock sequence \
         once can complete it from many spoofed sources, and this bounds what that costs.",
    ),
    row(
        Directive::ReplayCacheSize,
        &[],
        "64..16777216 entries",
        "`65536`",
        OURS,
        "The capacity of the replay cache. When it is full and nothing has expired, new \
         packets are refused (fail closed), never an old entry forgotten. Only authenticated \
         packets take an entry.",
    ),
    row(
        Directive::User,
        &[],
        "a user name (letters, digits, `_`, `-`, `.`; up to 32)",
        "none: stays root",
        OURS,
        "Once the capture is open, run as this user (from the user database), keeping only \
         `CAP_NET_ADMIN` (ambient) for the firewall; `--user` overrides it. The state \
         directory must belong to the user (the start fails otherwise), and so must the files \
         the daemon reads and writes (docs/OPERATIONS.md, \"Running as a dedicated user\"). \
         Read at start only: a reload that changes it says it takes effect at the next start.",
    ),
    row(
        Directive::KeepRulesOnExit,
        &[],
        "flag",
        "off",
        OURS,
        "By default SIGTERM and SIGINT close every open grant (run its stop command, or delete \
         its nftables element) before the daemon exits. With this flag open grants are left \
         in place, and their timers are re-armed from the state directory at the next start \
         (with `Firewall = nftables` the kernel also ends each at its time if the daemon never \
         comes back).",
    ),
    row(
        Directive::Firewall,
        &[],
        "`commands` or `nftables`",
        "`commands`",
        OURS,
        "How grants reach the kernel. `commands`: the doors' command templates \
         (`Start_Command`, `Stop_Command`), knockd's way. `nftables`: the daemon's own table \
         `table inet knock_spa`; a grant is a set element with a kernel timeout, added and \
         deleted over netlink (no process per grant), so it ends on time even if the daemon \
         is killed and never restarted. Doors then name ports instead of commands \
         (`Open_Ports`, `Allow_Ports`); see \
         [Firewall = nftables](#firewall--nftables-the-daemons-own-table).",
    ),
    // every door
    row(
        Directive::StartCommand,
        &["Command"],
        "command template",
        "none",
        KNOCKD,
        "Run when the door opens: in a knock door when a sequence completes (without one, a \
         completed knock is only logged, with a warning); in an SPA door once per granted \
         port (an SPA door needs a non-empty `Start_Command` or `Start_Command_6`, else: \
         \"nothing to open\"). A template run without a shell ([Commands](#commands)): \
         `%IP%` in every door, `%PORT%` and `%PROTO%` in SPA doors only (a knock requests no \
         port). An error with `Firewall = nftables`.",
    ),
    row(
        Directive::StartCommand6,
        &["Command_6"],
        "command template",
        "falls back to `Start_Command`",
        KNOCKD,
        "Run instead of `Start_Command` when the address to admit is IPv6. An empty value \
         (`Start_Command_6 =`) runs nothing for IPv6.",
    ),
    row(
        Directive::StopCommand,
        &[],
        "command template",
        "none",
        KNOCKD,
        "Run when the grant ends: in a knock door `Cmd_Timeout` seconds after the start \
         command; in an SPA door per port, when the granted time is up or at a verified \
         close. The grant is recorded in `StateDir` before its start command runs, so a \
         restart or a crash re-arms it or runs its stop command instead of leaving the rule \
         forever. Without one, what an SPA door opens stays open (a warning), and a knock \
         door's start command stands alone (knockd's single `Command`, as in a pair of doors \
         that open and close with two sequences). An error with `Firewall = nftables`.",
    ),
    row(
        Directive::StopCommand6,
        &[],
        "command template",
        "falls back to `Stop_Command`",
        KNOCKD,
        "As `Stop_Command`, for IPv6; an empty value runs nothing. `Start_Command_6` without \
         `Stop_Command_6` while `Stop_Command` exists gets a warning: IPv6 grants are then \
         closed with the IPv4 command, by knockd's fallback.",
    ),
    row(
        Directive::CmdTimeout,
        &[],
        "1..31536000 seconds",
        "`10` in a knock door, `30` in an SPA door",
        KNOCKD,
        "In a knock door, the time from the start command to the stop command (without a stop \
         command it has no effect: a warning). In an SPA door, the open time granted when the \
         request asks for none (duration 0); see `Max_Timeout`.",
    ),
    row(
        Directive::DoorMaxGrants,
        &[],
        "1..1048576 grants",
        "`1024`",
        OURS,
        "This door's open grants at most: one per knocker in a knock door, one per address \
         and port in an SPA door (`MaxGrants` bounds the total). An open beyond it is refused \
         and logged.",
    ),
    row(
        Directive::AdmitPrefix,
        &[],
        "two prefix lengths, IPv4 (8..32) then IPv6 (16..128): `24, 64`",
        "none: the address alone",
        OURS,
        "Admit the network the knocker's (or the verified SPA) address is in instead of the \
         address alone: `%IP%` becomes `198.51.100.0/24` (or `2001:db8:1:2::/64`), one grant \
         and one rule per network, door and port. For clients behind carrier-grade NAT, whose \
         connections may leave from another address of the pool than their knock (fwknop \
         issue 367). **Risk:** everyone in that network is let in for the grant's time, on a \
         CGNAT pool the ISP's other customers too; keep the prefix as long as the pool allows \
         and the open time short. `knock-spad close --address IP` closes a network grant that \
         contains IP. Not with `Firewall = nftables` (its sets hold single addresses).",
    ),
    // knock-sequence doors
    row(
        Directive::Sequence,
        &[],
        "`port[:tcp|udp]` comma list, 1 to 32 ports",
        "required (or `One_Time_Sequences`)",
        KNOCKD,
        "The knock sequence. Ports 1..65535; TCP unless `:udp` (`port/udp` is accepted too). \
         Blanks around elements are allowed. A sequence a plain port scan completes \
         (ascending ports of one protocol), a single port, or a port twice in a row gets a \
         warning.",
    ),
    row(
        Directive::OneTimeSequences,
        &[],
        "path",
        "none",
        KNOCKD,
        "Instead of `Sequence`: the sequences come from this file, one per line, each \
         disabled once used ([One-time sequences file](#one-time-sequences-file)). Exclusive \
         with `Sequence`. The file holds secrets \
         ([Files that hold secrets](#files-that-hold-secrets)).",
    ),
    row(
        Directive::SeqTimeout,
        &["Timeout"],
        "1..31536000 seconds",
        "`25`",
        KNOCKD,
        "Every hit must arrive within this time of the first; a late one counts as a fresh \
         first knock.",
    ),
    row(
        Directive::TcpFlags,
        &[],
        "comma list of `fin`, `syn`, `rst`, `psh`, `ack`, `urg`, each optionally `!`-negated",
        "none: every packet counts",
        KNOCKD,
        "A TCP hit whose flags do not match is ignored (it neither advances nor resets the \
         attempt). `syn,!ack` requires SYN set and ACK clear. Case-insensitive; blanks \
         allowed. A flag both required and excluded is an error. UDP hits are not filtered by \
         flags.",
    ),
    row(
        Directive::Target,
        &[],
        "IPv4 or IPv6 address",
        "none: this host's addresses",
        KNOCKD,
        "Count hits sent to this destination address instead of this host's own addresses \
         (e.g. knockd on a router reacting to a routed host). Without it a knock counts only \
         when it is addressed to one of this host's addresses (read from the kernel, and again \
         whenever one is added or removed), as knockd's `dst host` filter does: not a sequence \
         routed through this host, nor one sent to a broadcast or multicast address, nor one \
         this host sent.",
    ),
    row(
        Directive::OpenPorts,
        &[],
        "comma list of `port[/tcp|/udp]`",
        "required with `Firewall = nftables`; an error otherwise",
        OURS,
        "What a completed knock opens, for `Cmd_Timeout` seconds, instead of command \
         templates: one grant (one set element) per port. Duplicates are dropped with a \
         warning.",
    ),
    // SPA doors
    row(
        Directive::Keys,
        &[],
        "comma list of `NAME:BASE64`",
        "none",
        OURS,
        "Inline client keys: the key name and the base64 of its 32-byte master secret, as \
         `knock-spa keygen` prints them. May be repeated; names are 1 to 64 of \
         `A-Z a-z 0-9 . _ @ -`, each once per door. Across the file a name stands for one \
         secret and a secret has one name (the same key may be listed in several doors). A \
         configuration with a `Keys` line must be mode 0600 and owned by root or the daemon's \
         user ([Files that hold secrets](#files-that-hold-secrets)).",
    ),
    row(
        Directive::KeyFile,
        &[],
        "path",
        "none",
        OURS,
        "A file of keys, one `NAME:BASE64` per line, blank lines and `#` comments allowed, \
         each name once; mode 0600 or stricter, owned by root or the daemon's user \
         ([Files that hold secrets](#files-that-hold-secrets)). May be repeated. An SPA door \
         needs at least one `Keys` or `KeyFile`.",
    ),
    row(
        Directive::PublicKeys,
        &[],
        "comma list of `NAME:BASE64`",
        "none",
        OURS,
        "Public-key clients (packet version 2): the key name and the base64 of its Ed25519 \
         public key and pre-check key, as `knock-spa keygen --public-key` prints them. May be \
         repeated, and a door may hold `Keys` and `PublicKeys` both. The line holds no secret \
         that can open a door: a thief of the configuration can make the daemon check a \
         signature, never pass one. Needs `ServerKey` in `[options]`.",
    ),
    row(
        Directive::AllowPorts,
        &[],
        "comma list of `port[/tcp|/udp]` (also `port:proto`; a bare port is TCP)",
        "required",
        OURS,
        "What a key of this door may ask to open; a request naming any other port is \
         rejected. Duplicates are dropped with a warning.",
    ),
    row(
        Directive::AllowNat,
        &[],
        "`yes` or `no`",
        "`no`",
        OURS,
        "Whether a key may ask to admit an address other than the packet's source (a client \
         behind NAT that knows its public address, or opening for another host), or whatever \
         source the packet arrives from (the client's `--use-source`). With `no`, the \
         admitted address is the one written in the packet and must equal its source, so a \
         copy raced to the server from another address admits nothing, and a source-mode \
         packet is refused (`source mode not allowed`, counted as `source_mode`). Either \
         way `0.0.0.0`, `::`, multicast and broadcast addresses are never admitted \
         (PROTOCOL.md section 7, step 8b).",
    ),
    row(
        Directive::MaxTimeout,
        &[],
        "1..31536000 seconds, at least `Cmd_Timeout`",
        "`Cmd_Timeout`",
        OURS,
        "The longest open time a request may ask for; longer requests are shortened to it.",
    ),
];

/// The first line of the block of docs/CONFIG.md that [`markdown`] renders.
pub const MARKDOWN_BEGIN: &str = "<!-- directives: generated from \
    shared/src/config/reference.rs by its test docs_config_md_has_the_table; to update, run \
    KNOCK_UPDATE_DOCS=1 cargo test -p knock-shared docs_config_md_has_the_table -->";

/// The last line of that block.
pub const MARKDOWN_END: &str = "<!-- end of the generated directives -->";

/// The directive tables of docs/CONFIG.md, one per [`Place`], from [`MARKDOWN_BEGIN`] to
/// [`MARKDOWN_END`] (each on its own line, the whole ending in a newline).
pub fn markdown() -> String {
    let mut out = format!("{MARKDOWN_BEGIN}\n");
    for place in Place::ALL {
        out.push_str(&format!(
            "\n### {}\n\n| Directive | Value | Default | Description |\n|---|---|---|---|\n",
            place.heading()
        ));
        for doc in DIRECTIVE_DOCS.iter().filter(|d| d.place() == place) {
            let mut name = format!("`{}`", doc.name());
            if !doc.aliases.is_empty() {
                let aliases: Vec<String> = doc.aliases.iter().map(|a| format!("`{a}`")).collect();
                name.push_str(&format!(" (alias {})", aliases.join(", ")));
            }
            out.push_str(&format!(
                "| {name} | {} | {} | {} |\n",
                cell(doc.value),
                cell(doc.default),
                cell(&doc.marked_text())
            ));
        }
    }
    out.push('\n');
    out.push_str(MARKDOWN_END);
    out.push('\n');
    out
}

/// Text in a markdown table cell: `|` escaped, also inside code.
fn cell(text: &str) -> String {
    text.replace('|', "\\|")
}

/// Escapes text for roff: backslashes, hyphens (so options copy and paste as ASCII), and a
/// leading `.` or `'` that would read as a request.
pub fn roff_escape(s: &str) -> String {
    let mut out = escape_chars(s);
    if out.starts_with('.') || out.starts_with('\'') {
        out.insert_str(0, "\\&");
    }
    out
}

/// Backslashes and hyphens escaped, wherever they are.
fn escape_chars(s: &str) -> String {
    s.replace('\\', "\\e").replace('-', "\\-")
}

/// The inline markup as roff: `` `code` `` and `**strong**` in bold, `*emphasis*` and the
/// text of `[text](#anchor)` in italics (the page has a section of that name), the rest
/// escaped. A delimiter without its closing one is text.
pub fn roff_inline(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find(['`', '*', '[']) {
        out.push_str(&roff_escape(&rest[..i]));
        rest = &rest[i..];
        if let Some(link) = rest.strip_prefix('[') {
            match link
                .split_once("](#")
                .and_then(|(label, after)| Some((label, after.split_once(')')?.1)))
            {
                Some((label, after)) => {
                    out.push_str(&format!("\\fI{}\\fR", roff_escape(label)));
                    rest = after;
                }
                None => {
                    out.push('[');
                    rest = link;
                }
            }
            continue;
        }
        let (delim, font) = match rest {
            r if r.starts_with('`') => ("`", 'B'),
            r if r.starts_with("**") => ("**", 'B'),
            _ => ("*", 'I'),
        };
        let after = &rest[delim.len()..];
        match after.split_once(delim) {
            Some((inner, after)) => {
                out.push_str(&format!("\\f{font}{}\\fR", roff_escape(inner)));
                rest = after;
            }
            None => {
                out.push_str(delim);
                rest = after;
            }
        }
    }
    out.push_str(&roff_escape(rest));
    out
}

/// A man page's text in the markup, as roff, line by line: `# NAME` a section, `## Name` a
/// subsection, `- ` a bullet, a blank line a new paragraph, ```` ``` ```` lines around
/// literal lines (shown as they are).
pub fn roff_prose(text: &str) -> String {
    let mut out = String::new();
    let mut literal = false;
    let mut paragraph = false;
    for line in text.lines() {
        if line.starts_with("```") {
            out.push_str(if literal { ".fi\n" } else { ".PP\n.nf\n" });
            literal = !literal;
            paragraph = false;
        } else if literal {
            out.push_str(&format!("\\&{}\n", escape_chars(line)));
        } else if let Some(title) = line.strip_prefix("# ") {
            out.push_str(&format!(".SH \"{}\"\n", roff_escape(title)));
            paragraph = false;
        } else if let Some(title) = line.strip_prefix("## ") {
            out.push_str(&format!(".SS \"{}\"\n", roff_escape(title)));
            paragraph = false;
        } else if let Some(item) = line.strip_prefix("- ") {
            out.push_str(&format!(".IP \\(bu 2\n{}\n", roff_inline(item)));
            paragraph = false;
        } else if line.trim().is_empty() {
            paragraph = true;
        } else {
            if std::mem::take(&mut paragraph) {
                out.push_str(".PP\n");
            }
            out.push_str(&roff_inline(line.trim()));
            out.push('\n');
        }
    }
    out
}

/// One `.TP` entry of a man page: the names in bold, a line `Label: fact.` for each fact,
/// then the text (all in the markup).
pub fn roff_entry(names: &[&str], facts: &[(&str, &str)], text: &str) -> String {
    let names: Vec<String> = names
        .iter()
        .map(|n| format!("\\fB{}\\fR", roff_escape(n)))
        .collect();
    let mut out = format!(".TP\n{}\n", names.join(", "));
    for (label, fact) in facts {
        out.push_str(&format!("{label}: {}.\n.br\n", roff_inline(fact)));
    }
    out.push_str(&roff_inline(text));
    out.push('\n');
    out
}

/// The DIRECTIVES of knock-spad.conf(5): a subsection per [`Place`], a `.TP` per directive.
pub fn roff_directives() -> String {
    let mut out = String::new();
    for place in Place::ALL {
        out.push_str(&format!(".SS \"{}\"\n", roff_inline(place.heading())));
        for doc in DIRECTIVE_DOCS.iter().filter(|d| d.place() == place) {
            let names: Vec<&str> = std::iter::once(doc.name())
                .chain(doc.aliases.iter().copied())
                .collect();
            let facts = [("Value", doc.value), ("Default", doc.default)];
            out.push_str(&roff_entry(&names, &facts, &doc.marked_text()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::directives::DIRECTIVES;
    use super::super::model;
    use super::*;

    fn doc(name: &str) -> &'static DirectiveDoc {
        DIRECTIVE_DOCS
            .iter()
            .find(|d| d.name() == name)
            .unwrap_or_else(|| panic!("no row for {name}"))
    }

    /// Every directive the reader knows has exactly one row, and the row's aliases are the
    /// reader's other spellings of it.
    #[test]
    fn every_directive_has_one_row_with_its_aliases() {
        for &(_, directive) in DIRECTIVES {
            let rows = DIRECTIVE_DOCS
                .iter()
                .filter(|d| d.directive == directive)
                .count();
            assert_eq!(rows, 1, "{directive:?} has {rows} rows in DIRECTIVE_DOCS");
        }
        for d in DIRECTIVE_DOCS {
            let mut table: Vec<String> = DIRECTIVES
                .iter()
                .filter(|(spelling, x)| {
                    *x == d.directive && !spelling.eq_ignore_ascii_case(d.name())
                })
                .map(|(spelling, _)| spelling.to_ascii_uppercase())
                .collect();
            let mut documented: Vec<String> =
                d.aliases.iter().map(|a| a.to_ascii_uppercase()).collect();
            table.sort();
            documented.sort();
            assert_eq!(documented, table, "aliases of {}", d.name());
            assert_eq!(
                Directive::lookup(d.name()),
                Some(d.directive),
                "{}",
                d.name()
            );
        }
        assert_eq!(
            DIRECTIVE_DOCS.len(),
            DIRECTIVES
                .iter()
                .map(|&(_, d)| d)
                .collect::<std::collections::HashSet<_>>()
                .len()
        );
    }

    /// A row's place is the reader's scope, and within a place the rows come together (so a
    /// table lists them in the order of the source).
    #[test]
    fn places_follow_the_scopes() {
        assert_eq!(doc("UseSyslog").place(), Place::Options);
        assert_eq!(doc("Cmd_Timeout").place(), Place::EveryDoor);
        assert_eq!(doc("Sequence").place(), Place::KnockDoor);
        assert_eq!(doc("Keys").place(), Place::SpaDoor);
        let places: Vec<Place> = DIRECTIVE_DOCS.iter().map(DirectiveDoc::place).collect();
        let mut sorted = places.clone();
        sorted.sort_by_key(|p| Place::ALL.iter().position(|q| q == p));
        assert_eq!(
            places, sorted,
            "rows grouped by place, in Place::ALL's order"
        );
    }

    /// The defaults the rows quote are the model's.
    #[test]
    fn defaults_are_the_models() {
        let n = |v: u64| format!("`{v}`");
        assert_eq!(
            doc("SpaPort").default,
            n(model::DEFAULT_SPA_PORT.get().into())
        );
        assert_eq!(
            doc("StateDir").default,
            format!("`{}`", model::DEFAULT_STATE_DIR)
        );
        assert_eq!(doc("SpaWindow").default, n(model::DEFAULT_SPA_WINDOW));
        assert_eq!(
            doc("SpaWindow").value,
            format!("1..{} seconds", model::MAX_SPA_WINDOW)
        );
        assert_eq!(
            doc("MaxGrants").default,
            n(model::DEFAULT_MAX_GRANTS as u64)
        );
        assert_eq!(
            doc("Max_Grants").default,
            n(model::DEFAULT_DOOR_MAX_GRANTS as u64)
        );
        let grants = format!("1..{} grants", model::MAX_MAX_GRANTS);
        assert_eq!(doc("MaxGrants").value, grants);
        assert_eq!(doc("Max_Grants").value, grants);
        assert_eq!(
            doc("ReplayCacheSize").default,
            n(model::DEFAULT_REPLAY_CACHE_SIZE as u64)
        );
        assert_eq!(
            doc("ReplayCacheSize").value,
            format!(
                "{}..{} entries",
                model::MIN_REPLAY_CACHE_SIZE,
                model::MAX_REPLAY_CACHE_SIZE
            )
        );
        assert_eq!(doc("Seq_Timeout").default, n(model::DEFAULT_SEQ_TIMEOUT));
        assert_eq!(
            doc("Cmd_Timeout").default,
            format!(
                "`{}` in a knock door, `{}` in an SPA door",
                model::DEFAULT_CMD_TIMEOUT,
                model::DEFAULT_SPA_CMD_TIMEOUT
            )
        );
        let seconds = format!("1..{} seconds", model::MAX_TIMEOUT);
        for name in ["Seq_Timeout", "Cmd_Timeout"] {
            assert_eq!(doc(name).value, seconds, "{name}");
        }
        assert!(doc("Max_Timeout").value.starts_with(&seconds));
        assert!(doc("Interface")
            .default
            .contains(&format!("`{}`", model::DEFAULT_INTERFACE)));
        assert!(doc("Interface")
            .value
            .contains(&format!("1 to {} characters", model::MAX_INTERFACE_LEN)));
        assert!(doc("User")
            .value
            .contains(&format!("up to {}", model::MAX_USER_NAME_LEN)));
        assert!(doc("Sequence")
            .value
            .contains(&format!("1 to {} ports", model::MAX_SEQUENCE_LEN)));
    }

    /// The man page gets no input encoding, and the markup is balanced.
    #[test]
    fn text_is_ascii_with_balanced_markup() {
        for d in DIRECTIVE_DOCS {
            for text in [d.value, d.default, d.text] {
                assert!(text.is_ascii(), "{}: not ASCII: {text}", d.name());
                assert_eq!(text.matches('`').count() % 2, 0, "{}: {text}", d.name());
                assert_eq!(text.matches("**").count() % 2, 0, "{}: {text}", d.name());
                assert!(!text.contains('\n'), "{}", d.name());
            }
        }
    }

    #[test]
    fn roff_markup() {
        assert_eq!(roff_escape("a-b\\c"), "a\\-b\\ec");
        assert_eq!(roff_escape(".x"), "\\&.x");
        assert_eq!(roff_escape("'x"), "\\&'x");
        assert_eq!(
            roff_inline("a `-c` **b** *i* [see x](#x-y) [n] `open"),
            "a \\fB\\-c\\fR \\fBb\\fR \\fIi\\fR \\fIsee x\\fR [n] `open"
        );
        assert_eq!(
            roff_prose("# A B\n## c\nx\n- y\n\nz\n```\n.a -b\n```\n"),
            ".SH \"A B\"\n.SS \"c\"\nx\n.IP \\(bu 2\ny\n.PP\nz\n.PP\n.nf\n\\&.a \\-b\n.fi\n"
        );
        let roff = roff_directives();
        for d in DIRECTIVE_DOCS {
            assert!(
                roff.contains(&format!(".TP\n\\fB{}\\fR", roff_escape(d.name()))),
                "{}",
                d.name()
            );
        }
    }

    /// docs/CONFIG.md holds exactly the tables [`markdown`] renders, between the markers.
    /// With `KNOCK_UPDATE_DOCS=1` the test writes them there instead.
    #[test]
    fn docs_config_md_has_the_table() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/CONFIG.md");
        let doc = std::fs::read_to_string(path).expect("read docs/CONFIG.md");
        let start = doc
            .find(&format!("{MARKDOWN_BEGIN}\n"))
            .expect("docs/CONFIG.md has the line MARKDOWN_BEGIN");
        let end = doc[start..]
            .find(&format!("{MARKDOWN_END}\n"))
            .map(|i| start + i + MARKDOWN_END.len() + 1)
            .expect("docs/CONFIG.md has the line MARKDOWN_END after MARKDOWN_BEGIN");
        let want = markdown();
        if doc[start..end] == want {
            return;
        }
        if std::env::var_os("KNOCK_UPDATE_DOCS").is_some_and(|v| v == "1") {
            let updated = format!("{}{want}{}", &doc[..start], &doc[end..]);
            std::fs::write(path, updated).expect("write docs/CONFIG.md");
            return;
        }
        panic!(
            "the directive tables in docs/CONFIG.md differ from shared/src/config/reference.rs; \
             run `KNOCK_UPDATE_DOCS=1 cargo test -p knock-shared docs_config_md_has_the_table` \
             to write them there, then review the diff"
        );
    }
}
