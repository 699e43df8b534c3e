//! `knock-spad status --format prometheus`: a status snapshot in Prometheus' text exposition
//! format 0.0.4, for node_exporter's textfile collector (docs/OPERATIONS.md, "Metrics").
//!
//! Every family has its `# HELP` and `# TYPE` lines before its samples; names start with
//! `knock_spad_`, counters end in `_total`. Label values (door and key names come from the
//! configuration) are escaped as the format wants: backslash, double quote, newline. A
//! daemon that is not running (no status file, its process gone, or its file stale) gives
//! `knock_spad_up 0` and nothing else: the textfile collector serves what the file says as
//! current, and the counters of a dead or hung daemon are not.

use std::collections::BTreeSet;
use std::fmt::Write;

use crate::store::status::{self, Counters, GrantView, Snapshot};

/// What a family is.
#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
}

/// The exposition being written: each family is opened once, then its samples follow.
#[derive(Default)]
struct Exposition {
    out: String,
    /// The series written so far (name and labels), so that none appears twice.
    series: BTreeSet<String>,
}

impl Exposition {
    /// Starts family `name` (with the `knock_spad_` prefix).
    fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        let _ = writeln!(self.out, "# HELP knock_spad_{name} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE knock_spad_{name} {kind}");
    }

    /// One sample of the family just started; a series already written is skipped.
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: u64) {
        let mut series = format!("knock_spad_{name}");
        if !labels.is_empty() {
            let pairs: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", escape_label(v)))
                .collect();
            let _ = write!(series, "{{{}}}", pairs.join(","));
        }
        if self.series.insert(series.clone()) {
            let _ = writeln!(self.out, "{series} {value}");
        }
    }

    /// A family with one sample and no labels.
    fn single(&mut self, name: &str, kind: Kind, help: &str, value: u64) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }
}

/// A label value as the format writes it between double quotes.
pub fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A `# HELP` text: backslash and newline escaped.
fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

/// The metrics: of `snap` when its daemon runs, else only `knock_spad_up 0`.
pub fn render(running: Option<&Snapshot>) -> String {
    let mut e = Exposition::default();
    e.single(
        "up",
        Kind::Gauge,
        "Whether knock-spad runs: its process is alive and its status file fresh (0: no other \
         knock_spad_ metric is given).",
        u64::from(running.is_some()),
    );
    let Some(snap) = running else {
        return e.out;
    };
    e.family(
        "build_info",
        Kind::Gauge,
        "The running daemon's version, as a label; always 1.",
    );
    e.sample("build_info", &[("version", &snap.version)], 1);
    e.single(
        "start_time_seconds",
        Kind::Gauge,
        "When the daemon started, in Unix seconds.",
        snap.started,
    );
    e.single(
        "config_doors",
        Kind::Gauge,
        "Doors in the configuration in force.",
        snap.doors as u64,
    );
    e.single(
        "config_keys",
        Kind::Gauge,
        "SPA keys in the configuration in force.",
        snap.keys as u64,
    );
    reloads(&mut e, snap);
    counters(&mut e, &snap.counters);
    grants(&mut e, &snap.grants);
    e.out
}

fn reloads(e: &mut Exposition, snap: &Snapshot) {
    e.family(
        "reloads_total",
        Kind::Counter,
        "SIGHUP reloads: done (in force everywhere) or refused (the old configuration stayed).",
    );
    e.sample("reloads_total", &[("result", "done")], snap.reloads);
    e.sample(
        "reloads_total",
        &[("result", "refused")],
        snap.counters.reloads_refused,
    );
    if let Some(t) = snap.last_reload {
        e.single(
            "last_reload_timestamp_seconds",
            Kind::Gauge,
            "When the last reload took effect, in Unix seconds (absent before the first).",
            t,
        );
    }
    if let Some(t) = snap.counters.last_refused_reload {
        e.single(
            "last_refused_reload_timestamp_seconds",
            Kind::Gauge,
            "When the last reload was refused, in Unix seconds (absent before the first).",
            t,
        );
    }
}

