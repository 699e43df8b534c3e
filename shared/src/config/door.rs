//! Parser, phase 2: from raw doors to resolved ones, and the finished result.
//!
//! Role: once every line is read, check each raw door as a whole (its kind, the directives it
//! needs, timeouts, commands that fit its kind), build the resolved doors, check key names and
//! secrets across doors, and return the configuration or every error in line order.
//!
//! What it must not do: read lines or parse values (phase 1, in `raw`, did), or read a keys file
//! or a one-time sequences file (the server does, later).

use std::collections::HashMap;

use knock_keys::KeyId;

use crate::types::Proto;

use super::directives::{Directive, Scope};
use super::error::{quoted, ConfigError};
use super::model::{
    Config, Door, DoorKind, Firewall, SequenceDoor, SpaDoor, DEFAULT_CMD_TIMEOUT,
    DEFAULT_DOOR_MAX_GRANTS, DEFAULT_SEQ_TIMEOUT, DEFAULT_SPA_CMD_TIMEOUT,
};
use super::raw::{Parser, RawDoor};

impl Parser {
    pub(super) fn finish(mut self) -> Result<Config, Vec<ConfigError>> {
        let raw_doors = std::mem::take(&mut self.doors);
        let mut doors = Vec::new();
        for raw in raw_doors {
            if let Some(door) = self.resolve_door(raw) {
                doors.push(door);
            }
        }
        self.check_keys(&doors);
        if doors.is_empty() && self.errors.is_empty() {
            self.warn(
                1,
                "no doors are configured: nothing can be opened".to_owned(),
            );
        }
        if !self.errors.is_empty() {
            self.errors.sort_by_key(|e| e.line);
            return Err(self.errors);
        }
        self.warnings.sort_by_key(|w| w.line);
        Ok(Config {
            options: self.options.values,
            doors,
            warnings: self.warnings,
        })
    }

