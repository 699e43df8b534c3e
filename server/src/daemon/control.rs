//! The control socket, `StateDir/control`: a Unix stream socket (mode 0600, in the root-only
//! state directory) on which `knock-spad close` asks the running daemon to end grants now.
//!
//! Protocol: the client sends one line, `close [key=NAME] [door=NAME] [address=IP]`
//! ([`CloseFilter::to_line`]), and closes its side; the daemon answers with one line per grant
//! it ended (`closed DOOR ADDR PORT (key NAME)`) and a last line `ok N`, or one line
//! `error: WHY`. Connections are served one at a time, each bounded in size and time, so a
//! stuck client cannot hold the daemon up for long.

use std::io;
use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc::Sender;

use super::actions::{Action, CloseFilter};
use crate::log::error;

/// The socket's name in the state directory.
pub const SOCKET: &str = "control";
/// Longest request line accepted.
const MAX_REQUEST: u64 = 1024;
/// How long a client may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Binds the socket in `dir` (a socket left by a daemon that died is replaced: the caller
/// holds the state directory's lock). Needs the tokio runtime's context.
pub fn bind(dir: &Path) -> io::Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(SOCKET);
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let listener = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Serves requests until the runtime ends.
pub async fn serve(listener: UnixListener, tx: Sender<Action>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                if let Err(e) = answer(stream, &tx).await {
                    error!("control: {e}");
                }
            }
            Err(e) => {
                error!("control: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn answer(stream: UnixStream, tx: &Sender<Action>) -> io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read.take(MAX_REQUEST));
    let got = tokio::time::timeout(REQUEST_TIMEOUT, reader.read_line(&mut line)).await;
    let reply = match got {
        Err(_) => "error: no request within 5 s\n".to_owned(),
        Ok(Err(e)) => format!("error: {e}\n"),
        Ok(Ok(_)) => match CloseFilter::from_line(line.trim_end()) {
            Err(why) => format!("error: {why}\n"),
            Ok(filter) => {
                let (reply, done) = tokio::sync::oneshot::channel();
                if tx.send(Action::Close { filter, reply }).await.is_err() {
                    "error: the daemon is stopping\n".to_owned()
                } else {
                    match done.await {
                        Ok(lines) => {
                            let mut out: String = lines.iter().map(|l| format!("{l}\n")).collect();
                            out.push_str(&format!("ok {}\n", lines.len()));
                            out
                        }
                        Err(_) => "error: the daemon is stopping\n".to_owned(),
                    }
                }
            }
        },
    };
    write.write_all(reply.as_bytes()).await?;
    write.shutdown().await
}
