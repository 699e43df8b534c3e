//! The configuration reader: knockd 0.8's `knockd.conf` syntax plus knock-spa's SPA doors.
//!
//! Role: turn the text of a configuration file into a validated [`Config`], or into every
//! error the text holds, each with its 1-based line number and a message naming the directive
//! and the value. The caller (the server) reads the file and prefixes the path
//! (`/etc/knockd.conf:12: ...`).
//!
//! What it must not do: I/O of any kind. It opens no file (a `KeyFile` or `One_Time_Sequences`
//! path is recorded with its line, and the server reads it and hands the text to
//! [`parse_keys_file`] / [`parse_one_time_sequences`]), reads no clock and resolves no names.
//! Error and warning messages never contain secret key material.
//!
//! Where knockd silently accepts a mistake (an unknown directive in some positions, `atoi`
//! turning `abc` into 0, a repeated directive overriding the first) this reader reports an
//! error; docs/CONFIG.md lists every difference and its reason.
//!
//! The parts, each importing only parts listed before it and nothing from this file (which
//! only declares them, re-exports their public items and holds [`parse_str`]):
//!
//! - `error`: [`ConfigError`], [`Warning`], and how a value is quoted in a message;
//! - `template`: [`CommandTemplate`]: argv words (no shell) with `%IP%`, `%PORT%`, `%PROTO%`;
//! - `model`: the resolved types ([`Config`], [`Options`], [`Door`], ...), defaults and limits;
//! - `sequence`: knockd's sequence syntax ([`parse_sequence`], [`format_sequence`], warnings);
//! - `directives`: the directive table and the parsers of simple values;
//! - `reference`: the documentation of every directive ([`DIRECTIVE_DOCS`]), the one source
//!   of docs/CONFIG.md's tables and knock-spad.conf(5);
//! - `key_files`: `NAME:BASE64` keys, inline and in a keys file ([`parse_keys_file`]);
//! - `one_time`: one-time sequences files ([`parse_one_time_sequences`], [`mark_used`]);
//! - `raw`: parser phase 1, the line reader (the file's syntax is described there);
//! - `door`: parser phase 2, doors checked as a whole and resolved, the result finished.

mod directives;
mod door;
mod error;
mod key_files;
mod model;
mod one_time;
mod raw;
mod reference;
mod sequence;
mod template;

pub use crate::types::{TcpFlags, TcpFlagsError};
pub use error::{ConfigError, Warning};
pub use key_files::parse_keys_file;
pub use model::{
    Capture, Config, Door, DoorKind, Firewall, Options, SequenceDoor, SpaDoor, DEFAULT_CMD_TIMEOUT,
    DEFAULT_DOOR_MAX_GRANTS, DEFAULT_INTERFACE, DEFAULT_MAX_GRANTS, DEFAULT_REPLAY_CACHE_SIZE,
    DEFAULT_SEQ_TIMEOUT, DEFAULT_SPA_CMD_TIMEOUT, DEFAULT_SPA_PORT, DEFAULT_SPA_WINDOW,
    DEFAULT_STATE_DIR, MAX_INTERFACE_LEN, MAX_MAX_GRANTS, MAX_REPLAY_CACHE_SIZE, MAX_SEQUENCE_LEN,
    MAX_SPA_WINDOW, MAX_TIMEOUT, MAX_USER_NAME_LEN, MIN_REPLAY_CACHE_SIZE,
};
pub use one_time::{mark_used, parse_one_time_sequences, OneTimeSeq};
pub use reference::{
    markdown as directives_markdown, roff_directives, roff_entry, roff_escape, roff_inline,
    roff_prose, DirectiveDoc, Place, DIRECTIVE_DOCS,
};
pub use sequence::{
    format_sequence, is_scan_order, parse_sequence, sequence_warnings, SequenceError,
};
pub use template::{CommandTemplate, TemplateError};

use raw::Parser;

/// Parses a configuration text. On success the [`Config`] carries the warnings; on failure
/// every error found, in line order.
pub fn parse_str(text: &str) -> Result<Config, Vec<ConfigError>> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut p = Parser::default();
    for (idx, raw) in text.lines().enumerate() {
        p.line(idx + 1, raw);
    }
    p.finish()
}

#[cfg(test)]
mod test_util;

#[cfg(test)]
mod tests {
    use super::test_util::{ps, tcp, v4, ALICE, ALICE_SECRET, BOB, CAROL};
    use super::*;
    use crate::types::{PortSpec, Proto};
    use std::net::{IpAddr, Ipv6Addr};

    fn ok(text: &str) -> Config {
        match parse_str(text) {
            Ok(c) => c,
            Err(errors) => panic!("unexpected errors: {errors:#?}"),
        }
    }

    fn errs(text: &str) -> Vec<ConfigError> {
        match parse_str(text) {
            Ok(c) => panic!("parsed but should not: {c:#?}"),
            Err(e) => e,
        }
    }

    fn seq(door: &Door) -> &SequenceDoor {
        door.sequence().expect("a knock-sequence door")
    }

    fn argv(t: &CommandTemplate, ip: IpAddr, port: Option<PortSpec>) -> String {
        t.render(ip, port).join(" | ")
    }

    fn start(door: &Door) -> &CommandTemplate {
        door.start_command.as_ref().expect("start command")
    }

    // ---- Debian's shipped /etc/knockd.conf (knockd 0.8-3 on Debian 12), verbatim. ----
    const DEBIAN: &str = "[options]
\tUseSyslog

[openSSH]
\tsequence    = 7000,8000,9000
\tseq_timeout = 5
\tcommand     = /sbin/iptables -A INPUT -s %IP% -p tcp --dport 22 -j ACCEPT
\ttcpflags    = syn

[closeSSH]
\tsequence    = 9000,8000,7000
\tseq_timeout = 5
\tcommand     = /sbin/iptables -D INPUT -s %IP% -p tcp --dport 22 -j ACCEPT
\ttcpflags    = syn

[openHTTPS]
\tsequence    = 12345,54321,24680,13579
\tseq_timeout = 5
\tcommand     = /usr/local/sbin/knock_add -i -c INPUT -p tcp -d 443 -f %IP%
\ttcpflags    = syn

";

