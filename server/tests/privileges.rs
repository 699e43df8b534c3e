//! Least privilege in the daemon itself: once the capture is open it sets no_new_privs and
//! keeps only CAP_NET_ADMIN, and its firewall commands (iptables-nft, nft) still work; with
//! `User`, it runs as that user with CAP_NET_ADMIN ambient for its commands. Every firewall
//! command runs in a throw-away network namespace, never in the host's firewall.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use knock_shared::wire::Action;

const SERVER: &str = "privs-test.example";
const NET_ADMIN: u64 = 1 << 12;

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8")
}

/// `/proc/PID/status` field `name`, as written.
fn proc_field(pid: u32, name: &str) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .map(|v| v.trim().to_owned())
        .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status:\n{text}"))
}

fn proc_caps(pid: u32, name: &str) -> u64 {
    u64::from_str_radix(&proc_field(pid, name), 16).expect("hex capability set")
}

/// Starts the daemon in `ns` and waits until it says it runs (after the drop) and its pid is
/// the daemon's (`ip netns exec` execs it).
fn start_in(ns: &Netns, args: &[&str], log: &Path) -> Daemon {
    start_in_with(ns, &[], args, log)
}

/// [`start_in`], the daemon started by `wrapper` (a program and its arguments that exec it).
fn start_in_with(ns: &Netns, wrapper: &[&str], args: &[&str], log: &Path) -> Daemon {
    let mut argv = vec!["netns", "exec", ns.name()];
    argv.extend_from_slice(wrapper);
    argv.push(BIN);
    argv.extend_from_slice(args);
    let d = Daemon::start_program("ip", &argv, log);
    d.wait_for(Duration::from_secs(20), "the daemon to start", || {
        d.log().contains(" starting: ").then_some(())
    });
    let comm = std::fs::read_to_string(format!("/proc/{}/comm", d.pid())).unwrap_or_default();
    assert_eq!(comm.trim(), "knock-spad", "{}", d.log());
    d
}

fn rule_in(ns: &Netns, args: &[&str], wanted: &str) -> Option<()> {
    let out = ns.exec(args);
    stdout(&out).contains(wanted).then_some(())
}

/// `dir/knockd.conf`: a UDP-socket daemon on `port` with `options`, its state in `dir/state`,
/// the door `[ipt]` (alice's key, 22/tcp, open `ipt_timeout` seconds, iptables -I and -D),
/// then `more_doors`.
fn write_config(
    dir: &Path,
    port: u16,
    options: &str,
    ipt_timeout: u64,
    more_doors: &str,
) -> std::path::PathBuf {
    write_private(
        dir,
        "knockd.conf",
        &format!(
            "[options]\n    StateDir = {state}\n    ServerName = {SERVER}\n    SpaPort = {port}\n    \
             Capture = udp\n{options}\n\
             [ipt]\n    Keys = {alice}\n    Allow_Ports = 22/tcp\n    Cmd_Timeout = {ipt_timeout}\n    \
             Start_Command = /usr/sbin/iptables -I INPUT -s %IP% -p tcp --dport %PORT% -j ACCEPT\n    \
             Stop_Command = /usr/sbin/iptables -D INPUT -s %IP% -p tcp --dport %PORT% -j ACCEPT\n\n\
             {more_doors}",
            state = dir.join("state").display(),
            alice = key("alice", 1).to_inline().as_str(),
        ),
    )
}

