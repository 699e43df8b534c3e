//! `ks-listen [--banner TEXT] ADDR...`: a stand-in for sshd in end-to-end tests. Binds a TCP
//! listener on each socket address given, prints `ks-listen: ready` once all are bound, then
//! accepts every connection and closes it at once, until killed. With `--banner`, each
//! connection is first sent `TEXT\r\n` (as sshd sends its version line), then what the client
//! sends is echoed back until its end of stream, then the connection is closed.
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
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let banner = match args.first().map(String::as_str) {
        Some("--banner") if args.len() >= 2 => {
            let text = format!("{}\r\n", args[1]);
            args.drain(..2);
            Some(text)
        }
        _ => None,
    };
    let banner: &'static Option<String> = Box::leak(Box::new(banner));
    let addrs = args
        .iter()
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
                    Ok((stream, _peer)) => match banner {
                        Some(text) => {
                            std::thread::spawn(move || talk(stream, text));
                        }
                        None => drop(stream),
                    },
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

/// `--banner`: the banner, then an echo of what comes until the client's end of stream.
fn talk(mut stream: std::net::TcpStream, banner: &str) {
    use std::io::Read as _;
    if stream.write_all(banner.as_bytes()).is_err() {
        return;
    }
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if stream.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
}
