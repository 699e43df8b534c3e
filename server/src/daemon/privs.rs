//! Least privilege in the daemon itself, once the capture is open and the files are read:
//! `no_new_privs`, then only the capabilities the firewall commands need, and optionally a
//! dedicated user (`User` / `--user`).
//!
//! What is kept, and why:
//! - `CAP_NET_ADMIN`: the start and stop commands (`iptables`, `ip6tables`, `nft`) change the
//!   firewall, and with `Firewall = nftables` the grant lanes' own netlink sockets do. iptables-nft and nft speak netlink and need only this. A uid-0 daemon's
//!   children get their capabilities from the bounding set at exec, so it stays there; a
//!   dedicated user's children get it from the ambient set.
//! - `CAP_NET_RAW` only when a door's command runs iptables-legacy (`xtables-legacy-multi`):
//!   legacy iptables talks to the kernel over a raw socket. The capture needs it no longer
//!   (its socket is open).
//!
//! Nothing else: everything the daemon writes later (the state directory and its files, the
//! status file, the control socket, a reopened log file, one-time sequence files rewritten
//! with their owner kept) must be owned by the user it runs as (root, or the `User`), which
//! needs no `CAP_DAC_OVERRIDE`, `CAP_CHOWN` or `CAP_FOWNER`. The shipped systemd unit's
//! bounding set never held those either.
//!
//! Capabilities and `no_new_privs` belong to a thread: this runs while the daemon has one
//! thread only (it checks), so every thread started afterwards inherits the result.

use std::collections::HashSet;
use std::ffi::CString;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use caps::{CapSet, Capability, CapsHashSet};

use crate::load::LoadedConfig;

/// The user the daemon switches to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    /// Its name, as given.
    pub name: String,
    /// Its uid.
    pub uid: u32,
    /// Its primary group.
    pub gid: u32,
}

/// Looks `name` up in the user database (`getpwnam_r`, so /etc/passwd, LDAP... as NSS says).
pub fn lookup_user(name: &str) -> anyhow::Result<User> {
    let c_name = CString::new(name).context("a user name cannot hold a NUL byte")?;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        // SAFETY: an all-zero `passwd` is a valid value of this plain C struct (null pointers
        // and zero ids); getpwnam_r only writes it.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: `c_name` is a NUL-terminated string; `pwd`, `buf` (with its true length)
        // and `found` are valid for writes and outlive the call; the strings getpwnam_r puts
        // in `buf` are not used after it (only the two ids are read).
        let rc = unsafe {
            libc::getpwnam_r(
                c_name.as_ptr(),
                &mut pwd,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut found,
            )
        };
        if rc == libc::ERANGE && buf.len() < 1 << 20 {
            buf.resize(buf.len() * 4, 0);
            continue;
        }
        if rc != 0 {
            bail!(
                "cannot look up the user {name}: {}",
                std::io::Error::from_raw_os_error(rc)
            );
        }
        if found.is_null() {
            bail!(
                "User {name}: no such user (create it: useradd --system --no-create-home \
                 --shell /usr/sbin/nologin {name})"
            );
        }
        if pwd.pw_uid == 0 {
            bail!("User {name}: that is uid 0 (root); leave User out to run as root");
        }
        return Ok(User {
            name: name.to_owned(),
            uid: pwd.pw_uid,
            gid: pwd.pw_gid,
        });
    }
}

/// The `User` a configuration names, read before it is loaded for good (that load reads the
/// files it names as the user). `None` when it names none, or cannot be read or parsed here
/// (the load then says why).
pub fn configured_user(config: &Path) -> Option<String> {
    let text = std::fs::read_to_string(config).ok()?;
    knock_shared::config::parse_str(&text).ok()?.options.user
}

/// Prepares the switch to `User name`, as early as possible at start: looks the user up, has
/// the state directory judged by that user's ownership, and (when root) sets the file-system
/// ids to the user's, so every file the daemon creates before the switch (the log file, the
/// state directory's lock and journals) is the user's, and every file access is checked as
/// the user's (what works at start works after the switch). The capabilities stay until
/// [`drop_privileges`]; a file-system uid other than 0 only sets aside the file ones
/// (`CAP_DAC_OVERRIDE`, `CAP_CHOWN`...), which are dropped there anyway.
pub fn prepare_user(name: &str) -> anyhow::Result<User> {
    let user = lookup_user(name)?;
    // SAFETY: geteuid takes no arguments and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 && euid != user.uid {
        bail!(
            "User {name}: switching to it needs the daemon to start as root (it runs as uid \
             {euid})"
        );
    }
    crate::store::dir::trust_daemon_user(user.uid);
    if euid == 0 {
        // SAFETY: setfsgid/setfsuid take a plain id and touch no memory of ours; they cannot
        // report failure, so the result is read back below.
        unsafe {
            libc::setfsgid(user.gid);
            libc::setfsuid(user.uid);
        }
        // SAFETY: an invalid id (-1) changes nothing and returns the current one.
        let (fsuid, fsgid) = unsafe { (libc::setfsuid(u32::MAX), libc::setfsgid(u32::MAX)) };
        if u32::try_from(fsuid).ok() != Some(user.uid)
            || u32::try_from(fsgid).ok() != Some(user.gid)
        {
            bail!(
                "User {name}: cannot take its file-system ids (still uid {fsuid}, gid {fsgid}); \
                 switching needs CAP_SETUID and CAP_SETGID: under systemd, add them to \
                 CapabilityBoundingSet= or use the unit's User= (docs/OPERATIONS.md)"
            );
        }
    }
    Ok(user)
}

