//! `knock-spad firewall-setup`: the classic baseline a port-knocking server needs, for IPv4
//! and IPv6. First accept packets of established connections, then refuse new connections to
//! the guarded ports (TCP with a reset, UDP with port-unreachable). The doors' start commands
//! insert per-address ACCEPT rules in front of these (`-I INPUT`).
//!
//! Printed, it is a list of `iptables -A` commands in that order. Applied (`--apply`), each rule
//! is first looked up with `iptables -C`, and only a missing one is added, so running it twice
//! changes nothing. A missing ESTABLISHED,RELATED rule is inserted at the top of the chain
//! (`-I INPUT 1`) rather than appended: appended after an existing REJECT rule, it would come
//! too late for the SSH session the administrator is typing in.

use knock_shared::types::{PortSpec, Proto};

/// An address family and its tool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// IPv4: `iptables`.
    V4,
    /// IPv6: `ip6tables`.
    V6,
}

impl Family {
    /// The command.
    pub fn tool(self) -> &'static str {
        match self {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        }
    }
}

/// One rule of the INPUT chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// Which tool.
    pub family: Family,
    /// The match and target, after `-A INPUT`.
    pub spec: Vec<String>,
    /// Must precede the others: inserted at position 1 when missing.
    pub first: bool,
}

impl Rule {
    /// `iptables -A INPUT ...`, as printed.
    pub fn command(&self) -> String {
        format!("{} -A INPUT {}", self.family.tool(), self.spec.join(" "))
    }
}

fn words(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_owned).collect()
}

/// The baseline for `ports`: per family, ESTABLISHED,RELATED first, then one REJECT per port.
pub fn baseline(ports: &[PortSpec], ipv6: bool) -> Vec<Rule> {
    let families: &[Family] = if ipv6 {
        &[Family::V4, Family::V6]
    } else {
        &[Family::V4]
    };
    let mut rules = Vec::new();
    for &family in families {
        rules.push(Rule {
            family,
            spec: words("-m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT"),
            first: true,
        });
        for p in ports {
            let spec = match p.proto {
                Proto::Tcp => format!(
                    "-p tcp --dport {} -j REJECT --reject-with tcp-reset",
                    p.port
                ),
                Proto::Udp => format!("-p udp --dport {} -j REJECT", p.port),
            };
            rules.push(Rule {
                family,
                spec: words(&spec),
                first: false,
            });
        }
    }
    rules
}

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
        for word in cmd.as_str().split_whitespace() {
            let base = word.rsplit('/').next().unwrap_or(word);
            let base = base.trim_matches(|c| c == '\'' || c == '"');
            if base.starts_with("iptables") || base.starts_with("ip6tables") {
                return None;
            }
            if let Some(tool) = OTHER_FIREWALLS.iter().find(|t| **t == base) {
                other = Some(*tool);
            }
        }
    }
    other
}

/// Which firewall a baseline is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// iptables and ip6tables: every door except those that run another tool
    /// ([`other_firewall`]).
    Iptables,
    /// nftables: only the doors that run `nft`.
    Nft,
}

/// The guarded ports of a configuration for `backend`, sorted, once each: every SPA door's
/// `Allow_Ports`, and the ports a knock-sequence door's start commands name (`--dport`, see
/// [`command_ports`]; for nft also `PROTO . PORT` in a set element, see
/// [`nft_command_ports`]).
pub fn ports_of(config: &knock_shared::config::Config, backend: Backend) -> Vec<PortSpec> {
    let mut ports = Vec::new();
    for door in &config.doors {
        let other = other_firewall(door);
        let included = match backend {
            Backend::Iptables => other.is_none(),
            Backend::Nft => other == Some("nft"),
        };
        if !included {
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
                    if backend == Backend::Nft {
                        ports.extend(nft_command_ports(&argv));
                    }
                }
            }
        }
    }
    ports.sort();
    ports.dedup();
    ports
}

