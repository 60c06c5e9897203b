//! Content codings: which precompressed sibling (`file.br`, `file.zst`, `file.gz`) a request's
//! `Accept-Encoding` lets the server send instead of `file`, by RFC 9110 section 12.5.3.
//!
//! A pure function of the field's lines, tested by table. The rules:
//! - No `Accept-Encoding` field: the original (any coding would be allowed, but a client that
//!   says nothing may not decode one; nginx's gzip_static and static-web-server do the same).
//!   An empty value: the original, as the RFC says.
//! - A coding is acceptable with the weight it is listed with, or else with that of `*`;
//!   `q=0` refuses it. `x-gzip` is `gzip` (RFC 9110 section 8.4.1.3). Codings and `q` are
//!   case-insensitive; an element with a malformed weight is ignored.
//! - `identity` (the original) is acceptable unless refused by `identity;q=0`, or by `*;q=0`
//!   with no entry of its own. A coding is preferred to the original when its weight is at
//!   least the original's; when `identity` is not named the coding always is.
//! - Among codings of equal weight the server prefers br, then zstd, then gzip (smallest
//!   first, as they usually come out).
//! - Nothing acceptable exists (only `identity;q=0` and no sibling the client takes): the
//!   original is sent anyway, the "disregard the field" choice RFC 9110 section 12.1 allows,
//!   rather than a 406 that helps no browser.

/// A coding a sibling can have, in the server's order of preference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Br,
    Zstd,
    Gzip,
}

impl Coding {
    /// Every coding, in the server's order of preference.
    pub const ALL: [Coding; 3] = [Coding::Br, Coding::Zstd, Coding::Gzip];

    /// The `Content-Encoding` token.
    pub fn token(self) -> &'static str {
        match self {
            Coding::Br => "br",
            Coding::Zstd => "zstd",
            Coding::Gzip => "gzip",
        }
    }

    /// The sibling's suffix: `file` + this.
    pub fn suffix(self) -> &'static str {
        match self {
            Coding::Br => ".br",
            Coding::Zstd => ".zst",
            Coding::Gzip => ".gz",
        }
    }

    /// Its place in `ALL`, for tables indexed by coding.
    pub fn index(self) -> usize {
        self as usize
    }

    fn of_token(t: &[u8]) -> Option<Coding> {
        Coding::ALL
            .into_iter()
            .find(|c| t.eq_ignore_ascii_case(c.token().as_bytes()))
            .or_else(|| t.eq_ignore_ascii_case(b"x-gzip").then_some(Coding::Gzip))
    }
}

/// The codings a request accepts in place of the original, best first: try each sibling in
/// turn, and send the original when none is there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Accepted {
    order: [Option<Coding>; 3],
}

impl Accepted {
    pub fn iter(&self) -> impl Iterator<Item = Coding> + '_ {
        self.order.iter().flatten().copied()
    }

    pub fn is_empty(&self) -> bool {
        self.order[0].is_none()
    }
}

/// A weight in thousandths (RFC 9110 section 12.4.2: `0`, `1`, or up to three decimals).
fn weight(v: &[u8]) -> Option<u16> {
    match v {
        [b'1'] => Some(1000),
        [b'1', b'.', rest @ ..] if rest.len() <= 3 && rest.iter().all(|&b| b == b'0') => Some(1000),
        [b'0'] => Some(0),
        [b'0', b'.', rest @ ..] if rest.len() <= 3 && rest.iter().all(u8::is_ascii_digit) => {
            let mut w = 0u16;
            for i in 0..3 {
                w = w * 10 + rest.get(i).map_or(0, |d| u16::from(d - b'0'));
            }
            Some(w)
        }
        _ => None,
    }
}

