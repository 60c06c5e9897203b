//! A line-echo daemon built on the forkd process template: the template brings the listener,
//! the prefork pool or fork per connection, signals, reaping and readiness; this file brings
//! only what to do with one connection.
//!
//! `cargo run --example echo -- 127.0.0.1:7007 [fork]`, then `nc 127.0.0.1 7007`.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use forkd_daemon::{self as daemon, notify::Notifier, Daemon, Mode, Service, Settings};

#[derive(Clone)]
struct Echo;

impl Service for Echo {
    fn serve(&mut self, stream: TcpStream, _peer: SocketAddr) -> u64 {
        let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
        let Ok(mut out) = stream.try_clone() else {
            return 0;
        };
        let mut lines = 0;
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if out.write_all(format!("{line}\n").as_bytes()).is_err()
                || daemon::worker::stop_requested()
            {
                break;
            }
            lines += 1;
        }
        lines
    }
}

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
    let mut d = EchoDaemon(settings.clone());
    match daemon::run(settings, Echo, &mut d, &Notifier::none()) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("echo: {e}");
            std::process::exit(111);
        }
    }
}