/// Refuses a state directory (or an entry in it) that `user` does not own: the daemon must
/// write there as that user, and keeps no capability that would let it write elsewhere.
pub fn check_state_dir_owner(dir: &Path, user: &User) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let fix = || {
        format!(
            "run: chown -R {}: {} (it must belong to the user the daemon runs as)",
            user.name,
            dir.display()
        )
    };
    let meta = match std::fs::symlink_metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "state directory {} does not exist; with User {} it is not created: run install -d \
             -o {} -g {} -m 0700 {}",
            dir.display(),
            user.name,
            user.name,
            user.gid,
            dir.display()
        ),
        Err(e) => return Err(e).with_context(|| format!("state directory {}", dir.display())),
    };
    if meta.uid() != user.uid {
        bail!(
            "state directory {} is owned by uid {}, not by User {} (uid {}); {}",
            dir.display(),
            meta.uid(),
            user.name,
            user.uid,
            fix()
        );
    }
    for entry in std::fs::read_dir(dir).with_context(|| format!("{}", dir.display()))? {
        let entry = entry?;
        let m = entry.metadata()?;
        if m.uid() != user.uid {
            bail!(
                "state directory {}: {} is owned by uid {}, not by User {} (uid {}); {}",
                dir.display(),
                entry.file_name().to_string_lossy(),
                m.uid(),
                user.name,
                user.uid,
                fix()
            );
        }
    }
    Ok(())
}

/// The programs the doors' commands run that are iptables-legacy (after links: Debian's
/// `iptables` is an alternatives link to `xtables-nft-multi` or `xtables-legacy-multi`).
pub fn legacy_iptables(rt: &LoadedConfig) -> Vec<PathBuf> {
    let ip = std::net::IpAddr::from([127, 0, 0, 1]);
    let mut out: Vec<PathBuf> = Vec::new();
    for door in &rt.config.doors {
        let templates = [
            &door.start_command,
            &door.start_command_6,
            &door.stop_command,
            &door.stop_command_6,
        ];
        for t in templates.into_iter().flatten() {
            let argv = t.render(ip, None);
            let Some(program) = argv.first().and_then(|p| resolve(p)) else {
                continue;
            };
            let real = std::fs::canonicalize(&program).unwrap_or_else(|_| program.clone());
            let legacy = real
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.contains("legacy"));
            if legacy && !out.contains(&program) {
                out.push(program);
            }
        }
    }
    out
}

