//! `knock-spad check`: loads the configuration as the daemon would, prints each door, and
//! reads the live iptables INPUT chains to warn when a guarded port is open, or when a door's
//! start command appends its ACCEPT after a rule that refuses the port.

use std::process::ExitCode;

use knock_shared::types::PortSpec;

use crate::cli::Cli;
use crate::firewall;
use crate::load;

pub fn run(cli: &Cli) -> ExitCode {
    let rt = match load::read_or_report(&cli.config) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    for w in &rt.config.warnings {
        eprintln!(
            "knock-spad: {}:{}: warning: {}",
            cli.config.display(),
            w.line,
            w.message
        );
    }
    for d in &rt.config.doors {
        println!("[{}] {}", d.name, load::door_summary(d));
    }
    note_other_firewalls(&rt.config);
    let ports = firewall::ports_of(&rt.config, firewall::Backend::Iptables);
    for family in [firewall::Family::V4, firewall::Family::V6] {
        let Some(chain) = read_input_chain(family) else {
            continue;
        };
        warn_open_ports(&ports, family, &chain);
        warn_late_appends(cli, &rt.config, family, &chain);
    }
    println!(
        "{}: OK ({} door(s), {} SPA key(s))",
        cli.config.display(),
        rt.config.doors.len(),
        rt.verifier.len()
    );
    ExitCode::SUCCESS
}

/// The current `iptables -S INPUT` (or `ip6tables`) output, when it can be read (root, the
/// tool installed); otherwise a note, once, and `None`: nothing is then said about the chain.
fn read_input_chain(family: firewall::Family) -> Option<String> {
    let out = std::process::Command::new(family.tool())
        .args(["-S", "INPUT"])
        .stdin(std::process::Stdio::null())
        .output();
    match out {
        Ok(o) if o.status.success() => Some(String::from_utf8_lossy(&o.stdout).into_owned()),
        _ => {
            eprintln!(
                "knock-spad: note: cannot read the {} INPUT chain; not checking that the \
                 guarded ports are closed or that the doors' rules land in front",
                family.tool()
            );
            None
        }
    }
}

/// Warns when a port a door opens (an SPA door's Allow_Ports, a `--dport` in a knock door's
/// start command) is not closed by the current INPUT chain (a door that guards an open port
/// protects nothing).
fn warn_open_ports(ports: &[PortSpec], family: firewall::Family, chain: &str) {
    for &p in ports {
        match firewall::verdict(chain, p) {
            firewall::Verdict::Closed => {}
            firewall::Verdict::Open(why) => eprintln!(
                "knock-spad: warning: {p} is open in the current {} INPUT chain ({why}): a \
                 door guarding an open port protects nothing; see `knock-spad \
                 firewall-setup`",
                family.tool()
            ),
            firewall::Verdict::Unknown(rule) => eprintln!(
                "knock-spad: note: cannot tell whether {p} is closed by the {} INPUT \
                 chain: decided by `{rule}`",
                family.tool()
            ),
        }
    }
}

/// Warns, with the start command's line, when a door appends its ACCEPT (`-A INPUT`, as
/// Debian's stock knockd.conf does) to a chain that refuses the port in an earlier rule: the
/// rule lands after the refusal and the door opens nothing.
fn warn_late_appends(
    cli: &Cli,
    config: &knock_shared::config::Config,
    family: firewall::Family,
    chain: &str,
) {
    for late in firewall::late_appends(config, family, chain) {
        eprintln!(
            "knock-spad: {}:{}: warning: [{}] the start command appends its ACCEPT for {} \
             (-A INPUT) after `{}`, which refuses {} first in the current {} INPUT chain: the \
             door opens nothing; use -I INPUT instead of -A INPUT",
            cli.config.display(),
            late.line,
            late.door,
            late.port,
            late.rule,
            late.port,
            family.tool()
        );
    }
}

/// Says which doors run another firewall tool than iptables: `check` and `firewall-setup`
/// read and write only the iptables INPUT chains, so those doors' ports are left to the
/// administrator.
pub fn note_other_firewalls(config: &knock_shared::config::Config) {
    for door in &config.doors {
        if let Some(tool) = firewall::other_firewall(door) {
            eprintln!(
                "knock-spad: note: [{}] runs {tool}, not iptables: its ports are not checked \
                 or baselined here; make sure the {tool} ruleset closes them",
                door.name
            );
        }
    }
}