    #[test]
    fn debian_default_config() {
        let c = ok(DEBIAN);
        assert!(c.options.use_syslog);
        assert_eq!(
            c.options,
            Options {
                use_syslog: true,
                ..Options::default()
            }
        );
        let names: Vec<&str> = c.doors.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["openSSH", "closeSSH", "openHTTPS"]);

        let open = c.door("openSSH").expect("openSSH");
        assert_eq!(open.line, 4);
        let s = seq(open);
        assert_eq!(s.sequence, tcp(&[7000, 8000, 9000]));
        assert_eq!(s.seq_timeout, 5);
        assert_eq!(
            s.tcp_flags,
            TcpFlags {
                must_set: TcpFlags::SYN,
                must_clear: 0
            }
        );
        assert_eq!(s.one_time_file, None);
        assert_eq!(s.target, None);
        assert_eq!(open.cmd_timeout, DEFAULT_CMD_TIMEOUT);
        assert_eq!(
            start(open).to_string(),
            "/sbin/iptables -A INPUT -s %IP% -p tcp --dport 22 -j ACCEPT"
        );
        assert_eq!(
            start(open).render(v4(192, 0, 2, 7), None),
            [
                "/sbin/iptables",
                "-A",
                "INPUT",
                "-s",
                "192.0.2.7",
                "-p",
                "tcp",
                "--dport",
                "22",
                "-j",
                "ACCEPT"
            ]
        );
        assert!(open.stop_command.is_none());

        assert_eq!(
            seq(c.door("openHTTPS").expect("door")).sequence,
            tcp(&[12345, 54321, 24680, 13579])
        );
        assert_eq!(
            argv(
                start(c.door("openHTTPS").expect("door")),
                v4(10, 0, 0, 1),
                None
            ),
            "/usr/local/sbin/knock_add | -i | -c | INPUT | -p | tcp | -d | 443 | -f | 10.0.0.1"
        );
        // Only openSSH's ascending sequence is worth a warning.
        let w: Vec<(usize, &str)> = c
            .warnings
            .iter()
            .map(|w| (w.line, w.message.as_str()))
            .collect();
        assert_eq!(w.len(), 1, "{w:?}");
        assert_eq!(w[0].0, 5);
        assert!(w[0].1.contains("7000,8000,9000 is ascending"), "{}", w[0].1);
    }

    // ---- knockd(1), the four examples (doc/knockd.1.in, with roff's \- as -). ----
    const MAN_1: &str = "[options]
\tlogfile = /var/log/knockd.log

[openSSH]
\tsequence    = 7000,8000,9000
\tseq_timeout = 10
\ttcpflags    = syn
\tcommand     = /usr/sbin/iptables -A INPUT -s %IP% --dport 22 -j ACCEPT

[closeSSH]
\tsequence    = 9000,8000,7000
\tseq_timeout = 10
\ttcpflags    = syn
\tcommand     = /usr/sbin/iptables -D INPUT -s %IP% --dport 22 -j ACCEPT
";

    const MAN_2: &str = "[options]
\tlogfile = /var/log/knockd.log

[opencloseSSH]
\tsequence      = 2222:udp,3333:tcp,4444:udp
\tseq_timeout   = 15
\ttcpflags      = syn,ack
\tstart_command = /usr/sbin/iptables -A INPUT -s %IP% -p tcp --syn -j ACCEPT
\tcmd_timeout   = 5
\tstop_command  = /usr/sbin/iptables -D INPUT -s %IP% -p tcp --syn -j ACCEPT
";

    const MAN_3: &str = "[options]
\tlogfile = /var/log/knockd.log

[opencloseSMTP]
\tone_time_sequences = /etc/knockd/smtp_sequences
\tseq_timeout        = 15
\ttcpflags           = fin,!ack
\tstart_command      = /usr/sbin/iptables -A INPUT -s %IP% -p tcp --dport 25 -j ACCEPT
\tcmd_timeout        = 5
\tstop_command       = /usr/sbin/iptables -D INPUT -s %IP% -p tcp --dport 25 -j ACCEPT
\t
";

    const MAN_4: &str = "[options]
\tlogfile = /var/log/knockd.log

