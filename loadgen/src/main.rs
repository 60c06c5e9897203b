//! The `forkd-loadgen` binary: everything is in the library, so tests and benches can use it.

// Raw system calls live in forkd-daemon, behind documented safe wrappers (or in nix).
#![forbid(unsafe_code)]

fn main() {
    std::process::exit(forkd_loadgen::main());
}