/// The ports an nft command names as `tcp . 22` or `udp . 53` (the protocol and port of a set
/// element such as `{ %IP% . tcp . 22 }`, CONFIG.md's nftables example). Words are also split
/// at blanks, as in [`command_ports`].
pub fn nft_command_ports(argv: &[String]) -> Vec<PortSpec> {
    let tokens: Vec<&str> = argv.iter().flat_map(|w| w.split_whitespace()).collect();
    tokens
        .windows(3)
        .filter(|w| w[1] == ".")
        .filter_map(|w| {
            let proto = match w[0] {
                "tcp" => Proto::Tcp,
                "udp" => Proto::Udp,
                _ => return None,
            };
            PortSpec::new(proto, w[2].parse().ok()?)
        })
        .collect()
}

/// The nftables baseline `firewall-setup --nft` prints for `ports`: a table of its own with a
/// set of admitted `address . protocol . port` per family (the doors add and delete
/// elements), established connections accepted, then one reject per guarded port. The same
/// ruleset as CONFIG.md's example (a test compares them).
pub fn render_nft(ports: &[PortSpec], ipv6: bool) -> String {
    let list: Vec<String> = ports.iter().map(|p| p.to_string()).collect();
    let mut out = format!(
        "# knock-spad nftables baseline, guarded port(s): {}\n\
         # Load it with `nft -f FILE`, or put it in /etc/nftables.conf (loaded at boot by\n\
         # nftables.service). The doors add and delete elements of the sets; see CONFIG.md,\n\
         # \"Example: nftables instead of iptables\".\n",
        list.join(", ")
    );
    out.push_str("table inet knock {\n");
    out.push_str("    set allowed4 {\n        type ipv4_addr . inet_proto . inet_service\n    }\n");
    if ipv6 {
        out.push_str(
            "    set allowed6 {\n        type ipv6_addr . inet_proto . inet_service\n    }\n",
        );
    }
    out.push_str("    chain input {\n");
    out.push_str("        type filter hook input priority filter; policy accept;\n");
    out.push_str("        ct state established,related accept\n");
    out.push_str("        ip saddr . meta l4proto . th dport @allowed4 accept\n");
    if ipv6 {
        out.push_str("        ip6 saddr . meta l4proto . th dport @allowed6 accept\n");
    }
    for p in ports {
        let family = if ipv6 { "" } else { "meta nfproto ipv4 " };
        let reject = match p.proto {
            Proto::Tcp => "reject with tcp reset",
            Proto::Udp => "reject",
        };
        out.push_str(&format!(
            "        {family}{} dport {} {reject}\n",
            p.proto, p.port
        ));
    }
    out.push_str("    }\n}\n");
    out
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

/// The text `firewall-setup` prints without `--apply`.
pub fn render(ports: &[PortSpec], rules: &[Rule]) -> String {
    let list: Vec<String> = ports.iter().map(|p| p.to_string()).collect();
    let mut out = format!(
        "# knock-spad firewall baseline, guarded port(s): {}\n\
         # ESTABLISHED,RELATED comes first, so that sessions already open (the SSH session you\n\
         # are typing in) survive the REJECT rules after it.\n",
        list.join(", ")
    );
    for r in rules {
        out.push_str(&r.command());
        out.push('\n');
    }
    out.push_str(PERSIST_NOTE);
    out
}

/// How to keep the rules across a reboot (Debian).
pub const PERSIST_NOTE: &str = "# These rules are lost at reboot unless saved: \
     apt-get install iptables-persistent && netfilter-persistent save\n";

/// What [`apply`] did to one rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    /// It was there already.
    Present(String),
    /// It was added (the command run).
    Added(String),
}

/// Runs one firewall command: `(exit code, stderr)`, or the error starting it.
pub type Runner<'a> = dyn FnMut(Family, &[String]) -> std::io::Result<(i32, String)> + 'a;