[opencloseSMTP]
\tone_time_sequences = /etc/knockd/smtp_sequences
\tseq_timeout        = 15
\ttcpflags           = fin,!ack
\tstart_command      = /usr/sbin/iptables -A INPUT -s %IP% -p tcp --dport 25 -j ACCEPT
\tstart_command_6    = /usr/sbin/ip6tables -A INPUT -s %IP% -p tcp --dport 25 -j ACCEPT
\tcmd_timeout        = 5
\tstop_command       = /usr/sbin/iptables -D INPUT -s %IP% -p tcp --dport 25 -j ACCEPT
\tstop_command_6     = /usr/sbin/ip6tables -D INPUT -s %IP% -p tcp --dport 25 -j ACCEPT
\t
";

    #[test]
    fn man_page_example_1() {
        let c = ok(MAN_1);
        assert_eq!(c.options.log_file.as_deref(), Some("/var/log/knockd.log"));
        assert!(!c.options.use_syslog);
        assert_eq!(c.doors.len(), 2);
        let close = c.door("closeSSH").expect("door");
        assert_eq!(seq(close).sequence, tcp(&[9000, 8000, 7000]));
        assert_eq!(seq(close).seq_timeout, 10);
        assert!(start(close).as_str().contains("-D INPUT"));
    }

    #[test]
    fn man_page_example_2_mixed_protocols_and_flags() {
        let c = ok(MAN_2);
        let d = c.door("opencloseSSH").expect("door");
        let s = seq(d);
        assert_eq!(
            s.sequence,
            [
                ps(2222, Proto::Udp),
                ps(3333, Proto::Tcp),
                ps(4444, Proto::Udp)
            ]
        );
        assert_eq!(s.seq_timeout, 15);
        assert_eq!(s.tcp_flags.must_set, TcpFlags::SYN | TcpFlags::ACK);
        assert_eq!(s.tcp_flags.must_clear, 0);
        assert_eq!(d.cmd_timeout, 5);
        let stop = d.stop_command.as_ref().expect("stop");
        assert_eq!(
            stop.render(v4(198, 51, 100, 9), None),
            [
                "/usr/sbin/iptables",
                "-D",
                "INPUT",
                "-s",
                "198.51.100.9",
                "-p",
                "tcp",
                "--syn",
                "-j",
                "ACCEPT"
            ]
        );
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    }

    #[test]
    fn man_page_example_3_one_time_sequences() {
        let c = ok(MAN_3);
        let d = c.door("opencloseSMTP").expect("door");
        let s = seq(d);
        assert!(s.sequence.is_empty());
        assert_eq!(
            s.one_time_file,
            Some(("/etc/knockd/smtp_sequences".to_owned(), 5))
        );
        assert_eq!(
            s.tcp_flags,
            TcpFlags {
                must_set: TcpFlags::FIN,
                must_clear: TcpFlags::ACK
            }
        );
        assert_eq!(s.tcp_flags.to_string(), "fin,!ack");
        assert_eq!(d.cmd_timeout, 5);
        // No _6 commands: IPv6 falls back to the IPv4 ones, as knockd does.
        let v6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
        assert_eq!(d.start_command_for(v6), d.start_command.as_ref());
        assert_eq!(d.stop_command_for(v6), d.stop_command.as_ref());
    }

    #[test]
    fn man_page_example_4_ipv6_commands() {
        let c = ok(MAN_4);
        let d = c.door("opencloseSMTP").expect("door");
        let v6: IpAddr = "2001:db8::1".parse().expect("ip");
        let v4a = v4(203, 0, 113, 5);
        assert_eq!(
            d.start_command_for(v6).expect("v6").render(v6, None),
            [
                "/usr/sbin/ip6tables",
                "-A",
                "INPUT",
                "-s",
                "2001:db8::1",
                "-p",
                "tcp",
                "--dport",
                "25",
                "-j",
                "ACCEPT"
            ]
        );
        assert_eq!(
            d.start_command_for(v4a).expect("v4").render(v4a, None)[0],
            "/usr/sbin/iptables"
        );
        assert_eq!(
            d.stop_command_for(v6).expect("v6").render(v6, None)[1],
            "-D"
        );
        assert_eq!(
            d.stop_command_for(v6).expect("v6").render(v6, None)[0],
            "/usr/sbin/ip6tables"
        );
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    }

    // ---- The classic walkthrough, which the interoperability tests run. ----
    const CLASSIC: &str = "[options]
    logfile = /var/log/knockd.log

[openSSH]
    sequence    = 7000,8000,9000
    seq_timeout = 15
    tcpflags    = syn
    command     = /sbin/iptables -I INPUT -s %IP% -p tcp --dport 22 -j ACCEPT

[closeSSH]
    sequence    = 9000,8000,7000
    seq_timeout = 15
    tcpflags    = syn
    command     = /sbin/iptables -D INPUT -s %IP% -p tcp --dport 22 -j ACCEPT
