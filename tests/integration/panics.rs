//! Panics a request could reach, found while making the request paths deny what can panic
//! (issue 7). Each test is the request that used to kill its child, now answered.
//!
//! Configured durations were unbounded (`--header-timeout 1e19` parsed), and `Instant +
//! Duration` panics when the sum leaves the clock's range: every deadline derived from the
//! configuration used to be such a sum. Timeouts are now bounded at start, and deadlines
//! saturate whatever they are given.

use std::io::{Read, Write};

use std::time::Duration;

use crate::util::{body_of, per_mode, status_of, Mode, Proc, FORKD};

/// Durations past what a deadline can hold are refused at start, naming the flag: past a
/// year by the duration parser (a bad command line, exit 2), past a day by the configuration
/// check (exit 100). The deadlines saturate too, as `clock::after`'s unit test shows, for a
/// template user that does not validate.
#[test]
fn timeouts_beyond_the_clock_are_refused_at_start() {
    for flag in ["--header-timeout", "--send-timeout", "--shutdown-timeout"] {
        for (value, code, says) in [
            ("1e19", 2, "at most a year"),
            ("2d", 100, "longest timeout"),
        ] {
            let mut p = Proc::spawn(FORKD, &[flag, value, "--listen", "127.0.0.1:0"]);
            let status = p.wait_exit(Duration::from_secs(10));
            assert_eq!(status.code(), Some(code), "{flag} {value}");
            // The reader thread may still be draining stderr when the exit is seen.
            let line = p.wait_line(says, Duration::from_secs(5));
            assert!(line.contains(flag), "{flag} {value}: {line}");
        }
    }
}

per_mode!(a_body_deadline_beyond_the_clock_still_answers);
fn a_body_deadline_beyond_the_clock_still_answers(mode: Mode) {
    // A body's bytes earn it bytes / min-send-rate seconds (`body::due`), up to max-body-bytes
    // of them: here as many seconds as a u64 holds, beyond what an `Instant` can add.
    let server = mode.start(&[
        "--max-body-bytes",
        &u64::MAX.to_string(),
        "--min-send-rate",
        "1",
    ]);
    let resp = server
        .raw(b"POST / HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 5\r\n\r\nhello");
    assert_eq!(status_of(&resp), 405);
}

per_mode!(the_longest_send_timeout_still_sends_a_large_file);
fn the_longest_send_timeout_still_sends_a_large_file(mode: Mode) {
    // Larger than what goes out in one gathered send: `sendfile` with a send deadline.
    let big = vec![b'x'; 256 * 1024];
    let server = mode.with_site(&["--send-timeout", "1d"], |root| {
        std::fs::write(root.join("big.bin"), &big).unwrap();
    });
    let mut s = server.connect();
    s.write_all(b"GET /big.bin HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    assert_eq!(status_of(&resp), 200);
    assert_eq!(body_of(&resp).len(), big.len());
}
