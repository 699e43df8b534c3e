//! Reading what the doors guard and what the live firewall does with it, for `check` and
//! `firewall-setup`: the ports a configuration's doors open (SPA `Allow_Ports`, `--dport` in a
//! knock door's start command, the ports in an nft door's commands), which doors use another
//! tool than iptables, whether the current iptables INPUT chain closes a port, and which
//! doors append their ACCEPT (`-A INPUT`) after a rule that already refuses the port.

use knock_shared::types::{PortSpec, Proto};

use super::baseline::Family;

/// Firewall tools other than iptables whose rules `check` and `firewall-setup` cannot read or
/// write.
const OTHER_FIREWALLS: [&str; 3] = ["nft", "ufw", "firewall-cmd"];

/// The other firewall tool a door's start commands run (directly, or inside `sh -c '...'`),
/// when they run one and no iptables/ip6tables: such a door's ports are not in the iptables
/// INPUT chains, so [`ports_of`] leaves them out.
pub fn other_firewall(door: &knock_shared::config::Door) -> Option<&'static str> {
    let mut other = None;
    for cmd in [&door.start_command, &door.start_command_6]
        .into_iter()
        .flatten()
    {
        for word in cmd.code().split_whitespace() {
            let base = program_name(word);
            if iptables_family(base).is_some() {
                return None;
            }
            if let Some(tool) = OTHER_FIREWALLS.iter().find(|t| **t == base) {
                other = Some(*tool);
            }
        }
    }
    other
}

/// A word's program name: its last path component, without the quotes of a `sh -c '...'`.
fn program_name(word: &str) -> &str {
    let base = word.rsplit('/').next().unwrap_or(word);
    base.trim_matches(|c| c == '\'' || c == '"')
}

/// Which family's INPUT chain a program name writes: `iptables*` (`iptables-legacy`,
/// `iptables-nft`) IPv4, `ip6tables*` IPv6.
fn iptables_family(name: &str) -> Option<Family> {
    if name.starts_with("ip6tables") {
        Some(Family::V6)
    } else if name.starts_with("iptables") {
        Some(Family::V4)
    } else {
        None
    }
}

/// The guarded ports of a configuration's iptables doors, sorted, once each: every SPA
/// door's `Allow_Ports`, and the ports a knock-sequence door's start commands name
/// (`--dport`, see [`command_ports`]). Doors that run another tool ([`other_firewall`]) are
/// left out.
pub fn ports_of(config: &knock_shared::config::Config) -> Vec<PortSpec> {
    let mut ports = Vec::new();
    for door in &config.doors {
        if other_firewall(door).is_some() {
            continue;
        }
        match door.spa() {
            Some(spa) => ports.extend(spa.allow_ports.iter().copied()),
            None => {
                for cmd in [&door.start_command, &door.start_command_6]
                    .into_iter()
                    .flatten()
                {
                    // The address is irrelevant to which port is named; any will do.
                    let argv = cmd.render(std::net::Ipv4Addr::UNSPECIFIED.into(), None);
                    ports.extend(command_ports(&argv));
                }
            }
        }
    }
    ports.sort();
    ports.dedup();
    ports
}

/// The ports an iptables-style command opens: each `--dport N` / `--destination-port N`, and
/// each number of `--dports A,B` (multiport), with the protocol of the last `-p`/`--protocol`
/// before it (TCP when none is named). Words are also split at blanks, so a command wrapped in
/// `sh -c '...'` is read as well. Port ranges (`1000:2000`) and anything unparsable are
/// skipped: this list feeds warnings and a suggested baseline, never a decision to open.
pub fn command_ports(argv: &[String]) -> Vec<PortSpec> {
    let tokens: Vec<&str> = argv.iter().flat_map(|w| w.split_whitespace()).collect();
    let mut proto = Proto::Tcp;
    let mut out = Vec::new();
    for pair in tokens.windows(2) {
        let (flag, value) = (pair[0], pair[1]);
        match flag {
            "-p" | "--protocol" | "--proto" => {
                proto = if value.eq_ignore_ascii_case("udp") {
                    Proto::Udp
                } else {
                    Proto::Tcp
                };
            }
            "--dport" | "--destination-port" | "--dports" | "--destination-ports" => out.extend(
                value
                    .split(',')
                    .filter_map(|n| n.parse::<u16>().ok())
                    .filter_map(|n| PortSpec::new(proto, n)),
            ),
            _ => {}
        }
    }
    out
}

