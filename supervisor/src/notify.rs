//! The server side of the systemd notify protocol: the datagram socket a child finds in its
//! `NOTIFY_SOCKET` (forkd's `daemon::notify::Notifier` is the client side), and the parsing of
//! what arrives (`READY=1`, `RELOADING=1`, `STOPPING=1`, `WATCHDOG=1`, `STATUS=...`).
//!
//! The socket lives in the abstract namespace under a name no one can guess in advance, so
//! nothing is left on disk if the supervisor is killed; like systemd it asks the kernel for the
//! sender's credentials (`SO_PASSCRED`) and accepts a message only from the child's process
//! group, so a stranger cannot declare the child ready. CLOEXEC from birth (std's sockets are):
//! the child reaches the socket by its name, never by an inherited fd.

use std::io::{self, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

use nix::sys::socket::{
    recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags, UnixCredentials,
};
use nix::unistd::{getpgid, Pid};

/// One parsed datagram.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    pub ready: bool,
    pub reloading: bool,
    pub stopping: bool,
    pub watchdog: bool,
    pub status: Option<String>,
}

/// Parses `KEY=VALUE` lines; unknown keys are ignored, as systemd does.
pub fn parse(datagram: &[u8]) -> Message {
    let mut m = Message::default();
    for line in String::from_utf8_lossy(datagram).lines() {
        match line.split_once('=') {
            Some(("READY", "1")) => m.ready = true,
            Some(("RELOADING", "1")) => m.reloading = true,
            Some(("STOPPING", "1")) => m.stopping = true,
            Some(("WATCHDOG", "1")) => m.watchdog = true,
            Some(("STATUS", s)) => m.status = Some(s.to_string()),
            _ => {}
        }
    }
    m
}

/// The bound notify socket.
pub struct NotifySocket {
    sock: UnixDatagram,
    name: String,
}

impl NotifySocket {
    pub fn bind() -> io::Result<NotifySocket> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!("forkd-supervisor/{}/{nanos:08x}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes())?;
        let sock = UnixDatagram::bind_addr(&addr)?;
        sock.set_nonblocking(true)?;
        setsockopt(&sock, sockopt::PassCred, &true)?;
        Ok(NotifySocket { sock, name })
    }

    /// The value of `NOTIFY_SOCKET` for the child (`@` marks the abstract namespace).
    pub fn env_value(&self) -> String {
        format!("@{}", self.name)
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }

    /// Reads every pending datagram and returns those sent from process group `pgid`;
    /// `rejected` counts the others. A message from `previous` (the group of the child that
    /// just ended, whose last words may arrive after its exit) is dropped without a warning.
    pub fn drain(
        &self,
        pgid: Option<Pid>,
        previous: Option<Pid>,
        rejected: &mut u64,
    ) -> Vec<Message> {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let mut cmsg = nix::cmsg_space!(UnixCredentials);
            let mut iov = [IoSliceMut::new(&mut buf)];
            let (n, sender) = match recvmsg::<()>(
                self.sock.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::MSG_DONTWAIT,
            ) {
                Ok(msg) => {
                    let sender = msg.cmsgs().ok().and_then(|mut c| {
                        c.find_map(|m| match m {
                            ControlMessageOwned::ScmCredentials(cred) => Some(cred.pid()),
                            _ => None,
                        })
                    });
                    (msg.bytes, sender)
                }
                Err(nix::errno::Errno::EINTR) => continue,
                // EAGAIN: nothing more. Anything else cannot be fixed by reading again.
                Err(_) => break,
            };
            let from_child = match (sender, pgid) {
                (Some(p), Some(g)) => p == g.as_raw() || getpgid(Some(Pid::from_raw(p))) == Ok(g),
                _ => false,
            };
            if from_child {
                out.push(parse(&buf[..n]));
            } else if sender.is_some() && sender == previous.map(Pid::as_raw) {
                tracing::debug!("dropped a late notify message from the previous child");
            } else {
                *rejected += 1;
                tracing::warn!(
                    "ignored a notify message from pid {}, not the child's process group",
                    sender.map_or("unknown".to_string(), |p| p.to_string())
                );
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_protocol() {
        let cases: &[(&[u8], Message)] = &[
            (
                b"READY=1",
                Message {
                    ready: true,
                    ..Default::default()
                },
            ),
            (
                b"READY=1\nSTATUS=serving on 127.0.0.1:8080\nMAINPID=3",
                Message {
                    ready: true,
                    status: Some("serving on 127.0.0.1:8080".into()),
                    ..Default::default()
                },
            ),
            (
                b"RELOADING=1\nMONOTONIC_USEC=1",
                Message {
                    reloading: true,
                    ..Default::default()
                },
            ),
            (
                b"WATCHDOG=1",
                Message {
                    watchdog: true,
                    ..Default::default()
                },
            ),
            (b"READY=0\nWATCHDOG=trigger\n\xff", Message::default()),
        ];
        for (bytes, want) in cases {
            assert_eq!(parse(bytes), *want, "{:?}", String::from_utf8_lossy(bytes));
        }
    }

    #[test]
    fn accepts_only_its_process_group() {
        let s = NotifySocket::bind().unwrap();
        std::env::set_var("NOTIFY_SOCKET", s.env_value());
        let n = forkd_daemon::notify::Notifier::from_env().unwrap();
        n.send("READY=1").unwrap();
        n.send("WATCHDOG=1").unwrap();
        let mut rejected = 0;
        let me = nix::unistd::getpgrp();
        let got = s.drain(Some(me), None, &mut rejected);
        assert_eq!(got.len(), 2);
        assert!(got[0].ready && got[1].watchdog);
        n.send("READY=1").unwrap();
        let stranger = Pid::from_raw(1);
        assert!(s.drain(Some(stranger), None, &mut rejected).is_empty());
        assert_eq!(rejected, 1);
        // The group of a child that just ended: dropped, not counted.
        n.send("STOPPING=1").unwrap();
        let mine = Pid::from_raw(std::process::id() as i32);
        assert!(s.drain(None, Some(mine), &mut rejected).is_empty());
        assert_eq!(rejected, 1);
    }
}
