//! `knock-spad check`: loads the configuration as the daemon would, prints each door, and
//! reads the live iptables INPUT chains to warn when a guarded port is open, or when a door's
//! start command appends its ACCEPT after a rule that refuses the port.

use std::process::ExitCode;

use knock_shared::types::PortSpec;

use crate::cli::Cli;
use crate::firewall;
use crate::firewall::nft;
use crate::load;
use knock_shared::config::Firewall;

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
    if rt.config.options.firewall == Firewall::Nftables {
        check_nftables(&rt.config);
    } else {
        check_iptables(cli, &rt.config);
    }
    let public = rt.verifier.public_key_count();
    let kinds = if public == 0 {
        String::new()
    } else {
        format!(
            ": {} shared-secret, {public} public-key",
            rt.verifier.len() - public
        )
    };
    println!(
        "{}: OK ({} door(s), {} SPA key(s){kinds})",
        cli.config.display(),
        rt.config.doors.len(),
        rt.verifier.len()
    );
    if let Some(key) = rt.verifier.server_public() {
        println!(
            "server public key (clients' --server-key): {}",
            key.to_base64()
        );
    }
    ExitCode::SUCCESS
}

/// `Firewall = nftables`: the table guards the ports itself; warns about what refuses them
/// anyway (another nftables table, the iptables INPUT chains), which no grant can open.
fn check_nftables(config: &knock_shared::config::Config) {
    let ports = nft::table::guarded_ports(config);
    let out = std::process::Command::new(nft::table::nft_program())
        .args(["list", "ruleset"])
        .stdin(std::process::Stdio::null())
        .output();
    match out {
        Ok(o) if o.status.success() => {
            let ruleset = String::from_utf8_lossy(&o.stdout);
            if !ruleset.contains(&format!("table inet {} {{", nft::TABLE)) {
                eprintln!(
                    "knock-spad: note: table inet {} is not there yet: the daemon creates it \
                     at start (or `knock-spad firewall-setup --nft --apply`)",
                    nft::TABLE
                );
            } else if let Ok(live) = nft::Nft::open().and_then(|mut n| n.guarded()) {
                if live != ports {
                    let show = |p: &[PortSpec]| {
                        p.iter()
                            .map(|p| p.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    };
                    eprintln!(
                        "knock-spad: note: table inet {} guards {} now; this configuration \
                         guards {}: the daemon applies it at its next start or reload",
                        nft::TABLE,
                        show(&live),
                        show(&ports)
                    );
                }
            }
            for r in nft::others::refusals(&ruleset, &ports) {
                eprintln!(
                    "knock-spad: warning: table {} chain {} refuses a guarded port ({}): an \
                     nftables grant accepts only in table inet {}, and this still drops the \
                     packet; accept the guarded ports there, or remove the rule",
                    r.table,
                    r.chain,
                    r.rule,
                    nft::TABLE
                );
            }
        }
        _ => eprintln!(
            "knock-spad: note: cannot read the nftables ruleset (nft list ruleset; root \
             needed); not checking what else refuses the guarded ports"
        ),
    }
    for family in [firewall::Family::V4, firewall::Family::V6] {
        let Ok(o) = std::process::Command::new(family.tool())
            .args(["-S", "INPUT"])
            .stdin(std::process::Stdio::null())
            .output()
        else {
            continue;
        };
        let chain = String::from_utf8_lossy(&o.stdout);
        for &p in &ports {
            if firewall::verdict(&chain, p) == firewall::Verdict::Closed {
                eprintln!(
                    "knock-spad: warning: {p} is refused by the {} INPUT chain: an nftables \
                     grant does not override it (remove that rule; table inet {} guards the \
                     port)",
                    family.tool(),
                    nft::TABLE
                );
            }
        }
    }
}

/// `Firewall = commands`: the iptables INPUT chains must close the guarded ports, and the
/// doors' rules must land in front of the refusal.
fn check_iptables(cli: &Cli, config: &knock_shared::config::Config) {
    note_other_firewalls(config);
    let ports = firewall::ports_of(config);
    for family in [firewall::Family::V4, firewall::Family::V6] {
        let Some(chain) = read_input_chain(family) else {
            continue;
        };
        warn_open_ports(&ports, family, &chain);
        warn_late_appends(cli, config, family, &chain);
    }
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