#[test]
fn a_root_daemon_keeps_only_cap_net_admin_and_its_commands_still_work() {
    require_root_and(&["ip", "iptables", "nft"]);
    let ns = Netns::create().expect("ip netns add");
    for cmd in [
        &["nft", "add", "table", "inet", "ks"][..],
        &["nft", "add", "chain", "inet", "ks", "input"][..],
    ] {
        let out = ns.exec(cmd);
        assert!(out.status.success(), "{cmd:?}: {}", stderr(&out));
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_udp_port();
    let nft_door = format!(
        "[nft]\n    Keys = {bob}\n    Allow_Ports = 2222/tcp\n    Cmd_Timeout = 600\n    \
         Start_Command = /usr/sbin/nft add rule inet ks input ip saddr %IP% tcp dport %PORT% accept\n    \
         Stop_Command = /usr/sbin/nft flush chain inet ks input\n",
        bob = key("bob", 2).to_inline().as_str(),
    );
    let conf = write_config(dir.path(), port, "", 2, &nft_door);
    let d = start_in(&ns, &["-c", path(&conf)], &dir.path().join("daemon.log"));
    let pid = d.pid();
    assert_eq!(proc_field(pid, "NoNewPrivs"), "1");
    for set in ["CapEff", "CapPrm", "CapBnd"] {
        assert_eq!(proc_caps(pid, set), NET_ADMIN, "{set}");
    }
    assert_eq!(proc_caps(pid, "CapAmb"), 0);
    assert!(proc_field(pid, "Uid").starts_with("0\t"));
    assert!(
        d.log().contains(
            "privileges: no_new_privs set; running as uid 0; capabilities kept: CAP_NET_ADMIN;"
        ),
        "{}",
        d.log()
    );

    ns.send(
        port,
        &spa_packet(&key("alice", 1), SERVER, &["22/tcp"], Action::Open),
    );
    ns.send(
        port,
        &spa_packet(&key("bob", 2), SERVER, &["2222/tcp"], Action::Open),
    );
    let ipt = ["iptables", "-S", "INPUT"];
    let accept = "-A INPUT -s 127.0.0.1/32 -p tcp -m tcp --dport 22 -j ACCEPT";
    d.wait_for(Duration::from_secs(10), "iptables -I's rule", || {
        rule_in(&ns, &ipt, accept)
    });
    let nft = ["nft", "list", "chain", "inet", "ks", "input"];
    d.wait_for(Duration::from_secs(10), "nft's rule", || {
        rule_in(&ns, &nft, "ip saddr 127.0.0.1 tcp dport 2222 accept")
    });
    // Cmd_Timeout 2: iptables -D runs, from the daemon without CAP_NET_RAW.
    d.wait_for(Duration::from_secs(15), "iptables -D", || {
        (!stdout(&ns.exec(&ipt)).contains(accept)).then_some(())
    });
    assert!(!d.log().contains("failed"), "{}", d.log());
}

/// A system user made for one test and removed at its end, even when it fails.
struct SystemUser {
    name: String,
    uid: u32,
    gid: u32,
}

impl SystemUser {
    fn create() -> Self {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "knock-spa-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let out = Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
            ])
            .arg(&name)
            .output()
            .expect("useradd");
        assert!(out.status.success(), "useradd: {}", stderr(&out));
        // Removed at drop from here on, even if the lookup below fails.
        let mut user = Self {
            name,
            uid: 0,
            gid: 0,
        };
        let id = Command::new("id")
            .args(["-u", &user.name])
            .output()
            .expect("id");
        user.uid = stdout(&id).trim().parse().expect("a uid");
        let id = Command::new("id")
            .args(["-g", &user.name])
            .output()
            .expect("id");
        user.gid = stdout(&id).trim().parse().expect("a gid");
        user
    }

    fn chown(&self, p: &Path) {
        let st = Command::new("chown")
            .arg(format!("{}:", self.name))
            .arg(p)
            .status()
            .expect("chown");
        assert!(st.success());
    }
}

impl Drop for SystemUser {
    fn drop(&mut self) {
        let _ = Command::new("userdel").arg(&self.name).status();
    }
}

/// A directory the user can reach (mode 0711 above its files), a state directory, and the
/// configuration for one SPA door that inserts an iptables rule.
fn user_setup(user: &SystemUser, options: &str) -> (tempfile::TempDir, std::path::PathBuf, u16) {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).expect("chmod");
    let state = dir.path().join("state");
    std::fs::create_dir(&state).expect("mkdir");
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let port = free_udp_port();
    let conf = write_config(dir.path(), port, options, 600, "");
    user.chown(&conf);
    (dir, conf, port)
}

