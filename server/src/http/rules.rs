//! Response header rules: `Cache-Control` and extra fields chosen by a glob on the path of the
//! file served, and the security fields every response carries.
//!
//! Everything is checked and compiled once, when the configuration is loaded: a field name
//! must be an RFC 9110 token, a value visible ASCII with inner spaces only (no CR, LF or NUL
//! can reach a head), and no rule may set a field forkd itself manages (framing, validators,
//! `Content-Type`), since two values of those would make a response ambiguous. At request
//! time a rule costs one pass of a compiled [`globset::GlobSet`] over the path.
//!
//! Globs (globset's syntax: `*`, `?`, `[0-9a-f]`, `{a,b}`, `**`) match the decoded path of
//! the file served, from the root, as `/assets/app.3f9a1c.js`; `*` and `?` never cross a `/`.
//! A glob without a `/` matches the file's name in any directory (`*.html` is `**/*.html`), as
//! in `.gitignore`; one with a `/` must start with one and matches the whole path.
//!
//! Every rule that matches applies, in the order of the file, and where two set the same field
//! the later one wins (Netlify's and Cloudflare Pages' `_headers` also apply every match): a
//! general rule first, a specific one after it overrides just what it names.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use globset::{Candidate, GlobBuilder, GlobSet, GlobSetBuilder};

/// One `[[server.headers]]` table as the configuration gives it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderRule {
    pub glob: String,
    pub cache_control: Option<String>,
    /// Extra fields, in the order given.
    pub set: Vec<(String, String)>,
}

/// The security fields sent when the configuration says nothing: each can be changed or
/// turned off (`[server.security-headers]`, a value of `false`).
pub const DEFAULT_SECURITY: [(&str, &str); 3] = [
    // Browsers must not guess a type other than the one sent (a text file run as script).
    ("X-Content-Type-Options", "nosniff"),
    // The full URL only to the same origin, the origin alone to others, nothing over a
    // downgrade (what browsers default to today, stated for older ones).
    ("Referrer-Policy", "strict-origin-when-cross-origin"),
    // No framing by other sites (clickjacking). CSP `frame-ancestors 'self'` is its modern
    // form; both can be set, and browsers that know CSP prefer it.
    ("X-Frame-Options", "SAMEORIGIN"),
];

/// Fields forkd writes itself; a rule setting one would send it twice or contradict it.
const MANAGED: [&str; 17] = [
    "Accept-Ranges",
    "Allow",
    "Connection",
    "Content-Encoding",
    "Content-Length",
    "Content-Range",
    "Content-Type",
    "Date",
    "ETag",
    "Keep-Alive",
    "Last-Modified",
    "Location",
    "Server",
    "Trailer",
    "Transfer-Encoding",
    "Upgrade",
    "Vary",
];

/// The compiled rules and the security fields, encoded as head lines.
#[derive(Debug, Clone)]
pub struct Rules {
    globs: GlobSet,
    /// Per rule, in order: its fields, `Cache-Control` first when it sets one.
    fields: Vec<Vec<(String, String)>>,
    /// The rules as given, for `--check-config`.
    given: Vec<HeaderRule>,
    /// The security fields as given (name, value), in order.
    security: Vec<(String, String)>,
    /// The same, as `Name: value\r\n` lines.
    security_lines: Vec<u8>,
}

impl Default for Rules {
    fn default() -> Rules {
        let security = DEFAULT_SECURITY
            .iter()
            .map(|&(n, v)| (n.to_string(), v.to_string()))
            .collect();
        // The default security fields are valid and there is no glob: this cannot fail.
        Rules::new(&[], security).unwrap_or_else(|_| Rules::empty())
    }
}

impl Rules {
    /// No rules and no security fields.
    pub fn empty() -> Rules {
        Rules {
            globs: GlobSet::empty(),
            fields: Vec::new(),
            given: Vec::new(),
            security: Vec::new(),
            security_lines: Vec::new(),
        }
    }

