//! Bounded floods from inside a namespace, on a background thread, for the load tests.
//!
//! A flood stops by itself after `max_packets` or `max_time`, whichever comes first, or when
//! [`Flood::stop`] is called (also on drop). It never sends anywhere but the one destination
//! it was given, which must be an address inside the test's namespaces.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::netns::Netns;
use crate::sys::RawIpSocket;

/// Hard ceiling on any flood's length, whatever the caller asks.
pub const FLOOD_TIME_CEILING: Duration = Duration::from_secs(120);

/// What a finished flood did.
#[derive(Debug, Clone, Copy)]
pub struct FloodReport {
    /// Packets handed to the kernel.
    pub sent: u64,
    /// Sends the kernel refused for lack of buffer space (the sender outran the link).
    pub dropped: u64,
    /// How long it ran.
    pub elapsed: Duration,
}

impl FloodReport {
    /// Packets per second actually sent.
    pub fn rate(&self) -> f64 {
        self.sent as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// A running flood.
#[derive(Debug)]
pub struct Flood {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    handle: Option<JoinHandle<io::Result<FloodReport>>>,
}

impl Flood {
    /// Sends `payloads` round-robin as UDP datagrams from `ns` (its own address) to `to`.
    ///
    /// # Panics
    /// When `payloads` is empty.
    pub fn udp(
        ns: &Netns,
        to: SocketAddr,
        payloads: Vec<Vec<u8>>,
        max_packets: u64,
        max_time: Duration,
    ) -> Flood {
        assert!(!payloads.is_empty(), "a UDP flood needs payloads");
        Flood::spawn(
            ns,
            max_packets,
            max_time,
            move |stop, sent, limit, until| {
                let bind: SocketAddr = if to.is_ipv4() {
                    ([0, 0, 0, 0], 0).into()
                } else {
                    ([0u16; 8], 0).into()
                };
                let sock = UdpSocket::bind(bind)?;
                sock.connect(to)?;
                let mut dropped = 0;
                let mut n = 0u64;
                while n < limit && !stop.load(Ordering::Relaxed) {
                    if n % 1024 == 0 && Instant::now() >= until {
                        break;
                    }
                    let p = &payloads[(n % payloads.len() as u64) as usize];
                    match sock.send(p) {
                        Ok(_) => {}
                        // ENOBUFS / ECONNREFUSED (an ICMP error from an earlier datagram): count
                        // and go on; the flood is about volume.
                        Err(_) => dropped += 1,
                    }
                    n += 1;
                    if n % 256 == 0 {
                        sent.store(n, Ordering::Relaxed);
                    }
                }
                sent.store(n, Ordering::Relaxed);
                Ok((n, dropped))
            },
        )
    }

    /// Sends TCP SYNs from `ns` to `to` with forged source addresses: `sources` distinct
    /// addresses from 172.16.0.0/12, cycled, each with its own source port.
    pub fn syn_spoofed(
        ns: &Netns,
        to: SocketAddrV4,
        sources: u32,
        max_packets: u64,
        max_time: Duration,
    ) -> Flood {
        Flood::syn_spoofed_from(ns, to, 0, sources, max_packets, max_time)
    }

    /// As [`Flood::syn_spoofed`], from the `sources` addresses that follow the first `skip`
    /// of 172.16.0.0/12 (so that rounds of a flood can use new sources each).
    pub fn syn_spoofed_from(
        ns: &Netns,
        to: SocketAddrV4,
        skip: u32,
        sources: u32,
        max_packets: u64,
        max_time: Duration,
    ) -> Flood {
        let sources = sources.clamp(1, 1 << 20);
        let skip = skip.min(1 << 20);
        Flood::spawn(
            ns,
            max_packets,
            max_time,
            move |stop, sent, limit, until| {
                let sock = RawIpSocket::new(false)?;
                let base = u32::from(Ipv4Addr::new(172, 16, 0, 1)) + skip;
                let mut packet = [0u8; 40];
                let mut dropped = 0;
                let mut n = 0u64;
                while n < limit && !stop.load(Ordering::Relaxed) {
                    if n % 1024 == 0 && Instant::now() >= until {
                        break;
                    }
                    let src = Ipv4Addr::from(base + (n % u64::from(sources)) as u32);
                    let sport = 1024 + (n % 60_000) as u16;
                    syn_packet(&mut packet, src, sport, *to.ip(), to.port(), n as u32);
                    if sock.send_v4(&packet, *to.ip()).is_err() {
                        dropped += 1;
                    }
                    n += 1;
                    if n % 256 == 0 {
                        sent.store(n, Ordering::Relaxed);
                    }
                }
                sent.store(n, Ordering::Relaxed);
                Ok((n, dropped))
            },
        )
    }

    fn spawn<F>(ns: &Netns, max_packets: u64, max_time: Duration, body: F) -> Flood
    where
        F: FnOnce(&AtomicBool, &AtomicU64, u64, Instant) -> io::Result<(u64, u64)> + Send + 'static,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let path = ns.path();
        let (s, c) = (stop.clone(), sent.clone());
        let max_time = max_time.min(FLOOD_TIME_CEILING);
        let handle = std::thread::Builder::new()
            .name("flood".into())
            .spawn(move || -> io::Result<FloodReport> {
                let file = std::fs::File::open(&path)?;
                crate::sys::setns_net(std::os::fd::AsFd::as_fd(&file))?;
                let start = Instant::now();
                let (n, dropped) = body(&s, &c, max_packets, start + max_time)?;
                Ok(FloodReport {
                    sent: n,
                    dropped,
                    elapsed: start.elapsed(),
                })
            })
            .unwrap_or_else(|e| panic!("cannot start the flood thread: {e}"));
        Flood {
            stop,
            sent,
            handle: Some(handle),
        }
    }

    /// Packets sent so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Whether it is still sending.
    pub fn is_running(&self) -> bool {
        self.handle.as_ref().is_some_and(|h| !h.is_finished())
    }

    /// Waits until `n` packets are out (or the flood ended); returns whether they are.
    pub fn wait_sent(&self, n: u64, timeout: Duration) -> bool {
        let start = Instant::now();
        while self.sent() < n && self.is_running() && start.elapsed() < timeout {
            std::thread::sleep(Duration::from_millis(5));
        }
        self.sent() >= n
    }

    /// Stops it (if still running) and returns what it did.
    ///
    /// # Panics
    /// When the flood thread failed to set up (namespace, socket).
    pub fn stop(mut self) -> FloodReport {
        self.finish()
    }

    fn finish(&mut self) -> FloodReport {
        self.stop.store(true, Ordering::Relaxed);
        match self.handle.take().map(JoinHandle::join) {
            Some(Ok(Ok(r))) => r,
            Some(Ok(Err(e))) => panic!("flood failed: {e}"),
            Some(Err(p)) => std::panic::resume_unwind(p),
            None => panic!("flood already stopped"),
        }
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Writes an IPv4 + TCP SYN (no options) into `p` with correct TCP checksum (the kernel fills
/// the IP header checksum for `IP_HDRINCL`).
fn syn_packet(p: &mut [u8; 40], src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, seq: u32) {
    p.fill(0);
    p[0] = 0x45;
    p[2..4].copy_from_slice(&40u16.to_be_bytes());
    p[6] = 0x40; // DF
    p[8] = 64; // TTL
    p[9] = 6; // TCP
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    let t = &mut p[20..40];
    t[0..2].copy_from_slice(&sport.to_be_bytes());
    t[2..4].copy_from_slice(&dport.to_be_bytes());
    t[4..8].copy_from_slice(&seq.to_be_bytes());
    t[12] = 5 << 4; // data offset
    t[13] = 0x02; // SYN
    t[14..16].copy_from_slice(&64240u16.to_be_bytes());
    let mut sum: u32 = 0;
    for chunk in src.octets().chunks(2).chain(dst.octets().chunks(2)) {
        sum += u32::from(u16::from_be_bytes([chunk[0], chunk[1]]));
    }
    sum += 6 + 20;
    for chunk in t.chunks(2) {
        sum += u32::from(u16::from_be_bytes([chunk[0], chunk[1]]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let csum = !(sum as u16);
    t[16..18].copy_from_slice(&csum.to_be_bytes());
}

/// The daemon's resident set (VmRSS) and its peak (VmHWM), in KiB, from /proc.
pub fn rss_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        status
            .lines()
            .find(|l| l.starts_with(name))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syn_checksum_verifies() {
        let mut p = [0u8; 40];
        syn_packet(
            &mut p,
            Ipv4Addr::new(172, 16, 1, 2),
            4000,
            Ipv4Addr::new(10, 99, 0, 1),
            7000,
            7,
        );
        // Summing pseudo-header and segment including the checksum gives 0xffff.
        let mut sum: u32 = 0;
        for c in p[12..20].chunks(2).chain(p[20..40].chunks(2)) {
            sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
        }
        sum += 6 + 20;
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        assert_eq!(sum, 0xffff);
        assert_eq!(p[33], 0x02, "SYN flag");
    }
}
