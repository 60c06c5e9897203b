//! The `forkd` binary: everything lives in the library (`forkd::cli`).

// Raw system calls live in forkd-daemon, behind documented safe wrappers (or in nix).
#![forbid(unsafe_code)]

fn main() {
    std::process::exit(forkd::cli::main());
}
