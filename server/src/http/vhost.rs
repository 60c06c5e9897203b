//! Virtual hosts: which document root a request's host selects.
//!
//! The host is the authority of an absolute-form target, else the `Host` field (`parse` has
//! already refused an invalid one with 400). It is compared in one normal form: the port
//! dropped, ASCII letters folded to lower case, one trailing dot dropped (`Example.ORG.:8080`
//! is `example.org`), an IPv6 literal written the way std writes the address (`[0::1]` is
//! `[::1]`). Names in the configuration are checked and put in the same form at load.
//!
//! An exact name wins over a wildcard; among wildcards the longest wins (nginx's order).
//! `*.example.org` matches every name that ends in `.example.org`, at any depth, and not
//! `example.org` itself. A request with no host (HTTP/1.0 without `Host`) is served from the
//! default root; one whose host no virtual host names goes where `unknown-host` says.

use std::net::Ipv6Addr;

/// The longest host name compared; a longer `Host` names no virtual host.
const MAX_NAME: usize = 255;

/// What becomes of a request whose host no virtual host names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnknownHost {
    /// Served from the default root (`--root`, or the embedded site).
    #[default]
    Default,
    /// `421 Misdirected Request` (RFC 9110 section 15.5.20): this server does not answer for
    /// that host.
    Misdirected,
    /// `404 Not Found`, as if the host had no files.
    NotFound,
}

/// Which root a request's host selected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selected {
    /// The default root.
    Default,
    /// The root of the virtual host at this index.
    VHost(usize),
    /// No virtual host names it: the default root, as `unknown-host = "default"` says.
    Unknown,
    /// No virtual host names it, and unknown hosts are refused with this status.
    Refused(u16),
}

/// The names of the virtual hosts, in normal form, each with the index of its root.
#[derive(Debug, Clone, Default)]
pub struct Names {
    exact: Vec<(String, usize)>,
    /// Wildcards as the suffix they match, with its leading dot (`.example.org`).
    wildcard: Vec<(String, usize)>,
    pub unknown: UnknownHost,
}

impl Names {
    /// Builds the table from each virtual host's names (`hosts[i]` names root `i`); the error
    /// names an invalid or repeated name.
    pub fn new(hosts: &[Vec<String>], unknown: UnknownHost) -> Result<Names, String> {
        let mut names = Names {
            unknown,
            ..Names::default()
        };
        for (i, list) in hosts.iter().enumerate() {
            if list.is_empty() {
                return Err(format!("[[server.vhost]] #{} names no host", i + 1));
            }
            for given in list {
                let name = config_name(given)
                    .map_err(|e| format!("[[server.vhost]] #{} host {given:?}: {e}", i + 1))?;
                let (table, key) = match name.strip_prefix('*') {
                    Some(suffix) => (&mut names.wildcard, suffix.to_string()),
                    None => (&mut names.exact, name.clone()),
                };
                if let Some((_, j)) = table.iter().find(|(k, _)| *k == key) {
                    return Err(format!(
                        "[[server.vhost]] #{} host {given:?}: already named by [[server.vhost]] #{}",
                        i + 1,
                        j + 1
                    ));
                }
                table.push((key, i));
            }
        }
        Ok(names)
    }

    /// True when there are virtual hosts to choose from.
    pub fn any(&self) -> bool {
        !self.exact.is_empty() || !self.wildcard.is_empty()
    }

    /// The root `host` (a valid `Host` value or authority, `None` when the request had none)
    /// selects.
    pub fn select(&self, host: Option<&[u8]>) -> Selected {
        if !self.any() {
            return Selected::Default;
        }
        let Some(host) = host else {
            return Selected::Default;
        };
        let mut buf = [0u8; MAX_NAME + 2];
        let found = normal(host, &mut buf).and_then(|name| {
            let exact = self.exact.iter().find(|(k, _)| k.as_bytes() == name);
            exact.or_else(|| {
                // Suffixes from the longest: each starts at a dot of the name.
                name.iter()
                    .enumerate()
                    .filter(|&(_, &b)| b == b'.')
                    .find_map(|(at, _)| {
                        let suffix = name.get(at..)?;
                        self.wildcard.iter().find(|(k, _)| k.as_bytes() == suffix)
                    })
            })
        });
        match (found, self.unknown) {
            (Some(&(_, i)), _) => Selected::VHost(i),
            (None, UnknownHost::Default) => Selected::Unknown,
            (None, UnknownHost::Misdirected) => Selected::Refused(421),
            (None, UnknownHost::NotFound) => Selected::Refused(404),
        }
    }
}

/// `host` (a valid `uri-host [":" port]`) in normal form, written into `buf`; `None` when it
/// is too long to name any virtual host.
fn normal<'b>(host: &[u8], buf: &'b mut [u8; MAX_NAME + 2]) -> Option<&'b [u8]> {
    let name = match host {
        [b'[', rest @ ..] => {
            let close = rest.iter().position(|&b| b == b']')?;
            let inside = std::str::from_utf8(rest.get(..close)?).ok()?;
            // An IPvFuture literal stays as sent, folded.
            let text = match inside.parse::<Ipv6Addr>() {
                Ok(a) => format!("[{a}]"),
                Err(_) => format!("[{inside}]"),
            };
            let out = buf.get_mut(..text.len())?;
            out.copy_from_slice(text.as_bytes());
            out.make_ascii_lowercase();
            return Some(out);
        }
        _ => host.split(|&b| b == b':').next().unwrap_or_default(),
    };
    let name = name.strip_suffix(b".").unwrap_or(name);
    let out = buf.get_mut(..name.len())?;
    out.copy_from_slice(name);
    out.make_ascii_lowercase();
    Some(out)
}