fn trim(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// One element: its coding token and weight; `None` when its weight is malformed.
fn element(e: &[u8]) -> Option<(&[u8], u16)> {
    let mut parts = e.split(|&b| b == b';');
    let token = trim(parts.next()?);
    let mut q = 1000;
    for p in parts {
        let p = trim(p);
        let (name, value) = match p.iter().position(|&b| b == b'=') {
            Some(i) => (trim(p.get(..i)?), trim(p.get(i + 1..)?)),
            None => (p, &b""[..]),
        };
        if name.eq_ignore_ascii_case(b"q") {
            q = weight(value)?;
        }
    }
    Some((token, q))
}

/// What the lines of `Accept-Encoding` (none when the field is absent) accept instead of the
/// original, by the rules in the module's docs.
pub fn negotiate(lines: &[&[u8]]) -> Accepted {
    // Weights as listed: one per coding, identity and `*`; the first mention counts.
    let mut listed: [Option<u16>; 3] = [None; 3];
    let (mut identity, mut star) = (None, None);
    for e in lines.iter().flat_map(|l| l.split(|&b| b == b',')) {
        let Some((token, q)) = element(e) else {
            continue;
        };
        if let Some(c) = Coding::of_token(token) {
            if let Some(slot) = listed.get_mut(c.index()) {
                slot.get_or_insert(q);
            }
        } else if token.eq_ignore_ascii_case(b"identity") {
            identity.get_or_insert(q);
        } else if token == b"*" {
            star.get_or_insert(q);
        }
    }
    // The weight the original must be matched by: a coding preferred to it needs at least
    // this much (and more than nothing).
    let floor = identity.or(star).unwrap_or(0).max(1);
    let mut order: [(Coding, u16); 3] = [(Coding::Br, 0), (Coding::Zstd, 0), (Coding::Gzip, 0)];
    for (slot, c) in order.iter_mut().zip(Coding::ALL) {
        let q = listed.get(c.index()).copied().flatten();
        *slot = (c, q.or(star).unwrap_or(0));
    }
    // Stable: equal weights keep the server's order.
    order.sort_by_key(|&(_, q)| std::cmp::Reverse(q));
    let mut out = Accepted::default();
    let preferred = order.into_iter().filter(|&(_, q)| q >= floor);
    for (slot, (c, _)) in out.order.iter_mut().zip(preferred) {
        *slot = Some(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use Coding::*;

    fn order(lines: &[&str]) -> Vec<Coding> {
        let lines: Vec<&[u8]> = lines.iter().map(|l| l.as_bytes()).collect();
        negotiate(&lines).iter().collect()
    }

    #[test]
    fn weights_choose_and_refuse() {
        for (lines, want) in [
            (&[][..], &[][..]),
            (&[""], &[]),
            (&["gzip"], &[Gzip]),
            (&["GZip"], &[Gzip]),
            (&["x-gzip"], &[Gzip]),
            (&["gzip, deflate, br, zstd"], &[Br, Zstd, Gzip]),
            // Equal weights: the server's order. Higher weights first.
            (&["gzip, br"], &[Br, Gzip]),
            (&["gzip;q=1, br;q=0.5"], &[Gzip, Br]),
            (&["br;q=0.2, zstd;q=0.3, gzip;q=0.1"], &[Zstd, Br, Gzip]),
            // q=0 refuses, in any spelling.
            (&["br;q=0, gzip"], &[Gzip]),
            (&["br;q=0.000, gzip;Q=0.0"], &[]),
            (&["gzip;q=0"], &[]),
            // `*` stands for every coding not listed.
            (&["*"], &[Br, Zstd, Gzip]),
            (&["*;q=0.5, br;q=0"], &[Zstd, Gzip]),
            // `*` gives identity its weight too: gzip at 0.5 loses to the original at 1.
            (&["gzip;q=0.5, *"], &[Br, Zstd]),
            (&["*;q=0"], &[]),
            (&["*;q=0, gzip"], &[Gzip]),
            // identity: a coding must weigh at least as much to be preferred.
            (&["identity;q=0, gzip;q=0.1"], &[Gzip]),
            (&["identity, gzip"], &[Gzip]),
            (&["identity, gzip;q=0.5"], &[]),
            (&["identity;q=0.5, gzip;q=0.5, br;q=0.4"], &[Gzip]),
            (&["identity;q=0"], &[]),
            // Lines of a repeated field form one list; the first mention of a coding counts.
            (&["br;q=0", "gzip"], &[Gzip]),
            (&["gzip", "gzip;q=0"], &[Gzip]),
            // Malformed weights drop their element only; unknown codings and parameters are
            // ignored; empty elements are allowed.
            (&["br;q=2, gzip"], &[Gzip]),
            (&["br;q=0.1234, gzip;q=abc, zstd;q=.5"], &[]),
            (&["compress, deflate"], &[]),
            (&[" , br ; level=1 ,,gzip ; q = 0.5"], &[Br, Gzip]),
            (&["br;q=1.000, gzip;q=1.0001"], &[Br]),
        ] {
            assert_eq!(order(lines), want, "{lines:?}");
        }
    }

    #[test]
    fn suffixes_and_tokens() {
        assert_eq!(
            Coding::ALL.map(|c| (c.token(), c.suffix())),
            [("br", ".br"), ("zstd", ".zst"), ("gzip", ".gz")]
        );
    }
}
