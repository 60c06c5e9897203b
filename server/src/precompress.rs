//! `forkd precompress DIR`: writes the `.br`, `.zst` and `.gz` siblings that the server sends
//! in place of a file (`http::encoding`), for every file of a compressible type
//! (`http::mime::compressible`) of at least `--min-size` bytes beneath DIR.
//!
//! What it guarantees, so it can run while forkd serves the tree:
//! - A sibling appears whole or not at all: it is written to an unnamed file in the same
//!   directory (`O_TMPFILE`), synced, given the original's permission bits and modification
//!   time, linked under a dot-name (`.NAME.forkd-tmp-PID-N`) and renamed over the sibling, then
//!   the directory is synced. Killed while writing, it leaves nothing; killed between the link
//!   and the rename (or on a filesystem without `O_TMPFILE`, where the temporary file is named
//!   from the start), it leaves a dot-file, which forkd never serves (dot-files are 404) and
//!   the next run removes (unless the process that made it still runs).
//! - A sibling carries the original's modification time, so it is "not older" than the
//!   original (what the server checks) until the original changes; and the original is looked
//!   at again after compressing: if it changed meanwhile, the sibling is thrown away, so no
//!   sibling of an old version can look fresh.
//! - Only siblings smaller than the original are kept; a stale sibling that would no longer be
//!   written (the file shrank below `--min-size`, or stopped compressing) is removed.
//! - A fresh sibling is left alone: a second run over an unchanged tree writes nothing.
//! - Symlinks are not followed (neither into directories nor to files): a tree's symlinks may
//!   lead out of it, and an in-tree target gets its siblings where it really lies. Dot-files
//!   and dot-directories are skipped, as forkd does not serve them by default.
//!
//! One file at a time (the codecs at their highest levels are the cost; parallelism is left
//! out on purpose, so a run on a live server takes one CPU).

use std::fs::{self, File, Metadata, OpenOptions};
use std::io::{self, BufReader, BufWriter, IsTerminal, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::http::encoding::Coding;
use crate::http::mime;
use forkd_daemon::atomic;

/// Write the precompressed siblings forkd serves: FILE.br, FILE.zst and FILE.gz for every file
/// of a compressible type (HTML, CSS, JavaScript, JSON, SVG, XML, text, WebAssembly, fonts
/// other than WOFF) beneath DIR.
///
/// Each sibling is written atomically (a temporary file in the same directory, synced, renamed,
/// then the directory synced) with the original's modification time and permissions, and kept
/// only when it is smaller than the original. Fresh siblings are left alone, stale ones are
/// rewritten or removed, so running it again after editing a few files redoes only those, and
/// it is safe to run while forkd serves DIR. Symlinks and dot-files are skipped.
/// Exit status: 0 when every file was handled, 1 when some could not be (each is named).
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The tree to walk, usually the directory forkd serves (--root).
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,

    /// Codings to write, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        value_name = "LIST",
        default_value = "br,zstd,gzip"
    )]
    pub encodings: Vec<CodingName>,

    /// Files smaller than this are left uncompressed (a few hundred bytes fit in a packet
    /// either way).
    #[arg(long, value_name = "BYTES", default_value_t = 256)]
    pub min_size: u64,

    /// gzip level, 1 (fast) to 9 (smallest).
    #[arg(long, value_name = "N", default_value_t = 9,
          value_parser = clap::value_parser!(u32).range(1..=9))]
    pub gzip_level: u32,

    /// Brotli quality, 0 to 11 (smallest, slowest).
    #[arg(long, value_name = "N", default_value_t = 11,
          value_parser = clap::value_parser!(i32).range(0..=11))]
    pub brotli_level: i32,

    /// zstd level, 1 to 22 (levels above 19 need much more memory to write, not to read).
    #[arg(long, value_name = "N", default_value_t = 19,
          value_parser = clap::value_parser!(i32).range(1..=22))]
    pub zstd_level: i32,

    /// No progress bar, even on a terminal (the summary is still printed).
    #[arg(long, short)]
    pub quiet: bool,
}

/// A coding as `--encodings` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CodingName {
    Br,
    Zstd,
    Gzip,
}

impl CodingName {
    fn coding(self) -> Coding {
        match self {
            CodingName::Br => Coding::Br,
            CodingName::Zstd => Coding::Zstd,
            CodingName::Gzip => Coding::Gzip,
        }
    }
}

