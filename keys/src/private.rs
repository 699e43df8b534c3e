//! Reading a file that holds secrets (a client keyfile, a server `KeyFile`, a configuration
//! with inline keys, a one-time sequences file) through one descriptor: it is opened once,
//! what is checked (regular file, mode, owner) is what `fstat` says about that descriptor, and
//! the bytes come from the same descriptor. A file swapped for another between a check and the
//! read (the old stat-then-open) is never read: there is no second lookup of the path.
//!
//! Links are followed (`/etc/knockd.conf` may be one); the checks apply to the file read.
//! The open never blocks (`O_NONBLOCK`: a FIFO or a device is refused by `fstat`, not waited
//! on) and never becomes a controlling terminal. The bytes land in one buffer, reserved for
//! the whole file before the read so it is never reallocated (a reallocation would leave a
//! copy behind), and wiped on drop.
//!
//! The rules themselves are here too, one place for both binaries: a file that holds secrets
//! has no group or other permission bit (`mode & 0o077 == 0`) and, for the daemon, is owned
//! by root or by the user the daemon runs as (as ssh requires of its files).

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use zeroize::Zeroizing;

/// Why a file could not be opened or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// The OS error (missing, no permission, unreadable).
    #[error("{0}")]
    Io(io::Error),
    /// A directory, a FIFO, a device, a socket.
    #[error("not a regular file")]
    NotRegular,
}

/// What makes a file unfit to hold secrets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exposure {
    /// Group or others have a permission bit; `mode` is the file's mode (`& 0o7777`).
    TooOpen {
        /// The permission bits.
        mode: u32,
    },
    /// Owned by `uid`, neither root nor the user allowed.
    Owner {
        /// The file's owner.
        uid: u32,
    },
}

/// A regular file opened for reading, with what `fstat` said about the open descriptor.
#[derive(Debug)]
pub struct Opened {
    file: fs::File,
    mode: u32,
    uid: u32,
    len: u64,
}

/// Opens `path` for reading and `fstat`s the descriptor: a regular file or an error.
pub fn open(path: &Path) -> Result<Opened, ReadError> {
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(ReadError::Io)?;
    let meta = file.metadata().map_err(ReadError::Io)?;
    if !meta.is_file() {
        return Err(ReadError::NotRegular);
    }
    Ok(Opened {
        file,
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        len: meta.len(),
    })
}

impl Opened {
    /// The permission bits (`& 0o7777`).
    pub fn mode(&self) -> u32 {
        self.mode
    }

    /// The owner.
    pub fn uid(&self) -> u32 {
        self.uid
    }

    /// Whether group or others have any permission bit: what every file holding secrets must
    /// not have.
    pub fn too_open(&self) -> Option<Exposure> {
        (self.mode & 0o077 != 0).then_some(Exposure::TooOpen { mode: self.mode })
    }

    /// [`Opened::too_open`], then whether the owner is root or `uid` (the daemon's rule).
    pub fn exposure(&self, uid: u32) -> Option<Exposure> {
        self.too_open().or_else(|| {
            (self.uid != 0 && self.uid != uid).then_some(Exposure::Owner { uid: self.uid })
        })
    }

    /// Reads the whole file from the open descriptor into one buffer wiped on drop.
    pub fn read(mut self) -> io::Result<Zeroizing<Vec<u8>>> {
        let mut bytes = Zeroizing::new(Vec::new());
        // The size fstat gave, reserved before the first byte arrives: the buffer then never
        // moves (a file that grew meanwhile may still make it grow, a race we accept).
        let len = usize::try_from(self.len).map_err(io::Error::other)?;
        bytes
            .try_reserve_exact(len)
            .map_err(|e| io::Error::new(io::ErrorKind::OutOfMemory, e))?;
        self.file.read_to_end(&mut bytes)?;
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn reads_through_the_descriptor_it_checked() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("f");
        fs::write(&p, b"secret text\n").expect("write");
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).expect("chmod");
        let o = open(&p).expect("open");
        assert_eq!(o.mode(), 0o600);
        assert_eq!(o.too_open(), None);
        assert_eq!(o.exposure(o.uid()), None);
        // The path now names another file: what was opened is what is read.
        fs::remove_file(&p).expect("unlink");
        fs::write(&p, b"planted\n").expect("plant");
        assert_eq!(o.read().expect("read").as_slice(), b"secret text\n");
    }

    #[test]
    fn group_or_other_bits_and_a_foreign_owner_are_exposures() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("f");
        fs::write(&p, b"x").expect("write");
        for mode in [0o640, 0o604, 0o610, 0o601, 0o644] {
            fs::set_permissions(&p, fs::Permissions::from_mode(mode)).expect("chmod");
            let o = open(&p).expect("open");
            assert_eq!(o.too_open(), Some(Exposure::TooOpen { mode }), "{mode:o}");
            assert_eq!(o.exposure(o.uid()), Some(Exposure::TooOpen { mode }));
        }
        fs::set_permissions(&p, fs::Permissions::from_mode(0o400)).expect("chmod");
        let o = open(&p).expect("open");
        let owner = o.uid();
        // Root is always accepted as the owner; anyone else only as the allowed user.
        let other = if owner == 0 {
            None
        } else {
            Some(Exposure::Owner { uid: owner })
        };
        assert_eq!(o.exposure(owner.wrapping_add(1)), other);
        assert_eq!(o.exposure(owner), None);
    }

    #[test]
    fn a_fifo_or_a_directory_is_refused_without_blocking() {
        let d = tempfile::tempdir().expect("tempdir");
        assert!(matches!(open(d.path()), Err(ReadError::NotRegular)));
        let fifo = d.path().join("fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo");
        assert!(made.success());
        // Without O_NONBLOCK this open would wait for a writer forever.
        assert!(matches!(open(&fifo), Err(ReadError::NotRegular)));
        assert!(matches!(
            open(&d.path().join("missing")),
            Err(ReadError::Io(e)) if e.kind() == io::ErrorKind::NotFound
        ));
    }
}
