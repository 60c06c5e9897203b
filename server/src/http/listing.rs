//! A directory listing (`--autoindex`): an HTML page of what a directory holds, for a
//! directory with none of the index files.
//!
//! It lists exactly what a request could be served: the directory is opened with the safe
//! open (`open::dir_beneath`, `RESOLVE_BENEATH`, the dot rule checked on where symlinks led),
//! names starting with a dot are never listed, nor names no request can spell (control bytes,
//! a backslash), nor anything but directories and regular files; a symlink is listed only when
//! the safe open reaches it (so never one that leads out of the root or into a dot path), with
//! what it leads to. Names are bytes: shown as UTF-8 (invalid bytes replaced) and HTML-escaped;
//! each link is the entry's absolute path percent-encoded (`path::encode_absolute`), so no name
//! can become a scheme (`javascript:`), another host (`//`) or markup.
//!
//! Bounded: at most `max` entries are read. A directory with more is listed up to there,
//! sorted, with a line saying it was cut, and the cut is counted (`autoindex_truncated`):
//! reading and sorting millions of names would hold a worker for seconds.

use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::dir::Dir;
use nix::fcntl::AtFlags;
use nix::sys::stat::{fstat, fstatat, FileStat, SFlag};

use super::open::{self, Refused};
use super::path::{self, Dots};

struct Item {
    name: Vec<u8>,
    dir: bool,
    size: u64,
    modified: SystemTime,
}

/// Writes the listing of the directory `rel` (relative, empty for the root) beneath `root`
/// into `out` (cleared): an HTML page. Returns whether it was cut at `max` entries.
pub(super) fn render(
    root: BorrowedFd<'_>,
    rel: &[u8],
    dots: Dots<'_>,
    max: usize,
    out: &mut Vec<u8>,
) -> Result<bool, Refused> {
    let dir_path = CString::new(if rel.is_empty() { b"." } else { rel })
        .map_err(|_| std::io::Error::from_raw_os_error(libc::ENOENT))?;
    let fd = open::dir_beneath(root, &dir_path, dots)?;
    let mut dir = Dir::from_fd(fd).map_err(std::io::Error::from)?;
    let mut items = Vec::new();
    let mut cut = false;
    // Each entry's path beneath the root, for the symlinks the safe open must judge.
    let mut full = Vec::new();
    let names: Vec<CString> = {
        let mut names = Vec::new();
        for entry in dir.iter() {
            let Ok(entry) = entry else { break };
            let name = entry.file_name();
            if !listable(name.to_bytes()) {
                continue;
            }
            if names.len() >= max {
                cut = true;
                break;
            }
            names.push(name.to_owned());
        }
        names
    };
    for name in names {
        let Some(st) = stat_entry(dir.as_fd(), root, rel, &name, dots, &mut full) else {
            continue;
        };
        let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
        let is_dir = kind == SFlag::S_IFDIR;
        if !is_dir && kind != SFlag::S_IFREG {
            continue;
        }
        items.push(Item {
            name: name.into_bytes(),
            dir: is_dir,
            size: u64::try_from(st.st_size).unwrap_or(0),
            modified: mtime(&st),
        });
    }
    // Directories first, then files, each in byte order of their names (as nginx lists).
    items.sort_by(|a, b| b.dir.cmp(&a.dir).then_with(|| a.name.cmp(&b.name)));
    page(rel, &items, cut.then_some(max), out);
    Ok(cut)
}

/// A name a request can name and the listing shows: no dot-file, no `.` or `..`, nothing
/// `path::resolve` would refuse after decoding (a control byte, a backslash).
fn listable(name: &[u8]) -> bool {
    !name.is_empty()
        && name.first() != Some(&b'.')
        && !name.iter().any(|&b| b < 0x20 || b == 0x7f || b == b'\\')
}

