//! Media types: the `Content-Type` of a file from its name, whether a type is worth
//! compressing (which decides where precompressed siblings are looked for and made), and the
//! charset rule for text.
//!
//! A type comes from, in order: the operator's table (`[server.mime]`, extension to type),
//! `BUILT_IN` where mime_guess's table lags what browsers follow, then mime_guess, then
//! `application/octet-stream`. Text types are declared UTF-8 unless the type already carries
//! parameters.

/// Where mime_guess's table lags the registrations browsers follow (checked against
/// mime_guess 2.0.5, which already has wasm, webmanifest, avif, webp, jxl, woff2, apng, heic).
const BUILT_IN: [(&str, &str); 10] = [
    // RFC 9239: JavaScript is text/javascript, modules and CommonJS included.
    ("mjs", "text/javascript"),
    ("cjs", "text/javascript"),
    // Source maps are JSON (the source map specification), not text/plain.
    ("map", "application/json"),
    // RFC 8081: the font top-level type.
    ("woff", "font/woff"),
    ("otf", "font/otf"),
    // RFC 9512.
    ("yaml", "application/yaml"),
    ("yml", "application/yaml"),
    // The registered types, not mime_guess's x- or vendor spellings.
    ("m4a", "audio/mp4"),
    ("toml", "application/toml"),
    ("zst", "application/zstd"),
];

const OCTETS: &str = "application/octet-stream";

/// The type of the file `name` (a path; only its last component's extension counts, compared
/// without regard to case). `table` is the operator's, extensions in lower case without dot.
pub(super) fn of<'a>(name: &[u8], table: &'a [(String, String)]) -> &'a str {
    let Some(ext) = extension(name) else {
        return OCTETS;
    };
    if let Some((_, t)) = table.iter().find(|(e, _)| e.eq_ignore_ascii_case(ext)) {
        return t;
    }
    BUILT_IN
        .iter()
        .find(|(e, _)| e.eq_ignore_ascii_case(ext))
        .map(|&(_, m)| m)
        .or_else(|| mime_guess::from_ext(ext).first_raw())
        .unwrap_or(OCTETS)
}

/// The type and subtype, as written: `text/html; charset=x` gives (`text`, `html`).
fn split(mime: &str) -> (&str, &str) {
    let essence = mime.split(';').next().unwrap_or(mime).trim();
    essence.split_once('/').unwrap_or((essence, ""))
}

/// Whether `mime` is text a browser decodes by charset: `text/*`, and the application types
/// that are text (JavaScript, JSON, XML, YAML, TOML and the `+json`, `+xml` families, such as
/// a web app manifest or an Atom feed). Case-insensitive, and allocation-free: it runs for
/// every response.
fn is_text(mime: &str) -> bool {
    let (top, sub) = split(mime);
    if top.eq_ignore_ascii_case("text") {
        return true;
    }
    let ends_with = |suffix: &str| {
        sub.len() >= suffix.len()
            && sub
                .get(sub.len() - suffix.len()..)
                .is_some_and(|end| end.eq_ignore_ascii_case(suffix))
    };
    top.eq_ignore_ascii_case("application")
        && (["javascript", "ecmascript", "json", "xml", "yaml", "toml"]
            .iter()
            .any(|t| sub.eq_ignore_ascii_case(t))
            || ends_with("+json")
            || ends_with("+xml"))
}

/// Whether a file of type `mime` shrinks when compressed: text (as `is_text`), SVG,
/// WebAssembly, uncompressed fonts and icons. Formats that compress themselves (images other
/// than SVG, BMP and icons, audio, video, WOFF, archives) are not. Only files of these types
/// are given precompressed siblings by `forkd precompress`, and only for them does the server
/// look for siblings and answer `Vary: Accept-Encoding`.
pub fn compressible(mime: &str) -> bool {
    const OTHERS: [(&str, &str); 12] = [
        ("image", "svg+xml"),
        ("image", "bmp"),
        ("image", "x-icon"),
        ("image", "vnd.microsoft.icon"),
        ("application", "wasm"),
        ("application", "rtf"),
        ("application", "x-subrip"),
        ("application", "vnd.ms-fontobject"),
        ("application", "font-sfnt"),
        ("font", "ttf"),
        ("font", "otf"),
        ("font", "collection"),
    ];
    let (top, sub) = split(mime);
    is_text(mime)
        || OTHERS
            .iter()
            .any(|(t, s)| top.eq_ignore_ascii_case(t) && sub.eq_ignore_ascii_case(s))
}

