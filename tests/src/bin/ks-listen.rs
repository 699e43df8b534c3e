//! `ks-listen ADDR...`: a stand-in for sshd in end-to-end tests. Binds a TCP listener on each
//! socket address given, prints `ks-listen: ready` once all are bound, then accepts every
//! connection and closes it at once, until killed.
//!
//! Exit codes: 0 never (runs until killed), 1 when an address is bad or cannot be bound.

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::process::ExitCode;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ks-listen: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let addrs = std::env::args()
        .skip(1)
        .map(|a| {
            a.parse::<SocketAddr>()
                .map_err(|e| format!("bad address {a:?}: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if addrs.is_empty() {
        return Err("usage: ks-listen ADDR...".into());
    }
    let listeners = addrs
        .iter()
        .map(|a| TcpListener::bind(a).map_err(|e| format!("bind {a}: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    let mut out = std::io::stdout().lock();
    for a in &addrs {
        // Writes to the log file; a failure here is worth dying for.
        writeln!(out, "ks-listen: listening on {a}").map_err(|e| e.to_string())?;
    }
    writeln!(out, "ks-listen: ready").map_err(|e| e.to_string())?;
    out.flush().map_err(|e| e.to_string())?;
    drop(out);

    let threads: Vec<_> = listeners
        .into_iter()
        .map(|l| {
            std::thread::spawn(move || loop {
                match l.accept() {
                    Ok((stream, _peer)) => drop(stream),
                    Err(e) => {
                        // e.g. EMFILE: do not spin.
                        eprintln!("ks-listen: accept: {e}");
                        std::thread::sleep(std::time::Duration::from_millis(10));
                    }
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}
