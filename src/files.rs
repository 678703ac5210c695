//! File-system steps that the disk database's files, the backups and the
//! client's output files share: a data directory and a new file made
//! private, a file to write values into made private, the directory a file
//! is in, a sync of a directory (which makes the renames, links and new
//! files in it durable), and a removal that finds nothing to remove.

use std::io;
use std::path::Path;

/// The directory holding `path` (`.` for a bare file name).
pub fn dir_of(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// Creates `dir` (and what is missing above it) readable by this user
/// only, as PostgreSQL and etcd make theirs: the store holds every value
/// and the tokens' digests. A directory that exists is left as it is.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Creates the empty file `path` readable and writable by this user only
/// (0600, whatever the umask lets through), for a database to be made in:
/// like the data directory, each file in it holds values or the tokens'
/// digests, and a data directory that existed keeps its mode. redb's
/// `Database::create` makes a new database in an empty file.
pub fn create_private_file(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map(drop)
}

/// Opens `path` to be written from its start, readable and writable by
/// this user only (0600, whatever the umask lets through): what goes in
/// is values or the tokens' digests (a backup, `kvs export -o`). A file
/// that exists is emptied first and, if it is a regular file that others
/// could read, narrowed to 0600 too; anything else (a pipe, `/dev/stdout`)
/// is written as it is.
pub fn overwrite_private(path: &Path) -> io::Result<std::fs::File> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    let metadata = file.metadata()?;
    if metadata.is_file() && metadata.permissions().mode() & 0o077 != 0 {
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(file)
}

/// Narrows a file that others may read to this user only (0600): the
/// store's files made by a release before files were created private.
/// Whether it did; a file that is not there is left alone.
pub fn narrow_to_owner(path: &Path) -> io::Result<bool> {
    use std::os::unix::fs::PermissionsExt;
    let mode = match std::fs::metadata(path) {
        Ok(metadata) => metadata.permissions().mode(),
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(error) => return Err(error),
    };
    if mode & 0o077 == 0 {
        return Ok(false);
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(true)
}

/// Makes the entries of `dir` durable: renames, links and new files.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(test)]
    if failing_dir_syncs::holds(dir) {
        return Err(io::Error::other("a directory sync failed (a test's)"));
    }
    std::fs::File::open(dir)?.sync_all()
}

/// Removes the file at `path`, if there is one.
pub fn remove_if_present(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => Err(error),
        _ => Ok(()),
    }
}

/// The directories whose syncs fail, for tests of what a failed directory
/// sync leads to (no file system here makes one fail on demand). Keyed by
/// path, so that tests running beside each other are not touched.
#[cfg(test)]
pub mod failing_dir_syncs {
    use std::path::{Path, PathBuf};
    use std::sync::Mutex;

    static DIRS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

    /// Whether syncs of `dir` fail.
    pub fn holds(dir: &Path) -> bool {
        DIRS.lock().unwrap().iter().any(|failing| failing == dir)
    }

    /// Makes syncs of `dir` fail (`true`) or work again.
    pub fn set(dir: &Path, failing: bool) {
        let mut dirs = DIRS.lock().unwrap();
        dirs.retain(|d| d != dir);
        if failing {
            dirs.push(dir.to_owned());
        }
    }
}
