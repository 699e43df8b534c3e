//! Locating binaries that cargo built for this workspace.

use std::path::PathBuf;

/// The path of the workspace binary `name` (e.g. `knock-spad`, `knock-spa`, `ks-listen`),
/// found next to the running test executable: cargo puts tests in `target/<profile>/deps/`
/// and binaries in `target/<profile>/`. `KS_BIN_DIR` overrides the directory.
///
/// Binaries of this crate (`ks-listen`) are built by `cargo test` itself; those of the other
/// packages only by `cargo build --workspace` (or `cargo test --workspace`).
///
/// # Panics
/// When the binary does not exist, with a message saying to run `cargo build --workspace`.
pub fn workspace_bin(name: &str) -> PathBuf {
    let dir = match std::env::var_os("KS_BIN_DIR") {
        Some(d) => PathBuf::from(d),
        None => {
            let exe = std::env::current_exe()
                .unwrap_or_else(|e| panic!("cannot find the test executable's path: {e}"));
            let mut dir = exe
                .parent()
                .unwrap_or_else(|| panic!("test executable {} has no parent", exe.display()))
                .to_path_buf();
            if dir.ends_with("deps") {
                dir.pop();
            }
            dir
        }
    };
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "binary `{name}` not found at {}: run `cargo build --workspace` first (with the same \
         profile and CARGO_TARGET_DIR as the tests), or set KS_BIN_DIR",
        path.display()
    );
    path
}
