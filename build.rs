//! Links the hot code of `forkd` together (release builds on x86_64 Linux, where rustc links
//! with LLD): `link/forkd.order` lists, in order, the functions the master runs, those both run
//! and those an event worker runs while serving (`benches/symbol-order.sh` measures them). A
//! process maps every page of the binary it touches and, through the kernel's fault-around,
//! the cached pages around it (64 KiB at a time), so scattered hot functions made each process
//! map several times the code it runs. A name the list misses (after a toolchain or dependency
//! update changed the hashes in symbol names) is placed as before: a stale list costs memory,
//! never correctness. `FORKD_SYMBOL_ORDER=0` turns it off.

use std::env;
use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=link/forkd.order");
    println!("cargo:rerun-if-env-changed=FORKD_SYMBOL_ORDER");
    let release = env::var("PROFILE").is_ok_and(|p| p == "release");
    let target = env::var("TARGET").is_ok_and(|t| t == "x86_64-unknown-linux-gnu");
    let wanted = env::var("FORKD_SYMBOL_ORDER").map_or(true, |v| v != "0");
    if !(release && target && wanted && links_with_lld()) {
        return;
    }
    let Ok(dir) = env::var("CARGO_MANIFEST_DIR") else {
        return;
    };
    let order = Path::new(&dir).join("link/forkd.order");
    println!(
        "cargo:rustc-link-arg-bin=forkd=-Wl,--symbol-ordering-file={}",
        order.display()
    );
    println!("cargo:rustc-link-arg-bin=forkd=-Wl,--no-warn-symbol-ordering");
}

/// rustc links x86_64-unknown-linux-gnu with its own LLD since 1.90; GNU ld, the linker
/// before, rejects `--symbol-ordering-file`.
fn links_with_lld() -> bool {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let Ok(out) = Command::new(rustc).arg("-vV").output() else {
        return false;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(release) = text.lines().find_map(|l| l.strip_prefix("release: ")) else {
        return false;
    };
    let mut parts = release
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (1, 90)
}
