//! `knock-spad server-key`: makes the server's X25519 key for public-key doors, or shows the
//! public key of one. The private key goes only into its file (mode 0600, written by
//! `knock_keys`' one atomic writer); only the public key is printed.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use knock_keys::public::ServerSecret;

use crate::load;

/// Runs the command: `-o FILE [--force]` writes a new key, `--show FILE` reads one.
pub fn run(output: Option<&Path>, force: bool, show: Option<&Path>) -> anyhow::Result<ExitCode> {
    let (key, path, made) = match (output, show) {
        (_, Some(path)) => {
            let key = load::read_server_key(path).map_err(|e| anyhow::anyhow!("{e}"))?;
            (key, path, false)
        }
        (Some(path), None) => {
            let key = ServerSecret::generate().context("cannot generate a server key")?;
            key.save(path, force)
                .map_err(|e| anyhow::anyhow!("{e}"))
                .context("cannot write the server key")?;
            (key, path, true)
        }
        (None, None) => anyhow::bail!("give -o FILE to make a key or --show FILE to read one"),
    };
    let public = key.public().to_base64();
    if made {
        println!("Wrote the server key to {} (mode 0600).", path.display());
    }
    println!("ServerKey public key: {public}");
    if made {
        println!(
            "In the configuration's [options]:   ServerKey = {}",
            path.display()
        );
    }
    println!(
        "Clients: knock-spa --server-key {public} ...   or, in the stanza:   server_key = {public}"
    );
    Ok(ExitCode::SUCCESS)
}