/// What `name` in the directory is: itself, or for a symlink what the safe open reaches
/// through it (`None`: out of the root, into a dot path, dangling).
fn stat_entry(
    dir: BorrowedFd<'_>,
    root: BorrowedFd<'_>,
    rel: &[u8],
    name: &CStr,
    dots: Dots<'_>,
    full: &mut Vec<u8>,
) -> Option<FileStat> {
    let st = fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW).ok()?;
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFLNK {
        return Some(st);
    }
    full.clear();
    if !rel.is_empty() {
        full.extend_from_slice(rel);
        full.push(b'/');
    }
    full.extend_from_slice(name.to_bytes());
    let c = CString::new(full.as_slice()).ok()?;
    let fd = open::reachable(root, &c, dots)?;
    fstat(fd.as_fd()).ok()
}

fn mtime(st: &FileStat) -> SystemTime {
    u64::try_from(st.st_mtime)
        .ok()
        .and_then(|s| UNIX_EPOCH.checked_add(Duration::from_secs(s)))
        .unwrap_or(UNIX_EPOCH)
}

/// The page itself.
fn page(rel: &[u8], items: &[Item], cut: Option<usize>, out: &mut Vec<u8>) {
    out.clear();
    let mut shown = Vec::with_capacity(rel.len() + 2);
    shown.push(b'/');
    shown.extend_from_slice(rel);
    if !rel.is_empty() {
        shown.push(b'/');
    }
    out.extend_from_slice(b"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Index of ");
    html(&shown, out);
    out.extend_from_slice(b"</title></head>\n<body><h1>Index of ");
    html(&shown, out);
    out.extend_from_slice(
        b"</h1>\n<table>\n<tr><th>Name</th><th>Size</th><th>Modified (UTC)</th></tr>\n",
    );
    let mut href = Vec::new();
    if !rel.is_empty() {
        let parent = rel
            .iter()
            .rposition(|&b| b == b'/')
            .map_or(&[][..], |i| rel.get(..i).unwrap_or_default());
        href.clear();
        path::encode_absolute(parent, &mut href);
        if !parent.is_empty() {
            href.push(b'/');
        }
        out.extend_from_slice(b"<tr><td><a href=\"");
        html(&href, out);
        out.extend_from_slice(b"\">../</a></td><td></td><td></td></tr>\n");
    }
    let mut full = Vec::new();
    for item in items {
        full.clear();
        if !rel.is_empty() {
            full.extend_from_slice(rel);
            full.push(b'/');
        }
        full.extend_from_slice(&item.name);
        href.clear();
        path::encode_absolute(&full, &mut href);
        if item.dir {
            href.push(b'/');
        }
        out.extend_from_slice(b"<tr><td><a href=\"");
        html(&href, out);
        out.extend_from_slice(b"\">");
        html(&item.name, out);
        if item.dir {
            out.push(b'/');
        }
        out.extend_from_slice(b"</a></td><td>");
        if item.dir {
            out.push(b'-');
        } else {
            out.extend_from_slice(item.size.to_string().as_bytes());
        }
        out.extend_from_slice(b"</td><td>");
        out.extend_from_slice(date(item.modified).as_bytes());
        out.extend_from_slice(b"</td></tr>\n");
    }
    out.extend_from_slice(b"</table>\n");
    if let Some(max) = cut {
        out.extend_from_slice(
            format!(
                "<p>This directory holds more than {max} entries: only the first {max} read \
                 are listed.</p>\n"
            )
            .as_bytes(),
        );
    }
    out.extend_from_slice(b"</body></html>\n");
}

