//! A line-echo daemon built on the forkd process template: the template brings the listener,
//! the prefork pool or fork per connection, signals, reaping and readiness; this file brings
//! only what to do with one connection. `daemon/README.md` walks through it.
//!
//! `cargo run -p forkd-daemon --example echo -- 127.0.0.1:7007 [fork]`, then `nc 127.0.0.1 7007`.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use forkd_daemon::{self as daemon, notify::Notifier, worker, Daemon, Mode, Service, Settings};

/// A client that stays quiet this long is dropped.
const IDLE: Duration = Duration::from_secs(30);

struct Echo;

impl Service for Echo {
    fn serve(&mut self, mut stream: &TcpStream, _peer: SocketAddr) -> u64 {
        let (mut buf, mut lines) = ([0u8; 4096], 0);
        // Ends when the client closes, stays quiet for IDLE, or the master asks us to stop.
        while let Ok(n @ 1..) = worker::read_or_stop(stream, &mut buf, IDLE) {
            let bytes = buf.get(..n).unwrap_or_default();
            if stream.write_all(bytes).is_err() {
                break;
            }
            lines += bytes.iter().filter(|&&b| b == b'\n').count() as u64;
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
    // Everything else off: a quiet client is what its test stops it with, so no deferred
    // accept and no per-client limit either.
    let settings = Settings {
        shutdown_timeout: Duration::from_secs(5),
        ..Settings::new("echo", mode, vec![listen])
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