/// What a run did, for the summary and the tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Regular files found (not symlinks, not dot-files, not siblings).
    pub files: u64,
    /// Files of a compressible type and at least `--min-size` bytes.
    pub candidates: u64,
    pub written: u64,
    /// Fresh siblings left as they were.
    pub fresh: u64,
    /// Stale siblings removed because none would be written now.
    pub removed: u64,
    /// Siblings not written because they would not be smaller.
    pub no_gain: u64,
    /// Leftover temporary files of an interrupted run, removed.
    pub cleaned: u64,
    pub symlinks: u64,
    /// Files that changed while being compressed (left for the next run).
    pub changed: u64,
    pub errors: u64,
    /// Per coding (`Coding::ALL` order): bytes of the originals that have a fresh sibling of
    /// it after the run, and bytes of those siblings.
    pub before: [u64; 3],
    pub after: [u64; 3],
}

impl Summary {
    /// A fresh sibling of coding `i`, `after` bytes for an original of `before`.
    fn count(&mut self, i: usize, before: u64, after: u64) {
        if let (Some(b), Some(a)) = (self.before.get_mut(i), self.after.get_mut(i)) {
            *b += before;
            *a += after;
        }
    }
}

/// Runs the subcommand; returns the exit status.
pub fn main(args: &Args) -> i32 {
    match run(args) {
        Ok(s) => {
            print_summary(args, &s);
            i32::from(s.errors > 0)
        }
        Err(e) => {
            eprintln!("forkd precompress: {e}");
            1
        }
    }
}

/// Walks `args.dir` and writes what is missing or stale; errors on single files are reported
/// on stderr and counted, an unreadable DIR is the error returned.
pub fn run(args: &Args) -> io::Result<Summary> {
    let meta = fs::metadata(&args.dir)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", args.dir.display())))?;
    if !meta.is_dir() {
        return Err(io::Error::other(format!(
            "{} is not a directory",
            args.dir.display()
        )));
    }
    let mut s = Summary::default();
    let mut files = Vec::new();
    walk(&args.dir, &mut files, &mut s);
    let total: u64 = files.iter().map(|(_, len)| *len).sum();
    let bar = progress_bar(args.quiet, total);
    let codings: Vec<Coding> = Coding::ALL
        .into_iter()
        .filter(|c| args.encodings.iter().any(|e| e.coding() == *c))
        .collect();
    let mut tmp_count = 0u64;
    for (path, len) in &files {
        bar.set_message(
            path.strip_prefix(&args.dir)
                .unwrap_or(path)
                .display()
                .to_string(),
        );
        if let Err(e) = one_file(args, &codings, path, &mut s, &mut tmp_count) {
            bar.suspend(|| eprintln!("forkd precompress: {}: {e}", path.display()));
            s.errors += 1;
        }
        bar.inc(*len);
    }
    bar.finish_and_clear();
    Ok(s)
}

fn progress_bar(quiet: bool, total: u64) -> indicatif::ProgressBar {
    if quiet || !io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{bar:30} {bytes}/{total_bytes} ({eta} left) {wide_msg}",
    ) {
        bar.set_style(style);
    }
    bar
}

fn print_summary(args: &Args, s: &Summary) {
    let mut out = format!(
        "forkd precompress {}: {} files, {} compressible; siblings: {} written, {} up to date, \
         {} not smaller (not written), {} stale removed",
        args.dir.display(),
        s.files,
        s.candidates,
        s.written,
        s.fresh,
        s.no_gain,
        s.removed
    );
    for (n, what) in [
        (s.symlinks, "symlinks skipped"),
        (s.cleaned, "leftover temporary files removed"),
        (s.changed, "files changed while read (run again)"),
        (s.errors, "errors"),
    ] {
        if n > 0 {
            out.push_str(&format!(", {n} {what}"));
        }
    }
    out.push('\n');
    for ((c, before), after) in Coding::ALL.iter().zip(s.before).zip(s.after) {
        if before == 0 {
            continue;
        }
        out.push_str(&format!(
            "  {:<4} {before} bytes of originals -> {after} bytes ({:.1} %), {} bytes saved\n",
            c.token(),
            after as f64 * 100.0 / before as f64,
            before.saturating_sub(after)
        ));
    }
    // Not `print!`, which panics when stdout is closed.
    let _ = io::stdout().lock().write_all(out.as_bytes());
}