    fn resolve_door(&mut self, d: RawDoor) -> Option<Door> {
        let legacy = d.first_of(Scope::Legacy);
        let spa = d.first_of(Scope::Spa);
        let name = &d.name;
        if let (Some((ll, ln)), Some((sl, sn))) = (legacy, spa) {
            self.error(
                d.line,
                format!(
                    "door [{name}] mixes knock-sequence directives ({ln}, line {ll}) and SPA \
                     directives ({sn}, line {sl}): split it into two doors"
                ),
            );
            return None;
        }
        let is_spa = spa.is_some();
        if !is_spa {
            let commands = [
                (Directive::StartCommand, &d.start),
                (Directive::StartCommand6, &d.start6),
                (Directive::StopCommand, &d.stop),
                (Directive::StopCommand6, &d.stop6),
            ];
            for (dir, cmd) in commands {
                if let Some((line, t)) = cmd.as_ref().filter(|(_, t)| t.uses_port()) {
                    self.error(
                        *line,
                        format!(
                            "{} = {}: %PORT% and %PROTO% exist only in SPA doors (a knock door \
                             has no requested port)",
                            dir.name(),
                            quoted(t.as_str())
                        ),
                    );
                }
            }
        }
        let nft = self.options.values.firewall == Firewall::Nftables;
        let fits = self.check_firewall_fit(&d, is_spa);
        let has = |dir: Directive| d.seen.contains_key(&dir);
        let has_start = [&d.start, &d.start6]
            .iter()
            .any(|c| c.as_ref().is_some_and(|(_, t)| !t.is_empty()));
        let has_stop = d.stop.is_some() || d.stop6.is_some();

        if is_spa {
            if !has(Directive::Keys) && !has(Directive::KeyFile) && !has(Directive::PublicKeys) {
                self.error(
                    d.line,
                    format!(
                        "SPA door [{name}] has no Keys, KeyFile or PublicKeys: no client could \
                         open it"
                    ),
                );
            }
            if let (Some((line, _)), None) =
                (d.public_keys.first(), &self.options.values.server_key)
            {
                self.error(
                    *line,
                    "PublicKeys needs the server's own key: set `ServerKey = FILE` in \
                     [options] (`knock-spad server-key -o FILE` makes one)"
                        .to_owned(),
                );
            }
            if !has(Directive::AllowPorts) {
                self.error(
                    d.line,
                    format!(
                        "SPA door [{name}] has no Allow_Ports: say which ports its keys may \
                         open (e.g. Allow_Ports = 22/tcp)"
                    ),
                );
            }
            if nft {
                // What opens is a set element for the requested port.
            } else if !has_start && !has(Directive::StartCommand) && !has(Directive::StartCommand6)
            {
                self.error(
                    d.line,
                    format!("SPA door [{name}] has no Start_Command: nothing to open"),
                );
            } else if !has_start && !d.had_error {
                self.error(
                    d.line,
                    format!("SPA door [{name}] has only empty start commands: nothing to open"),
                );
            }
            let cmd_timeout = d.cmd_timeout.map_or(DEFAULT_SPA_CMD_TIMEOUT, |(_, n)| n);
            let max_timeout = match d.max_timeout {
                Some((line, m)) if m < cmd_timeout => {
                    self.error(
                        line,
                        format!(
                            "Max_Timeout = {m} is less than Cmd_Timeout = {cmd_timeout} (the \
                             default open time cannot exceed the cap)"
                        ),
                    );
                    m
                }
                Some((_, m)) => m,
                None => cmd_timeout,
            };
            if has_start && !has_stop {
                self.warn(
                    d.line,
                    format!(
                        "SPA door [{name}] has no Stop_Command: what it opens stays open after \
                         the open time"
                    ),
                );
            }
            if d.start6.is_some() && d.stop6.is_none() && d.stop.is_some() {
                self.warn(
                    d.line,
                    format!(
                        "door [{name}] has Start_Command_6 but no Stop_Command_6: IPv6 grants \
                         are closed with Stop_Command (knockd's fallback)"
                    ),
                );
            }
            if d.had_error || !fits {
                return None;
            }
            let allow_ports = d.allow_ports?;
            return Some(Door {
                name: d.name,
                line: d.line,
                kind: DoorKind::Spa(SpaDoor {
                    keys: d.keys,
                    key_files: d.key_files,
                    public_keys: d.public_keys,
                    allow_ports,
                    allow_nat: d.allow_nat.unwrap_or(false),
                    max_timeout,
                }),
                start_lines: (line_of(&d.start), line_of(&d.start6)),
                start_command: d.start.map(|(_, t)| t),
                start_command_6: d.start6.map(|(_, t)| t),
                stop_command: d.stop.map(|(_, t)| t),
                stop_command_6: d.stop6.map(|(_, t)| t),
                cmd_timeout,
                max_grants: d.max_grants.unwrap_or(DEFAULT_DOOR_MAX_GRANTS),
                admit_prefix: d.admit_prefix,
            });
        }

        // A knock-sequence door (or a door with neither).
        match (has(Directive::Sequence), has(Directive::OneTimeSequences)) {
            (true, true) => {
                let l = d
                    .seen
                    .get(&Directive::OneTimeSequences)
                    .copied()
                    .unwrap_or(d.line);
                self.error(
                    l,
                    format!(
                        "door [{name}] has both Sequence and One_Time_Sequences: use one of them"
                    ),
                );
            }
            (false, false) if legacy.is_some() => {
                self.error(
                    d.line,
                    format!(
                        "door [{name}] has an empty knock sequence: add Sequence = ... or \
                         One_Time_Sequences = /path"
                    ),
                );
            }
            (false, false) => {
                self.error(
                    d.line,
                    format!(
                        "door [{name}] has neither a knock sequence (Sequence, \
                         One_Time_Sequences) nor SPA keys (Keys, KeyFile)"
                    ),
                );
            }
            _ => {}
        }
        if let Some((line, _)) = d.cmd_timeout.filter(|_| !nft) {
            if !has_stop {
                self.warn(
                    line,
                    format!("door [{name}]: Cmd_Timeout has no effect without a Stop_Command"),
                );
            }
        }
        if d.start.is_none() && d.start6.is_none() && !nft {
            self.warn(
                d.line,
                format!("door [{name}] has no Start_Command: a completed knock is only logged"),
            );
        }
        if let (Some((line, flags)), Some((_, seq))) = (&d.tcp_flags, &d.sequence) {
            if !flags.is_empty() && seq.iter().all(|p| p.proto == Proto::Udp) {
                self.warn(
                    *line,
                    format!("door [{name}]: TCPFlags has no effect on a sequence of UDP ports"),
                );
            }
        }
        if d.had_error || !fits {
            return None;
        }
        let (sequence, one_time_file) = match (d.sequence, d.one_time) {
            (Some((_, s)), None) => (s, None),
            (None, Some((line, path))) => (Vec::new(), Some((path, line))),
            _ => return None,
        };
        Some(Door {
            name: d.name,
            line: d.line,
            kind: DoorKind::Sequence(SequenceDoor {
                sequence,
                one_time_file,
                seq_timeout: d.seq_timeout.unwrap_or(DEFAULT_SEQ_TIMEOUT),
                tcp_flags: d.tcp_flags.map(|(_, f)| f).unwrap_or_default(),
                target: d.target,
                open_ports: d.open_ports.map(|(_, p)| p).unwrap_or_default(),
            }),
            start_lines: (line_of(&d.start), line_of(&d.start6)),
            start_command: d.start.map(|(_, t)| t),
            start_command_6: d.start6.map(|(_, t)| t),
            stop_command: d.stop.map(|(_, t)| t),
            stop_command_6: d.stop6.map(|(_, t)| t),
            cmd_timeout: d.cmd_timeout.map_or(DEFAULT_CMD_TIMEOUT, |(_, n)| n),
            max_grants: d.max_grants.unwrap_or(DEFAULT_DOOR_MAX_GRANTS),
            admit_prefix: d.admit_prefix,
        })
    }

