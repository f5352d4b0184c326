//! The atomic file write: readers see the old contents or the new ones, never a mixture, and a
//! crash leaves one of the two on disk.

use std::fs::{File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Numbers the temporary files of this process, so concurrent writes never share one.
static TEMPORARIES: AtomicU64 = AtomicU64::new(0);

/// Replaces `path` with `contents`: writes a temporary file in the same directory, flushes it to
/// disk, sets its permissions to `mode` when one is given (exactly, whatever the umask), renames
/// it over `path` and flushes the directory so the rename itself is durable.
///
/// With a `mode`, the file never exists with wider permissions than asked, not even for a moment
/// (it is created with them). Without one, a new file gets the default permissions, as
/// [`std::fs::write`] would give it. On failure the temporary file is removed and `path` is left
/// as it was.
pub fn write_atomically(path: &Path, contents: &[u8], mode: Option<u32>) -> io::Result<()> {
    let temporary = temporary_path(path)?;
    let written = write_and_rename(&temporary, path, contents, mode);
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
        return written;
    }
    // The rename is in place; a failure to flush the directory is not worth failing the write
    // for, since it cannot be undone anyway.
    if let Some(directory) = path.parent() {
        let directory = match directory.as_os_str().is_empty() {
            true => Path::new("."),
            false => directory,
        };
        if let Ok(directory) = File::open(directory) {
            let _ = directory.sync_all();
        }
    }
    Ok(())
}

fn temporary_path(path: &Path) -> io::Result<PathBuf> {
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} does not name a file", path.display()),
        )
    })?;
    let number = TEMPORARIES.fetch_add(1, Ordering::Relaxed);
    let mut temporary = name.to_os_string();
    temporary.push(format!(".{}-{number}.tmp", std::process::id()));
    Ok(path.with_file_name(temporary))
}

fn write_and_rename(
    temporary: &Path,
    path: &Path,
    contents: &[u8],
    mode: Option<u32>,
) -> io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    if let Some(mode) = mode {
        options.mode(mode);
    }
    let mut file = options.open(temporary)?;
    file.write_all(contents)?;
    file.sync_all()?;
    if let Some(mode) = mode {
        // The umask may have narrowed the mode given at creation.
        file.set_permissions(Permissions::from_mode(mode))?;
    }
    drop(file);
    std::fs::rename(temporary, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(directory: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(directory)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    fn mode_of(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn a_write_replaces_the_file_and_sets_the_mode_asked() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("key.pem");
        write_atomically(&path, b"first", Some(0o600)).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"first");
        assert_eq!(mode_of(&path), 0o600);

        // A mode wider than any usual umask allows is set exactly.
        write_atomically(&path, b"second", Some(0o666)).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        assert_eq!(mode_of(&path), 0o666);

        write_atomically(&path, b"third", Some(0o640)).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"third");
        assert_eq!(mode_of(&path), 0o640);
        assert_eq!(entries(directory.path()), ["key.pem"]);
    }

    #[test]
    fn without_a_mode_the_file_is_created_and_replaced() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("state.json");
        write_atomically(&path, b"{}", None).unwrap();
        write_atomically(&path, b"{\"a\":1}", None).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"{\"a\":1}");
        assert_eq!(entries(directory.path()), ["state.json"]);
    }

    #[test]
    fn a_failed_write_leaves_no_temporary_and_the_target_unchanged() {
        let directory = tempfile::tempdir().unwrap();
        // A directory cannot be replaced by a file: the rename fails after the write.
        let path = directory.path().join("occupied");
        std::fs::create_dir(&path).unwrap();
        std::fs::write(path.join("inside"), b"kept").unwrap();
        write_atomically(&path, b"new", Some(0o644)).unwrap_err();
        assert_eq!(entries(directory.path()), ["occupied"]);
        assert_eq!(std::fs::read(path.join("inside")).unwrap(), b"kept");

        // A missing directory fails before anything is written.
        let missing = directory.path().join("missing").join("file");
        write_atomically(&missing, b"new", None).unwrap_err();
        assert_eq!(entries(directory.path()), ["occupied"]);
    }

    #[test]
    fn a_path_without_a_file_name_is_refused() {
        let error = write_atomically(Path::new("/"), b"x", None).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
    }
}