/// A name as the configuration gives it, checked and in normal form: a DNS name (letters,
/// digits, `-` and `_` in labels of 1 to 63, 253 at most), optionally `*.` and a name, an IPv4
/// address, or an IPv6 address in brackets.
fn config_name(given: &str) -> Result<String, String> {
    let lower = given.to_ascii_lowercase();
    if let Some(inside) = lower.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        return inside
            .parse::<Ipv6Addr>()
            .map(|a| format!("[{a}]"))
            .map_err(|_| "not a valid IPv6 address in brackets".to_string());
    }
    if lower.contains(':') {
        return Err("give the name without a port (every listener serves it)".to_string());
    }
    let name = lower.strip_suffix('.').unwrap_or(&lower);
    let (wild, rest) = match name.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, name),
    };
    if rest.is_empty() || rest.len() > 253 {
        return Err("a name must hold 1 to 253 characters".to_string());
    }
    for label in rest.split('.') {
        let ok = (1..=63).contains(&label.len())
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(format!(
                "label {label:?} is not valid (1 to 63 letters, digits, - or _; a wildcard is \
                 only a leading *.)"
            ));
        }
    }
    Ok(if wild {
        format!("*.{rest}")
    } else {
        rest.to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(unknown: UnknownHost) -> Names {
        let v = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        Names::new(
            &[
                v(&["Example.org", "www.example.org."]),
                v(&["*.example.org"]),
                v(&["*.blog.example.org", "[0:0::1]", "127.0.0.1"]),
            ],
            unknown,
        )
        .unwrap()
    }

    #[test]
    fn hosts_select_by_normal_form() {
        let n = names(UnknownHost::Misdirected);
        let table: &[(Option<&str>, Selected)] = &[
            (Some("example.org"), Selected::VHost(0)),
            (Some("EXAMPLE.Org:8080"), Selected::VHost(0)),
            (Some("example.org."), Selected::VHost(0)),
            (Some("Example.org.:80"), Selected::VHost(0)),
            (Some("example.org:"), Selected::VHost(0)),
            (Some("WWW.example.org"), Selected::VHost(0)),
            // Wildcards: any depth, the longest first, never the bare name.
            (Some("a.example.org"), Selected::VHost(1)),
            (Some("a.b.example.org"), Selected::VHost(1)),
            (Some("x.blog.example.org"), Selected::VHost(2)),
            (Some("y.x.Blog.Example.org:1"), Selected::VHost(2)),
            (Some("blog.example.org"), Selected::VHost(1)),
            (Some("[::1]:8080"), Selected::VHost(2)),
            (Some("[0::1]"), Selected::VHost(2)),
            (Some("127.0.0.1:9"), Selected::VHost(2)),
            (Some("example.org.evil"), Selected::Refused(421)),
            (Some("notexample.org"), Selected::Refused(421)),
            (Some("[::2]"), Selected::Refused(421)),
            (Some("localhost"), Selected::Refused(421)),
            (None, Selected::Default),
        ];
        for (host, want) in table {
            assert_eq!(n.select(host.map(str::as_bytes)), *want, "{host:?}");
        }
        let long = format!("{}.example.org", "a".repeat(300));
        assert_eq!(n.select(Some(long.as_bytes())), Selected::Refused(421));
        assert_eq!(
            names(UnknownHost::Default).select(Some(b"other")),
            Selected::Unknown
        );
        assert_eq!(
            names(UnknownHost::NotFound).select(Some(b"other")),
            Selected::Refused(404)
        );
        // Without virtual hosts nothing is looked at.
        assert_eq!(
            Names::new(&[], UnknownHost::Misdirected)
                .unwrap()
                .select(Some(b"x")),
            Selected::Default
        );
    }

    #[test]
    fn bad_names_are_refused_with_the_reason() {
        let one = |h: &str| Names::new(&[vec![h.to_string()]], UnknownHost::Default);
        for (host, want) in [
            ("example.org:80", "without a port"),
            ("a..b", "label \"\""),
            ("*", "label \"*\""),
            ("a.*.org", "label \"*\""),
            ("-a.org", "label \"-a\""),
            ("a b.org", "label \"a b\""),
            ("[::g]", "IPv6"),
            ("", "1 to 253"),
        ] {
            let e = one(host).unwrap_err();
            assert!(e.contains(want), "{host}: {e}");
            assert!(e.starts_with("[[server.vhost]] #1 host"), "{e}");
        }
        let e = Names::new(
            &[vec!["a.org".into()], vec!["A.org.".into()]],
            UnknownHost::Default,
        )
        .unwrap_err();
        assert!(e.contains("already named by [[server.vhost]] #1"), "{e}");
        assert!(Names::new(&[vec![]], UnknownHost::Default)
            .unwrap_err()
            .contains("names no host"));
    }
}