fn counters(e: &mut Exposition, c: &Counters) {
    e.single(
        "packets_total",
        Kind::Counter,
        "Packets the daemon saw (captured or received).",
        c.packets,
    );
    e.single(
        "spa_accepted_total",
        Kind::Counter,
        "SPA packets accepted.",
        c.accepted,
    );
    e.single(
        "knocks_total",
        Kind::Counter,
        "Knock sequences completed.",
        c.knocks,
    );
    e.family(
        "spa_rejected_total",
        Kind::Counter,
        "SPA packets refused, by reason.",
    );
    for (reason, _) in status::refusal_reasons() {
        let n = c.rejected.get(&reason).copied().unwrap_or(0);
        e.sample("spa_rejected_total", &[("reason", &reason)], n);
    }
    // A reason only a newer daemon knows still shows.
    for (reason, n) in &c.rejected {
        e.sample("spa_rejected_total", &[("reason", reason)], *n);
    }
    e.single(
        "knocks_evicted_total",
        Kind::Counter,
        "Knock attempts evicted to make room (a flood).",
        c.evicted,
    );
    e.single(
        "dropped_total",
        Kind::Counter,
        "Opens and closes dropped because the grant keeper's queue or open lane was full.",
        c.dropped,
    );
    e.family(
        "commands_failed_total",
        Kind::Counter,
        "Firewall actions that failed, each retry counted: start commands and nftables \
         element puts (kind start), stop commands and element deletes (kind stop).",
    );
    e.sample(
        "commands_failed_total",
        &[("kind", "start")],
        c.start_failed,
    );
    e.sample("commands_failed_total", &[("kind", "stop")], c.stop_failed);
    e.single(
        "commands_timed_out_total",
        Kind::Counter,
        "Firewall commands killed at their time limit.",
        c.timed_out,
    );
}

