//! The demo blog compiled into the binary (files under `server/site/`), served when no
//! `--root` is given, so the first command of the README shows pages without any setup.
//!
//! Each file's entity tag is a hash of its bytes computed at compile time; there is no
//! meaningful modification time, so none is sent.

/// One embedded file.
pub(super) struct Asset {
    /// Relative path, as `path::resolve` produces it.
    pub path: &'static str,
    pub body: &'static [u8],
    /// FNV-1a of the body: a strong validator, stable across builds of the same content.
    pub hash: u64,
}

const fn fnv1a(mut bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    while let [b, rest @ ..] = bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x100000001b3);
        bytes = rest;
    }
    h
}

macro_rules! asset {
    ($path:literal) => {
        Asset {
            path: $path,
            body: include_bytes!(concat!("../../site/", $path)),
            hash: fnv1a(include_bytes!(concat!("../../site/", $path))),
        }
    };
}

static ASSETS: &[Asset] = &[
    asset!("index.html"),
    asset!("style.css"),
    asset!("favicon.svg"),
    asset!("posts/index.html"),
    asset!("posts/forking.html"),
    asset!("posts/keep-alive.html"),
    asset!("bench/2k.html"),
];

/// What a relative path names in the embedded site.
pub(super) enum Lookup {
    File(&'static Asset),
    /// A directory: its index file, if it has one.
    Dir(Option<&'static Asset>),
    Missing,
}

/// Looks up `rel` (a file, or with `dir` a directory's index `index`).
pub(super) fn lookup(rel: &str, index: &str) -> Lookup {
    let find = |p: &str| ASSETS.iter().find(|a| a.path == p);
    // What follows `rel/` in an asset's path, if it lies beneath `rel`.
    let beneath = |a: &Asset| a.path.strip_prefix(rel).and_then(|r| r.strip_prefix('/'));
    let is_dir = rel.is_empty() || ASSETS.iter().any(|a| beneath(a).is_some());
    if is_dir {
        let idx = if rel.is_empty() {
            find(index)
        } else {
            ASSETS.iter().find(|a| beneath(a) == Some(index))
        };
        return Lookup::Dir(idx);
    }
    match find(rel) {
        Some(a) => Lookup::File(a),
        None => Lookup::Missing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups() {
        assert!(matches!(lookup("", "index.html"), Lookup::Dir(Some(a)) if a.path == "index.html"));
        assert!(
            matches!(lookup("posts", "index.html"), Lookup::Dir(Some(a)) if a.path == "posts/index.html")
        );
        assert!(matches!(lookup("bench", "index.html"), Lookup::Dir(None)));
        assert!(matches!(lookup("style.css", "index.html"), Lookup::File(_)));
        assert!(matches!(lookup("post", "index.html"), Lookup::Missing));
        assert!(matches!(lookup("nope.html", "index.html"), Lookup::Missing));
    }

    #[test]
    fn assets_are_small_and_bench_page_is_2k() {
        for a in ASSETS {
            assert!(a.body.len() < 8 * 1024, "{} is too big", a.path);
            assert_eq!(a.hash, fnv1a(a.body));
        }
        let bench = ASSETS.iter().find(|a| a.path == "bench/2k.html").unwrap();
        assert_eq!(bench.body.len(), 2048);
    }
}