/// Applies `rules` idempotently: `-C` first, then `-I INPUT 1` (for the first rule) or
/// `-A INPUT` for a missing one. `-w` waits for the xtables lock.
pub fn apply(rules: &[Rule], run: &mut Runner<'_>) -> Result<Vec<Applied>, String> {
    let mut done = Vec::new();
    for r in rules {
        let mut check = words("-w -C INPUT");
        check.extend(r.spec.iter().cloned());
        let (code, err) =
            run(r.family, &check).map_err(|e| format!("cannot run {}: {e}", r.family.tool()))?;
        match code {
            0 => {
                done.push(Applied::Present(r.command()));
                continue;
            }
            // 1: no such rule (iptables says "Bad rule (does a matching rule exist...)").
            1 => {}
            _ => {
                return Err(format!(
                    "{} {}: exit status {code}: {}",
                    r.family.tool(),
                    check.join(" "),
                    err.trim()
                ))
            }
        }
        let mut add = if r.first {
            words("-w -I INPUT 1")
        } else {
            words("-w -A INPUT")
        };
        add.extend(r.spec.iter().cloned());
        let shown = format!("{} {}", r.family.tool(), add[1..].join(" "));
        let (code, err) =
            run(r.family, &add).map_err(|e| format!("cannot run {}: {e}", r.family.tool()))?;
        if code != 0 {
            return Err(format!("{shown}: exit status {code}: {}", err.trim()));
        }
        done.push(Applied::Added(shown));
    }
    Ok(done)
}