    /// Checks and compiles `rules` and the `security` fields; the error names the rule or
    /// field at fault and why.
    pub fn new(rules: &[HeaderRule], security: Vec<(String, String)>) -> Result<Rules, String> {
        let mut set = GlobSetBuilder::new();
        let mut fields = Vec::new();
        for (i, rule) in rules.iter().enumerate() {
            let at = format!("[[server.headers]] #{} (glob {:?})", i + 1, rule.glob);
            set.add(compile_glob(&rule.glob).map_err(|e| format!("{at}: {e}"))?);
            let mut mine = Vec::new();
            if let Some(cc) = &rule.cache_control {
                check_value(cc).map_err(|e| format!("{at}: cache-control {cc:?}: {e}"))?;
                mine.push(("Cache-Control".to_string(), cc.clone()));
            }
            for (name, value) in &rule.set {
                check_field(name, value).map_err(|e| format!("{at}: set.{name}: {e}"))?;
                if name.eq_ignore_ascii_case("cache-control") {
                    return Err(format!(
                        "{at}: set.{name}: give it as cache-control = \"...\" in the rule"
                    ));
                }
                if mine.iter().any(|(n, _)| n.eq_ignore_ascii_case(name)) {
                    return Err(format!("{at}: set.{name} is given twice"));
                }
                mine.push((name.clone(), value.clone()));
            }
            if mine.is_empty() {
                return Err(format!("{at}: sets nothing (give cache-control or set)"));
            }
            fields.push(mine);
        }
        // Building even an empty set runs globset's and aho-corasick's builders: 20 KB of code
        // the master would map at every start and reload for nothing (issue 9).
        let globs = if rules.is_empty() {
            GlobSet::empty()
        } else {
            set.build()
                .map_err(|e| format!("[[server.headers]]: {e}"))?
        };
        let mut security_lines = Vec::new();
        for (name, value) in &security {
            check_field(name, value).map_err(|e| format!("security-headers.{name}: {e}"))?;
            line(&mut security_lines, name, value);
        }
        Ok(Rules {
            globs,
            fields,
            given: rules.to_vec(),
            security,
            security_lines,
        })
    }

    /// The rules as given.
    pub fn rules(&self) -> &[HeaderRule] {
        &self.given
    }

    /// The security fields in force.
    pub fn security(&self) -> &[(String, String)] {
        &self.security
    }

    /// The security fields as head lines, for every response.
    pub(super) fn security_lines(&self) -> &[u8] {
        &self.security_lines
    }

    /// Appends to `out` the fields of every rule that matches `path` (the file's path from
    /// the root, starting with `/`), a later rule's value winning for a field two set;
    /// `matches` is scratch space for the matching rules' numbers.
    pub(super) fn apply(&self, path: &[u8], out: &mut Vec<u8>, matches: &mut Vec<usize>) {
        if self.fields.is_empty() {
            return;
        }
        matches.clear();
        self.globs
            .matches_candidate_into(&Candidate::new(OsStr::from_bytes(path)), matches);
        matches.sort_unstable();
        for (k, &i) in matches.iter().enumerate() {
            for (name, value) in self.fields.get(i).into_iter().flatten() {
                let later = matches.get(k + 1..).unwrap_or_default().iter().any(|&j| {
                    self.fields
                        .get(j)
                        .is_some_and(|f| f.iter().any(|(n, _)| n.eq_ignore_ascii_case(name)))
                });
                if !later {
                    line(out, name, value);
                }
            }
        }
    }
}

fn line(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// A glob as matched against `/dir/name`: without a `/` it matches a name in any directory.
fn compile_glob(glob: &str) -> Result<globset::Glob, String> {
    let full = if glob.is_empty() {
        return Err("is empty".to_string());
    } else if !glob.contains('/') {
        format!("/**/{glob}")
    } else if glob.starts_with('/') {
        glob.to_string()
    } else {
        return Err("a glob with a / must start with / (a path from the root)".to_string());
    };
    GlobBuilder::new(&full)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
        .map_err(|e| e.kind().to_string())
}

/// A field as a rule or the security table gives it.
pub fn check_field(name: &str, value: &str) -> Result<(), String> {
    if name.is_empty() || !name.bytes().all(is_tchar) {
        return Err(format!(
            "{name:?} is not a valid field name (letters, digits and !#$%&'*+-.^_`|~ only)"
        ));
    }
    if let Some(m) = MANAGED.iter().find(|m| m.eq_ignore_ascii_case(name)) {
        return Err(format!("{m} is set by forkd itself and cannot be set here"));
    }
    check_value(value)
}

/// A field value: not empty, visible ASCII and inner spaces or tabs only, so no CR, LF or
/// NUL can end the line early and smuggle a field or a body into the head.
pub fn check_value(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("the value is empty".to_string());
    }
    if let Some(c) = value
        .chars()
        .find(|&c| !(c == ' ' || c == '\t' || c.is_ascii_graphic()))
    {
        return Err(format!(
            "the value holds {c:?}: only visible ASCII, spaces and tabs are allowed"
        ));
    }
    if value.starts_with([' ', '\t']) || value.ends_with([' ', '\t']) {
        return Err("the value starts or ends with white space".to_string());
    }
    Ok(())
}