/// What the INPUT chain does with a new connection from an arbitrary address to a port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Refused or dropped (by this rule, or by the policy).
    Closed,
    /// Accepted (by this rule, or by the policy): a door guarding it protects nothing.
    Open(String),
    /// A rule this reading does not follow (a jump to another chain, an unknown match) decides.
    Unknown(String),
}

/// Reads `iptables -S INPUT` output and says what happens to a new connection from an
/// arbitrary address to `port`, walking the rules in order as the kernel does. Rules that only
/// apply to some packets (a source address: the doors' grants; an input interface; a
/// connection state without NEW) are skipped; the first rule that applies to every new
/// connection to the port decides, else the policy.
pub fn verdict(chain: &str, port: PortSpec) -> Verdict {
    if let Some((v, _)) = first_decision(chain, port) {
        return v;
    }
    for line in chain.lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        if let ["-P", "INPUT", target, ..] = w.as_slice() {
            return match *target {
                "ACCEPT" => Verdict::Open(format!("policy {target}")),
                _ => Verdict::Closed,
            };
        }
    }
    Verdict::Unknown("no policy line".into())
}

/// The first rule of `iptables -S INPUT` output that decides for every new connection to
/// `port` (see [`verdict`]), with its line; `None` when the policy decides.
fn first_decision(chain: &str, port: PortSpec) -> Option<(Verdict, &str)> {
    chain.lines().find_map(|line| {
        let w: Vec<&str> = line.split_whitespace().collect();
        match w.as_slice() {
            ["-A", "INPUT", rest @ ..] => rule_verdict(rest, port, line).map(|v| (v, line)),
            _ => None,
        }
    })
}

/// A door's start command that appends its ACCEPT to the INPUT chain (`-A INPUT`) while an
/// earlier rule of that chain refuses every new connection to the port: the appended rule
/// lands after the refusal and opens nothing (`-I INPUT` puts it in front).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LateAppend {
    /// The door.
    pub door: String,
    /// The line of its start command (of the door's header when unknown).
    pub line: usize,
    /// The port the command opens.
    pub port: PortSpec,
    /// The rule that refuses it first, as `iptables -S INPUT` prints it.
    pub rule: String,
}

/// The [`LateAppend`]s of a configuration against `chain`, the `iptables -S INPUT` (or
/// `ip6tables`) output of `family`: each start command whose `family` tool appends an ACCEPT
/// to INPUT, for each port it opens (`--dport`, see [`command_ports`]; an SPA door's command
/// rendered for each of its `Allow_Ports`) that the chain's first deciding rule refuses. A
/// refusal by the policy alone is fine (an appended rule comes before the policy); an ACCEPT
/// for everyone or a rule this reading does not follow ([`Verdict::Unknown`]) first says
/// nothing here.
pub fn late_appends(
    config: &knock_shared::config::Config,
    family: Family,
    chain: &str,
) -> Vec<LateAppend> {
    let mut out = Vec::new();
    for door in config.doors.iter().filter(|d| other_firewall(d).is_none()) {
        let requested: Vec<Option<PortSpec>> = match door.spa() {
            Some(spa) => spa.allow_ports.iter().copied().map(Some).collect(),
            None => vec![None],
        };
        let commands = [
            (&door.start_command, door.start_lines.0),
            (&door.start_command_6, door.start_lines.1),
        ];
        for (cmd, line) in commands {
            let Some(cmd) = cmd else { continue };
            let mut ports = Vec::new();
            for &p in &requested {
                let argv = cmd.render(std::net::Ipv4Addr::UNSPECIFIED.into(), p);
                if appends_accept(&argv, family) {
                    ports.extend(command_ports(&argv));
                }
            }
            ports.sort();
            ports.dedup();
            for port in ports {
                if let Some((Verdict::Closed, rule)) = first_decision(chain, port) {
                    out.push(LateAppend {
                        door: door.name.clone(),
                        line: line.unwrap_or(door.line),
                        port,
                        rule: rule.to_owned(),
                    });
                }
            }
        }
    }
    out
}

/// Whether `argv` runs `family`'s tool (directly, or inside `sh -c '...'`: words are also
/// split at blanks) to append an ACCEPT rule to the filter table's INPUT chain.
fn appends_accept(argv: &[String], family: Family) -> bool {
    let tokens: Vec<&str> = argv.iter().flat_map(|w| w.split_whitespace()).collect();
    let is_tool = |w: &str| iptables_family(program_name(w));
    let starts: Vec<usize> = (0..tokens.len())
        .filter(|&i| is_tool(tokens[i]).is_some())
        .collect();
    starts.iter().enumerate().any(|(n, &start)| {
        let end = starts.get(n + 1).copied().unwrap_or(tokens.len());
        let words = &tokens[start..end];
        let pair = |flag: &[&str], value: &str| {
            words
                .windows(2)
                .any(|w| flag.contains(&w[0]) && w[1] == value)
        };
        let table = words
            .windows(2)
            .find(|w| matches!(w[0], "-t" | "--table"))
            .map_or("filter", |w| w[1]);
        is_tool(words[0]) == Some(family)
            && table == "filter"
            && pair(&["-A", "--append"], "INPUT")
            && pair(&["-j", "--jump"], "ACCEPT")
    })
}

