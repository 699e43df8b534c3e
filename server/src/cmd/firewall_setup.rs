//! `knock-spad firewall-setup`: the baseline rules for the guarded ports, printed or applied
//! idempotently with iptables; with `--nft`, the daemon's own table `inet knock_spa`
//! (`Firewall = nftables`), printed, applied or removed.

use std::process::ExitCode;

use knock_shared::config::Firewall;
use knock_shared::types::PortSpec;

use crate::cli::Cli;
use crate::firewall;
use crate::firewall::nft::{table, Nft};

use super::check::note_other_firewalls;
use super::{print_bytes, read_options};

pub fn run(cli: &Cli, ports: &[PortSpec], apply: bool, no_ipv6: bool) -> anyhow::Result<ExitCode> {
    let ports = if ports.is_empty() {
        let cfg = match read_for_ports(cli) {
            Ok(c) => c,
            Err(code) => return Ok(code),
        };
        if cfg.options.firewall == Firewall::Nftables {
            eprintln!(
                "knock-spad: {} sets Firewall = nftables: its table is `knock-spad \
                 firewall-setup --nft`",
                cli.config.display()
            );
            return Ok(ExitCode::from(2));
        }
        note_other_firewalls(&cfg);
        let p = firewall::ports_of(&cfg);
        if p.is_empty() {
            eprintln!(
                "knock-spad: {} names no port to guard (no SPA door's Allow_Ports, no --dport \
                 in a knock door's start command): name the ports with --port",
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

/// `firewall-setup --nft [--apply]`: the table for the ports of the configuration's doors
/// (which must say `Firewall = nftables`), or for `ports`.
pub fn run_nft(cli: &Cli, ports: &[PortSpec], apply: bool) -> anyhow::Result<ExitCode> {
    let ports = if ports.is_empty() {
        let cfg = match read_for_ports(cli) {
            Ok(c) => c,
            Err(code) => return Ok(code),
        };
        if cfg.options.firewall != Firewall::Nftables {
            eprintln!(
                "knock-spad: {} does not set Firewall = nftables (its doors run commands): set \
                 it in [options], or name the ports with --port",
                cli.config.display()
            );
            return Ok(ExitCode::from(2));
        }
        table::guarded_ports(&cfg)
    } else {
        let mut p = ports.to_vec();
        p.sort();
        p.dedup();
        p
    };
    let script = table::script(&ports);
    if !apply {
        return print_bytes(script.as_bytes());
    }
    match table::apply(&script) {
        Ok(()) => {
            let list: Vec<String> = ports.iter().map(|p| p.to_string()).collect();
            println!(
                "applied: table inet {}, guarding {}",
                table::TABLE,
                list.join(", ")
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("knock-spad: firewall-setup: {e}");
            Ok(ExitCode::from(1))
        }
    }
}

/// `firewall-setup --nft --remove`: deletes the table, and every grant in it.
pub fn remove_nft() -> anyhow::Result<ExitCode> {
    match Nft::open().and_then(|mut n| n.table_exists()) {
        Ok(false) => {
            println!(
                "table inet {} is not there: nothing to remove",
                table::TABLE
            );
            return Ok(ExitCode::SUCCESS);
        }
        Ok(true) => {}
        Err(e) => {
            eprintln!("knock-spad: firewall-setup: {e}");
            return Ok(ExitCode::from(1));
        }
    }
    match table::apply(&table::remove_script()) {
        Ok(()) => {
            println!("removed: table inet {}", table::TABLE);
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("knock-spad: firewall-setup: {e}");
            Ok(ExitCode::from(1))
        }
    }
}

/// The configuration whose doors name the ports, or the exit code (its errors printed).
fn read_for_ports(cli: &Cli) -> Result<knock_shared::config::Config, ExitCode> {
    read_options(&cli.config)
        .inspect_err(|_| eprintln!("knock-spad: (or name the ports with --port)"))
}