/// The real runner: `iptables` / `ip6tables` from `PATH`.
pub fn system_runner(family: Family, args: &[String]) -> std::io::Result<(i32, String)> {
    let out = std::process::Command::new(family.tool())
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
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
    let mut policy = Verdict::Unknown("no policy line".into());
    for line in chain.lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        match w.as_slice() {
            ["-P", "INPUT", target, ..] => {
                policy = match *target {
                    "ACCEPT" => Verdict::Open(format!("policy {target}")),
                    _ => Verdict::Closed,
                };
            }
            ["-A", "INPUT", rest @ ..] => {
                if let Some(v) = rule_verdict(rest, port, line) {
                    return v;
                }
            }
            _ => {}
        }
    }
    policy
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

    fn p(s: &str) -> PortSpec {
        s.parse().expect("port")
    }

    #[test]
    fn baseline_rules_in_order() {
        let rules = baseline(&[p("22"), p("53/udp")], true);
        let cmds: Vec<String> = rules.iter().map(Rule::command).collect();
        assert_eq!(
            cmds,
            [
                "iptables -A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT",
                "iptables -A INPUT -p tcp --dport 22 -j REJECT --reject-with tcp-reset",
                "iptables -A INPUT -p udp --dport 53 -j REJECT",
                "ip6tables -A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT",
                "ip6tables -A INPUT -p tcp --dport 22 -j REJECT --reject-with tcp-reset",
                "ip6tables -A INPUT -p udp --dport 53 -j REJECT",
            ]
        );
        assert_eq!(baseline(&[p("22")], false).len(), 2);
        let text = render(&[p("22")], &baseline(&[p("22")], true));
        assert!(text.contains("netfilter-persistent save"), "{text}");
        assert!(text.contains("guarded port(s): 22/tcp"), "{text}");
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
        assert_eq!(
            ports_of(&cfg, Backend::Iptables),
            vec![p("22"), p("443"), p("53/udp")]
        );
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
        assert_eq!(
            ports_of(&cfg, Backend::Iptables),
            vec![p("22"), p("2222"), p("53/udp")]
        );
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
             command = /sbin/iptables-legacy -I INPUT -s %IP% -p udp --dport 53 -j ACCEPT\n";
        let cfg = knock_shared::config::parse_str(text).expect("valid");
        let tools: Vec<Option<&str>> = cfg.doors.iter().map(other_firewall).collect();
        assert_eq!(tools, vec![Some("nft"), Some("nft"), None, None]);
        assert_eq!(
            ports_of(&cfg, Backend::Iptables),
            vec![p("443"), p("53/udp")]
        );
    }

    #[test]
    fn nft_ports_come_from_the_nft_doors() {
        let argv = |s: &str| s.split(' ').map(String::from).collect::<Vec<_>>();
        assert_eq!(
            nft_command_ports(&argv(
                "nft add element inet knock allowed4 { 192.0.2.1 . tcp . 22 , 192.0.2.1 . udp . 53 }"
            )),
            vec![p("22"), p("53/udp")]
        );
        assert_eq!(
            nft_command_ports(&argv("nft add element x y { 1.2.3.4 . tcp . 0 }")),
            vec![]
        );
        assert_eq!(nft_command_ports(&argv("nft list ruleset")), vec![]);

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
        assert_eq!(ports_of(&cfg, Backend::Nft), vec![p("443"), p("2222")]);
        assert_eq!(ports_of(&cfg, Backend::Iptables), vec![p("53/udp")]);
    }

    #[test]
    fn nft_baseline_rejects_each_port_after_the_sets() {
        let text = render_nft(&[p("22"), p("53/udp")], true);
        let body: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        let at = |needle: &str| {
            body.iter()
                .position(|l| l.trim() == needle)
                .unwrap_or_else(|| panic!("{needle:?} missing:\n{text}"))
        };
        assert!(
            at("ct state established,related accept") < at("tcp dport 22 reject with tcp reset")
        );
        assert!(
            at("ip6 saddr . meta l4proto . th dport @allowed6 accept") < at("udp dport 53 reject")
        );
        let v4 = render_nft(&[p("22")], false);
        assert!(!v4.contains("allowed6"), "{v4}");
        assert!(
            v4.contains("meta nfproto ipv4 tcp dport 22 reject with tcp reset"),
            "{v4}"
        );
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

    /// A fake INPUT chain per family.
    fn fake(
        chains: &mut [Vec<Vec<String>>; 2],
    ) -> impl FnMut(Family, &[String]) -> std::io::Result<(i32, String)> + '_ {
        move |fam, args| {
            let chain = &mut chains[fam as usize];
            assert_eq!(args[0], "-w");
            match args[1].as_str() {
                "-C" => Ok((
                    i32::from(!chain.contains(&args[3..].to_vec())),
                    String::new(),
                )),
                "-A" => {
                    chain.push(args[3..].to_vec());
                    Ok((0, String::new()))
                }
                "-I" => {
                    assert_eq!(args[3], "1");
                    chain.insert(0, args[4..].to_vec());
                    Ok((0, String::new()))
                }
                other => panic!("unexpected {other}"),
            }
        }
    }

    #[test]
    fn apply_is_idempotent_and_puts_established_first() {
        let rules = baseline(&[p("22")], true);
        let mut chains: [Vec<Vec<String>>; 2] = Default::default();
        // A REJECT rule already there, without the ESTABLISHED rule.
        chains[0].push(rules[1].spec.clone());
        let done = apply(&rules, &mut fake(&mut chains)).expect("apply");
        assert_eq!(
            done.iter()
                .filter(|d| matches!(d, Applied::Added(_)))
                .count(),
            3
        );
        assert!(matches!(&done[0], Applied::Added(c) if c.contains("-I INPUT 1 -m conntrack")));
        assert_eq!(
            chains[0],
            vec![rules[0].spec.clone(), rules[1].spec.clone()]
        );
        assert_eq!(
            chains[1],
            vec![rules[2].spec.clone(), rules[3].spec.clone()]
        );
        let again = apply(&rules, &mut fake(&mut chains)).expect("again");
        assert!(again.iter().all(|d| matches!(d, Applied::Present(_))));
        assert_eq!(chains[0].len() + chains[1].len(), 4);
    }

    #[test]
    fn apply_reports_tool_errors() {
        let rules = baseline(&[p("22")], false);
        let mut failing =
            |_: Family, _: &[String]| Ok((4, "Permission denied (you must be root)".into()));
        let err = apply(&rules, &mut failing).expect_err("fails");
        assert!(err.contains("Permission denied"), "{err}");
        let mut missing = |_: Family, _: &[String]| -> std::io::Result<(i32, String)> {
            Err(std::io::Error::from(std::io::ErrorKind::NotFound))
        };
        assert!(apply(&rules, &mut missing)
            .expect_err("fails")
            .contains("cannot run iptables"));
    }
}
