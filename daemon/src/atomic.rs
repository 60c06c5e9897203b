//! Every file forkd writes (pid file, status file, precompressed siblings) appears whole or not
//! at all: a reader or a backup never sees half of it (incident 004).

use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Writes `bytes` to `path` atomically: a temporary file in the same directory, `fsync`,
/// `rename` over the target, then `fsync` of the directory so the rename itself is durable.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    write_whole(path, bytes, mode, true)
}

/// As [`write_atomic`], whole or not at all for a reader, but without the two `fsync`s: for a
/// file rewritten every second (metrics), where a crash may lose the last version but must
/// not stall the writer on a slow disk for each one.
pub fn write_atomic_unsynced(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    write_whole(path, bytes, mode, false)
}

fn write_whole(path: &Path, bytes: &[u8], mode: u32, durable: bool) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let tmp = dir.join(format!(
        ".{}.tmp.{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let create = || {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(libc::O_CLOEXEC)
            .open(&tmp)
    };
    let mut f = match create() {
        // The name holds this process's pid, and the writers of a process take turns: a file
        // there was left by an earlier process with the same pid, killed between its create
        // and its rename (in a container, every start is pid 1 again). It is nobody's now.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            std::fs::remove_file(&tmp)?;
            create()?
        }
        other => other?,
    };
    // From here the temporary file is ours, and an error removes it.
    let result = (|| {
        f.write_all(bytes)?;
        if durable {
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)?;
        match durable {
            true => File::open(dir)?.sync_all(),
            false => Ok(()),
        }
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// A file written in place of another, streamed (too large for [`write_atomic`]'s one
/// buffer): it is unnamed while written (`O_TMPFILE`), so a process killed meanwhile leaves
/// nothing, and [`Staged::commit`] syncs it, links it under its temporary name, renames that
/// over the target and syncs the directory. Where the filesystem has no `O_TMPFILE` the file is
/// created under the temporary name at once. Dropped uncommitted, a named one is removed.
#[derive(Debug)]
pub struct Staged {
    file: File,
    dir: PathBuf,
    tmp: PathBuf,
    named: bool,
}

impl Staged {
    /// A new, empty file with permission bits `mode` in `dir`, to replace a file of that
    /// directory later; `tmp_name` is the name it has between its link and the rename (a
    /// dot-name that says what made it, so a leftover can be recognised).
    pub fn new_in(dir: &Path, tmp_name: &OsStr, mode: u32) -> io::Result<Staged> {
        let dir = match dir.as_os_str().is_empty() {
            true => Path::new("."),
            false => dir,
        };
        let tmp = dir.join(tmp_name);
        let unnamed = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_TMPFILE | libc::O_CLOEXEC)
            .mode(mode)
            .open(dir);
        let (file, named) = match unnamed {
            Ok(f) => (f, false),
            // No O_TMPFILE here (the filesystem, or a kernel before 3.11 that sees O_DIRECTORY).
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL)
                ) =>
            {
                let f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(mode)
                    .custom_flags(libc::O_CLOEXEC)
                    .open(&tmp)?;
                (f, true)
            }
            Err(e) => return Err(e),
        };
        Ok(Staged {
            file,
            dir: dir.to_path_buf(),
            tmp,
            named,
        })
    }

    /// The file to write (and to give times or permissions) before the commit.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Makes the file `target` (in the same directory): sync, link, rename, sync the directory.
    pub fn commit(mut self, target: &Path) -> io::Result<()> {
        self.file.sync_all()?;
        if !self.named {
            // Through /proc: linkat's AT_EMPTY_PATH would need CAP_DAC_READ_SEARCH.
            let proc_path = format!("/proc/self/fd/{}", self.file.as_raw_fd());
            nix::unistd::linkat(
                nix::fcntl::AT_FDCWD,
                proc_path.as_str(),
                nix::fcntl::AT_FDCWD,
                &self.tmp,
                nix::fcntl::AtFlags::AT_SYMLINK_FOLLOW,
            )?;
            self.named = true;
        }
        std::fs::rename(&self.tmp, target)?;
        self.named = false;
        File::open(&self.dir)?.sync_all()
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if self.named {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_whole_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.pid");
        write_atomic(&p, b"1\n", 0o644).unwrap();
        write_atomic(&p, b"22\n", 0o644).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"22\n");
        write_atomic_unsynced(&p, b"333\n", 0o644).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"333\n");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn a_temporary_file_left_by_a_killed_process_of_the_same_pid_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.pid");
        let stale = dir
            .path()
            .join(format!(".x.pid.tmp.{}", std::process::id()));
        std::fs::write(&stale, b"half").unwrap();
        write_atomic(&p, b"1\n", 0o644).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"1\n");
        assert!(!stale.exists());
    }

    #[test]
    fn failure_names_no_half_file() {
        let err = write_atomic(Path::new("/nonexistent-dir/x"), b"1", 0o644).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn a_staged_file_appears_whole_at_its_commit_only() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("a.gz");
        std::fs::write(&target, b"old").unwrap();
        let names = || {
            let mut v: Vec<String> = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        let staged = Staged::new_in(dir.path(), OsStr::new(".a.gz.tmp"), 0o640).unwrap();
        staged.file().write_all(b"new").unwrap();
        // Unnamed while written: nothing but the old file is there.
        assert_eq!(names(), vec!["a.gz".to_string()]);
        staged.commit(&target).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
        assert_eq!(names(), vec!["a.gz".to_string()]);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&target).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o640);
        // Dropped without a commit: no trace.
        let staged = Staged::new_in(dir.path(), OsStr::new(".b.tmp"), 0o600).unwrap();
        staged.file().write_all(b"partial").unwrap();
        drop(staged);
        assert_eq!(names(), vec!["a.gz".to_string()]);
    }
}
