//! The daemon's own nftables table, `table inet knock_spa`: its text, and applying or
//! removing it with `nft -f` (once at start and by `firewall-setup --nft`, never per grant:
//! grants are set elements, added and deleted over [`netlink`](super::netlink)).
//!
//! The table guards the ports of the doors by itself: the chain accepts established and
//! related traffic, lets every unguarded `protocol . port` through, accepts the members of
//! the admitted sets, and rejects the rest of the guarded traffic (TCP with a reset, UDP with
//! an ICMP port unreachable). The reject rules look the port up in the guarded set again, so
//! a packet whose transport header cannot be read is never refused by this table. An accept
//! here does not stop another table's chain from dropping a packet, and another table's
//! accept does not stop this table's reject.
//!
//! The script is idempotent and atomic (`nft -f` runs it as one transaction): it creates
//! what is missing, keeps the admitted sets' elements (the open grants), and replaces the
//! chain's rules and the guarded set's elements in the same step, so no packet ever sees the
//! chain half built.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use knock_shared::config::Config;
use knock_shared::types::PortSpec;

/// The table's name (family `inet`). Fixed: docs, tests and the operator's rules name it.
pub use super::netlink::TABLE;

/// How long `nft -f` may run before it is killed.
const NFT_TIMEOUT: Duration = Duration::from_secs(20);

/// The ports the doors of `cfg` guard: every SPA door's `Allow_Ports` and every knock door's
/// `Open_Ports`, sorted, each once.
pub fn guarded_ports(cfg: &Config) -> Vec<PortSpec> {
    let mut ports: Vec<PortSpec> = cfg
        .doors
        .iter()
        .flat_map(|d| match (d.spa(), d.sequence()) {
            (Some(s), _) => s.allow_ports.clone(),
            (None, Some(s)) => s.open_ports.clone(),
            (None, None) => Vec::new(),
        })
        .collect();
    ports.sort();
    ports.dedup();
    ports
}

/// The script that creates (or brings up to date) the table for `guarded`: what
/// `firewall-setup --nft` prints and applies, and what the daemon applies at start.
pub fn script(guarded: &[PortSpec]) -> String {
    let list: Vec<String> = guarded.iter().map(|p| p.to_string()).collect();
    let elements: Vec<String> = guarded
        .iter()
        .map(|p| format!("{} . {}", p.proto, p.port))
        .collect();
    let t = format!("inet {TABLE}");
    let mut out = format!(
        "# knock-spad's own table (Firewall = nftables), guarded port(s): {}\n\
         # Apply with `nft -f FILE` or `knock-spad firewall-setup --nft --apply`; the daemon\n\
         # applies it at every start. Running it again keeps the open grants (the elements of\n\
         # admitted4 and admitted6) and replaces the rules and the guarded ports in one step.\n\
         # Remove it with `knock-spad firewall-setup --nft --remove`.\n",
        list.join(", ")
    );
    out.push_str(&format!("add table {t}\n"));
    out.push_str(&format!(
        "add set {t} guarded {{ type inet_proto . inet_service; }}\n"
    ));
    for (set, addr) in [("admitted4", "ipv4_addr"), ("admitted6", "ipv6_addr")] {
        out.push_str(&format!(
            "add set {t} {set} {{ type {addr} . inet_proto . inet_service; flags timeout; }}\n"
        ));
    }
    out.push_str(&format!(
        "add chain {t} input {{ type filter hook input priority filter; policy accept; }}\n"
    ));
    out.push_str(&format!("flush chain {t} input\n"));
    out.push_str(&format!("flush set {t} guarded\n"));
    if !elements.is_empty() {
        out.push_str(&format!(
            "add element {t} guarded {{ {} }}\n",
            elements.join(", ")
        ));
    }
    for rule in RULES {
        out.push_str(&format!("add rule {t} input {rule}\n"));
    }
    out
}

/// The chain's rules, in order.
const RULES: [&str; 6] = [
    "ct state established,related accept",
    "meta l4proto . th dport != @guarded accept",
    "ip saddr . meta l4proto . th dport @admitted4 accept",
    "ip6 saddr . meta l4proto . th dport @admitted6 accept",
    "meta l4proto . th dport @guarded meta l4proto tcp reject with tcp reset",
    "meta l4proto . th dport @guarded reject with icmpx port-unreachable",
];

/// The script that removes the table (and every grant in it).
pub fn remove_script() -> String {
    format!("delete table inet {TABLE}\n")
}

/// The `nft` program: the first on `PATH`, else Debian's `/usr/sbin/nft`.
pub fn nft_program() -> PathBuf {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join("nft"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("/usr/sbin/nft"))
}

/// Runs `script` with `nft -f -` (one transaction), killed after [`NFT_TIMEOUT`]. The error
/// is nft's own message.
pub fn apply(script: &str) -> Result<(), String> {
    let prog = nft_program();
    let mut child = Command::new(&prog)
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            format!(
                "cannot run {}: {e} (install nftables: apt install nftables)",
                prog.display()
            )
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(|e| format!("cannot write to nft: {e}"))?;
    }
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                if status.success() {
                    return Ok(());
                }
                let err = err.trim();
                return Err(if err.is_empty() {
                    format!("nft -f failed ({status})")
                } else {
                    format!("nft -f failed: {err}")
                });
            }
            Ok(None) if start.elapsed() > NFT_TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "nft -f ran longer than {NFT_TIMEOUT:?} and was killed"
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(format!("cannot wait for nft: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> PortSpec {
        s.parse().expect("port")
    }

    #[test]
    fn the_script_guards_the_ports_and_keeps_the_grants() {
        let s = script(&[p("22"), p("53/udp")]);
        assert!(s.contains("add element inet knock_spa guarded { tcp . 22, udp . 53 }\n"));
        // Elements of the admitted sets are never flushed: re-applying keeps the grants.
        assert!(!s.contains("flush set inet knock_spa admitted"));
        assert!(s.contains("flags timeout;"));
        // The rules are replaced in the same transaction, in order.
        let flush = s.find("flush chain inet knock_spa input").expect("flush");
        let first = s.find("ct state established,related accept").expect("ct");
        let reject = s
            .find("reject with icmpx port-unreachable")
            .expect("reject");
        assert!(flush < first && first < reject);
        // No port: an empty guarded set, no element line.
        assert!(!script(&[]).contains("add element"));
    }
}