/// Writes `Content-Type: MIME` (with `; charset=utf-8` for a text type given no parameters)
/// and its line end.
pub(super) fn content_type(out: &mut Vec<u8>, mime: &str) {
    out.extend_from_slice(b"Content-Type: ");
    out.extend_from_slice(mime.as_bytes());
    if !mime.contains(';') && is_text(mime) {
        out.extend_from_slice(b"; charset=utf-8");
    }
    out.extend_from_slice(b"\r\n");
}

/// Extensions memoised per process, at most: a site has a handful, only files found are looked
/// up (so a client cannot fill the memo with made-up names), and past the bound the rest are
/// computed each time, as before.
const MEMO_ENTRIES: usize = 32;
/// Longer extensions are not memoised.
const MEMO_EXT: usize = 16;

/// A per-process memo of what [`of`] and [`content_type`] give for an extension: the
/// `Content-Type` line and whether the type is [`compressible`]. Looking a type up in
/// mime_guess (a case-insensitive binary search over a thousand extensions) and weighing it
/// were the largest user-space cost of a keep-alive request for a cached file; here they are
/// paid once per extension. The table a memo is filled from (`[server.mime]`) is fixed for the
/// life of a process: a reload starts new workers, each with an empty memo.
#[derive(Debug, Default)]
pub(super) struct Types {
    memo: Vec<Known>,
    /// The line of the last type that was not memoised.
    spill: Vec<u8>,
}

#[derive(Debug)]
struct Known {
    /// The extension in lower case, `len` bytes of it.
    ext: [u8; MEMO_EXT],
    len: usize,
    line: Box<[u8]>,
    compressible: bool,
}

/// A type [`Types::of`] found: its line is [`Types::line`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Type {
    /// In `memo`, or `None` for `spill`.
    at: Option<usize>,
    pub(super) compressible: bool,
}

impl Types {
    /// The type of the file `name`, as [`of`] gives it from `table`.
    pub(super) fn of(&mut self, name: &[u8], table: &[(String, String)]) -> Type {
        let ext = extension(name).unwrap_or_default();
        let mut key = [0u8; MEMO_EXT];
        let memoisable = ext.len() <= MEMO_EXT;
        if let Some(k) = key.get_mut(..ext.len()) {
            k.copy_from_slice(ext.as_bytes());
            k.make_ascii_lowercase();
        }
        if memoisable {
            if let Some(i) = self
                .memo
                .iter()
                .position(|k| k.len == ext.len() && k.ext == key)
            {
                let compressible = self.memo.get(i).is_some_and(|k| k.compressible);
                return Type {
                    at: Some(i),
                    compressible,
                };
            }
        }
        let mime = of(name, table);
        let compressible = compressible(mime);
        // Into the reused spill buffer: a type past the memo costs no allocation per request.
        self.spill.clear();
        content_type(&mut self.spill, mime);
        if memoisable && self.memo.len() < MEMO_ENTRIES {
            self.memo.push(Known {
                ext: key,
                len: ext.len(),
                line: self.spill.as_slice().into(),
                compressible,
            });
            return Type {
                at: Some(self.memo.len() - 1),
                compressible,
            };
        }
        Type {
            at: None,
            compressible,
        }
    }

    /// The `Content-Type` line of `t`, a type the last call of [`Types::of`] returned (or an
    /// earlier memoised one), its line end included.
    pub(super) fn line(&self, t: Type) -> &[u8] {
        match t.at {
            Some(i) => self.memo.get(i).map_or(&[][..], |k| &k.line),
            None => &self.spill,
        }
    }
}