/// The regular files beneath `dir` with their sizes, sorted by path, without following
/// symlinks or entering dot-directories; leftover temporary files are removed on the way.
fn walk(dir: &Path, files: &mut Vec<(PathBuf, u64)>, s: &mut Summary) {
    let entries = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) => {
            eprintln!("forkd precompress: {}: {e}", dir.display());
            s.errors += 1;
            return;
        }
    };
    let mut entries: Vec<fs::DirEntry> = entries.filter_map(Result::ok).collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name();
        let path = entry.path();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if name.as_bytes().starts_with(b".") {
            if kind.is_file() && is_stale_temp(name.as_bytes()) {
                match fs::remove_file(&path) {
                    Ok(()) => s.cleaned += 1,
                    Err(e) => {
                        eprintln!("forkd precompress: {}: {e}", path.display());
                        s.errors += 1;
                    }
                }
            }
            continue;
        }
        if kind.is_symlink() {
            s.symlinks += 1;
        } else if kind.is_dir() {
            walk(&path, files, s);
        } else if kind.is_file() {
            // Siblings are not files of the site.
            if !Coding::ALL
                .iter()
                .any(|c| name.as_bytes().ends_with(c.suffix().as_bytes()))
            {
                s.files += 1;
            }
            let len = entry.metadata().map_or(0, |m| m.len());
            files.push((path, len));
        }
    }
}

/// The marker in the name of a temporary file this command made.
const TEMP_MARK: &[u8] = b".forkd-tmp-";

/// Whether `name` is a temporary file of a run that no longer runs: `.NAME.forkd-tmp-PID-N`
/// with PID not a live process (a run in progress elsewhere keeps its files).
fn is_stale_temp(name: &[u8]) -> bool {
    let Some(at) = name.windows(TEMP_MARK.len()).rposition(|w| w == TEMP_MARK) else {
        return false;
    };
    let rest = name.get(at + TEMP_MARK.len()..).unwrap_or_default();
    let pid = rest
        .split(|&b| b == b'-')
        .next()
        .and_then(|p| std::str::from_utf8(p).ok())
        .and_then(|p| p.parse::<i32>().ok());
    match pid {
        Some(pid) if pid > 0 => {
            let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None);
            // ESRCH: no such process. EPERM means it exists (another user's).
            matches!(alive, Err(nix::errno::Errno::ESRCH))
        }
        _ => false,
    }
}

/// `path` + `suffix`.
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_os_string().into_vec();
    name.extend_from_slice(suffix.as_bytes());
    PathBuf::from(std::ffi::OsString::from_vec(name))
}

