//! forkd: a forking HTTP server for static sites.
//!
//! The process machinery (listeners, the one `fork`, signals, reaping, the prefork pool and
//! the fork-per-connection loop, readiness, privilege dropping) is the crate `forkd_daemon`,
//! which knows nothing of HTTP; this crate implements its [`forkd_daemon::Service`].
//! `http` is the application: parsing, safe paths, responses, one connection's life.
//! `config` turns flags and the TOML file into both, and `cli` runs them; `precompress` is the
//! subcommand that writes the compressed siblings `http` serves.

// Raw system calls live in forkd-daemon, behind documented safe wrappers (or in nix).
#![forbid(unsafe_code)]

pub mod cli;
pub mod config;
pub mod http;
pub mod precompress;
pub mod rootcheck;