";

    #[test]
    fn classic_walkthrough() {
        let c = ok(CLASSIC);
        let open = c.door("openSSH").expect("door");
        let close = c.door("closeSSH").expect("door");
        assert_eq!(seq(open).sequence, tcp(&[7000, 8000, 9000]));
        assert_eq!(seq(close).sequence, tcp(&[9000, 8000, 7000]));
        assert_eq!(seq(open).seq_timeout, 15);
        assert!(seq(open).tcp_flags.matches(0x02)); // SYN
        assert!(seq(open).tcp_flags.matches(0x02 | 0x10)); // SYN+ACK also has SYN
        assert!(!seq(open).tcp_flags.matches(0x10)); // ACK alone
        let ip = v4(10, 1, 2, 3);
        assert_eq!(
            open.start_command_for(ip).expect("cmd").render(ip, None),
            [
                "/sbin/iptables",
                "-I",
                "INPUT",
                "-s",
                "10.1.2.3",
                "-p",
                "tcp",
                "--dport",
                "22",
                "-j",
                "ACCEPT"
            ]
        );
        assert_eq!(
            close.start_command_for(ip).expect("cmd").render(ip, None)[1],
            "-D"
        );
        assert!(open.stop_command_for(ip).is_none());
        assert_eq!(c.warnings.len(), 1);
        assert!(c.warnings[0].message.contains("ascending"));
        assert_eq!(c.warnings[0].line, 5);
    }

    // ---- A legacy door and an SPA door in one file, with every extension option. ----
    fn mixed() -> String {
        format!(
            "# knock-spa: one file for knock and SPA
[options]
    UseSyslog
    LogFile = /var/log/knock-spad.log
    PidFile = /run/knock-spad.pid
    Interface = any
    SpaPort = 4500
    StateDir = /var/lib/knock-spa-test
    ServerName = gw.example.org, gw
    SpaWindow = 30
    Capture = udp
    ReplayCacheSize = 1024
    KeepRulesOnExit

[openSSH]
    sequence    = 7000,9000,8000
    seq_timeout = 15
    tcpflags    = syn
    start_command = /sbin/iptables -I INPUT -s %IP% -p tcp --dport 22 -j ACCEPT
    cmd_timeout = 20
    stop_command  = /sbin/iptables -D INPUT -s %IP% -p tcp --dport 22 -j ACCEPT

[spaSSH]
    Keys = {ALICE}, {BOB}
    Keys = {CAROL}
    KeyFile = /etc/knock-spa/ops.keys
    Allow_Ports = 22/tcp, 2222, 53:udp
    Allow_NAT = yes
    Cmd_Timeout = 60
    Max_Timeout = 600
    Start_Command   = /sbin/iptables -I INPUT -s %IP% -p %PROTO% --dport %PORT% -j ACCEPT
    Start_Command_6 = /sbin/ip6tables -I INPUT -s %IP% -p %PROTO% --dport %PORT% -j ACCEPT
    Stop_Command    = /sbin/iptables -D INPUT -s %IP% -p %PROTO% --dport %PORT% -j ACCEPT
    Stop_Command_6  = /sbin/ip6tables -D INPUT -s %IP% -p %PROTO% --dport %PORT% -j ACCEPT
"
        )
    }

    #[test]
    fn grant_caps_have_defaults_and_can_be_set() {
        let c = ok(&mixed());
        assert_eq!(c.options.max_grants, DEFAULT_MAX_GRANTS);
        assert!(c
            .doors
            .iter()
            .all(|d| d.max_grants == DEFAULT_DOOR_MAX_GRANTS));
        let text = mixed()
            .replace(
                "    KeepRulesOnExit\n",
                "    KeepRulesOnExit\n    MaxGrants = 100\n",
            )
            .replace(
                "    Max_Timeout = 600\n",
                "    Max_Timeout = 600\n    Max_Grants = 7\n",
            );
        let c = ok(&text);
        assert_eq!(c.options.max_grants, 100);
        assert_eq!(c.door("spaSSH").expect("door").max_grants, 7);
        assert_eq!(
            c.door("openSSH").expect("door").max_grants,
            DEFAULT_DOOR_MAX_GRANTS
        );
    }

    #[test]
    fn admit_prefix_is_off_by_default_and_renders_the_network() {
        let c = ok(&mixed());
        assert!(c.doors.iter().all(|d| d.admit_prefix.is_none()));
        let text = mixed().replace(
            "    Max_Timeout = 600\n",
            "    Max_Timeout = 600\n    Admit_Prefix = 24, 64\n",
        );
        let c = ok(&text);
        let d = c.door("spaSSH").expect("door");
        assert_eq!(
            d.admit_prefix,
            Some(crate::types::AdmitPrefix { v4: 24, v6: 64 })
        );
        let ip: std::net::IpAddr = "198.51.100.77".parse().expect("ip");
        let argv = d
            .start_command_for(ip)
            .expect("start")
            .render_admitted(d.admitted(ip), None);
        assert!(argv.iter().any(|w| w == "198.51.100.0/24"), "{argv:?}");
        assert_eq!(
            c.door("openSSH").expect("door").admitted(ip).to_string(),
            "198.51.100.77"
        );
    }

    #[test]
    fn public_keys_accumulate_beside_keys_and_need_a_server_key() {
        let k1 = knock_keys::public::SigningKey::from_seed("pk1", [1; 32]).expect("key");
        let k2 = knock_keys::public::SigningKey::from_seed("pk2", [2; 32]).expect("key");
        let (l1, l2) = (k1.public().to_inline(), k2.public().to_inline());
        let text = format!(
            "[options]\n    ServerKey = /etc/knock-spa/server.key\n[spa]\n    Keys = {ALICE}\n    \
             PublicKeys = {l1}\n    PublicKeys = {l2}\n    Allow_Ports = 22\n    \
             Start_Command = /bin/true\n"
        );
        let c = ok(&text);
        assert_eq!(
            c.options.server_key,
            Some((2, "/etc/knock-spa/server.key".to_owned()))
        );
        let DoorKind::Spa(spa) = &c.door("spa").expect("door").kind else {
            panic!("not an SPA door");
        };
        assert_eq!(spa.keys.len(), 1);
        let names: Vec<(usize, &str)> = spa
            .public_keys
            .iter()
            .map(|(l, k)| (*l, k.name()))
            .collect();
        assert_eq!(names, [(5, "pk1"), (6, "pk2")]);
        // A door with only public keys is a door.
        let only = format!("[options]\nServerKey = /k\n[spa]\nPublicKeys = {l1}\nAllow_Ports = 22\nStart_Command = /bin/true\n");
        ok(&only);
        // Without ServerKey: an error on the PublicKeys line.
        let e = errs(&format!(
            "[spa]\nPublicKeys = {l1}\nAllow_Ports = 22\nStart_Command = /bin/true\n"
        ));
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].line, 2);
        assert!(e[0].message.contains("ServerKey"), "{e:?}");
        // A bad entry names its position; a relative ServerKey is refused.
        let e = errs(&format!("[options]\nServerKey = /k\n[spa]\nPublicKeys = {l1}, pk3:AAAA\nAllow_Ports = 22\nStart_Command = /bin/true\n"));
        assert!(e[0].line == 4 && e[0].message.contains("entry 2"), "{e:?}");
        let e = errs("[options]\nServerKey = server.key\n");
        assert!(e[0].line == 2 && e[0].message.contains("absolute"), "{e:?}");
    }

    #[test]
    fn mixed_legacy_and_spa() {
        let c = ok(&mixed());
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        let o = &c.options;
        assert!(o.use_syslog && o.keep_rules_on_exit);
        assert_eq!(o.log_file.as_deref(), Some("/var/log/knock-spad.log"));
        assert_eq!(o.pid_file.as_deref(), Some("/run/knock-spad.pid"));
        assert_eq!(o.interface.as_deref(), Some("any"));
        assert_eq!(o.spa_port.get(), 4500);
        assert_eq!(o.state_dir, "/var/lib/knock-spa-test");
        assert_eq!(o.user, None);
        let with_user = ok(&mixed().replace(
            "    KeepRulesOnExit\n",
            "    KeepRulesOnExit\n    User = knock-spa\n",
        ));
        assert_eq!(with_user.options.user.as_deref(), Some("knock-spa"));
        assert_eq!(o.server_names, ["gw.example.org", "gw"]);
        assert_eq!(o.spa_window, 30);
        assert_eq!(o.capture, Capture::Udp);
        assert_eq!(o.replay_cache_size, 1024);

        let legacy = c.door("openSSH").expect("door");
        assert_eq!(legacy.cmd_timeout, 20);
        assert!(legacy.spa().is_none());

        let d = c.door("spaSSH").expect("door");
        assert!(d.sequence().is_none());
        let spa = d.spa().expect("spa");
        let names: Vec<(usize, &str)> = spa.keys.iter().map(|(l, k)| (*l, k.name())).collect();
        assert_eq!(names, [(24, "alice"), (24, "bob"), (25, "carol")]);
        assert_eq!(spa.key_files, [(26, "/etc/knock-spa/ops.keys".to_owned())]);
        assert_eq!(
            spa.allow_ports,
            [ps(22, Proto::Tcp), ps(2222, Proto::Tcp), ps(53, Proto::Udp)]
        );
        assert!(spa.allow_nat);
        assert_eq!(d.cmd_timeout, 60);
        assert_eq!(spa.max_timeout, 600);
        let ip: IpAddr = "2001:db8::7".parse().expect("ip");
        assert_eq!(
            d.start_command_for(ip)
                .expect("cmd")
                .render(ip, Some(ps(53, Proto::Udp))),
            [
                "/sbin/ip6tables",
                "-I",
                "INPUT",
                "-s",
                "2001:db8::7",
                "-p",
                "udp",
                "--dport",
                "53",
                "-j",
                "ACCEPT"
            ]
        );
        let ip = v4(192, 0, 2, 1);
        assert_eq!(
            argv(
                d.stop_command_for(ip).expect("cmd"),
                ip,
                Some(ps(22, Proto::Tcp))
            ),
            "/sbin/iptables | -D | INPUT | -s | 192.0.2.1 | -p | tcp | --dport | 22 | -j | ACCEPT"
        );
    }

    #[test]
    fn spa_defaults() {
        let c = ok(&format!(
            "[web]\nkeys = {ALICE}\nallow_ports = 443\nstart_command = /bin/true %IP%\nstop_command = /bin/true\n"
        ));
        let d = c.door("web").expect("door");
        assert_eq!(d.cmd_timeout, DEFAULT_SPA_CMD_TIMEOUT);
        let spa = d.spa().expect("spa");
        assert_eq!(spa.max_timeout, DEFAULT_SPA_CMD_TIMEOUT);
        assert!(!spa.allow_nat);
        assert_eq!(c.options, Options::default());
        assert_eq!(c.options.spa_port.get(), 62201);
        assert_eq!(c.options.state_dir, "/var/lib/knock-spa");
        assert_eq!(c.options.spa_window, 60);
        assert_eq!(c.options.capture, Capture::Pcap);
        assert_eq!(c.options.replay_cache_size, 65_536);
        assert!(c.options.server_names.is_empty());
        // Max_Timeout alone raises the cap, the default open time stays.
        let c = ok(&format!(
            "[web]\nkeys = {ALICE}\nallow_ports = 443\nmax_timeout = 3600\nstart_command = /bin/true\nstop_command = /bin/true\n"
        ));
        let d = c.door("web").expect("door");
        assert_eq!(
            (d.cmd_timeout, d.spa().expect("spa").max_timeout),
            (30, 3600)
        );
    }

    #[test]
    fn knockd_spellings_and_case() {
        // Directive names in any case, knockd's aliases, `=` inside values, blanks around.
        let c = ok(
            "[options]\nLOGFILE=/tmp/a=b.log\n[Door One]\nSEQUENCE=1:UDP , 2 :tcp,3\n\
                    Timeout=7\nTcpFlags = SYN , !Ack\nCommand=/bin/echo %IP%\nCommand_6=\n\
                    Target = 192.0.2.10\n",
        );
        assert_eq!(c.options.log_file.as_deref(), Some("/tmp/a=b.log"));
        let d = c.door("Door One").expect("door");
        let s = seq(d);
        assert_eq!(
            s.sequence,
            [ps(1, Proto::Udp), ps(2, Proto::Tcp), ps(3, Proto::Tcp)]
        );
        assert_eq!(s.seq_timeout, 7);
        assert_eq!(
            s.tcp_flags,
            TcpFlags {
                must_set: TcpFlags::SYN,
                must_clear: TcpFlags::ACK
            }
        );
        assert_eq!(s.target, Some(v4(192, 0, 2, 10)));
        // Command_6 set to nothing: IPv6 knockers run nothing (knockd's documented way).
        assert!(d
            .start_command_for(IpAddr::V6(Ipv6Addr::LOCALHOST))
            .is_none());
        assert!(d.start_command_for(v4(1, 2, 3, 4)).is_some());
        // Door names are case-sensitive: [door one] is another door.
        assert!(c.door("door one").is_none());
        // UseSyslog as a bare flag inside a door is accepted by knockd: a warning here.
        let c = ok("[d]\nsequence = 9,8\nUseSyslog\n");
        assert!(c.options.use_syslog);
        assert!(c
            .warnings
            .iter()
            .any(|w| w.line == 3 && w.message.contains("[options]")));
    }

    // ---- Malformed inputs: (text, line, phrase in the message). ----
    #[test]
    fn malformed_inputs() {
        let door = "[d]\nsequence = 7000,9000,8000\n";
        let spa_head = format!("[s]\nkeys = {ALICE}\nallow_ports = 22\n");
        let cases: Vec<(String, usize, &str)> = vec![
            ("[options]\nFooBar = 1\n".into(), 2, "unknown directive \"FooBar\" in [options]"),
            (format!("{door}colour = red\n"), 3, "unknown directive \"colour\" in door [d]"),
            ("sequence = 1,2\n[d]\n".into(), 1, "before any section"),
            ("# c\n\n  logfile = /x\n".into(), 3, "before any section"),
            ("[openSSH\nsequence = 1,2\n".into(), 1, "malformed section header \"[openSSH\""),
            ("[d] # comment\n".into(), 1, "malformed section header"),
            ("[]\n".into(), 1, "empty section name"),
            (format!("{door}[d]\nsequence = 3,2\n"), 3, "duplicate door name [d] (first defined on line 1)"),
            ("[d]\nsequence =\n".into(), 2, "the sequence is empty"),
            ("[d]\nsequence = 7000,,8000\n".into(), 2, "element 2 is empty"),
            ("[d]\nsequence = 7000,0\n".into(), 2, "bad element \"0\": port must be a number from 1 to 65535"),
            ("[d]\nsequence = 65536,2\n".into(), 2, "bad element \"65536\""),
            ("[d]\nsequence = 70a0,2\n".into(), 2, "bad element \"70a0\""),
            ("[d]\nsequence = 7000:sctp\n".into(), 2, "protocol must be tcp or udp"),
            (format!("{door}tcpflags = syn,fog\n"), 3, "unknown flag \"fog\""),
            (format!("{door}tcpflags = syn,!syn\n"), 3, "flag syn is both required and excluded"),
            (format!("{door}seq_timeout = abc\n"), 3, "seq_timeout = \"abc\": expected a whole number of seconds from 1 to 31536000"),
            (format!("{door}seq_timeout = 0\n"), 3, "seq_timeout = \"0\""),
            (format!("{door}cmd_timeout = -5\n"), 3, "cmd_timeout = \"-5\""),
            (format!("{door}cmd_timeout = 10s\n"), 3, "cmd_timeout = \"10s\""),
            (format!("{door}target = gw.example.org\n"), 3, "target = \"gw.example.org\": expected an IPv4 or IPv6 address"),
            (format!("{door}sequence = 1,2\n"), 3, "sequence given twice (first on line 2"),
            (format!("{door}command = a\nstart_command = b\n"), 4, "start_command given twice (first on line 3; Start_Command"),
            (format!("{door}command = /sbin/x %IPADDR%\n"), 3, "unknown placeholder %IPADDR%"),
            (format!("{door}command = /sbin/x %ip%\n"), 3, "must be written in capitals: %IP%"),
            (format!("{door}command = /sbin/x --dport %PORT%\n"), 3, "%PORT% and %PROTO% exist only in SPA doors"),
            (format!("{door}stop_command = /sbin/x -p %PROTO%\n"), 3, "Stop_Command = \"/sbin/x -p %PROTO%\": %PORT%"),
            (format!("{door}command = /bin/echo 'unterminated\n"), 3, "unterminated ' quote"),
            (format!("{door}sequence\n"), 3, "sequence needs a value"),
            (format!("{door}logfile = /x\n"), 3, "logfile belongs in [options], not in door [d]"),
            ("[options]\nsequence = 1,2\n".into(), 2, "sequence is a door directive"),
            ("[options]\nbogus\n".into(), 2, "unknown directive \"bogus\" in [options] (expected \"Directive = value\")"),
            ("[options]\n= 5\n".into(), 2, "missing directive name"),
            ("[Options]\nlogfile = /x\n".into(), 2, "logfile belongs in [options], not in door [Options]"),
            ("[d]\nseq_timeout = 5\n".into(), 1, "door [d] has an empty knock sequence"),
            ("[d]\ncommand = /bin/true\n".into(), 1, "door [d] has neither a knock sequence"),
            (format!("{door}one_time_sequences = /etc/x\n"), 3, "both Sequence and One_Time_Sequences"),
            (format!("{door}keys = {ALICE}\n"), 1, "door [d] mixes knock-sequence directives (Sequence, line 2) and SPA directives (Keys, line 3)"),
            ("[s]\nallow_ports = 22\nstart_command = /bin/true\n".into(), 1, "SPA door [s] has no Keys, KeyFile or PublicKeys"),
            (format!("[s]\nkeys = {ALICE}\nstart_command = /bin/true\n"), 1, "SPA door [s] has no Allow_Ports"),
            (spa_head.clone(), 1, "SPA door [s] has no Start_Command: nothing to open"),
            (format!("{spa_head}start_command =\n"), 1, "only empty start commands"),
            (format!("{spa_head}start_command = /bin/true\ncmd_timeout = 60\nmax_timeout = 10\n"), 6, "Max_Timeout = 10 is less than Cmd_Timeout = 60"),
            (format!("{spa_head}start_command = /bin/true\nmax_timeout = 10\n"), 5, "less than Cmd_Timeout = 30"),
            (format!("[s]\nkeys = {ALICE}\nallow_ports = 22/tcp, 0\n"), 3, "allow_ports = \"22/tcp, 0\": bad element \"0\""),
            (format!("[s]\nkeys = {ALICE}\nallow_ports = 22,\n"), 3, "element 2 is empty"),
            (format!("[s]\nkeys = {ALICE}\nallow_nat = maybe\n"), 3, "allow_nat = \"maybe\": expected yes or no"),
            ("[s]\nkeys = alice:notbase64!!\n".into(), 2, "keys: entry 1 (key \"alice\"): the secret is not valid base64"),
            ("[s]\nkeys = alice:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==\n".into(), 2, "the secret is 31 bytes, expected 32"),
            (format!("[s]\nkeys = {ALICE}, bad name:{ALICE_SECRET}\n"), 2, "entry 2 (key \"bad name\"): invalid key name"),
            (format!("[s]\nkeys = {ALICE}, {ALICE_SECRET}\n"), 2, "entry 2 is not NAME:BASE64"),
            (format!("[s]\nkeys = {ALICE},{ALICE}\nallow_ports = 22\ncommand = /bin/true\n"), 2, "key \"alice\" is listed twice in door [s]"),
            ("[options]\nspaport = 0\n".into(), 2, "spaport = \"0\": port must be a number from 1 to 65535"),
            ("[options]\nSpaWindow = 3601\n".into(), 2, "SpaWindow = \"3601\": expected a whole number of seconds from 1 to 3600"),
            ("[options]\nCapture = bpf\n".into(), 2, "Capture = \"bpf\": expected pcap or udp"),
            ("[options]\nReplayCacheSize = 10\n".into(), 2, "ReplayCacheSize = \"10\": expected a whole number of entries from 64"),
            ("[options]\nMaxGrants = 0\n".into(), 2, "MaxGrants = \"0\": expected a whole number of grants from 1 to 1048576"),
            (format!("[s]\nkeys = {ALICE}\nallow_ports = 22\nmax_grants = many\n"), 4, "max_grants = \"many\": expected a whole number of grants from 1"),
            ("[k]\nsequence = 1,2\ncommand = /bin/true\nadmit_prefix = 33, 64\n".into(), 4, "admit_prefix = \"33, 64\": expected two prefix lengths"),
            ("[k]\nsequence = 1,2\ncommand = /bin/true\nadmit_prefix = 24\n".into(), 4, "expected two prefix lengths, IPv4 then IPv6"),
            ("[options]\nStateDir = var/lib/x\n".into(), 2, "StateDir = \"var/lib/x\": expected an absolute directory path"),
            ("[options]\nServerName = a,,b\n".into(), 2, "ServerName = \"a,,b\": name 2 is empty"),
            ("[options]\nInterface = eth0 eth1\n".into(), 2, "Interface = \"eth0 eth1\": expected an interface name"),
            ("[options]\nUser = 0\n".into(), 2, "User = \"0\": expected a user name"),
            ("[options]\nUser = knock spa\n".into(), 2, "User = \"knock spa\": expected a user name"),
            ("[options]\nUser = -x\n".into(), 2, "User = \"-x\": expected a user name"),
            ("[options]\nUseSyslog = sometimes\n".into(), 2, "UseSyslog = \"sometimes\": expected yes or no"),
            ("[options]\nUseSyslog\nUseSyslog\n".into(), 3, "UseSyslog given twice"),
            ("[options]\nLogFile =\n".into(), 2, "LogFile is empty"),
        ];
        assert!(cases.len() >= 20);
        for (text, line, phrase) in &cases {
            let e = errs(text);
            assert!(
                e.iter()
                    .any(|e| e.line == *line && e.message.contains(phrase)),
                "input {text:?}: expected line {line} with {phrase:?}, got {e:#?}"
            );
            for e in &e {
                assert!(!e.message.contains(ALICE_SECRET), "secret in {e}");
                assert!(!e.to_string().contains(ALICE_SECRET));
            }
        }
    }

    /// A `NAME:BASE64` pasted without `Keys =` reads as a directive named `NAME:BASE64` (its
    /// padding `=` splits the line): the messages about it must not show it.
    #[test]
    fn a_key_pasted_without_keys_is_not_shown() {
        const GOOD: &str = "[openSSH]\n    Sequence = 1,2\n    Command = /bin/true\n";
        let unpadded = ALICE_SECRET.trim_end_matches('=');
        for text in [
            format!("{ALICE}\n{GOOD}"),
            format!("[openSSH]\n    {ALICE}\n    Sequence = 1,2\n    Command = /bin/true\n"),
            format!("[options]\n    {ALICE}\n{GOOD}"),
            format!("{GOOD}    = {ALICE}\n"),
            format!("{}\n{GOOD}", ALICE.trim_end_matches('=')),
        ] {
            let e = errs(&text);
            for e in &e {
                assert!(!e.message.contains(unpadded), "secret in {e}");
            }
            assert!(
                e.iter().any(|e| e.message.contains("may hold a key")),
                "{text:?}: {e:#?}"
            );
        }
    }

    #[test]
    fn every_error_is_collected_in_line_order() {
        let text = "[options]\nbogus = 1\n[d]\nsequence = 0\nseq_timeout = x\ntcpflags = nope\n\
                    [d]\n[e]\nsequence = 5,4\nmystery = 1\n";
        let e = errs(text);
        let lines: Vec<usize> = e.iter().map(|e| e.line).collect();
        assert_eq!(lines, [2, 4, 5, 6, 7, 10], "{e:#?}");
        assert_eq!(
            e[0].to_string(),
            "line 2: unknown directive \"bogus\" in [options]"
        );
        // No follow-up "empty sequence" error for a door whose sequence was malformed.
        assert!(!e.iter().any(|e| e.message.contains("empty knock sequence")));
    }

    #[test]
    fn same_key_across_doors() {
        let door = |name: &str, key: &str, port: u16| {
            format!("[{name}]\nkeys = {key}\nallow_ports = {port}\ncommand = /bin/true\nstop_command = /bin/true\n")
        };
        // The same key in two doors is fine.
        let c = ok(&(door("a", ALICE, 22) + &door("b", ALICE, 80)));
        assert_eq!(c.doors.len(), 2);
        // One name, two secrets.
        let other = format!("alice:{}", &BOB[4..]);
        let e = errs(&(door("a", ALICE, 22) + &door("b", &other, 80)));
        assert!(
            e.iter()
                .any(|e| e.line == 7 && e.message.contains("different secret on line 2")),
            "{e:?}"
        );
        // One secret, two names.
        let alias = format!("alias:{ALICE_SECRET}");
        let e = errs(&(door("a", ALICE, 22) + &door("b", &alias, 80)));
        assert!(
            e.iter()
                .any(|e| e.line == 7 && e.message.contains("same secret as key \"alice\"")),
            "{e:?}"
        );
        assert!(e.iter().all(|e| !e.message.contains(ALICE_SECRET)));
    }

    #[test]
    fn warnings() {
        let c = ok(
            "[d]\nsequence = 2222:udp,3333:udp\ntcpflags = syn\ncmd_timeout = 5\n\
                    [e]\nsequence = 80\ncommand = /bin/true\n[f]\nsequence = 9,5,5,1\n\
                    command = /sbin/iptables -I INPUT -s %IP% -j ACCEPT; logger opened\n\
                    [g]\nsequence = 4,6,5\n\
                    command = /sbin/iptables -I INPUT -s %IP% -j ACCEPT # let them in\n",
        );
        let w: Vec<String> = c.warnings.iter().map(|w| w.to_string()).collect();
        let has = |line: usize, phrase: &str| {
            c.warnings
                .iter()
                .any(|w| w.line == line && w.message.contains(phrase))
        };
        assert!(has(2, "2222:udp,3333:udp is ascending"), "{w:#?}");
        assert!(
            has(3, "TCPFlags has no effect on a sequence of UDP ports"),
            "{w:#?}"
        );
        assert!(
            has(4, "Cmd_Timeout has no effect without a Stop_Command"),
            "{w:#?}"
        );
        assert!(
            has(1, "no Start_Command: a completed knock is only logged"),
            "{w:#?}"
        );
        assert!(has(6, "single port"), "{w:#?}");
        assert!(has(9, "repeats 5/tcp twice in a row"), "{w:#?}");
        assert!(
            has(10, "contains \"ACCEPT;\", which a shell would interpret"),
            "{w:#?}"
        );
        assert!(
            has(
                13,
                "command ends in the comment \"# let them in\", which is dropped, as knockd's \
                 shell dropped it"
            ),
            "{w:#?}"
        );
        assert_eq!(
            argv(start(c.door("g").expect("door")), v4(10, 0, 0, 1), None),
            "/sbin/iptables | -I | INPUT | -s | 10.0.0.1 | -j | ACCEPT"
        );
        assert_eq!(c.door("g").map(|d| d.start_lines), Some((Some(13), None)));
        // Sorted by line.
        assert!(c.warnings.windows(2).all(|p| p[0].line <= p[1].line));
        assert!(ok("")
            .warnings
            .iter()
            .any(|w| w.message.contains("no doors")));
        // SPA door without stop command, and a _6 start without a _6 stop.
        let c = ok(&format!(
            "[s]\nkeys = {ALICE}\nallow_ports = 22,22/tcp\nstart_command = /bin/true\n\
             start_command_6 = /bin/true 6\n"
        ));
        let has = |line: usize, phrase: &str| {
            c.warnings
                .iter()
                .any(|w| w.line == line && w.message.contains(phrase))
        };
        assert!(has(1, "no Stop_Command"), "{:#?}", c.warnings);
        assert!(has(3, "lists a port more than once"), "{:#?}", c.warnings);
        assert_eq!(
            c.door("s").and_then(Door::spa).map(|s| s.allow_ports.len()),
            Some(1)
        );
        let c = ok(&format!(
            "[s]\nkeys = {ALICE}\nallow_ports = 22\nstart_command = /bin/true\n\
             start_command_6 = /bin/true 6\nstop_command = /bin/false\n"
        ));
        assert!(c
            .warnings
            .iter()
            .any(|w| w.message.contains("Start_Command_6 but no Stop_Command_6")));
    }

    #[test]
    fn tcp_flags() {
        let f: TcpFlags = "syn,!ack".parse().expect("parses");
        assert!(f.matches(TcpFlags::SYN));
        assert!(f.matches(TcpFlags::SYN | TcpFlags::PSH));
        assert!(!f.matches(TcpFlags::SYN | TcpFlags::ACK));
        assert!(!f.matches(0));
        assert_eq!(f.to_string(), "syn,!ack");
        let all: TcpFlags = "FIN,syn,Rst,psh,ack,urg".parse().expect("parses");
        assert_eq!(all.must_set, 0x3f);
        assert_eq!(all.to_string(), "fin,syn,rst,psh,ack,urg");
        let none: TcpFlags = "!fin,!syn,!rst,!psh,!ack,!urg".parse().expect("parses");
        assert!(none.matches(0) && !none.matches(TcpFlags::URG));
        let empty = TcpFlags::default();
        assert!(empty.is_empty());
        assert!((0..=0xffu8).all(|b| empty.matches(b)));
        assert_eq!("".parse::<TcpFlags>(), Err(TcpFlagsError::Empty));
        assert_eq!(
            "syn,".parse::<TcpFlags>(),
            Err(TcpFlagsError::Unknown(String::new()))
        );
        assert_eq!(
            "ece".parse::<TcpFlags>(),
            Err(TcpFlagsError::Unknown("ece".into()))
        );
        assert_eq!(
            "!ack,ack".parse::<TcpFlags>(),
            Err(TcpFlagsError::Conflict("ack"))
        );
    }

    #[test]
    fn debug_output_hides_secrets() {
        let c = ok(&mixed());
        let dbg = format!("{c:?}");
        assert!(!dbg.contains(ALICE_SECRET));
        assert!(dbg.contains("alice"));
    }
}
