//! A line-echo daemon built on the forkd process template: the template brings the listener,
//! the prefork pool or fork per connection, signals, reaping and readiness; this file brings
//! only what to do with one connection. `daemon/README.md` walks through it.
//!
//! `cargo run -p forkd-daemon --example echo -- 127.0.0.1:7007 [fork]`, then `nc 127.0.0.1 7007`.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use forkd_daemon::{self as daemon, notify::Notifier, Daemon, Mode, Service, Settings};

/// How often a read blocked on a quiet client gives the child a chance to see a stop request,
/// and how long a client may stay quiet before it is dropped.
const TICK: Duration = Duration::from_secs(1);
const IDLE: Duration = Duration::from_secs(30);

struct Echo;

impl Service for Echo {
    fn serve(&mut self, mut stream: TcpStream, _peer: SocketAddr) -> u64 {
        // SIGTERM interrupts a blocked read with EINTR, but it may also land just before the
        // read starts; the tick bounds how long the child can miss it. (`BufRead::lines`
        // would retry EINTR and sleep through the stop: hence the plain `read`.)
        let _ = stream.set_read_timeout(Some(TICK));
        let (mut buf, mut lines, mut idle) = ([0u8; 4096], 0, Duration::ZERO);
        while !daemon::worker::stop_requested() && idle < IDLE {
            match stream.read(&mut buf) {
                Ok(n) => {
                    let Some(bytes) = buf.get(..n).filter(|b| !b.is_empty()) else {
                        break;
                    };
                    if stream.write_all(bytes).is_err() {
                        break;
                    }
                    lines += bytes.iter().filter(|&&b| b == b'\n').count() as u64;
                    idle = Duration::ZERO;
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    idle += TICK;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        lines
    }
}

/// SIGHUP: nothing to re-read, so a reload replaces the children with identical ones.
struct EchoDaemon(Settings);

impl Daemon for EchoDaemon {
    type Service = Echo;
    fn reload(&mut self) -> Result<(Settings, Echo), String> {
        Ok((self.0.clone(), Echo))
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = args.get(1).map_or("127.0.0.1:7007", String::as_str);
    let Ok(listen) = arg.parse() else {
        eprintln!("echo: {arg:?} is not an ADDR:PORT");
        std::process::exit(2);
    };
    let mode = match args.get(2).map(String::as_str) {
        Some("fork") => Mode::Fork { max_children: 8 },
        _ => Mode::Prefork { workers: 2 },
    };
    let settings = Settings {
        name: "echo",
        mode,
        listen: vec![listen],
        max_requests_per_worker: 0,
        shutdown_timeout: Duration::from_secs(5),
        credentials: None,
        pid_file: None,
        metrics_file: None,
    };
    // `READY=1` for systemd or forkd-supervisor when `NOTIFY_SOCKET` is set; nothing otherwise.
    let notifier = Notifier::from_env().unwrap_or_else(|e| {
        eprintln!("echo: {e}");
        std::process::exit(100);
    });
    let mut d = EchoDaemon(settings.clone());
    match daemon::run(settings, Echo, &mut d, &notifier) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("echo: {e}");
            std::process::exit(111);
        }
    }
}
