//! The process template behind forkd: everything about processes and sockets, nothing about
//! HTTP. A daemon built on it says what to do with one accepted connection; the template runs
//! the processes around it.
//!
//! # What the template does
//!
//! [`run`] is the master. It binds its listeners, or takes the ones systemd socket activation
//! passed in ([`listener`]), and maps the [`scoreboard`] before the first fork. Then it either
//! keeps a pool of workers that accept on the shared listeners ([`Mode::Prefork`]), or a pool
//! of event workers that each multiplex many connections ([`Mode::Event`], [`reactor`]), or
//! accepts itself and forks one child per connection ([`Mode::Fork`]); in every mode never more
//! children (nor connections) than the bound, and [`fork::spawn`] is the only place that forks. Signals reach its one
//! `poll` loop through a signalfd ([`signals`]). Every child that ends is reaped at once
//! ([`reap`]), its cause logged and counted, and a worker replaced; workers that die before
//! serving anything are respawned slower and slower, so a broken environment cannot turn the
//! master into a fork loop. Readiness is one line on stderr and `READY=1` over
//! `$NOTIFY_SOCKET` ([`notify`]); the pid file is written atomically ([`atomic`]). With
//! [`Settings::agent_listen`] and [`Settings::status_listen`] the master also answers a load
//! balancer's agent-check and a status page from the same loop, never blocking ([`side`]). A master
//! started as root stays root and each child drops to an unprivileged user ([`privdrop`])
//! before it touches a connection.
//!
//! SIGTERM closes the listeners and lets children finish (up to
//! [`Settings::shutdown_timeout`]); SIGINT stops at once; SIGHUP calls [`Daemon::reload`] and
//! replaces the children, never the master; SIGUSR1 calls [`Daemon::reopen_logs`] and asks the
//! children to reopen theirs. [`run`] returns the exit code, or a [`StartError`] when the
//! master could not start.
//!
//! # What a daemon writes
//!
//! - A [`Service`]. [`Service::serve`] gets one accepted connection, in a child, and returns
//!   how many requests it answered. The other methods have defaults: [`Service::prepare`] does
//!   once-per-process work in the master so children inherit it done, [`Service::counters`]
//!   adds the application's limit counters to the scoreboard, [`Service::busy_response`] is
//!   what a fork-mode master sends, without forking, when every child is busy.
//!   [`Service::events`] opts into event mode: the service's connections as state machines
//!   ([`reactor::EventService`]: `open` a connection, `on_ready` when its socket is ready or
//!   its deadline passed, each returning what it waits for next).
//! - A [`Daemon`]: what SIGHUP and SIGUSR1 mean to the application.
//! - A `main` that fills in [`Settings`], calls [`run`] and exits with the code it returns.
//!
//! In a child, [`worker::stop_requested`] says when to finish, [`worker::take_reopen_request`]
//! when to reopen log files, and [`worker::retire`] leaves the way SIGTERM would. A prefork
//! worker that holds a connection across requests asks [`worker::clients_waiting`] to learn
//! that the pool is full and clients wait for it, and ends the connection to let them in.
//!
//! # The rules after fork
//!
//! A child forked from a multi-threaded process may only make async-signal-safe calls until it
//! execs: another thread may have held the allocator's lock, or a logger's, at the instant of
//! the fork. The template keeps the master single-threaded instead (no signal thread, no log
//! thread, no pool; [`fork::spawn`] checks it in debug builds), so each child is a faithful
//! copy that may allocate, log and run ordinary code. A daemon keeps that true by starting no
//! thread in the master, before [`run`] or in the hooks the master calls (`prepare`, `reload`,
//! `reopen_logs`). A child may start threads of its own.
//!
//! The master never keeps a client socket. In fork mode the accepted connection is moved into
//! the child's body, which the master drops as soon as the fork returns: there is no `close`
//! to forget, so no fd leak to find later.
//!
//! Every fd the template opens is close-on-exec from birth, and a child closes the master's
//! signalfd (and, in fork mode, the listeners) before it serves. A daemon opens its own fds
//! close-on-exec as well (std, socket2 and `pipe2(O_CLOEXEC)` do), so a program a child execs
//! inherits none of them.
//!
//! A child never returns into the master's code: its body's result becomes its exit code
//! through `_exit`, and a panic ends it with [`fork::EXIT_PANIC`] (70) in every build, since
//! [`run`] installs [`fork::exit_children_on_panic`] (under `panic = "abort"` it would
//! otherwise die of SIGABRT and dump core).
//!
//! # Example
//!
//! An echo server with two prefork workers:
//!
//! ```no_run
//! use std::io::{Read, Write};
//! use std::net::{SocketAddr, TcpStream};
//! use std::time::Duration;
//!
//! use forkd_daemon::{notify::Notifier, worker, Daemon, Mode, Service, Settings};
//!
//! struct Echo;
//!
//! impl Service for Echo {
//!     fn serve(&mut self, mut stream: &TcpStream, _peer: SocketAddr) -> u64 {
//!         let mut buf = [0u8; 4096];
//!         let mut chunks = 0;
//!         while !worker::stop_requested() {
//!             // A read error includes EINTR: SIGTERM, the master asking this child to finish.
//!             let Ok(n) = stream.read(&mut buf) else { break };
//!             let Some(bytes) = buf.get(..n).filter(|b| !b.is_empty()) else { break };
//!             if stream.write_all(bytes).is_err() {
//!                 break;
//!             }
//!             chunks += 1;
//!         }
//!         chunks
//!     }
//! }
//!
//! /// Nothing to re-read: a reload replaces the children with identical ones.
//! struct Fixed(Settings);
//!
//! impl Daemon for Fixed {
//!     type Service = Echo;
//!     fn reload(&mut self) -> Result<(Settings, Echo), String> {
//!         Ok((self.0.clone(), Echo))
//!     }
//! }
//!
//! fn main() {
//!     let listen = vec![SocketAddr::from(([127, 0, 0, 1], 7007))];
//!     let settings = Settings {
//!         shutdown_timeout: Duration::from_secs(5),
//!         ..Settings::new("echo", Mode::Prefork { workers: 2 }, listen)
//!     };
//!     let mut daemon = Fixed(settings.clone());
//!     let code = match forkd_daemon::run(settings, Echo, &mut daemon, &Notifier::none()) {
//!         Ok(code) => code,
//!         Err(e) => {
//!             eprintln!("echo: {e}");
//!             111
//!         }
//!     };
//!     std::process::exit(code);
//! }
//! ```
//!
//! `examples/echo.rs` is the same daemon with a fork mode, a read loop that cannot sleep
//! through a stop, and readiness over `$NOTIFY_SOCKET`; the crate's `README.md` walks through
//! it.
//!
//! # Shared parts
//!
//! forkd's supervisor and load generator use the rest: [`procfs`] samples a process tree from
//! `/proc`, [`trend`] fits the line that decides whether something grows, [`units`] parses
//! durations and sizes, [`limits`] says how many children fit in memory.

pub mod atomic;
pub mod backoff;
mod deadlines;
pub mod exec;
pub mod fork;
pub mod limits;
pub mod listener;
pub mod master;
pub mod notify;
pub mod privdrop;
pub mod procfs;
pub mod reactor;
pub mod reap;
pub mod resource;
pub mod scoreboard;
pub mod side;
pub mod signals;
pub mod trend;
pub mod units;
pub mod wait;
pub mod watchdog;
pub mod worker;

pub use master::{run, Daemon, Mode, Scheduling, Service, Settings, StartError};
