//! Micro-benchmarks of the per-request work that is not I/O: parsing a request head, resolving
//! its target to a safe path, building a response head, and the process cost forkd pays per
//! connection in fork mode (one fork plus one reap).
//!
//! Run: `cargo bench --bench micro`. Figures are per operation on this machine; compare them
//! with each other and across commits, not across machines.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use forkd::http::{parse, path, Config};
use forkd_daemon::fork;
use nix::sys::wait::{waitpid, WaitStatus};

/// Request heads as clients send them: curl's minimum, a browser's, and one with many fields.
fn requests() -> Vec<(&'static str, Vec<u8>)> {
    let curl = b"GET /bench/2k.html HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n".to_vec();
    let browser = b"GET /posts/2024/forking-servers.html HTTP/1.1\r\n\
Host: blog.example.org\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n\
Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n\
Accept-Language: en-GB,en;q=0.5\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\n\
Referer: https://blog.example.org/\r\n\
Connection: keep-alive\r\n\
If-None-Match: \"5f2a-800\"\r\n\
If-Modified-Since: Tue, 05 Mar 2024 10:00:00 GMT\r\n\
Upgrade-Insecure-Requests: 1\r\n\
Sec-Fetch-Dest: document\r\n\
Sec-Fetch-Mode: navigate\r\n\
Sec-Fetch-Site: same-origin\r\n\r\n"
        .to_vec();
    let mut many = b"GET /index.html HTTP/1.1\r\nHost: x\r\n".to_vec();
    for i in 0..40 {
        many.extend_from_slice(format!("X-Field-{i}: value number {i}\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    vec![("curl", curl), ("browser", browser), ("40-fields", many)]
}

fn parse_heads(c: &mut Criterion) {
    let cfg = Config::default();
    let mut group = c.benchmark_group("parse");
    for (name, req) in requests() {
        group.throughput(Throughput::Bytes(req.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(name), &req, |b, req| {
            b.iter(|| {
                let head = parse::parse(black_box(req), &cfg).expect("valid request");
                black_box(head.expect("complete head").len)
            })
        });
    }
    // A head cut in half: the "need more bytes" answer must be as cheap as a full parse.
    let (_, browser) = &requests()[1];
    let half = &browser[..browser.len() / 2];
    group.throughput(Throughput::Bytes(half.len() as u64));
    group.bench_function("browser-half", |b| {
        b.iter(|| {
            black_box(
                parse::parse(black_box(half), &cfg)
                    .expect("partial")
                    .is_none(),
            )
        })
    });
    group.finish();
}

fn resolve_paths(c: &mut Criterion) {
    let targets: [(&str, &[u8]); 5] = [
        ("root", b"/"),
        ("bench-page", b"/bench/2k.html"),
        ("deep-query", b"/a/b/c/d/e/f/g/page.html?utm_source=x&y=z"),
        ("escaped", b"/%7Euser/caf%C3%A9/na%C3%AFve%20file.html"),
        ("traversal", b"/static/%2e%2e/%2e%2e/etc/passwd"),
    ];
    let mut group = c.benchmark_group("resolve");
    let mut out = Vec::with_capacity(256);
    let allow = [".well-known".to_string()];
    let dots = path::Dots {
        all: false,
        allow: &allow,
    };
    for (name, target) in targets {
        group.bench_function(name, |b| {
            b.iter(|| black_box(path::resolve(black_box(target), dots, &mut out).is_ok()))
        });
    }
    group.finish();
}

fn response_heads(c: &mut Criterion) {
    // The head builder itself is private to `forkd::http`; the master's ready-made 503 is the
    // public response that exercises the same formatting.
    let cfg = forkd::http::Config::default();
    c.bench_function("response/busy-503", |b| {
        b.iter(|| black_box(forkd::http::busy_response(&cfg).len()))
    });
}

fn fork_and_reap(c: &mut Criterion) {
    let mut group = c.benchmark_group("process");
    group.measurement_time(Duration::from_secs(5));
    // What fork mode pays per connection besides the request: copying this process's page
    // tables into a child that exits at once, and collecting its exit status.
    group.bench_function("fork+exit+reap", |b| {
        b.iter(|| {
            let pid = fork::spawn(|| 0).expect("fork");
            match waitpid(pid, None).expect("waitpid") {
                WaitStatus::Exited(_, 0) => {}
                other => panic!("child ended as {other:?}"),
            }
        })
    });
    group.finish();
}

criterion_group!(
    benches,
    parse_heads,
    resolve_paths,
    response_heads,
    fork_and_reap
);
criterion_main!(benches);