/// What identifies a version of the original: if any of it moves while we compress, the
/// sibling would be of an old version.
fn stamp(m: &Metadata) -> (u64, u64, u64, i64, i64, i64, i64) {
    (
        m.dev(),
        m.ino(),
        m.len(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec(),
    )
}

/// Whether `sibling` is no older than `original` (what the server checks).
fn fresh(sibling: &Metadata, original: &Metadata) -> bool {
    (sibling.mtime(), sibling.mtime_nsec()) >= (original.mtime(), original.mtime_nsec())
}

/// Brings the siblings of one file up to date.
fn one_file(
    args: &Args,
    codings: &[Coding],
    path: &Path,
    s: &mut Summary,
    tmp_count: &mut u64,
) -> io::Result<()> {
    let ext_is_coding = Coding::ALL.iter().any(|c| {
        path.extension()
            .is_some_and(|e| e.as_bytes() == c.suffix().trim_start_matches('.').as_bytes())
    });
    if ext_is_coding || !mime::compressible(mime::of_path(path)) {
        return Ok(());
    }
    // O_NOFOLLOW: the walk saw a regular file; if a symlink took its place since, refuse it.
    let original = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NOCTTY | libc::O_NONBLOCK)
        .open(path)?;
    let meta = original.metadata()?;
    if !meta.is_file() {
        return Ok(());
    }
    let worth = meta.len() >= args.min_size;
    if worth {
        s.candidates += 1;
    }
    for &coding in codings {
        let sib_path = with_suffix(path, coding.suffix());
        let existing = match fs::symlink_metadata(&sib_path) {
            Ok(m) => Some(m),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        let i = coding.index();
        match &existing {
            // Not ours to replace: a directory, a symlink, a device by that name.
            Some(m) if !m.file_type().is_file() => continue,
            Some(m) if fresh(m, &meta) => {
                s.fresh += 1;
                s.count(i, meta.len(), m.len());
                continue;
            }
            _ => {}
        }
        let written = if worth {
            write_sibling(args, coding, path, &original, &meta, &sib_path, tmp_count)?
        } else {
            Outcome::NoGain
        };
        match written {
            Outcome::Written(len) => {
                s.written += 1;
                s.count(i, meta.len(), len);
            }
            Outcome::Changed => {
                s.changed += 1;
                return Ok(());
            }
            Outcome::NoGain => {
                if worth {
                    s.no_gain += 1;
                }
                if existing.is_some() {
                    match fs::remove_file(&sib_path) {
                        Ok(()) => s.removed += 1,
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
    }
    Ok(())
}

enum Outcome {
    /// The sibling is in place, this many bytes long.
    Written(u64),
    /// It would not be smaller than the original: nothing written.
    NoGain,
    /// The original changed while it was read: nothing written.
    Changed,
}

/// Compresses `original` into a temporary file beside it and, if smaller and the original
/// unchanged, renames it over `sib_path` (`forkd_daemon::atomic::Staged`: unnamed while
/// written, synced, linked under a dot-name, renamed, the directory synced).
fn write_sibling(
    args: &Args,
    coding: Coding,
    path: &Path,
    original: &File,
    meta: &Metadata,
    sib_path: &Path,
    tmp_count: &mut u64,
) -> io::Result<Outcome> {
    let dir = path.parent().unwrap_or(Path::new("."));
    *tmp_count += 1;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(sib_path.file_name().unwrap_or_default());
    tmp_name.push(format!(
        "{}{}-{}",
        String::from_utf8_lossy(TEMP_MARK),
        std::process::id(),
        tmp_count
    ));
    let staged = atomic::Staged::new_in(dir, &tmp_name, 0o600)?;
    let tmp = staged.file();
    compress(args, coding, original, meta.len(), tmp)?;
    let len = tmp.metadata()?.len();
    if len >= meta.len() {
        return Ok(Outcome::NoGain);
    }
    if stamp(&original.metadata()?) != stamp(meta) {
        return Ok(Outcome::Changed);
    }
    tmp.set_permissions(fs::Permissions::from_mode(meta.mode() & 0o777))?;
    tmp.set_times(fs::FileTimes::new().set_modified(meta.modified()?))?;
    staged.commit(sib_path)?;
    Ok(Outcome::Written(len))
}

/// Writes `original` (`len` bytes, read from its start) compressed with `coding` into `out`.
fn compress(args: &Args, coding: Coding, original: &File, len: u64, out: &File) -> io::Result<()> {
    const BUF: usize = 64 * 1024;
    let mut input = BufReader::with_capacity(BUF, original);
    // `&File` reads through the shared position: start from the beginning each time.
    use std::io::Seek;
    input.seek(io::SeekFrom::Start(0))?;
    let mut output = BufWriter::with_capacity(BUF, out);
    match coding {
        Coding::Gzip => {
            // No name and no time in the header: the same input gives the same bytes.
            let mut enc = flate2::GzBuilder::new()
                .mtime(0)
                .write(&mut output, flate2::Compression::new(args.gzip_level));
            io::copy(&mut input, &mut enc)?;
            enc.finish()?;
        }
        Coding::Br => {
            // A window no larger than the file (the format's 2^10 to 2^24): at quality 11 the
            // encoder's tables grow with the window, and a 22-bit one for each small page
            // made a tree of a thousand files take ten times as long.
            let bits = 64 - len.saturating_sub(1).leading_zeros();
            let params = brotli::enc::BrotliEncoderParams {
                quality: args.brotli_level,
                lgwin: bits.clamp(10, 24) as i32,
                size_hint: usize::try_from(len).unwrap_or(0),
                ..Default::default()
            };
            brotli::BrotliCompress(&mut input, &mut output, &params)?;
        }
        Coding::Zstd => {
            let mut enc = zstd::Encoder::new(&mut output, args.zstd_level)?;
            enc.set_pledged_src_size(Some(len))?;
            enc.include_checksum(true)?;
            io::copy(&mut input, &mut enc)?;
            enc.finish()?;
        }
    }
    output.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_names_of_dead_runs_only() {
        // A pid far above pid_max is never alive.
        assert!(is_stale_temp(b".a.css.gz.forkd-tmp-2147483647-3"));
        let me = format!(".a.css.gz.forkd-tmp-{}-3", std::process::id());
        assert!(!is_stale_temp(me.as_bytes()));
        for name in [
            ".a.css.gz",
            ".forkd-tmp-",
            ".x.forkd-tmp-abc-1",
            ".x.forkd-tmp--1",
        ] {
            assert!(!is_stale_temp(name.as_bytes()), "{name}");
        }
    }
}
