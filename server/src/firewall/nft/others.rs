//! What `check` says about the rest of the nftables ruleset with `Firewall = nftables`: in
//! nftables every base chain on the input hook sees the packet, so an accept in `inet
//! knock_spa` does not override another table's drop or reject. This reads `nft list
//! ruleset` and names the rules of other tables that refuse a guarded port (or every port),
//! and the input chains whose policy is drop.
//!
//! A reading of nft's listing, not a packet simulation: a rule is counted when its verdict is
//! `drop` or `reject` and it names a guarded port (`dport 22`, `dport { 22, 80 }`) or no
//! destination port at all (it then refuses more than one port; its other matches are not
//! weighed).

use knock_shared::types::PortSpec;

use super::table::TABLE;

/// One finding: the table, the chain, and the rule or policy, as nft lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// `inet filter`.
    pub table: String,
    /// The chain's name.
    pub chain: String,
    /// The rule (or `policy drop`), trimmed.
    pub rule: String,
}

/// The rules and input policies of tables other than `inet knock_spa` in `ruleset` (the
/// output of `nft list ruleset`) that refuse one of `ports`.
pub fn refusals(ruleset: &str, ports: &[PortSpec]) -> Vec<Refusal> {
    let mut out = Vec::new();
    let mut table = String::new();
    let mut chain = String::new();
    // In a base chain on another hook (forward, output): its rules never see our packets.
    let mut other_hook = false;
    for line in ruleset.lines() {
        let l = line.trim();
        if let Some(rest) = l.strip_prefix("table ") {
            table = rest.trim_end_matches('{').trim().to_owned();
            chain.clear();
            continue;
        }
        if let Some(rest) = l.strip_prefix("chain ") {
            chain = rest.trim_end_matches('{').trim().to_owned();
            other_hook = false;
            continue;
        }
        if table.is_empty() || table == format!("inet {TABLE}") || chain.is_empty() {
            continue;
        }
        if l.starts_with("type ") && l.contains(" hook ") {
            let input = l.contains("hook input") || l.contains("hook prerouting");
            other_hook = !input;
            if input && l.contains("policy drop") {
                out.push(Refusal {
                    table: table.clone(),
                    chain: chain.clone(),
                    rule: "policy drop".to_owned(),
                });
            }
            continue;
        }
        if other_hook {
            continue;
        }
        let words: Vec<&str> = l.split_whitespace().collect();
        let refuses = words.last().is_some_and(|w| *w == "drop")
            || words.contains(&"reject")
            || words.last().is_some_and(|w| *w == "reject");
        if !refuses || !refused_port(&words, ports) {
            continue;
        }
        out.push(Refusal {
            table: table.clone(),
            chain: chain.clone(),
            rule: l.to_owned(),
        });
    }
    out
}

/// Whether a rule's words name one of `ports` after `dport` (a number or a `{ ... }` list),
/// or name no destination port at all.
fn refused_port(words: &[&str], ports: &[PortSpec]) -> bool {
    let Some(at) = words.iter().position(|w| *w == "dport") else {
        return true;
    };
    let mut named = Vec::new();
    for w in &words[at + 1..] {
        let w = w.trim_matches(|c| c == '{' || c == '}' || c == ',');
        if w.is_empty() {
            continue;
        }
        match w.parse::<u16>() {
            Ok(n) => named.push(n),
            Err(_) => break,
        }
    }
    named.is_empty() || ports.iter().any(|p| named.contains(&p.port.get()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULESET: &str = "table inet knock_spa {
	chain input {
		type filter hook input priority filter; policy accept;
		meta l4proto . th dport @guarded reject
	}
}
table inet filter {
	chain input {
		type filter hook input priority filter; policy drop;
		tcp dport 80 accept
		tcp dport 22 drop
		tcp dport { 443, 2222 } reject with tcp reset
		udp dport 53 drop
	}
	chain forward {
		type filter hook forward priority filter; policy drop;
		tcp dport 22 drop
	}
}
table ip filter {
	chain INPUT {
		type filter hook input priority filter; policy accept;
		ip saddr 192.0.2.0/24 counter packets 0 bytes 0 drop
	}
}
";

    fn p(s: &str) -> PortSpec {
        s.parse().expect("port")
    }

    #[test]
    fn other_tables_that_refuse_a_guarded_port_are_named() {
        let found = refusals(RULESET, &[p("22"), p("2222")]);
        let rules: Vec<(&str, &str)> = found
            .iter()
            .map(|r| (r.table.as_str(), r.rule.as_str()))
            .collect();
        assert_eq!(
            rules,
            vec![
                ("inet filter", "policy drop"),
                ("inet filter", "tcp dport 22 drop"),
                (
                    "inet filter",
                    "tcp dport { 443, 2222 } reject with tcp reset"
                ),
                (
                    "ip filter",
                    "ip saddr 192.0.2.0/24 counter packets 0 bytes 0 drop"
                ),
            ],
            "our own table, the forward chain, port 53 and accepts are not findings"
        );
        assert!(refusals("", &[p("22")]).is_empty());
    }
}
