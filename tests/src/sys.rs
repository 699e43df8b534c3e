//! The only module of this crate with `unsafe`: thin wrappers over the syscalls the harness
//! needs (`geteuid`, `setns`, `kill`, raw sockets). Each wrapper states why it is sound.
//!
//! Must not hold test logic: callers get safe functions returning `io::Result`.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};

/// The effective user id.
pub(crate) fn geteuid() -> u32 {
    // SAFETY: geteuid takes no arguments, touches no memory of ours and cannot fail.
    unsafe { libc::geteuid() }
}

/// Moves the calling thread (only it) into the network namespace `ns`.
///
/// Callers must run this on a thread of their own that ends after its work in the namespace,
/// so that no other code of the process runs in the changed namespace by surprise.
pub(crate) fn setns_net(ns: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: setns(2) reads no memory of ours: it takes a file descriptor, which the
    // `BorrowedFd` keeps open for the duration of the call, and a flag. Its effect is not a
    // memory-safety matter either: on Linux the network namespace is an attribute of each task
    // (thread), and joining a network namespace (unlike a user or mount namespace) is allowed
    // in a multi-threaded process and changes only the calling thread's namespace. Sockets
    // the thread creates from then on belong to `ns`; sockets created earlier, other threads
    // and the rest of the process are unaffected. Neither std nor libc caches anything per
    // thread that depends on the network namespace.
    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sends `signal` to process `pid`.
///
/// Callers must pass the PID of a process this test started: a child not yet reaped (a
/// `std::process::Child` not yet waited for successfully, so the PID cannot have been reused),
/// or a process found inside a namespace this test created under a name unique to this run.
pub(crate) fn kill(pid: u32, signal: libc::c_int) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, format!("bad pid {pid}")))?;
    // SAFETY: kill(2) takes two integers and touches no memory of ours.
    let rc = unsafe { libc::kill(pid, signal) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A raw socket on which the caller writes whole IP packets, header included
/// (`IPPROTO_RAW` with `IP_HDRINCL` / `IPV6_HDRINCL`).
#[derive(Debug)]
pub(crate) struct RawIpSocket {
    fd: OwnedFd,
    v6: bool,
}

impl RawIpSocket {
    /// Opens a raw IPv4 (`v6 == false`) or IPv6 socket in the calling thread's namespace.
    pub(crate) fn new(v6: bool) -> io::Result<RawIpSocket> {
        let domain = if v6 { libc::AF_INET6 } else { libc::AF_INET };
        // SAFETY: socket(2) takes integers only; it returns a new descriptor or -1.
        let raw = unsafe {
            libc::socket(
                domain,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::IPPROTO_RAW,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a descriptor socket(2) just returned, open and owned by nobody
        // else, so `OwnedFd` may take ownership and close it once.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let (level, opt) = if v6 {
            (libc::IPPROTO_IPV6, libc::IPV6_HDRINCL)
        } else {
            (libc::IPPROTO_IP, libc::IP_HDRINCL)
        };
        let one: libc::c_int = 1;
        // SAFETY: the option value points to a live c_int and the length passed is its size;
        // the kernel only reads that many bytes during the call.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                level,
                opt,
                (&one as *const libc::c_int).cast(),
                socklen_of::<libc::c_int>(),
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(RawIpSocket { fd, v6 })
    }

    /// Sends one IPv4 packet (header included) to `dst`.
    pub(crate) fn send_v4(&self, packet: &[u8], dst: Ipv4Addr) -> io::Result<()> {
        debug_assert!(!self.v6);
        // SAFETY: sockaddr_in is plain old data for which all-zero bytes are a valid value.
        let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        sa.sin_family = libc::AF_INET as libc::sa_family_t;
        sa.sin_addr.s_addr = u32::from_ne_bytes(dst.octets());
        // SAFETY: `packet` and `sa` are live for the call and the lengths passed are theirs;
        // the kernel only reads them.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                packet.as_ptr().cast(),
                packet.len(),
                0,
                (&sa as *const libc::sockaddr_in).cast(),
                socklen_of::<libc::sockaddr_in>(),
            )
        };
        check_sent(n, packet.len())
    }

    /// Sends one IPv6 packet (header included) to `dst`.
    pub(crate) fn send_v6(&self, packet: &[u8], dst: Ipv6Addr) -> io::Result<()> {
        debug_assert!(self.v6);
        // SAFETY: sockaddr_in6 is plain old data for which all-zero bytes are a valid value.
        let mut sa: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
        sa.sin6_family = libc::AF_INET6 as libc::sa_family_t;
        sa.sin6_addr.s6_addr = dst.octets();
        // SAFETY: as in `send_v4`: live buffers, their own lengths, read only by the kernel.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                packet.as_ptr().cast(),
                packet.len(),
                0,
                (&sa as *const libc::sockaddr_in6).cast(),
                socklen_of::<libc::sockaddr_in6>(),
            )
        };
        check_sent(n, packet.len())
    }
}

fn socklen_of<T>() -> libc::socklen_t {
    // Every type passed here is a small C struct or integer; its size fits in socklen_t.
    libc::socklen_t::try_from(std::mem::size_of::<T>()).unwrap_or(libc::socklen_t::MAX)
}

fn check_sent(n: isize, want: usize) -> io::Result<()> {
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    if n.unsigned_abs() != want {
        return Err(io::Error::other(format!(
            "short raw send: {n} of {want} bytes"
        )));
    }
    Ok(())
}

/// Attaches to the existing TUN interface `name` (made with `ip tuntap add dev NAME mode
/// tun` in the calling thread's namespace) as its packet source, without the 4-byte packet
/// information prefix: each `write` on the returned file is one IP packet the interface
/// receives. The interface has a carrier while the file is open.
pub(crate) fn tun_attach(name: &str) -> io::Result<std::fs::File> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")?;
    // SAFETY: ifreq is plain old data (a name array and a union of integers and arrays) for
    // which all-zero bytes are a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= req.ifr_name.len() || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad interface name {name:?}"),
        ));
    }
    for (dst, &b) in req.ifr_name.iter_mut().zip(bytes) {
        *dst = b as libc::c_char;
    }
    // The name is NUL-terminated: the array was zeroed and the name is shorter than it.
    req.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
    // SAFETY: TUNSETIFF reads and writes one `struct ifreq`, and `req` is a live, properly
    // aligned ifreq for the whole call; the descriptor is open (owned by `file`).
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut req) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(file)
}

/// Fails the calling test unless it runs as root.
///
/// Network namespaces, veth pairs, iptables and raw sockets all need root; a test that cannot
/// have them must fail loudly rather than pass having proved nothing.
///
/// # Panics
/// When the effective user is not root.
#[track_caller]
pub fn require_root() {
    let euid = geteuid();
    assert!(
        euid == 0,
        "knock-e2e tests need root (network namespaces, iptables, raw sockets); effective uid is \
         {euid}. Run them as root, e.g. `sudo -E cargo test -p knock-e2e`."
    );
}

/// A suffix unique to this process and call: `<pid>-<counter>`.
///
/// Namespace names, temp dirs and log names use it so that parallel tests never clash.
pub fn unique_suffix() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{}-{}", std::process::id(), n)
}