/// `program` as exec would find it: a path as is, a bare name on `PATH`.
fn resolve(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        return Some(PathBuf::from(program));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// Sets `no_new_privs`, switches to `user` if any, and keeps only `CAP_NET_ADMIN` (and
/// `CAP_NET_RAW` when `keep_net_raw`) in every set. Returns the line to log. Must be called
/// while the process has one thread.
pub fn drop_privileges(user: Option<&User>, keep_net_raw: bool) -> anyhow::Result<String> {
    let threads = std::fs::read_dir("/proc/self/task")
        .map(Iterator::count)
        .context("cannot count the daemon's threads in /proc/self/task")?;
    if threads != 1 {
        bail!("internal error: {threads} threads exist before the privileges are dropped");
    }
    // SAFETY: PR_SET_NO_NEW_PRIVS takes an integer argument and touches no memory of ours;
    // the unused arguments must be zero.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        bail!(
            "cannot set no_new_privs: {}",
            std::io::Error::last_os_error()
        );
    }
    let permitted = caps::read(None, CapSet::Permitted).map_err(caps_error)?;
    let mut wanted: CapsHashSet = HashSet::from([Capability::CAP_NET_ADMIN]);
    if keep_net_raw {
        wanted.insert(Capability::CAP_NET_RAW);
    }
    // What the daemon was given of what it wants (started without CAP_NET_ADMIN, its commands
    // cannot have it either).
    let kept: CapsHashSet = wanted.intersection(&permitted).copied().collect();
    let effective = caps::read(None, CapSet::Effective).map_err(caps_error)?;
    // Without CAP_SETPCAP (a unit's CapabilityBoundingSet= left it out) the bounding set
    // stays as given; no_new_privs and the permitted set below still keep the rest of it out
    // of reach of the daemon and of what it runs.
    let bounding = effective.contains(&Capability::CAP_SETPCAP);
    if bounding {
        drop_bounding(&kept)?;
    }
    if let Some(u) = user {
        switch_user(u)?;
    }
    // Effective first (after a switch it is empty, and it must stay within the permitted
    // set), then inheritable (needed for the ambient set), then permitted, which shrinks.
    caps::set(None, CapSet::Effective, &kept).map_err(caps_error)?;
    caps::set(None, CapSet::Inheritable, &kept).map_err(caps_error)?;
    caps::set(None, CapSet::Permitted, &kept).map_err(caps_error)?;
    caps::clear(None, CapSet::Ambient).map_err(caps_error)?;
    // SAFETY: getuid takes no arguments and cannot fail.
    let uid = unsafe { libc::getuid() };
    if uid != 0 {
        // A non-root daemon's children keep a capability through exec only in the ambient
        // set (no file capabilities on iptables, and no_new_privs would ignore them).
        for c in &kept {
            caps::raise(None, CapSet::Ambient, *c).map_err(caps_error)?;
        }
    }
    let mut names: Vec<String> = kept.iter().map(ToString::to_string).collect();
    names.sort();
    let names = if names.is_empty() {
        "none (CAP_NET_ADMIN was not given: the firewall commands will fail)".to_owned()
    } else {
        names.join(", ")
    };
    let who = match user {
        Some(u) => format!("user {} (uid {}, gid {})", u.name, u.uid, u.gid),
        None => format!("uid {uid}"),
    };
    Ok(format!(
        "privileges: no_new_privs set; running as {who}; capabilities kept: {names}{}; every \
         other capability dropped{}",
        if uid != 0 && !kept.is_empty() {
            " (ambient, for the firewall commands)"
        } else {
            ""
        },
        if bounding {
            ""
        } else {
            " (the bounding set as given: no CAP_SETPCAP to shrink it)"
        }
    ))
}

/// Drops every capability but `kept` from the bounding set, including ones newer than this
/// build knows (up to the kernel's `cap_last_cap`).
fn drop_bounding(kept: &CapsHashSet) -> anyhow::Result<()> {
    let last: u8 = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(63);
    let keep: Vec<u8> = kept.iter().map(Capability::index).collect();
    for i in 0..=last.min(63) {
        if keep.contains(&i) {
            continue;
        }
        // SAFETY: PR_CAPBSET_READ/DROP take a capability number and touch no memory of ours;
        // the unused arguments must be zero.
        let present =
            unsafe { libc::prctl(libc::PR_CAPBSET_READ, libc::c_ulong::from(i), 0, 0, 0) };
        if present == 1
            // SAFETY: as above.
            && unsafe { libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(i), 0, 0, 0) } != 0
        {
            bail!(
                "cannot drop capability {i} from the bounding set: {}",
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(())
}

/// setgroups (none), setgid, setuid, keeping the permitted capabilities across the switch.
fn switch_user(u: &User) -> anyhow::Result<()> {
    let os = |what: &str| {
        anyhow::anyhow!(
            "cannot switch to User {} ({what}): {}",
            u.name,
            std::io::Error::last_os_error()
        )
    };
    // SAFETY: PR_SET_KEEPCAPS takes an integer and touches no memory of ours.
    if unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) } != 0 {
        return Err(os("PR_SET_KEEPCAPS"));
    }
    // SAFETY: a count of zero with a null list is setgroups' documented way to clear the
    // supplementary groups; nothing is read through the pointer.
    if unsafe { libc::setgroups(0, std::ptr::null()) } != 0 {
        return Err(os("setgroups"));
    }
    // SAFETY: setresgid/setresuid take plain ids and touch no memory of ours; glibc applies
    // them to every thread (there is one).
    if unsafe { libc::setresgid(u.gid, u.gid, u.gid) } != 0 {
        return Err(os("setresgid"));
    }
    // SAFETY: as above.
    if unsafe { libc::setresuid(u.uid, u.uid, u.uid) } != 0 {
        return Err(os("setresuid"));
    }
    // SAFETY: as for PR_SET_KEEPCAPS above.
    if unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0) } != 0 {
        return Err(os("PR_SET_KEEPCAPS off"));
    }
    Ok(())
}

fn caps_error(e: caps::errors::CapsError) -> anyhow::Error {
    anyhow::anyhow!("capabilities: {e}")
}
