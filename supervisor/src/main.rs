//! The `forkd-supervisor` binary: everything lives in the library, so tests and the root
//! package build the same code.

fn main() {
    std::process::exit(forkd_supervisor::main());
}