/// The verdict of one rule for new connections to `port`, or `None` when it does not apply to
/// all of them.
fn rule_verdict(words: &[&str], port: PortSpec, line: &str) -> Option<Verdict> {
    let proto = match port.proto {
        Proto::Tcp => "tcp",
        Proto::Udp => "udp",
    };
    let mut target = None;
    let mut i = 0;
    while i < words.len() {
        let arg = words.get(i + 1).copied().unwrap_or("");
        match words[i] {
            "-p" => {
                if arg != proto {
                    return None;
                }
                i += 2;
            }
            "-m" if matches!(arg, "tcp" | "udp" | "conntrack" | "state" | "comment") => i += 2,
            "--dport" => {
                if arg.parse::<u16>().ok() != Some(port.port.get()) {
                    return None;
                }
                i += 2;
            }
            "--ctstate" | "--state" => {
                if !arg.split(',').any(|s| s == "NEW") {
                    return None;
                }
                i += 2;
            }
            "--comment" => {
                // Quoted comments may hold blanks: skip to the closing quote.
                i += 1;
                if words.get(i).is_some_and(|w| w.starts_with('"')) {
                    while i < words.len() && !(words[i].ends_with('"') && words[i].len() > 1) {
                        i += 1;
                    }
                }
                i += 1;
            }
            "-s" | "-i" | "--sport" | "--tcp-flags" | "--syn" | "--icmp-type" => return None,
            "-j" => {
                target = Some(arg);
                i += 2;
            }
            "--reject-with" => i += 2,
            _ => return Some(Verdict::Unknown(line.to_owned())),
        }
    }
    match target {
        Some("ACCEPT") => Some(Verdict::Open(line.to_owned())),
        Some("REJECT" | "DROP") => Some(Verdict::Closed),
        Some(_) => Some(Verdict::Unknown(line.to_owned())),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> PortSpec {
        s.parse().expect("port")
    }

    #[test]
    fn verdict_follows_the_chain_in_order() {
        let ssh = p("22/tcp");
        let classic = "-P INPUT ACCEPT\n\
            -A INPUT -s 10.0.0.2/32 -p tcp -m tcp --dport 22 -j ACCEPT\n\
            -A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n\
            -A INPUT -p tcp -m tcp --dport 22 -j REJECT --reject-with tcp-reset\n";
        assert_eq!(verdict(classic, ssh), Verdict::Closed);
        // Another port of the same chain falls through to the ACCEPT policy.
        assert!(matches!(verdict(classic, p("2222/tcp")), Verdict::Open(_)));
        // UDP 22 is not covered by a TCP rule.
        assert!(matches!(verdict(classic, p("22/udp")), Verdict::Open(_)));
        // Nothing at all: open by policy.
        assert!(matches!(
            verdict("-P INPUT ACCEPT\n", ssh),
            Verdict::Open(_)
        ));
        // A DROP policy closes it.
        assert_eq!(verdict("-P INPUT DROP\n", ssh), Verdict::Closed);
        // An ACCEPT for everyone before the REJECT opens it.
        let open_first = "-P INPUT DROP\n-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT\n\
            -A INPUT -p tcp -m tcp --dport 22 -j REJECT\n";
        assert!(matches!(verdict(open_first, ssh), Verdict::Open(_)));
        // A catch-all REJECT closes every port.
        assert_eq!(
            verdict("-P INPUT ACCEPT\n-A INPUT -j REJECT\n", ssh),
            Verdict::Closed
        );
        // A jump to a user chain is not followed.
        assert!(matches!(
            verdict("-P INPUT ACCEPT\n-A INPUT -j f2b-sshd\n", ssh),
            Verdict::Unknown(_)
        ));
        // NEW connections are what matters: a NEW,ESTABLISHED accept opens it.
        let new_ok = "-P INPUT DROP\n-A INPUT -m state --state NEW,ESTABLISHED -j ACCEPT\n";
        assert!(matches!(verdict(new_ok, ssh), Verdict::Open(_)));
    }

    #[test]
    fn late_appends_are_doors_appending_after_a_refusal() {
        let key = knock_keys::NamedKey::new("a", knock_keys::MasterKey::from_bytes([1; 32]))
            .expect("key");
        let text = format!(
            "[append]\nsequence = 7000,9000,8000\n\
             command = /sbin/iptables -A INPUT -s %IP% -p tcp --dport 22 -j ACCEPT\n\
             [insert]\nsequence = 7001,9001,8001\n\
             command = /sbin/iptables -I INPUT -s %IP% -p tcp --dport 22 -j ACCEPT\n\
             [six]\nsequence = 7002,9002,8002\n\
             start_command_6 = /sbin/ip6tables --append INPUT -s %IP% -p tcp --dport 22 -j ACCEPT\n\
             [wrapped]\nsequence = 7003,9003,8003\n\
             command = /bin/sh -c 'logger hi; iptables -A INPUT -s %IP% -p udp --dport 53 -j ACCEPT'\n\
             [nat]\nsequence = 7004,9004,8004\n\
             command = /sbin/iptables -t nat -A INPUT -s %IP% -p tcp --dport 22 -j ACCEPT\n\
             [log]\nsequence = 7005,9005,8005\n\
             command = /sbin/iptables -A INPUT -s %IP% -p tcp --dport 22 -j LOG\n\
             [spa]\nkeys = {k}\nallow_ports = 22, 443\n\
             start_command = /sbin/iptables -A INPUT -s %IP% -p %PROTO% --dport %PORT% -j ACCEPT\n",
            k = key.to_inline().as_str()
        );
        let cfg = knock_shared::config::parse_str(&text).expect("valid");
        let reject = "-A INPUT -p tcp -m tcp --dport 22 -j REJECT --reject-with tcp-reset";
        let chain = format!(
            "-P INPUT ACCEPT\n\
             -A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n\
             -A INPUT -s 10.0.0.2/32 -p tcp -m tcp --dport 443 -j ACCEPT\n\
             {reject}\n"
        );
        let found = |family, chain: &str| -> Vec<(String, usize, String, String)> {
            late_appends(&cfg, family, chain)
                .into_iter()
                .map(|l| (l.door, l.line, l.port.to_string(), l.rule))
                .collect()
        };
        let want = |door: &str, line: usize| {
            (
                door.to_owned(),
                line,
                "22/tcp".to_owned(),
                reject.to_owned(),
            )
        };
        // The IPv4 doors that append 22/tcp (the SPA door for its 22 only); not the one that
        // inserts, nor the nat table, nor a LOG rule, nor a port the chain leaves open.
        assert_eq!(
            found(Family::V4, &chain),
            vec![want("append", 3), want("spa", 22)]
        );
        assert_eq!(found(Family::V6, &chain), vec![want("six", 9)]);
        // A catch-all REJECT refuses every port, 53/udp of the wrapped command too.
        let catch_all = "-P INPUT ACCEPT\n-A INPUT -j REJECT --reject-with icmp-host-prohibited\n";
        let doors: Vec<(String, String)> = late_appends(&cfg, Family::V4, catch_all)
            .into_iter()
            .map(|l| (l.door, l.port.to_string()))
            .collect();
        assert_eq!(
            doors,
            [
                ("append", "22/tcp"),
                ("wrapped", "53/udp"),
                ("spa", "22/tcp"),
                ("spa", "443/tcp")
            ]
            .map(|(d, p)| (d.to_owned(), p.to_owned()))
        );
        // A DROP policy alone is fine: the appended rule comes before it.
        assert_eq!(found(Family::V4, "-P INPUT DROP\n"), vec![]);
        // Open for everyone first, or decided by a jump this reading does not follow: nothing
        // said here (check's open-port warning or note covers it).
        let open =
            format!("-P INPUT DROP\n-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT\n{reject}\n");
        assert_eq!(found(Family::V4, &open), vec![]);
        let jump = format!("-P INPUT ACCEPT\n-A INPUT -j f2b-sshd\n{reject}\n");
        assert_eq!(found(Family::V4, &jump), vec![]);
    }

    #[test]
    fn ports_come_from_the_spa_doors() {
        let key = knock_keys::NamedKey::new("a", knock_keys::MasterKey::from_bytes([1; 32]))
            .expect("key");
        let text = format!(
            "[k]\nsequence = 7000,9000,8000\ncommand = /bin/true %IP%\n\
             [s1]\nkeys = {k}\nallow_ports = 443, 22\nstart_command = /bin/true\n\
             [s2]\nkeys = {k}\nallow_ports = 22/tcp, 53/udp\nstart_command = /bin/true\n",
            k = key.to_inline().as_str()
        );
        let cfg = knock_shared::config::parse_str(&text).expect("valid");
        assert_eq!(ports_of(&cfg), vec![p("22"), p("443"), p("53/udp")]);
    }

    #[test]
    fn ports_come_from_the_knock_doors_commands() {
        let text = "[openSSH]\nsequence = 7000,8000,9000\n\
             start_command = /sbin/iptables -I INPUT -s %IP% -p tcp --dport 22 -j ACCEPT\n\
             start_command_6 = /sbin/ip6tables -I INPUT -s %IP% -p tcp --dport 2222 -j ACCEPT\n\
             cmd_timeout = 10\n\
             stop_command = /sbin/iptables -D INPUT -s %IP% -p tcp --dport 22 -j ACCEPT\n\
             [dns]\nsequence = 1,2,3\n\
             command = /bin/sh -c 'iptables -I INPUT -s %IP% -p udp --dport 53 -j ACCEPT'\n\
             [none]\nsequence = 4,5,6\ncommand = /usr/local/bin/notify %IP%\n";
        let cfg = knock_shared::config::parse_str(text).expect("valid");
        assert_eq!(ports_of(&cfg), vec![p("22"), p("2222"), p("53/udp")]);
    }

    #[test]
    fn doors_on_nftables_are_left_out() {
        let text = "[nftSSH]\nsequence = 7000,8000,9000\n\
             start_command = /usr/sbin/nft add element inet knock allowed4 { %IP% . tcp . 22 }\n\
             [wrapped]\nsequence = 7001,8001,9001\n\
             command = /bin/sh -c 'nft add element inet knock allowed4 { %IP% . tcp . 80 }'\n\
             [both]\nsequence = 7002,8002,9002\n\
             command = /bin/sh -c 'nft list ruleset; iptables -I INPUT -s %IP% --dport 443 -j ACCEPT'\n\
             [ipt]\nsequence = 1,2,3\n\
             command = /sbin/iptables-legacy -I INPUT -s %IP% -p udp --dport 53 -j ACCEPT\n\
             [commented]\nsequence = 4,6,5\n\
             command = /usr/local/bin/open-door %IP% # was: nft add element\n";
        let cfg = knock_shared::config::parse_str(text).expect("valid");
        let tools: Vec<Option<&str>> = cfg.doors.iter().map(other_firewall).collect();
        // A comment is not run, so the tool it names is not the door's.
        assert_eq!(tools, vec![Some("nft"), Some("nft"), None, None, None]);
        assert_eq!(ports_of(&cfg), vec![p("443"), p("53/udp")]);
    }

    #[test]
    fn doors_running_nft_guard_no_iptables_port() {
        let key = knock_keys::NamedKey::new("a", knock_keys::MasterKey::from_bytes([1; 32]))
            .expect("key");
        let text = format!(
            "[nftKnock]\nsequence = 7000,8000,9000\n\
             start_command = /usr/sbin/nft add element inet knock allowed4 {{ %IP% . tcp . 2222 }}\n\
             [nftSpa]\nkeys = {k}\nallow_ports = 443\n\
             start_command = /usr/sbin/nft add element inet knock allowed4 {{ %IP% . %PROTO% . %PORT% }}\n\
             [ipt]\nsequence = 1,2,3\n\
             command = /sbin/iptables -I INPUT -s %IP% -p udp --dport 53 -j ACCEPT\n",
            k = key.to_inline().as_str()
        );
        let cfg = knock_shared::config::parse_str(&text).expect("valid");
        assert_eq!(ports_of(&cfg), vec![p("53/udp")]);
    }

    #[test]
    fn command_ports_reads_iptables_words() {
        let argv = |s: &str| s.split(' ').map(String::from).collect::<Vec<_>>();
        assert_eq!(
            command_ports(&argv(
                "iptables -I INPUT -p udp -m multiport --dports 53,123,1000:2000"
            )),
            vec![p("53/udp"), p("123/udp")]
        );
        assert_eq!(
            command_ports(&argv("iptables -I INPUT --destination-port 80")),
            vec![p("80")],
            "TCP when no protocol is named"
        );
        assert_eq!(command_ports(&argv("iptables -I INPUT --dport 0")), vec![]);
        assert_eq!(command_ports(&argv("iptables -I INPUT --dport")), vec![]);
        assert_eq!(command_ports(&argv("logger opened")), vec![]);
    }
}