    /// Whether door `d` fits the `Firewall` backend: with nftables a door names ports, not
    /// commands (a knock door its `Open_Ports`, an SPA door its `Allow_Ports`); with command
    /// templates `Open_Ports` means nothing. Each misfit is an error at its line.
    fn check_firewall_fit(&mut self, d: &RawDoor, is_spa: bool) -> bool {
        let name = &d.name;
        let mut fits = true;
        if self.options.values.firewall == Firewall::Commands {
            if let Some(&line) = d.seen.get(&Directive::OpenPorts) {
                self.error(
                    line,
                    "Open_Ports needs Firewall = nftables in [options]: with command templates \
                     the start command says what a door opens"
                        .to_owned(),
                );
                fits = false;
            }
            return fits;
        }
        let commands = [
            Directive::StartCommand,
            Directive::StartCommand6,
            Directive::StopCommand,
            Directive::StopCommand6,
        ];
        for dir in commands {
            if let Some(&line) = d.seen.get(&dir) {
                let instead = if is_spa {
                    "an SPA door opens what the request names within Allow_Ports"
                } else {
                    "a knock door names what it opens with Open_Ports"
                };
                self.error(
                    line,
                    format!(
                        "{}: with Firewall = nftables a door runs no commands ({instead}); \
                         remove it, or set Firewall = commands",
                        dir.name()
                    ),
                );
                fits = false;
            }
        }
        if let Some(&line) = d.seen.get(&Directive::AdmitPrefix) {
            self.error(
                line,
                "Admit_Prefix is not available with Firewall = nftables: the table's sets \
                 admit single addresses"
                    .to_owned(),
            );
            fits = false;
        }
        if !is_spa && !d.seen.contains_key(&Directive::OpenPorts) {
            self.error(
                d.line,
                format!(
                    "door [{name}] has no Open_Ports: with Firewall = nftables a knock door \
                     names what it opens (e.g. Open_Ports = 22/tcp)"
                ),
            );
            fits = false;
        }
        fits
    }

    /// One name, one secret: across all doors a key name maps to one key id and back, so the
    /// server's key-id lookup is unambiguous and log lines name the right key.
    fn check_keys(&mut self, doors: &[Door]) {
        let mut by_name: HashMap<&str, (KeyId, usize)> = HashMap::new();
        let mut by_id: HashMap<KeyId, (&str, usize)> = HashMap::new();
        let mut problems = Vec::new();
        for door in doors {
            let Some(spa) = door.spa() else { continue };
            let mut in_door: HashMap<&str, usize> = HashMap::new();
            for (line, key) in &spa.keys {
                let id = key.derive().id();
                let name = key.name();
                if let Some(first) = in_door.insert(name, *line) {
                    problems.push((
                        *line,
                        format!(
                            "Keys: key {} is listed twice in door [{}] (first on line {first})",
                            quoted(name),
                            door.name
                        ),
                    ));
                    continue;
                }
                match by_name.get(name) {
                    Some(&(other, first)) if other != id => problems.push((
                        *line,
                        format!(
                            "Keys: key {} is defined with a different secret on line {first}: \
                             a key name must mean one secret",
                            quoted(name)
                        ),
                    )),
                    Some(_) => {}
                    None => {
                        by_name.insert(name, (id, *line));
                    }
                }
                match by_id.get(&id) {
                    Some(&(other, first)) if other != name => problems.push((
                        *line,
                        format!(
                            "Keys: key {} has the same secret as key {} on line {first}: \
                             a secret must have one name",
                            quoted(name),
                            quoted(other)
                        ),
                    )),
                    Some(_) => {}
                    None => {
                        by_id.insert(id, (name, *line));
                    }
                }
            }
        }
        for (line, message) in problems {
            self.error(line, message);
        }
    }
}