/// Alice opens 22/tcp; the door's `iptables -I` puts its rule into `ns`.
fn open_22_and_see_the_rule(d: &Daemon, ns: &Netns, port: u16) {
    ns.send(
        port,
        &spa_packet(&key("alice", 1), SERVER, &["22/tcp"], Action::Open),
    );
    d.wait_for(Duration::from_secs(10), "the rule in the namespace", || {
        rule_in(
            ns,
            &["iptables", "-S", "INPUT"],
            "-A INPUT -s 127.0.0.1/32 -p tcp -m tcp --dport 22 -j ACCEPT",
        )
    });
}

#[test]
fn a_dedicated_user_keeps_cap_net_admin_ambient_for_its_commands() {
    require_root_and(&["ip", "iptables", "useradd", "userdel", "chown"]);
    let user = SystemUser::create();
    let (dir, conf, port) = user_setup(&user, &format!("    User = {}\n", user.name));
    user.chown(&dir.path().join("state"));
    let ns = Netns::create().expect("ip netns add");
    let d = start_in(&ns, &["-c", path(&conf)], &dir.path().join("daemon.log"));
    let pid = d.pid();
    let uid = user.uid;
    assert_eq!(
        proc_field(pid, "Uid"),
        format!("{uid}\t{uid}\t{uid}\t{uid}")
    );
    assert_eq!(proc_field(pid, "NoNewPrivs"), "1");
    for set in ["CapEff", "CapPrm", "CapInh", "CapAmb", "CapBnd"] {
        assert_eq!(proc_caps(pid, set), NET_ADMIN, "{set}");
    }
    assert!(
        d.log()
            .contains(&format!("running as user {} (uid {uid}, gid ", user.name)),
        "{}",
        d.log()
    );

    open_22_and_see_the_rule(&d, &ns, port);
    // A reload reads the configuration as the user, as the start did.
    // SAFETY: kill() on the daemon's pid (our child) with a valid signal number.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGHUP);
    }
    d.wait_for(Duration::from_secs(10), "the reload", || {
        d.log()
            .contains("SIGHUP: configuration reloaded")
            .then_some(())
    });
    // Everything it wrote is the user's, so the next start (or this one's writes) works.
    use std::os::unix::fs::MetadataExt;
    d.wait_for(Duration::from_secs(10), "the grant on disk", || {
        std::fs::read_dir(dir.path().join("state"))
            .expect("state")
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("grants"))
            .then_some(())
    });
    for e in std::fs::read_dir(dir.path().join("state"))
        .expect("state")
        .flatten()
    {
        let m = e.metadata().expect("meta");
        assert_eq!(m.uid(), uid, "{:?}", e.file_name());
    }
}

