//! The box's epoch on disk (`box.epoch_file`): read at start, written whenever the box moves to a new
//! epoch (a takeover, or a standby joining a primary's later epoch), so that a restarted box never speaks
//! in an epoch older than the one it last served or followed in.

use std::path::Path;

/// The epoch of a box that has never written one.
pub const FIRST_EPOCH: u32 = 1;

/// Why the epoch file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum EpochError {
    #[error("box.epoch_file {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("box.epoch_file {path}: {content:?} is not an epoch (a whole number from 1)")]
    Malformed { path: String, content: String },
}

/// The epoch stored at `path`; [`FIRST_EPOCH`] without a path or a file. A file that is there but does
/// not hold an epoch is an error: starting at 1 would let a stale box speak as if it were current.
pub fn load(path: Option<&Path>) -> Result<u32, EpochError> {
    let Some(path) = path else { return Ok(FIRST_EPOCH) };
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(FIRST_EPOCH),
        Err(source) => return Err(EpochError::Io { path: path.display().to_string(), source }),
    };
    match text.trim().parse::<u32>() {
        Ok(e) if e >= FIRST_EPOCH => Ok(e),
        _ => Err(EpochError::Malformed { path: path.display().to_string(), content: text.trim().to_owned() }),
    }
}

/// Writes `epoch` to `path` (nothing without a path): a temporary file beside it, synced, then renamed
/// over it, so a crash leaves either the old epoch or the new one, never a torn file.
pub fn store(path: Option<&Path>, epoch: u32) -> Result<(), EpochError> {
    let Some(path) = path else { return Ok(()) };
    let io = |source| EpochError::Io { path: path.display().to_string(), source };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(format!("{epoch}\n").as_bytes()).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    std::fs::rename(&tmp, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_epoch_survives_a_restart_and_garbage_is_refused() {
        let dir = std::env::temp_dir().join(format!("hf-epoch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("epoch");
        let _ = std::fs::remove_file(&path);
        assert_eq!(load(None).unwrap(), FIRST_EPOCH);
        assert_eq!(load(Some(&path)).unwrap(), FIRST_EPOCH, "no file yet");
        store(Some(&path), 7).unwrap();
        assert_eq!(load(Some(&path)).unwrap(), 7);
        store(Some(&path), 8).unwrap();
        assert_eq!(load(Some(&path)).unwrap(), 8);
        for bad in ["", "0", "x", "-3", "99999999999"] {
            std::fs::write(&path, bad).unwrap();
            assert!(matches!(load(Some(&path)), Err(EpochError::Malformed { .. })), "{bad:?}");
        }
        store(None, 3).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