/// `text` as UTF-8 (invalid bytes replaced), escaped for HTML text and quoted attributes.
fn html(text: &[u8], out: &mut Vec<u8>) {
    for c in String::from_utf8_lossy(text).chars() {
        match c {
            '&' => out.extend_from_slice(b"&amp;"),
            '<' => out.extend_from_slice(b"&lt;"),
            '>' => out.extend_from_slice(b"&gt;"),
            '"' => out.extend_from_slice(b"&quot;"),
            '\'' => out.extend_from_slice(b"&#39;"),
            c => {
                let mut buf = [0; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
}

/// `2026-12-02 07:50`, UTC; dates outside 1970..=9999 are clamped into it.
fn date(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        .min(253_402_300_799);
    let days = secs / 86_400;
    let (h, m) = (secs % 86_400 / 3600, secs % 3600 / 60);
    // Days to a civil date (Howard Hinnant's `civil_from_days`), for days since 1970.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(mo <= 2);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{m:02}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn dates_are_civil_utc() {
        let at = |s: u64| date(UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(at(0), "1970-01-01 00:00");
        assert_eq!(at(951_782_400), "2000-02-29 00:00");
        assert_eq!(at(1_764_661_817), "2025-12-02 07:50");
        assert_eq!(at(u64::MAX / 2), "9999-12-31 23:59");
    }

    #[test]
    fn html_escapes_markup_and_replaces_bad_bytes() {
        let mut out = Vec::new();
        html(b"<a href='x'>&\"\xff", &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;\u{fffd}"
        );
    }

    #[test]
    fn lists_what_can_be_served_sorted_and_escaped() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        std::fs::create_dir_all(p.join("www/d/sub")).unwrap();
        std::fs::create_dir_all(p.join("www/.git")).unwrap();
        std::fs::write(p.join("secret"), "s").unwrap();
        for name in [
            "b.txt",
            "a.txt",
            "<x>&y.html",
            "javascript:alert(1)",
            ".env",
        ] {
            std::fs::write(p.join("www/d").join(name), "12345").unwrap();
        }
        std::fs::write(p.join("www/top.txt"), "t").unwrap();
        symlink("../top.txt", p.join("www/d/in-root")).unwrap();
        symlink("../../secret", p.join("www/d/out")).unwrap();
        symlink("/etc", p.join("www/d/abs")).unwrap();
        symlink("../.git", p.join("www/d/to-git")).unwrap();
        symlink("missing", p.join("www/d/dangling")).unwrap();
        let root = open::root(&p.join("www")).unwrap();
        let dots = Dots {
            all: false,
            allow: &[],
        };
        let mut out = Vec::new();
        assert!(!render(root.as_fd(), b"d", dots, 100, &mut out).unwrap());
        let page = String::from_utf8(out.clone()).unwrap();
        let rows: Vec<&str> = page.lines().filter(|l| l.starts_with("<tr><td>")).collect();
        let names: Vec<String> = rows
            .iter()
            .map(|r| {
                r.split("\">")
                    .nth(1)
                    .unwrap()
                    .split("</a>")
                    .next()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(
            names,
            [
                "../",
                "sub/",
                "&lt;x&gt;&amp;y.html",
                "a.txt",
                "b.txt",
                "in-root",
                "javascript:alert(1)"
            ],
            "{page}"
        );
        assert!(page.contains("<title>Index of /d/</title>"), "{page}");
        assert!(page.contains("<a href=\"/\">../</a>"), "{page}");
        assert!(page.contains("<a href=\"/d/sub/\">sub/</a>"), "{page}");
        assert!(page.contains("href=\"/d/%3Cx%3E&amp;y.html\""), "{page}");
        assert!(page.contains("href=\"/d/javascript:alert(1)\""), "{page}");
        assert!(page.contains("<td>5</td>"), "{page}");
        // The root lists without a parent link; the directory is cut at the bound.
        assert!(render(root.as_fd(), b"d", dots, 2, &mut out).unwrap());
        let page = String::from_utf8(out.clone()).unwrap();
        // At most the parent and two rows (a name read may be a symlink out, not listed).
        assert!(page.matches("<tr><td>").count() <= 3, "{page}");
        assert!(page.contains("more than 2 entries"), "{page}");
        assert!(!render(root.as_fd(), b"", dots, 100, &mut out).unwrap());
        let page = String::from_utf8(out.clone()).unwrap();
        assert!(!page.contains("../"), "{page}");
        assert!(!page.contains(".git"), "{page}");
        assert!(render(root.as_fd(), b"nope", dots, 100, &mut out).is_err());
    }
}
