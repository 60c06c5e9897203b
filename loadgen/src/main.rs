//! The `forkd-loadgen` binary: everything is in the library, so tests and benches can use it.

fn main() {
    std::process::exit(forkd_loadgen::main());
}
