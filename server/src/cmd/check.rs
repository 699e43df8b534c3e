//! `knock-spad check`: loads the configuration as the daemon would, prints each door, and
//! warns when a guarded port is open in the live iptables INPUT chain.

use std::process::ExitCode;

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
    warn_open_ports(&rt);
    println!(
        "{}: OK ({} door(s), {} SPA key(s))",
        cli.config.display(),
        rt.config.doors.len(),
        rt.verifier.len()
    );
    ExitCode::SUCCESS
}

/// Warns when a port a door opens (an SPA door's Allow_Ports, a `--dport` in a knock door's
/// start command) is not closed by the current INPUT chain (a door that guards an open port
/// protects nothing). Only when the firewall can be read (root, the tool
/// installed); anything else is said once, not treated as an error.
fn warn_open_ports(rt: &load::LoadedConfig) {
    note_other_firewalls(&rt.config);
    let ports = firewall::ports_of(&rt.config, firewall::Backend::Iptables);
    for family in [firewall::Family::V4, firewall::Family::V6] {
        let out = std::process::Command::new(family.tool())
            .args(["-S", "INPUT"])
            .stdin(std::process::Stdio::null())
            .output();
        let chain = match out {
            Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
            _ => {
                eprintln!(
                    "knock-spad: note: cannot read the {} INPUT chain; not checking that the \
                     guarded ports are closed",
                    family.tool()
                );
                continue;
            }
        };
        for &p in &ports {
            match firewall::verdict(&chain, p) {
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
