//! The `forkd` binary: everything lives in the library (`forkd::cli`).

fn main() {
    std::process::exit(forkd::cli::main());
}