/// The extension of `name`'s last component, without the dot; `None` when it has none (or it
/// is not UTF-8, which no table names).
fn extension(name: &[u8]) -> Option<&str> {
    let file = name.rsplit(|&b| b == b'/').next().unwrap_or(name);
    file.iter()
        .rposition(|&b| b == b'.')
        .and_then(|i| file.get(i + 1..))
        .and_then(|e| std::str::from_utf8(e).ok())
        .filter(|e| !e.is_empty())
}

/// The type of a file named `name` on disk, as `forkd precompress` weighs it (no operator
/// table: the subcommand does not read the server's configuration).
pub fn of_path(name: &std::path::Path) -> &'static str {
    use std::os::unix::ffi::OsStrExt;
    of(name.as_os_str().as_bytes(), &[])
}

/// Checks an operator's `[server.mime]` entry: the extension without a dot, the type a
/// `type/subtype` of token characters with optional `; name=value` parameters. What is
/// accepted can go into a header line as is (no control characters, so no header injection).
pub fn check_entry(ext: &str, mime: &str) -> Result<(String, String), String> {
    let ext = ext.strip_prefix('.').unwrap_or(ext);
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    if ext.is_empty() || ext.contains(['.', '/']) || !ext.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "[server.mime] {ext:?}: an extension is a name without dot or slash, such as \"webp\""
        ));
    }
    let mut parts = mime.split(';');
    let essence = parts.next().unwrap_or_default().trim();
    let valid_essence = essence
        .split_once('/')
        .is_some_and(|(t, s)| token(t) && token(s));
    let valid_params = parts.all(|p| {
        p.trim()
            .split_once('=')
            .is_some_and(|(n, v)| token(n.trim()) && token(v.trim().trim_matches('"')))
    });
    if !valid_essence || !valid_params {
        return Err(format!(
            "[server.mime] {ext} = {mime:?}: not a media type such as \"image/webp\" or \
             \"text/plain; charset=iso-8859-1\""
        ));
    }
    Ok((ext.to_ascii_lowercase(), mime.trim().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(name: &str, table: &[(String, String)]) -> String {
        let mut out = Vec::new();
        content_type(&mut out, of(name.as_bytes(), table));
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn types_of_the_modern_web() {
        for (name, want) in [
            ("index.html", "text/html; charset=utf-8"),
            ("a/style.css", "text/css; charset=utf-8"),
            ("x.png", "image/png"),
            ("README", "application/octet-stream"),
            ("a.b/c", "application/octet-stream"),
            ("trailing.", "application/octet-stream"),
            ("x.weird-ext", "application/octet-stream"),
            ("app.js", "text/javascript; charset=utf-8"),
            ("mod.mjs", "text/javascript; charset=utf-8"),
            ("MOD.MJS", "text/javascript; charset=utf-8"),
            ("x.cjs", "text/javascript; charset=utf-8"),
            ("app.js.map", "application/json; charset=utf-8"),
            ("data.json", "application/json; charset=utf-8"),
            (
                "site.webmanifest",
                "application/manifest+json; charset=utf-8",
            ),
            ("feed.atom", "application/atom+xml; charset=utf-8"),
            ("feed.rss", "application/rss+xml; charset=utf-8"),
            ("x.xml", "text/xml; charset=utf-8"),
            ("c.yaml", "application/yaml; charset=utf-8"),
            ("c.toml", "application/toml; charset=utf-8"),
            ("a.wasm", "application/wasm"),
            ("p.avif", "image/avif"),
            ("p.webp", "image/webp"),
            ("p.jxl", "image/jxl"),
            ("p.apng", "image/apng"),
            ("p.svg", "image/svg+xml"),
            ("f.woff", "font/woff"),
            ("f.woff2", "font/woff2"),
            ("f.otf", "font/otf"),
            ("f.ttf", "font/ttf"),
            ("s.m4a", "audio/mp4"),
            ("v.webm", "video/webm"),
            ("a.zst", "application/zstd"),
            ("a.gz", "application/gzip"),
        ] {
            assert_eq!(
                header(name, &[]),
                format!("Content-Type: {want}\r\n"),
                "{name}"
            );
        }
    }

    #[test]
    fn the_operators_table_wins_and_keeps_its_parameters() {
        let table = vec![
            ("js".to_string(), "application/javascript".to_string()),
            (
                "txt".to_string(),
                "text/plain; charset=iso-8859-1".to_string(),
            ),
            ("gmi".to_string(), "text/gemini".to_string()),
        ];
        assert_eq!(
            header("A.JS", &table),
            "Content-Type: application/javascript; charset=utf-8\r\n"
        );
        assert_eq!(
            header("a.txt", &table),
            "Content-Type: text/plain; charset=iso-8859-1\r\n"
        );
        assert_eq!(
            header("x.gmi", &table),
            "Content-Type: text/gemini; charset=utf-8\r\n"
        );
        assert_eq!(
            header("x.css", &table),
            "Content-Type: text/css; charset=utf-8\r\n"
        );
    }

    #[test]
    fn what_is_worth_compressing() {
        for yes in [
            "text/html",
            "text/css",
            "text/javascript",
            "application/json",
            "application/manifest+json",
            "application/wasm",
            "image/svg+xml",
            "font/ttf",
            "text/plain; charset=iso-8859-1",
        ] {
            assert!(compressible(yes), "{yes}");
        }
        for no in [
            "image/png",
            "image/webp",
            "image/avif",
            "font/woff2",
            "font/woff",
            "application/gzip",
            "application/zstd",
            "application/octet-stream",
            "video/mp4",
            "application/pdf",
        ] {
            assert!(!compressible(no), "{no}");
        }
    }

    #[test]
    fn operator_entries_are_checked() {
        assert_eq!(
            check_entry(".WebP", "image/webp").unwrap(),
            ("webp".to_string(), "image/webp".to_string())
        );
        assert!(check_entry("txt", "text/plain; charset=\"iso-8859-1\"").is_ok());
        for (ext, mime) in [
            ("", "text/plain"),
            ("a.b", "text/plain"),
            ("a/b", "text/plain"),
            ("x", "text"),
            ("x", "text/"),
            ("x", "text/plain\r\nSet-Cookie: a=b"),
            ("x", "text/plain; charset"),
            ("x", "te xt/plain"),
        ] {
            assert!(check_entry(ext, mime).is_err(), "{ext:?} {mime:?}");
        }
    }

    #[test]
    fn the_memo_answers_as_the_lookup_does() {
        let table = vec![("webp".to_string(), "image/x-mine".to_string())];
        let mut names: Vec<String> = [
            "index.html",
            "INDEX.HTML",
            "a/b.css",
            "x.webp",
            "X.WEBP",
            "README",
            "a.b/c",
            "trailing.",
            "x.a-very-long-extension-indeed",
            "x.exactly16chars",
            "feed.atom",
            "icon.svg",
            "photo.jpg",
            "index.html",
        ]
        .iter()
        .map(|n| n.to_string())
        .collect();
        // More extensions than the memo keeps: the rest are computed each time.
        names.extend((0..2 * MEMO_ENTRIES).map(|i| format!("f.e{i}")));
        names.extend(["late.html", "late.png", "late.e70"].map(String::from));
        let mut types = Types::default();
        for _ in 0..2 {
            for name in &names {
                let t = types.of(name.as_bytes(), &table);
                let want = header(name, &table);
                assert_eq!(String::from_utf8_lossy(types.line(t)), want, "{name}");
                let mime = of(name.as_bytes(), &table);
                assert_eq!(t.compressible, compressible(mime), "{name}");
            }
        }
        assert_eq!(types.memo.len(), MEMO_ENTRIES);
    }
}
