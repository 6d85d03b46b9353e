//! The client's data dir: what a worker keeps between runs. It holds the worker's id (so a
//! restarted client is the same worker to the supervisor), the outbox of finished outcomes not
//! yet acknowledged (see `outbox`), and a lock so that two clients never share one dir.
//!
//! Layout:
//!
//! ```text
//! DATA_DIR/lock          flock(2)ed while a client runs; empty
//! DATA_DIR/worker-id     the worker id, one line, written once
//! DATA_DIR/outbox/       one file per unacknowledged outcome (see `outbox`)
//! ```
//!
//! Only file-system work happens here; nothing about the connection.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{ClientError, new_worker_id};
use crate::proto::{self, WorkerId};

/// An opened, locked data dir. Cheap to clone; the lock is released when the last clone goes.
#[derive(Debug, Clone)]
pub struct DataDir {
    path: PathBuf,
    worker_id: WorkerId,
    _lock: Arc<File>,
}

impl DataDir {
    /// Opens (creating it if needed) and locks `path`, and reads its worker id, creating one
    /// from `name` the first time. A dir locked by another client is an error naming it.
    pub fn open(path: &Path, name: &str) -> Result<Self, ClientError> {
        let io = |what: &str, e: std::io::Error| ClientError::DataDir {
            dir: path.to_owned(),
            reason: format!("{what}: {e}"),
        };
        std::fs::create_dir_all(path).map_err(|e| io("cannot create it", e))?;
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path.join("lock"))
            .map_err(|e| io("cannot open its lock file", e))?;
        lock_exclusive(&lock).map_err(|e| {
            if e.kind() == std::io::ErrorKind::WouldBlock {
                ClientError::DataDir {
                    dir: path.to_owned(),
                    reason: "another idlegrid client is using it; give this one its own with --data-dir DIR".into(),
                }
            } else {
                io("cannot lock it", e)
            }
        })?;
        let id_path = path.join("worker-id");
        let worker_id = match std::fs::read_to_string(&id_path) {
            Ok(text) if proto::valid_worker_id(text.trim()) => WorkerId(text.trim().to_owned()),
            Ok(text) => {
                return Err(ClientError::DataDir {
                    dir: path.to_owned(),
                    reason: format!(
                        "worker-id holds {:?}, not a worker id (1-64 letters, digits, '-', '_', '.')",
                        text.chars().take(60).collect::<String>()
                    ),
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let id = new_worker_id(name);
                write_durably(&id_path, format!("{id}\n").as_bytes())
                    .map_err(|e| io("cannot write worker-id", e))?;
                id
            }
            Err(e) => return Err(io("cannot read worker-id", e)),
        };
        Ok(Self {
            path: path.to_owned(),
            worker_id,
            _lock: Arc::new(lock),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn worker_id(&self) -> &WorkerId {
        &self.worker_id
    }

    /// Where unacknowledged outcomes are kept.
    pub fn outbox(&self) -> PathBuf {
        self.path.join("outbox")
    }
}

/// This system's data directory for idlegrid (e.g. `~/.local/share/idlegrid` on Linux).
pub fn default_path() -> Option<PathBuf> {
    directories::ProjectDirs::from("", "", "idlegrid").map(|d| d.data_dir().to_owned())
}

#[cfg(unix)]
fn lock_exclusive(f: &File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock only reads the descriptor, which `f` keeps open for the call.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(unix))]
fn lock_exclusive(_f: &File) -> std::io::Result<()> {
    // Other systems lock with their installers' service manager for now.
    Ok(())
}

/// Writes `bytes` to `path` so that a crash leaves either the old file or the whole new one:
/// a temp file beside it, fsync, rename, fsync of the directory.
pub(crate) fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| std::io::Error::other("no parent directory"))?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    sync_dir(dir)
}

pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_client_on_the_same_data_dir_is_refused_with_the_dir_named() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("client");
        let first = DataDir::open(&dir, "box").unwrap();
        let err = DataDir::open(&dir, "box").unwrap_err().to_string();
        assert!(err.contains(&dir.display().to_string()), "{err}");
        assert!(err.contains("--data-dir"), "{err}");
        drop(first);
        // Released with the first client.
        DataDir::open(&dir, "box").unwrap();
    }

    #[test]
    fn the_worker_id_is_created_once_and_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let a = DataDir::open(tmp.path(), "my box").unwrap();
        let id = a.worker_id().clone();
        assert!(id.0.starts_with("my-box-"), "{id}");
        drop(a);
        let b = DataDir::open(tmp.path(), "another name").unwrap();
        assert_eq!(b.worker_id(), &id);
        assert_eq!(
            std::fs::read_to_string(tmp.path().join("worker-id")).unwrap(),
            format!("{id}\n")
        );
    }
}
