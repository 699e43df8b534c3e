//! `knock-spad firewall-setup`: the printed rules, and `--apply` in a throw-away network
//! namespace (never the host's own firewall).

mod common;

use common::*;

const BASELINE_22: [&str; 4] = [
    "iptables -A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT",
    "iptables -A INPUT -p tcp --dport 22 -j REJECT --reject-with tcp-reset",
    "ip6tables -A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT",
    "ip6tables -A INPUT -p tcp --dport 22 -j REJECT --reject-with tcp-reset",
];

fn commands(text: &str) -> Vec<&str> {
    text.lines().filter(|l| !l.starts_with('#')).collect()
}

#[test]
fn firewall_setup_prints_the_baseline() {
    let out = run(&["firewall-setup", "--port", "22"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert_eq!(commands(&text), BASELINE_22);
    assert!(text.contains("netfilter-persistent save"), "{text}");

    let out = run(&[
        "firewall-setup",
        "--port",
        "22",
        "--port",
        "53/udp",
        "--no-ipv6",
    ]);
    assert_eq!(
        commands(&stdout(&out)),
        [
            "iptables -A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT",
            "iptables -A INPUT -p tcp --dport 22 -j REJECT --reject-with tcp-reset",
            "iptables -A INPUT -p udp --dport 53 -j REJECT",
        ]
    );
    let out = run(&["firewall-setup", "--port", "0"]);
    assert_eq!(out.status.code(), Some(2), "a bad port is a usage error");
}

#[test]
fn firewall_setup_derives_ports_from_the_spa_doors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = write_private(
        dir.path(),
        "knockd.conf",
        &format!(
            "[options]\n    StateDir = {}\n\n[knock]\n    Sequence = 7000,9000,8000\n    Command = /bin/true %IP%\n\n\
             [spa]\n    Keys = {}\n    Allow_Ports = 22/tcp, 443\n    Start_Command = /bin/true %IP%\n",
            dir.path().join("state").display(),
            key("alice", 1).to_inline().as_str()
        ),
    );
    let out = run(&["-c", conf.to_str().expect("utf-8"), "firewall-setup", "-4"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        commands(&stdout(&out)),
        [
            "iptables -A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT",
            "iptables -A INPUT -p tcp --dport 22 -j REJECT --reject-with tcp-reset",
            "iptables -A INPUT -p tcp --dport 443 -j REJECT --reject-with tcp-reset",
        ]
    );
    // A configuration without SPA doors: the ports must be named.
    let only_knock = write_private(
        dir.path(),
        "knock.conf",
        "[knock]\n    Sequence = 7000,9000,8000\n    Command = /bin/true %IP%\n",
    );
    let out = run(&["-c", only_knock.to_str().expect("utf-8"), "firewall-setup"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--port"), "{}", stderr(&out));
}

/// Appends a REJECT of new TCP connections to 22 to `tool`'s INPUT chain in `ns`.
fn reject_22(ns: &Netns, tool: &str) {
    let add = ns.exec(&[
        tool,
        "-A",
        "INPUT",
        "-p",
        "tcp",
        "--dport",
        "22",
        "-j",
        "REJECT",
        "--reject-with",
        "tcp-reset",
    ]);
    assert!(add.status.success(), "{tool}: {}", stderr(&add));
}

#[test]
fn firewall_setup_apply_is_idempotent_in_a_namespace() {
    require_root_and(&["ip", "iptables", "ip6tables"]);
    let ns = Netns::create().expect("ip netns add");
    let apply = || ns.exec(&[BIN, "firewall-setup", "--port", "22", "--apply"]);

    let first = apply();
    assert!(
        first.status.success(),
        "{}{}",
        stdout(&first),
        stderr(&first)
    );
    let said = stdout(&first);
    assert_eq!(said.matches("added:").count(), 4, "{said}");
    assert!(said.contains("netfilter-persistent save"), "{said}");

    let second = apply();
    assert!(second.status.success(), "{}", stderr(&second));
    let said = stdout(&second);
    assert_eq!(said.matches("present:").count(), 4, "{said}");
    assert_eq!(said.matches("added:").count(), 0, "{said}");

    // Each rule once, ESTABLISHED first (iptables -S normalises the match spellings).
    for tool in ["iptables", "ip6tables"] {
        let rules = stdout(&ns.exec(&[tool, "-S", "INPUT"]));
        let lines: Vec<&str> = rules.lines().filter(|l| l.starts_with("-A")).collect();
        assert_eq!(lines.len(), 2, "{tool}: {rules}");
        assert!(
            lines[0].contains("ESTABLISHED") && lines[0].ends_with("-j ACCEPT"),
            "{rules}"
        );
        assert!(
            lines[1].contains("--dport 22") && lines[1].contains("tcp-reset"),
            "{rules}"
        );
    }

    // A chain that already had the REJECT rule (the wrong way round): ESTABLISHED is
    // inserted in front of it, not after.
    let ns2 = Netns::create().expect("ip netns add");
    reject_22(&ns2, "iptables");
    let out = ns2.exec(&[
        BIN,
        "firewall-setup",
        "--port",
        "22",
        "--apply",
        "--no-ipv6",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let rules = stdout(&ns2.exec(&["iptables", "-S", "INPUT"]));
    let lines: Vec<&str> = rules.lines().filter(|l| l.starts_with("-A")).collect();
    assert_eq!(lines.len(), 2, "{rules}");
    assert!(lines[0].contains("ESTABLISHED"), "{rules}");
}

/// Debian's classic knockd.conf: the knock doors name their guarded port only inside the
/// iptables command (`--dport 22`). `firewall-setup` derives the baseline from it, and `check`
/// warns while the port is open and not once the baseline is applied; then it warns that the
/// door's `-A INPUT` lands after the baseline's REJECT.
#[test]
fn knock_doors_guarded_port_is_read_from_the_command() {
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = write_private(
        dir.path(),
        "knockd.conf",
        &format!(
            "[options]\n    StateDir = {}\n\n\
             [openSSH]\n    sequence = 7000,8000,9000\n    seq_timeout = 5\n    tcpflags = syn\n\
             \x20   command = /sbin/iptables -A INPUT -s %IP% -p tcp --dport 22 -j ACCEPT\n\n\
             [closeSSH]\n    sequence = 9000,8000,7000\n    seq_timeout = 5\n    tcpflags = syn\n\
             \x20   command = /sbin/iptables -D INPUT -s %IP% -p tcp --dport 22 -j ACCEPT\n",
            dir.path().join("state").display()
        ),
    );
    let conf = conf.to_str().expect("utf-8");
    let out = run(&["-c", conf, "firewall-setup"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(commands(&stdout(&out)), BASELINE_22);

    require_root_and(&["ip", "iptables", "ip6tables"]);
    let ns = Netns::create().expect("ip netns add");
    let before = ns.exec(&[BIN, "check", "-c", conf]);
    assert!(before.status.success(), "{}", stderr(&before));
    for tool in ["iptables", "ip6tables"] {
        let warning =
            format!("warning: 22/tcp is open in the current {tool} INPUT chain (policy ACCEPT)");
        assert!(stderr(&before).contains(&warning), "{}", stderr(&before));
    }
    let apply = ns.exec(&[BIN, "-c", conf, "firewall-setup", "--apply"]);
    assert!(apply.status.success(), "{}", stderr(&apply));
    let after = ns.exec(&[BIN, "check", "-c", conf]);
    assert!(after.status.success(), "{}", stderr(&after));
    assert!(
        !stderr(&after).contains("is open in the current"),
        "{}",
        stderr(&after)
    );
    assert!(
        !stderr(&before).contains("appends its ACCEPT"),
        "nothing refuses 22 yet: {}",
        stderr(&before)
    );
    assert!(
        stderr(&after).contains(&format!(
            "knock-spad: {conf}:8: warning: [openSSH] the start command appends its ACCEPT for \
             22/tcp (-A INPUT) after `-A INPUT -p tcp -m tcp --dport 22 -j REJECT"
        )),
        "{}",
        stderr(&after)
    );
    // The other warning is right too: 7000,8000,9000 is what a port scan sends.
    assert!(
        stderr(&after).contains("is ascending"),
        "{}",
        stderr(&after)
    );
}

/// The migration trap of Debian's stock knockd.conf: a start command that appends
/// (`iptables -A INPUT`) while 22 is already rejected earlier in the chain adds its ACCEPT
/// after the REJECT and opens nothing. `check`, run in a namespace whose INPUT chains reject
/// 22, names the door, the command's line, the port, the REJECT rule and the fix; with `-I`
/// it says nothing of the kind. The exit status stays 0 (a warning).
#[test]
fn check_warns_when_a_door_appends_after_the_reject() {
    require_root_and(&["ip", "iptables", "ip6tables"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = |op: &str| {
        let path = write_private(
            dir.path(),
            &format!("knockd{op}.conf"),
            &format!(
                "[options]\n    StateDir = {}\n\n\
                 [openSSH]\n    sequence = 7000,9000,8000\n    seq_timeout = 5\n    tcpflags = syn\n\
                 \x20   command = /sbin/iptables {op} INPUT -s %IP% -p tcp --dport 22 -j ACCEPT\n\
                 \x20   command_6 = /sbin/ip6tables {op} INPUT -s %IP% -p tcp --dport 22 -j ACCEPT\n",
                dir.path().join("state").display()
            ),
        );
        path.to_str().expect("utf-8").to_owned()
    };
    let ns = Netns::create().expect("ip netns add");
    let mut rejects = Vec::new();
    for tool in ["iptables", "ip6tables"] {
        reject_22(&ns, tool);
        // The rule as `-S` prints it, which is how the warning quotes it.
        let listed = stdout(&ns.exec(&[tool, "-S", "INPUT"]));
        let rule = listed
            .lines()
            .find(|l| l.starts_with("-A INPUT") && l.contains("REJECT"))
            .unwrap_or_else(|| panic!("no REJECT rule in {listed}"))
            .to_owned();
        rejects.push((tool, rule));
    }

    let appending = conf("-A");
    let out = ns.exec(&[BIN, "check", "-c", &appending]);
    assert!(out.status.success(), "{}", stderr(&out));
    let said = stderr(&out);
    for ((tool, rule), line) in rejects.iter().zip([8, 9]) {
        let want = format!(
            "knock-spad: {appending}:{line}: warning: [openSSH] the start command appends its \
             ACCEPT for 22/tcp (-A INPUT) after `{rule}`, which refuses 22/tcp first in the \
             current {tool} INPUT chain: the door opens nothing; use -I INPUT instead of -A INPUT"
        );
        assert!(said.contains(&want), "want {want}\nin {said}");
    }
    assert_eq!(said.matches("appends its ACCEPT").count(), 2, "{said}");

    let inserting = conf("-I");
    let out = ns.exec(&[BIN, "check", "-c", &inserting]);
    assert!(out.status.success(), "{}", stderr(&out));
    let said = stderr(&out);
    assert!(!said.contains("appends its ACCEPT"), "{said}");
    assert!(
        !said.contains("cannot read the"),
        "the chains were read: {said}"
    );
}
