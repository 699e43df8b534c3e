//! `knock-spa proxy HOST PORT`, for ssh's `ProxyCommand`: open PORT/tcp with SPA packets,
//! connect as soon as the port accepts, then relay standard input and output to the
//! connection.
//!
//! Role: [`run`] sends the packets and connects (`spa::Sender::send_and_connect`: one packet
//! per address family, sent again once halfway), and [`relay`]s. The relay
//! copies stdin to the connection on a thread (at end of input it shuts the connection's
//! sending side, as `ssh -W` does, and keeps reading); the connection to stdout on this
//! thread, flushing every chunk (ssh's packets must not wait in a buffer), until the server
//! closes: then `run` returns and the process ends, however the other direction stands.
//!
//! It must not print on stdout anything but the relayed bytes: stdout is ssh's connection.

use std::io::{self, Read as _, Write as _};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use anyhow::anyhow;

use crate::spa::Sender;

/// The relay's read size.
const CHUNK: usize = 32 * 1024;

/// Opens the port, connects and relays until the server closes the connection.
pub fn run(sender: &Sender, host: &str, port: u16, timeout: Duration) -> anyhow::Result<()> {
    let verbose = sender.plan().verbose;
    let (stream, took) = sender
        .send_and_connect(port, timeout)?
        .map_err(|e| anyhow!("connect to host {host} port {port}: {e}"))?;
    if verbose {
        let peer = stream
            .peer_addr()
            .map_or_else(|_| "?".to_owned(), |a| a.to_string());
        eprintln!(
            "knock-spa: connected to {peer} after {:.3} s",
            took.as_secs_f64()
        );
    }
    relay(stream, io::stdin(), io::stdout())
        .map_err(|e| anyhow!("relay to host {host} port {port}: {e}"))
}

/// Copies `input` to `stream` (on a thread; then shuts the stream's sending side) and
/// `stream` to `output` (here, flushing each chunk) until `stream` ends.
pub fn relay<R, W>(stream: TcpStream, input: R, mut output: W) -> io::Result<()>
where
    R: io::Read + Send + 'static,
    W: io::Write,
{
    let mut up = stream.try_clone()?;
    std::thread::Builder::new()
        .name("relay-up".into())
        .spawn(move || {
            let mut input = input;
            let mut buf = vec![0u8; CHUNK];
            loop {
                match input.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if up.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            // End of input: the server sees the end of the stream and may still answer.
            let _ = up.shutdown(Shutdown::Write);
        })?;
    let mut down = stream;
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match down.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        output.write_all(&buf[..n])?;
        output.flush()?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A server that sends a banner, echoes what it reads until the client's end of stream,
    /// then says goodbye and closes.
    #[test]
    fn relays_both_ways_and_half_closes() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().expect("accept");
            s.write_all(b"SSH-2.0-test\r\n").expect("banner");
            let mut got = Vec::new();
            s.read_to_end(&mut got).expect("read to the client's end");
            s.write_all(&got).expect("echo");
            s.write_all(b"bye\n").expect("bye");
            got
        });
        let stream = TcpStream::connect(addr).expect("connect");
        let input = io::Cursor::new(b"hello\nworld\n".to_vec());
        let mut output = Vec::new();
        relay(stream, input, &mut output).expect("relay");
        assert_eq!(server.join().expect("server"), b"hello\nworld\n");
        assert_eq!(output, b"SSH-2.0-test\r\nhello\nworld\nbye\n");
    }
}
