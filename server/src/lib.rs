//! forkd: a forking HTTP server for static sites.
//!
//! `daemon` is the reusable process machinery: listeners, the one `fork`, signals, reaping,
//! the prefork pool and the fork-per-connection loop, readiness and privilege dropping. It
//! knows nothing of HTTP; another daemon reuses it by implementing [`daemon::Service`].
//! `http` is this application: parsing, safe paths, responses, one connection's life.
//! `config` turns flags and the TOML file into both, and `cli` runs them.

pub mod cli;
pub mod config;
pub mod daemon;
pub mod http;
pub mod rootcheck;
