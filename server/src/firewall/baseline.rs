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

#[cfg(test)]
mod tests {
    use super::*;

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
