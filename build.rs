//! Links the hot code of `forkd` together (release builds on x86_64 Linux, where rustc links
//! with LLD): `link/forkd.order` lists, in order, the functions a child of any mode runs while
//! serving, those it and the master both run and those only the master runs
//! (`benches/symbol-order.sh` measures them). A
//! process maps every page of the binary it touches and, through the kernel's fault-around,
//! the cached pages around it (64 KiB at a time), so scattered hot functions made each process
//! map several times the code it runs. A name the list misses (after a toolchain or dependency
//! update changed the hashes in symbol names) is placed as before: a stale list costs memory,
//! never correctness. A static build also packs its relocations (`static_glibc_reads_relr`).
//! `FORKD_SYMBOL_ORDER=0` turns both off.

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
    if static_glibc_reads_relr() {
        println!("cargo:rustc-link-arg-bin=forkd=-Wl,-z,pack-relative-relocs");
    }
}

/// A static-pie forkd relocates itself at start: its 10,000 relative relocations were a
/// 240 KiB table the master read whole (60 pages of its RSS, 13 of each worker's, by
/// fault-around). Packed as RELR they take 3 KiB. The startup code that applies them is the
/// libc.a linked in, which reads RELR from glibc 2.36 on; a dynamic build is left alone, as its
/// loader would be the running system's.
fn static_glibc_reads_relr() -> bool {
    let crt_static =
        env::var("CARGO_CFG_TARGET_FEATURE").is_ok_and(|f| f.split(',').any(|f| f == "crt-static"));
    // The build host's glibc is the one linked in only when it is also the target.
    let native = env::var("HOST").ok() == env::var("TARGET").ok();
    if !(crt_static && native) {
        return false;
    }
    let Ok(out) = Command::new("getconf").arg("GNU_LIBC_VERSION").output() else {
        return false;
    };
    // "glibc 2.36"
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text.trim().strip_prefix("glibc ").unwrap_or("");
    at_least(version, (2, 36))
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
    at_least(release, (1, 90))
}

/// Whether a version "MAJOR.MINOR[.-]..." is at least `want`.
fn at_least(version: &str, want: (u32, u32)) -> bool {
    let mut parts = version.split(['.', '-']).map(|p| p.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(major), Some(minor)) => (major, minor) >= want,
        _ => false,
    }
}
