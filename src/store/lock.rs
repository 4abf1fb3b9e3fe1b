//! Advisory file locks (`flock`), released when the file is closed.
use std::fs::{File, OpenOptions};
use std::path::Path;

use rustix::fs::{flock, FlockOperation};

use super::{io_err, Result};

/// Opens (creating) `path` and locks it, waiting as long as needed.
pub(crate) fn open_lock(path: &Path, exclusive: bool) -> Result<File> {
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(io_err("cannot open lock file", path))?;
    let op = if exclusive {
        FlockOperation::LockExclusive
    } else {
        FlockOperation::LockShared
    };
    loop {
        match flock(&f, op) {
            Ok(()) => return Ok(f),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(io_err("cannot lock", path)(e.into())),
        }
    }
}
