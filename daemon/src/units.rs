//! The two value syntaxes of every configuration built on the template, flags and TOML files
//! alike: durations (`250ms`, `2s`, `1m30s`, `1h`, `2d`; a bare number is seconds, `0.5`
//! included) and sizes (`512k`, `200MiB`, `1G`; binary multiples whatever the spelling, a
//! bare number is bytes). One parser for forkd, its supervisor and its load generator, so a
//! value means the same everywhere. Pure functions: the table tests pin every accepted and
//! refused spelling.

use std::time::Duration;

/// The longest duration any setting takes: more is a typo, not a setting.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 86400);

/// Parses a duration (`100ms`, `2s`, `1h30m`, `2d` via humantime, or `3` and `0.5` seconds),
/// refusing anything over [`MAX_DURATION`].
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = match s.trim().parse::<f64>() {
        Ok(secs) => Duration::try_from_secs_f64(secs).map_err(|e| format!("{s:?}: {e}"))?,
        Err(_) => humantime::parse_duration(s.trim())
            .map_err(|e| format!("{s:?}: {e} (try 10s, 500ms or 0.5)"))?,
    };
    if d > MAX_DURATION {
        return Err(format!("{s:?} is out of range (at most a year)"));
    }
    Ok(d)
}

/// Parses a size in bytes such as `4096`, `512k`, `200M`, `200MiB` or `1G`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (examples: 4096, 512k, 200MiB, 1G)"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        u => return Err(format!("{s:?}: unknown unit {u:?} (use k, M or G)")),
    };
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("{s:?} is out of range"))
}

/// A duration the way the parser reads it back, for logs and `status`.
pub fn show_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let ms = Duration::from_millis;
        let cases: &[(&str, Option<Duration>)] = &[
            ("100ms", Some(ms(100))),
            ("2s", Some(ms(2000))),
            ("2", Some(ms(2000))),
            ("1m30s", Some(ms(90_000))),
            ("1h", Some(ms(3_600_000))),
            (" 30s ", Some(ms(30_000))),
            ("0.5", Some(ms(500))),
            ("", None),
            ("s", None),
            ("-1s", None),
            ("2d", Some(ms(172_800_000))),
            ("400d", None),
            ("2 fortnights", None),
            ("1e9h", None),
            ("1e19", None),
            ("soon", None),
            ("-1", None),
            ("250ms", Some(ms(250))),
            ("2m", Some(ms(120_000))),
            ("10000000h", None),
        ];
        for (s, want) in cases {
            assert_eq!(parse_duration(s).ok(), *want, "{s:?}");
        }
    }

    #[test]
    fn sizes() {
        let cases: &[(&str, Option<u64>)] = &[
            ("4096", Some(4096)),
            ("512k", Some(512 << 10)),
            ("200MiB", Some(200 << 20)),
            ("200M", Some(200 << 20)),
            ("1G", Some(1 << 30)),
            ("1gb", Some(1 << 30)),
            ("1.5G", None),
            ("", None),
            ("12T", None),
            ("99999999999999999999", None),
            ("18446744073709551615G", None),
        ];
        for (s, want) in cases {
            assert_eq!(parse_size(s).ok(), *want, "{s:?}");
        }
    }

    #[test]
    fn shown_durations_parse_back() {
        for ms in [0u64, 5, 999, 1000, 1500, 30_000] {
            let d = Duration::from_millis(ms);
            assert_eq!(parse_duration(&show_duration(d)).unwrap(), d);
        }
    }
}
