//! The target and the requests sent to it, built once before the load starts: the URL (and the
//! loopback rule), each weighted path's request bytes, and a fixed shuffled schedule that picks
//! paths in proportion to their weights without a random number per request.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};

/// Where the load goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `host` or `host:port` as written, for the Host header.
    pub authority: String,
    pub addr: SocketAddr,
    /// The URL's path and query, `/` when absent.
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetError {
    Scheme(String),
    Resolve(String),
    Remote(SocketAddr),
}

impl fmt::Display for TargetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetError::Scheme(u) => write!(f, "unsupported URL {u:?}: only http://HOST[:PORT]/PATH"),
            TargetError::Resolve(h) => write!(f, "unable to resolve {h:?}"),
            TargetError::Remote(a) => write!(
                f,
                "refusing to load {a}, which is not a loopback address (add --allow-remote if you own it)"
            ),
        }
    }
}

impl std::error::Error for TargetError {}

/// Parses `http://HOST[:PORT][/PATH]` and resolves it. Load is refused for any address outside
/// loopback unless `allow_remote`, so a typo cannot turn the tool on someone else's server.
pub fn parse_target(url: &str, allow_remote: bool) -> Result<Target, TargetError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| TargetError::Scheme(url.to_string()))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains('@') {
        return Err(TargetError::Scheme(url.to_string()));
    }
    // A bracketed IPv6 literal keeps its colons inside the brackets.
    let has_port = match authority.rfind(']') {
        Some(b) => authority[b..].contains(':'),
        None => authority.contains(':'),
    };
    let hostport = if has_port {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let addrs: Vec<SocketAddr> = hostport
        .to_socket_addrs()
        .map_err(|_| TargetError::Resolve(authority.to_string()))?
        .collect();
    let addr = *addrs
        .first()
        .ok_or_else(|| TargetError::Resolve(authority.to_string()))?;
    if !allow_remote {
        if let Some(remote) = addrs.iter().find(|a| !a.ip().is_loopback()) {
            return Err(TargetError::Remote(*remote));
        }
    }
    Ok(Target {
        authority: authority.to_string(),
        addr,
        path: path.to_string(),
    })
}

/// A path with its share of the requests: `/a.html:3` is sent three times as often as a path of
/// weight 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightedPath {
    pub path: String,
    pub weight: u32,
}

/// Parses `PATH` or `PATH:WEIGHT` (for clap).
pub fn parse_weighted_path(s: &str) -> Result<WeightedPath, String> {
    if !s.starts_with('/') {
        return Err(format!("{s:?} must start with '/'"));
    }
    let (path, weight) = match s.rsplit_once(':') {
        Some((p, w)) if !w.is_empty() && w.bytes().all(|b| b.is_ascii_digit()) => (
            p,
            w.parse::<u32>().map_err(|e| format!("weight {w:?}: {e}"))?,
        ),
        _ => (s, 1),
    };
    if weight == 0 {
        return Err(format!("weight of {path:?} must be at least 1"));
    }
    Ok(WeightedPath {
        path: path.to_string(),
        weight,
    })
}

/// Builds one request's bytes. `close` asks the server to end the connection after it; a body
/// goes after the head with its `Content-Length`.
pub fn build_request(
    method: &str,
    path: &str,
    authority: &str,
    headers: &[String],
    close: bool,
    body: Option<&[u8]>,
) -> Vec<u8> {
    let mut r = format!("{method} {path} HTTP/1.1\r\nHost: {authority}\r\n");
    for h in headers {
        r.push_str(h);
        r.push_str("\r\n");
    }
    if close {
        r.push_str("Connection: close\r\n");
    }
    if let Some(body) = body {
        r.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    r.push_str("\r\n");
    let mut r = r.into_bytes();
    r.extend_from_slice(body.unwrap_or_default());
    r
}

/// A method is an HTTP token (RFC 9110, 9.1): refused up front rather than sent malformed.
pub fn check_method(m: &str) -> Result<(), String> {
    let tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if m.is_empty() || !m.bytes().all(tchar) {
        return Err(format!(
            "-m {m:?}: a method is a word such as GET, POST or PUT"
        ));
    }
    Ok(())
}

/// A cyclic schedule of path indices in which each path appears in proportion to its weight,
/// interleaved by a fixed shuffle so that a short run still sees the mix.
pub fn schedule(weights: &[u32]) -> Vec<u16> {
    let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
    // Scale large weights down to at most ~4096 slots; every path keeps at least one.
    let scale = (total as f64 / 4096.0).max(1.0);
    let mut out = Vec::new();
    for (i, &w) in weights.iter().enumerate() {
        let n = ((f64::from(w) / scale).round() as usize).max(1);
        out.extend(std::iter::repeat_n(i as u16, n));
    }
    // Fisher-Yates with a fixed xorshift seed: reproducible runs.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in (1..out.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.swap(i, (x % (i as u64 + 1)) as usize);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let t = parse_target("http://127.0.0.1:8080/bench/2k.html?x=1", false).unwrap();
        assert_eq!(t.addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(
            (t.authority.as_str(), t.path.as_str()),
            ("127.0.0.1:8080", "/bench/2k.html?x=1")
        );
        let t = parse_target("http://[::1]:81", false).unwrap();
        assert_eq!(
            (t.addr, t.path.as_str()),
            ("[::1]:81".parse().unwrap(), "/")
        );
        assert_eq!(
            parse_target("http://127.0.0.1", false).unwrap().addr.port(),
            80
        );
        assert!(matches!(
            parse_target("https://127.0.0.1/", false),
            Err(TargetError::Scheme(_))
        ));
        assert!(matches!(
            parse_target("http://u@127.0.0.1/", false),
            Err(TargetError::Scheme(_))
        ));
        assert!(matches!(
            parse_target("http://10.1.2.3:80/", false),
            Err(TargetError::Remote(_))
        ));
        assert!(parse_target("http://10.1.2.3:80/", true).is_ok());
        assert!(matches!(
            parse_target("http://[::2]:80/", false),
            Err(TargetError::Remote(_))
        ));
    }

    #[test]
    fn weighted_paths() {
        let cases: &[(&str, Option<(&str, u32)>)] = &[
            ("/a", Some(("/a", 1))),
            ("/a:3", Some(("/a", 3))),
            ("/a:b", Some(("/a:b", 1))),
            ("/a:0", None),
            ("a:1", None),
        ];
        for (s, want) in cases {
            let got = parse_weighted_path(s)
                .ok()
                .map(|w| (w.path.clone(), w.weight));
            assert_eq!(got, want.map(|(p, w)| (p.to_string(), w)), "{s}");
        }
    }

    #[test]
    fn schedule_follows_weights() {
        let s = schedule(&[3, 1]);
        assert_eq!(s.len(), 4);
        assert_eq!(s.iter().filter(|&&i| i == 0).count(), 3);
        let s = schedule(&[1_000_000, 1]);
        assert!(s.contains(&1) && s.len() <= 4097);
        assert_eq!(schedule(&[5]), vec![0; 5]);
    }

    #[test]
    fn request_bytes() {
        let r = build_request("GET", "/x", "h:1", &["A: b".into()], true, None);
        assert_eq!(
            r,
            b"GET /x HTTP/1.1\r\nHost: h:1\r\nA: b\r\nConnection: close\r\n\r\n"
        );
        let r = build_request("POST", "/f", "h", &[], false, Some(b"a=1"));
        assert_eq!(
            r,
            b"POST /f HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\na=1"
        );
        assert!(check_method("PROPFIND").is_ok());
        assert!(check_method("GET /").is_err() && check_method("").is_err());
    }
}
