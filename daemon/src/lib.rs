//! The reusable process template: everything about processes and sockets, nothing about HTTP.
//!
//! A daemon built on it supplies a [`Service`] (what to do with one accepted connection, in a
//! child process) and gets listeners, a prefork pool or a fork per connection, signals, reaping,
//! readiness and privilege dropping.

pub mod atomic;
pub mod backoff;
pub mod exec;
pub mod fork;
pub mod limits;
pub mod listener;
pub mod master;
pub mod notify;
pub mod privdrop;
pub mod procfs;
pub mod reap;
pub mod resource;
pub mod scoreboard;
pub mod signals;
pub mod trend;
pub mod units;
pub mod wait;
pub mod worker;

pub use master::{run, Daemon, Mode, Service, Settings, StartError};
