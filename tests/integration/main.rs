//! One integration-test binary (as ripgrep does): every module drives the real binaries over
//! real loopback sockets. `util` is the harness.

mod util;

mod abuse;
mod answers;
mod cache;
mod cluster;
mod config;
mod event;
mod fair;
mod http;
mod loadgen;
mod panics;
mod paths;
mod precompress;
mod precompressed;
mod rfc;
mod robust;
mod server;
mod side;
mod site;
mod supervisor;
