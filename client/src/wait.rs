//! `open --wait` and `proxy`: connect to the port just asked for, as soon as the server has
//! opened it.
//!
//! Role: [`connect_when_open`] makes TCP connection attempts to every address, on a schedule
//! that starts dense (the server opens within milliseconds of the packet) and settles at one
//! round every [`STEADY`], each attempt on its own short-lived thread so that a firewall that
//! drops (instead of refusing) cannot hold up the next round; the first connection that
//! succeeds is returned. Halfway through the time allowed it calls `halfway` once (the caller
//! sends a new packet: the first may have been lost).
//!
//! It must not send SPA packets itself, or keep a connection other than the one it returns
//! (later successes are closed as they come in).

use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// When the rounds of attempts start, after the call: dense at first.
const SCHEDULE_MS: [u64; 8] = [0, 15, 40, 80, 140, 220, 330, 480];
/// The time between rounds after [`SCHEDULE_MS`].
pub const STEADY: Duration = Duration::from_millis(250);
/// At most this many attempts in flight (a firewall that drops SYNs leaves them pending).
const MAX_IN_FLIGHT: usize = 16;

/// No connection within the time allowed.
#[derive(Debug)]
pub struct WaitError {
    /// The time allowed.
    pub timeout: Duration,
    /// The last refusal or error an attempt got, if any came back.
    pub last: Option<(SocketAddr, io::Error)>,
}

impl fmt::Display for WaitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "no connection within {} s", self.timeout.as_secs_f64())?;
        match &self.last {
            Some((addr, e)) => write!(f, " (last attempt, to {addr}: {e})"),
            None => write!(f, " (no attempt was answered)"),
        }
    }
}

impl std::error::Error for WaitError {}

/// When round `n` starts, from the call.
fn round_start(n: usize) -> Duration {
    match SCHEDULE_MS.get(n) {
        Some(ms) => Duration::from_millis(*ms),
        None => {
            let extra = u32::try_from(n + 1 - SCHEDULE_MS.len()).unwrap_or(u32::MAX);
            Duration::from_millis(SCHEDULE_MS[SCHEDULE_MS.len() - 1]) + STEADY * extra
        }
    }
}

/// Connects to the first of `addrs` that accepts within `timeout`, calling `halfway` once
/// when half of it has passed. Returns the connection and the time it took.
pub fn connect_when_open(
    addrs: &[SocketAddr],
    timeout: Duration,
    mut halfway: impl FnMut(),
) -> Result<(TcpStream, Duration), WaitError> {
    let start = Instant::now();
    let deadline = start + timeout;
    let half = start + timeout / 2;
    let (tx, rx) = mpsc::channel::<(SocketAddr, io::Result<TcpStream>)>();
    let mut round = 0usize;
    let mut in_flight = 0usize;
    let mut resent = false;
    let mut last = None;
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Err(WaitError { timeout, last });
        }
        if !resent && now >= half {
            halfway();
            resent = true;
        }
        let next_round = start + round_start(round);
        let room = in_flight + addrs.len() <= MAX_IN_FLIGHT;
        if now >= next_round && room {
            for &addr in addrs {
                let tx = tx.clone();
                let left = deadline
                    .saturating_duration_since(now)
                    .max(Duration::from_millis(1));
                let spawned = std::thread::Builder::new()
                    .name("connect".into())
                    .spawn(move || {
                        // The receiver may be gone (an earlier attempt won): the connection
                        // is then closed here, by drop.
                        let _ = tx.send((addr, TcpStream::connect_timeout(&addr, left)));
                    });
                match spawned {
                    Ok(_) => in_flight += 1,
                    Err(e) => last = Some((addr, e)),
                }
            }
            round += 1;
            continue;
        }
        let mut wake = deadline;
        if room {
            wake = wake.min(next_round);
        }
        if !resent {
            wake = wake.min(half);
        }
        match rx.recv_timeout(wake.saturating_duration_since(now)) {
            Ok((_, Ok(stream))) => return Ok((stream, start.elapsed())),
            Ok((addr, Err(e))) => {
                in_flight = in_flight.saturating_sub(1);
                last = Some((addr, e));
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            // `tx` is held here, so the channel cannot disconnect.
            Err(mpsc::RecvTimeoutError::Disconnected) => return Err(WaitError { timeout, last }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn schedule_is_dense_then_steady() {
        assert_eq!(round_start(0), Duration::ZERO);
        assert!(round_start(1) < Duration::from_millis(20));
        assert_eq!(round_start(7), Duration::from_millis(480));
        assert_eq!(round_start(8), Duration::from_millis(730));
        assert_eq!(round_start(9), Duration::from_millis(980));
        for n in 0..50 {
            assert!(round_start(n) < round_start(n + 1), "{n}");
        }
    }

    #[test]
    fn connects_to_a_listener() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut resent = 0;
        let (stream, _) =
            connect_when_open(&[addr], Duration::from_secs(5), || resent += 1).expect("connect");
        assert_eq!(stream.peer_addr().expect("peer"), addr);
        assert_eq!(resent, 0, "no resend before halfway");
    }

    #[test]
    fn a_closed_port_times_out_with_the_refusal_and_one_resend() {
        // A port that was bound and released: nothing listens, so the kernel refuses.
        let addr = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port");
        let mut resent = 0;
        let err = connect_when_open(&[addr], Duration::from_millis(600), || resent += 1)
            .expect_err("nothing listens");
        assert_eq!(resent, 1, "exactly one resend, halfway");
        let (to, e) = err.last.as_ref().expect("a refusal came back");
        assert_eq!(*to, addr);
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
        assert!(
            err.to_string().starts_with("no connection within 0.6 s"),
            "{err}"
        );
    }

    #[test]
    fn the_port_that_opens_later_is_found() {
        let addr = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port");
        let mut listener = None;
        // The "server" opens the port when the packet is sent again, halfway.
        let (stream, took) = connect_when_open(&[addr], Duration::from_secs(2), || {
            listener = Some(TcpListener::bind(addr).expect("rebind"));
        })
        .expect("connects once open");
        assert_eq!(stream.peer_addr().expect("peer"), addr);
        assert!(took >= Duration::from_secs(1), "{took:?}");
    }
}