/// `tchar` (RFC 9110 section 5.6.2).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(glob: &str, cc: Option<&str>, set: &[(&str, &str)]) -> HeaderRule {
        HeaderRule {
            glob: glob.to_string(),
            cache_control: cc.map(str::to_string),
            set: set
                .iter()
                .map(|&(n, v)| (n.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn applied(rules: &Rules, path: &str) -> String {
        let (mut out, mut m) = (Vec::new(), Vec::new());
        rules.apply(path.as_bytes(), &mut out, &mut m);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn globs_match_names_anywhere_or_whole_paths() {
        let rules = Rules::new(
            &[
                rule("*.html", Some("no-cache"), &[]),
                rule(
                    "/assets/*.[0-9a-f]*.js",
                    Some("public, max-age=31536000, immutable"),
                    &[],
                ),
                rule("/docs/**", None, &[("X-Robots-Tag", "noindex")]),
            ],
            Vec::new(),
        )
        .unwrap();
        let table: &[(&str, &str)] = &[
            ("/index.html", "Cache-Control: no-cache\r\n"),
            ("/a/b/post.html", "Cache-Control: no-cache\r\n"),
            ("/index.htm", ""),
            ("/html", ""),
            (
                "/assets/app.3f9a1c.js",
                "Cache-Control: public, max-age=31536000, immutable\r\n",
            ),
            // `*` does not cross a `/`, and the hash must start with a hex digit.
            ("/assets/sub/app.3f9a1c.js", ""),
            ("/assets/app.js", ""),
            ("/assets/app.zz.js", ""),
            ("/other/app.3f9a1c.js", ""),
            ("/docs/a/b.txt", "X-Robots-Tag: noindex\r\n"),
            // Both apply.
            (
                "/docs/x.html",
                "Cache-Control: no-cache\r\nX-Robots-Tag: noindex\r\n",
            ),
        ];
        for (path, want) in table {
            assert_eq!(applied(&rules, path), *want, "{path}");
        }
    }

    #[test]
    fn every_match_applies_and_a_later_rule_wins_a_field() {
        let rules = Rules::new(
            &[
                rule("*", Some("max-age=60"), &[("X-A", "1"), ("X-B", "1")]),
                rule("*.css", Some("max-age=3600"), &[("x-b", "2")]),
            ],
            Vec::new(),
        )
        .unwrap();
        assert_eq!(
            applied(&rules, "/s.css"),
            "X-A: 1\r\nCache-Control: max-age=3600\r\nx-b: 2\r\n"
        );
        assert_eq!(
            applied(&rules, "/s.js"),
            "Cache-Control: max-age=60\r\nX-A: 1\r\nX-B: 1\r\n"
        );
    }

    #[test]
    fn bad_rules_are_refused_with_the_reason() {
        let cases: &[(HeaderRule, &str)] = &[
            (rule("*.html", Some("a\r\nX: y"), &[]), "holds '\\r'"),
            (rule("*.html", Some(""), &[]), "is empty"),
            (rule("*.html", Some(" x"), &[]), "white space"),
            (
                rule("*.html", None, &[("Bad Name", "x")]),
                "not a valid field name",
            ),
            (
                rule("*.html", None, &[("X:Y", "x")]),
                "not a valid field name",
            ),
            (
                rule("*.html", None, &[("X-A", "caf\u{e9}")]),
                "visible ASCII",
            ),
            (
                rule("*.html", None, &[("content-length", "1")]),
                "set by forkd",
            ),
            (
                rule("*.html", None, &[("Cache-Control", "x")]),
                "cache-control = ",
            ),
            (rule("*.html", None, &[("X-A", "1"), ("x-a", "2")]), "twice"),
            (rule("*.html", None, &[]), "sets nothing"),
            (rule("a/*.html", Some("x"), &[]), "must start with /"),
            (rule("", Some("x"), &[]), "is empty"),
            (rule("*.[a-", Some("x"), &[]), "#1 (glob \"*.[a-\")"),
        ];
        for (r, want) in cases {
            let e = Rules::new(std::slice::from_ref(r), Vec::new()).unwrap_err();
            assert!(e.contains(want), "{r:?}: {e}");
        }
        let e = Rules::new(&[], vec![("X-Frame-Options".into(), "a\nb".into())]).unwrap_err();
        assert!(e.starts_with("security-headers.X-Frame-Options"), "{e}");
    }

    #[test]
    fn security_fields_default_and_encode() {
        let r = Rules::default();
        assert_eq!(
            String::from_utf8(r.security_lines().to_vec()).unwrap(),
            "X-Content-Type-Options: nosniff\r\nReferrer-Policy: \
             strict-origin-when-cross-origin\r\nX-Frame-Options: SAMEORIGIN\r\n"
        );
        assert!(Rules::empty().security_lines().is_empty());
    }
}
