//! Tokens: creating them on first start, reading them from files, comparing them without leaking
//! timing.

use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot read token file {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("cannot write token file {path}: {error}")]
    Write {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("token file {path} is empty")]
    Empty { path: PathBuf },
    #[error("token file {path} holds a token that is not printable ASCII or longer than 256 bytes")]
    Invalid { path: PathBuf },
    #[error("no randomness available to create a token: {0}")]
    Random(getrandom::Error),
}

/// A new random token: 32 bytes as 64 hex digits.
pub fn generate_token() -> Result<String, TokenError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(TokenError::Random)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Reads a token (trimmed) from a file.
pub fn read_token(path: &Path) -> Result<String, TokenError> {
    let text = std::fs::read_to_string(path).map_err(|error| TokenError::Read {
        path: path.to_owned(),
        error,
    })?;
    let token = text.trim();
    if token.is_empty() {
        return Err(TokenError::Empty {
            path: path.to_owned(),
        });
    }
    if token.len() > 256 || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(TokenError::Invalid {
            path: path.to_owned(),
        });
    }
    Ok(token.to_owned())
}

/// Reads the token in `path`, creating the file with a new token (readable by its owner only)
/// if it does not exist.
pub fn load_or_create_token(path: &Path) -> Result<String, TokenError> {
    if path.exists() {
        return read_token(path);
    }
    let token = generate_token()?;
    let write_err = |error| TokenError::Write {
        path: path.to_owned(),
        error,
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(write_err)?;
    writeln!(file, "{token}").map_err(write_err)?;
    file.sync_all().map_err(write_err)?;
    Ok(token)
}

/// Where a supervisor serving on `port` of this machine leaves its operator token for local
/// use (the same user's `submit` finds it there, as `docker` finds its local context):
/// `local-PORT.token` in idlegrid's per-user data directory. `None` if the system has no home.
pub fn local_operator_token_path(port: u16) -> Option<PathBuf> {
    let dirs = directories::ProjectDirs::from("org", "idlegrid", "idlegrid")?;
    Some(
        dirs.data_local_dir()
            .join("operators")
            .join(format!("local-{port}.token")),
    )
}

/// Leaves the operator token for local `submit`s (see [`local_operator_token_path`]), readable by
/// this user only.
pub fn save_local_operator_token(port: u16, token: &str) -> Result<PathBuf, TokenError> {
    let path = local_operator_token_path(port).ok_or_else(|| TokenError::Write {
        path: PathBuf::from("~/.local/share/idlegrid"),
        error: std::io::Error::other("no home directory"),
    })?;
    let write_err = |error| TokenError::Write {
        path: path.clone(),
        error,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(write_err)?;
    }
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&tmp).map_err(write_err)?;
    writeln!(file, "{token}").map_err(write_err)?;
    // Renamed into place, so a concurrent reader never sees half a token.
    std::fs::rename(&tmp, &path).map_err(write_err)?;
    Ok(path)
}

/// Compares a presented token with the expected one in time independent of where they differ.
pub fn token_matches(presented: &str, expected: &str) -> bool {
    let (a, b) = (presented.as_bytes(), expected.as_bytes());
    let mut diff = a.len() ^ b.len();
    for (i, eb) in b.iter().enumerate() {
        diff |= usize::from(a.get(i).copied().unwrap_or(0) ^ eb);
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_created_once_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("worker.token");
        let t1 = load_or_create_token(&path).unwrap();
        let t2 = load_or_create_token(&path).unwrap();
        assert_eq!(t1, t2);
        assert_eq!(t1.len(), 64);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn tokens_match_only_when_equal() {
        assert!(token_matches("abc", "abc"));
        assert!(!token_matches("abd", "abc"));
        assert!(!token_matches("ab", "abc"));
        assert!(!token_matches("abcd", "abc"));
        assert!(!token_matches("", "abc"));
    }

    #[test]
    fn an_empty_token_file_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t");
        std::fs::write(&path, "  \n").unwrap();
        let err = read_token(&path).unwrap_err().to_string();
        assert!(
            err.contains("is empty") && err.contains(path.to_str().unwrap()),
            "{err}"
        );
    }
}
