//! The `forkd-supervisor` binary: everything lives in the library, so tests and the root
//! package build the same code.

// Raw system calls live in forkd-daemon, behind documented safe wrappers (or in nix).
#![forbid(unsafe_code)]

fn main() {
    std::process::exit(forkd_supervisor::main());
}