fn grants(e: &mut Exposition, grants: &[GrantView]) {
    e.single(
        "grants_open",
        Kind::Gauge,
        "Grants open (those opening and closing included).",
        grants.len() as u64,
    );
    e.family(
        "grant_expiry_timestamp_seconds",
        Kind::Gauge,
        "When each open grant closes, in Unix seconds (key and port are empty for a knock \
         door).",
    );
    for g in grants {
        let addr = match g.prefix {
            Some(len) => format!("{}/{len}", g.addr),
            None => g.addr.to_string(),
        };
        e.sample(
            "grant_expiry_timestamp_seconds",
            &[
                ("door", &g.door),
                ("key", &g.key),
                ("addr", &addr),
                ("port", &g.port),
            ],
            g.expires,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::status::tests::snap;

    const DOWN: &str = "# HELP knock_spad_up Whether knock-spad runs: its process is alive and \
                        its status file fresh (0: no other knock_spad_ metric is given).\n\
                        # TYPE knock_spad_up gauge\n\
                        knock_spad_up 0\n";

    #[test]
    fn a_daemon_not_running_is_up_0_and_nothing_else() {
        assert_eq!(render(None), DOWN);
    }

    #[test]
    fn golden_output_of_a_fixed_snapshot() {
        let mut s = snap(1, 1_700_000_100);
        s.reloads = 3;
        s.last_reload = Some(1_700_000_050);
        s.counters = Counters {
            packets: 40,
            accepted: 7,
            knocks: 2,
            evicted: 1,
            dropped: 0,
            start_failed: 4,
            stop_failed: 5,
            timed_out: 1,
            reloads_refused: 2,
            last_refused_reload: Some(1_700_000_060),
            rejected: [("bad_hmac".to_owned(), 9)].into(),
        };
        s.grants.push(GrantView {
            door: "knock".into(),
            key: String::new(),
            addr: "198.51.100.0".parse().expect("ip"),
            prefix: Some(24),
            port: String::new(),
            opened: 1_700_000_090,
            expires: 1_700_000_120,
            nft: false,
        });
        // Every reason, zeros included (their list is the verifier's, so it is not spelled
        // out here).
        let rejected: String = status::refusal_reasons()
            .iter()
            .map(|(r, _)| {
                let n = if r == "bad_hmac" { 9 } else { 0 };
                format!("knock_spad_spa_rejected_total{{reason=\"{r}\"}} {n}\n")
            })
            .collect();
        assert!(rejected.contains("reason=\"bad_hmac\"} 9\n"), "{rejected}");
        let want = format!(
            "{}\
# HELP knock_spad_build_info The running daemon's version, as a label; always 1.
# TYPE knock_spad_build_info gauge
knock_spad_build_info{{version=\"0.1.0\"}} 1
# HELP knock_spad_start_time_seconds When the daemon started, in Unix seconds.
# TYPE knock_spad_start_time_seconds gauge
knock_spad_start_time_seconds 1700000000
# HELP knock_spad_config_doors Doors in the configuration in force.
# TYPE knock_spad_config_doors gauge
knock_spad_config_doors 1
# HELP knock_spad_config_keys SPA keys in the configuration in force.
# TYPE knock_spad_config_keys gauge
knock_spad_config_keys 2
# HELP knock_spad_reloads_total SIGHUP reloads: done (in force everywhere) or refused (the old configuration stayed).
# TYPE knock_spad_reloads_total counter
knock_spad_reloads_total{{result=\"done\"}} 3
knock_spad_reloads_total{{result=\"refused\"}} 2
# HELP knock_spad_last_reload_timestamp_seconds When the last reload took effect, in Unix seconds (absent before the first).
# TYPE knock_spad_last_reload_timestamp_seconds gauge
knock_spad_last_reload_timestamp_seconds 1700000050
# HELP knock_spad_last_refused_reload_timestamp_seconds When the last reload was refused, in Unix seconds (absent before the first).
# TYPE knock_spad_last_refused_reload_timestamp_seconds gauge
knock_spad_last_refused_reload_timestamp_seconds 1700000060
# HELP knock_spad_packets_total Packets the daemon saw (captured or received).
# TYPE knock_spad_packets_total counter
knock_spad_packets_total 40
# HELP knock_spad_spa_accepted_total SPA packets accepted.
# TYPE knock_spad_spa_accepted_total counter
knock_spad_spa_accepted_total 7
# HELP knock_spad_knocks_total Knock sequences completed.
# TYPE knock_spad_knocks_total counter
knock_spad_knocks_total 2
# HELP knock_spad_spa_rejected_total SPA packets refused, by reason.
# TYPE knock_spad_spa_rejected_total counter
{rejected}\
# HELP knock_spad_knocks_evicted_total Knock attempts evicted to make room (a flood).
# TYPE knock_spad_knocks_evicted_total counter
knock_spad_knocks_evicted_total 1
# HELP knock_spad_dropped_total Opens and closes dropped because the grant keeper's queue or open lane was full.
# TYPE knock_spad_dropped_total counter
knock_spad_dropped_total 0
# HELP knock_spad_commands_failed_total Firewall actions that failed, each retry counted: start commands and nftables element puts (kind start), stop commands and element deletes (kind stop).
# TYPE knock_spad_commands_failed_total counter
knock_spad_commands_failed_total{{kind=\"start\"}} 4
knock_spad_commands_failed_total{{kind=\"stop\"}} 5
# HELP knock_spad_commands_timed_out_total Firewall commands killed at their time limit.
# TYPE knock_spad_commands_timed_out_total counter
knock_spad_commands_timed_out_total 1
# HELP knock_spad_grants_open Grants open (those opening and closing included).
# TYPE knock_spad_grants_open gauge
knock_spad_grants_open 2
# HELP knock_spad_grant_expiry_timestamp_seconds When each open grant closes, in Unix seconds (key and port are empty for a knock door).
# TYPE knock_spad_grant_expiry_timestamp_seconds gauge
knock_spad_grant_expiry_timestamp_seconds{{door=\"ssh\",key=\"alice\",addr=\"192.0.2.7\",port=\"22/tcp\"}} 1700000125
knock_spad_grant_expiry_timestamp_seconds{{door=\"knock\",key=\"\",addr=\"198.51.100.0/24\",port=\"\"}} 1700000120
",
            DOWN.replace("up 0", "up 1")
        );
        assert_eq!(render(Some(&s)), want);
    }

    #[test]
    fn label_values_are_escaped_and_series_unique() {
        assert_eq!(escape_label(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape_label("x\ny"), r"x\ny");
        assert_eq!(escape_help("a\\b\nc"), r"a\\b\nc");
        let mut s = snap(1, 1_700_000_100);
        // A door name may hold quotes and backslashes (a section header is `[anything]`);
        // a newline cannot come from the file, but the renderer does not rely on that.
        s.grants[0].door = "we\"ird\\door\nname".into();
        // The same series twice (impossible: one grant per door, address and port) is
        // written once, so the exposition stays valid.
        s.grants.push(s.grants[0].clone());
        let out = render(Some(&s));
        let line = r#"knock_spad_grant_expiry_timestamp_seconds{door="we\"ird\\door\nname",key="alice",addr="192.0.2.7",port="22/tcp"} 1700000125"#;
        assert_eq!(out.matches(line).count(), 1, "{out}");
        assert!(out.ends_with(&format!("{line}\n")), "{out}");
        // An unknown reason (from a newer daemon) is shown once, after the known ones.
        s.counters.rejected.insert("from_the_future".into(), 3);
        s.counters.rejected.insert("bad_hmac".into(), 1);
        let out = render(Some(&s));
        assert_eq!(out.matches("reason=\"bad_hmac\"}").count(), 1, "{out}");
        assert!(out.contains("knock_spad_spa_rejected_total{reason=\"bad_hmac\"} 1\n"));
        assert!(out.contains("knock_spad_spa_rejected_total{reason=\"from_the_future\"} 3\n"));
    }
}