#[test]
fn a_user_whose_state_directory_is_not_its_own_is_refused_at_start() {
    require_root_and(&["useradd", "userdel", "chown"]);
    let user = SystemUser::create();
    let (dir, conf, _) = user_setup(&user, "");
    let out = run(&["-c", path(&conf), "--user", &user.name]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let state = dir.path().join("state");
    assert!(
        stderr(&out).contains(&format!(
            "state directory {} is owned by uid 0, not by User {} (uid {}); run: chown -R {}: {}",
            state.display(),
            user.name,
            user.uid,
            user.name,
            state.display()
        )),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_daemon_started_as_its_user_with_ambient_capabilities_drops_cap_net_raw() {
    // As systemd starts it with User= and AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW
    // (setpriv here: no systemd in the tests).
    require_root_and(&["ip", "iptables", "useradd", "userdel", "chown", "setpriv"]);
    let user = SystemUser::create();
    let (dir, conf, port) = user_setup(&user, "");
    user.chown(&dir.path().join("state"));
    let ns = Netns::create().expect("ip netns add");
    let uid = user.uid.to_string();
    let gid = user.gid.to_string();
    let caps = "-all,+net_admin,+net_raw";
    let wrapper = [
        "setpriv",
        "--reuid",
        &uid,
        "--regid",
        &gid,
        "--clear-groups",
        "--inh-caps",
        caps,
        "--ambient-caps",
        caps,
        "--bounding-set",
        caps,
    ];
    let d = start_in_with(
        &ns,
        &wrapper,
        &["-c", path(&conf)],
        &dir.path().join("daemon.log"),
    );
    let pid = d.pid();
    assert_eq!(proc_field(pid, "NoNewPrivs"), "1");
    for set in ["CapEff", "CapPrm", "CapInh", "CapAmb"] {
        assert_eq!(proc_caps(pid, set), NET_ADMIN, "{set}");
    }
    assert!(
        d.log().contains(&format!(
            "running as uid {uid}; capabilities kept: CAP_NET_ADMIN (ambient, for the firewall \
             commands); every other capability dropped (the bounding set as given: no \
             CAP_SETPCAP to shrink it)"
        )),
        "{}",
        d.log()
    );
    open_22_and_see_the_rule(&d, &ns, port);
}

#[test]
fn a_pcap_daemon_still_captures_after_the_drop() {
    // The capture handle opened with CAP_NET_RAW keeps working without it.
    require_root_and(&["ip", "iptables"]);
    let ns = Netns::create().expect("ip netns add");
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_udp_port();
    let conf = write_config(dir.path(), port, "", 600, "");
    let d = start_in(
        &ns,
        &["-c", path(&conf), "--capture", "pcap", "-i", "lo"],
        &dir.path().join("daemon.log"),
    );
    assert!(d.log().contains("pcap ("), "{}", d.log());
    assert_eq!(proc_caps(d.pid(), "CapEff"), NET_ADMIN);
    open_22_and_see_the_rule(&d, &ns, port);
}

#[test]
fn a_door_running_iptables_legacy_keeps_cap_net_raw() {
    // iptables-legacy talks to the kernel over a raw socket.
    require_root_and(&["ip", "iptables", "iptables-legacy"]);
    let ns = Netns::create().expect("ip netns add");
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_udp_port();
    let legacy_door = format!(
        "[legacy]\n    Keys = {bob}\n    Allow_Ports = 2222/tcp\n    Cmd_Timeout = 600\n    \
         Start_Command = /usr/sbin/iptables-legacy -I INPUT -s %IP% -p tcp --dport %PORT% -j ACCEPT\n    \
         Stop_Command = /usr/sbin/iptables-legacy -D INPUT -s %IP% -p tcp --dport %PORT% -j ACCEPT\n",
        bob = key("bob", 2).to_inline().as_str(),
    );
    let conf = write_config(dir.path(), port, "", 600, &legacy_door);
    let d = start_in(&ns, &["-c", path(&conf)], &dir.path().join("daemon.log"));
    const NET_RAW: u64 = 1 << 13;
    for set in ["CapEff", "CapPrm", "CapBnd"] {
        assert_eq!(proc_caps(d.pid(), set), NET_ADMIN | NET_RAW, "{set}");
    }
    assert!(
        d.log().contains(
            "privileges: keeping CAP_NET_RAW: /usr/sbin/iptables-legacy is iptables-legacy"
        ),
        "{}",
        d.log()
    );
    ns.send(
        port,
        &spa_packet(&key("bob", 2), SERVER, &["2222/tcp"], Action::Open),
    );
    d.wait_for(Duration::from_secs(10), "iptables-legacy's rule", || {
        rule_in(
            &ns,
            &["iptables-legacy", "-S", "INPUT"],
            "-A INPUT -s 127.0.0.1/32 -p tcp -m tcp --dport 2222 -j ACCEPT",
        )
    });
}