/// The line of a directive's value, if it was given.
fn line_of<T>(value: &Option<(usize, T)>) -> Option<usize> {
    value.as_ref().map(|(line, _)| *line)
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{tcp, ALICE};
    use super::super::{parse_str, ConfigError, Firewall};
    use crate::types::{PortSpec, Proto};

    const NFT: &str = "[options]\n    Firewall = nftables\n\n";

    fn knock(body: &str) -> String {
        format!("[openSSH]\n    Sequence = 7000,8000,9000\n{body}")
    }

    fn spa(body: &str) -> String {
        format!("[spa]\n    Keys = {ALICE}\n    Allow_Ports = 22/tcp, 53/udp\n{body}")
    }

    fn errs(text: &str) -> Vec<ConfigError> {
        match parse_str(text) {
            Ok(c) => panic!("parsed but should not: {c:#?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn firewall_defaults_to_commands_and_reads_nftables() {
        let c = parse_str(&knock("    Command = /bin/true %IP%\n")).expect("parses");
        assert_eq!(c.options.firewall, Firewall::Commands);
        let text = format!(
            "{NFT}{}\n{}",
            knock("    Open_Ports = 22/tcp, 80, 22/tcp\n    Cmd_Timeout = 30\n"),
            spa("")
        );
        let c = parse_str(&text).expect("parses");
        assert_eq!(c.options.firewall, Firewall::Nftables);
        let d = c.door("openSSH").expect("door");
        let s = d.sequence().expect("knock door");
        assert_eq!(s.open_ports, tcp(&[22, 80]), "duplicates dropped");
        assert_eq!(d.cmd_timeout, 30);
        assert!(d.start_command.is_none());
        assert!(
            c.warnings
                .iter()
                .any(|w| w.message.contains("more than once")),
            "{:?}",
            c.warnings
        );
        assert!(
            !c.warnings
                .iter()
                .any(|w| w.message.contains("Start_Command")),
            "no command warnings in nftables mode: {:?}",
            c.warnings
        );
        let spa = c.door("spa").expect("door").spa().expect("spa");
        let udp = PortSpec::new(Proto::Udp, 53).expect("port");
        assert_eq!(spa.allow_ports, vec![tcp(&[22])[0], udp]);
    }

    #[test]
    fn a_bad_firewall_value_is_an_error_at_its_line() {
        let e = errs("[options]\n    Firewall = pf\n");
        assert_eq!(e[0].line, 2);
        assert!(
            e[0].message.contains("expected commands or nftables"),
            "{e:?}"
        );
    }

    #[test]
    fn nftables_doors_name_ports_not_commands() {
        // A command in either kind of door, at its line.
        let e = errs(&format!(
            "{NFT}{}",
            knock("    Open_Ports = 22\n    Start_Command = /bin/true\n")
        ));
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].line, 7);
        assert!(e[0]
            .message
            .contains("Start_Command: with Firewall = nftables"));
        assert!(e[0].message.contains("Open_Ports"), "{e:?}");
        let e = errs(&format!("{NFT}{}", spa("    Stop_Command = /bin/true\n")));
        assert_eq!(e[0].line, 7);
        assert!(e[0].message.contains("Allow_Ports"), "{e:?}");
        // A knock door must say what it opens.
        let e = errs(&format!("{NFT}{}", knock("")));
        assert_eq!(e[0].line, 4);
        assert!(e[0].message.contains("has no Open_Ports"), "{e:?}");
        // Networks are not supported by the sets.
        let e = errs(&format!("{NFT}{}", spa("    Admit_Prefix = 24, 64\n")));
        assert!(
            e[0].message.contains("Admit_Prefix is not available"),
            "{e:?}"
        );
        // Open_Ports means nothing to command templates.
        let e = errs(&knock("    Command = /bin/true\n    Open_Ports = 22\n"));
        assert_eq!(e[0].line, 4);
        assert!(
            e[0].message
                .contains("Open_Ports needs Firewall = nftables"),
            "{e:?}"
        );
        let e = errs(&format!("{NFT}{}", knock("    Open_Ports = 22/icmp\n")));
        assert!(e[0].message.contains("Open_Ports = \"22/icmp\""), "{e:?}");
    }
}
