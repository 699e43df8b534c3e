//! `knock-spad firewall-setup`: the baseline rules for the guarded ports, printed (iptables or
//! nftables) or applied idempotently with iptables.

use std::process::ExitCode;

use knock_shared::types::PortSpec;

use crate::cli::Cli;
use crate::firewall;

use super::check::note_other_firewalls;
use super::{print_bytes, read_options};

pub fn run(
    cli: &Cli,
    ports: &[PortSpec],
    apply: bool,
    no_ipv6: bool,
    backend: firewall::Backend,
) -> anyhow::Result<ExitCode> {
    let ports = if ports.is_empty() {
        let cfg = match read_options(&cli.config) {
            Ok(c) => c,
            Err(code) => {
                eprintln!("knock-spad: (or name the ports with --port)");
                return Ok(code);
            }
        };
        if backend == firewall::Backend::Iptables {
            note_other_firewalls(&cfg);
        }
        let p = firewall::ports_of(&cfg, backend);
        if p.is_empty() {
            let doors = match backend {
                firewall::Backend::Iptables => {
                    "no SPA door's Allow_Ports, no --dport in a knock door's start command"
                }
                firewall::Backend::Nft => "no door whose commands run nft",
            };
            eprintln!(
                "knock-spad: {} names no port to guard ({doors}): name the ports with --port",
                cli.config.display()
            );
            return Ok(ExitCode::from(2));
        }
        p
    } else {
        let mut p = ports.to_vec();
        p.sort();
        p.dedup();
        p
    };
    let ipv6 = !(no_ipv6 || cli.only_v4);
    if backend == firewall::Backend::Nft {
        return print_bytes(firewall::render_nft(&ports, ipv6).as_bytes());
    }
    let rules = firewall::baseline(&ports, ipv6);
    if !apply {
        return print_bytes(firewall::render(&ports, &rules).as_bytes());
    }
    match firewall::apply(&rules, &mut firewall::system_runner) {
        Ok(done) => {
            for d in done {
                match d {
                    firewall::Applied::Present(c) => println!("present: {c}"),
                    firewall::Applied::Added(c) => println!("added:   {c}"),
                }
            }
            print!("{}", firewall::PERSIST_NOTE);
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("knock-spad: firewall-setup: {e}");
            Ok(ExitCode::from(1))
        }
    }
}
