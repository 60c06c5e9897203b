//! The optional Prometheus endpoint: a non-blocking loopback listener in the supervisor's one
//! `poll`, no thread. Each scrape is answered at once from the current [`Status`] and the
//! connection closed; a scraper gets at most 100 ms to send its request, which bounds how long
//! a misbehaving local client can hold the loop.
//!
//! When accepting fails because the supervisor is out of fds, the listener is left out of the
//! `poll` for a second instead of spinning on a readable socket it cannot accept from.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener};
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

use crate::status::Status;

pub struct Metrics {
    listener: TcpListener,
    paused_until: Option<Instant>,
}

impl Metrics {
    pub fn bind(addr: SocketAddr) -> io::Result<Metrics> {
        // std's listener is CLOEXEC and sets SO_REUSEADDR.
        let listener = TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        Ok(Metrics {
            listener,
            paused_until: None,
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The fd to poll, unless accepting is paused.
    pub fn fd(&self, now: Instant) -> Option<BorrowedFd<'_>> {
        match self.paused_until {
            Some(t) if now < t => None,
            _ => Some(self.listener.as_fd()),
        }
    }

    /// Answers every pending scrape with `status`.
    pub fn serve(&mut self, status: &Status) {
        loop {
            match self.listener.accept() {
                Ok((mut conn, _)) => {
                    let _ = answer(&mut conn, status);
                    // The connection closes when `conn` is dropped here, whatever happened.
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::warn!("metrics: accept failed: {e}; pausing for 1s");
                    self.paused_until = Some(Instant::now() + Duration::from_secs(1));
                    return;
                }
            }
        }
    }
}

fn answer(conn: &mut std::net::TcpStream, status: &Status) -> io::Result<()> {
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(Duration::from_millis(100)))?;
    conn.set_write_timeout(Some(Duration::from_millis(100)))?;
    // Reading the request before answering keeps the close from turning into a reset that
    // would discard the response; its content does not matter (every path gets the metrics).
    let mut buf = [0u8; 2048];
    let _ = conn.read(&mut buf)?;
    let body = status.prometheus();
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes())?;
    conn.write_all(body.as_bytes())?;
    conn.shutdown(Shutdown::Write)
}
