//! The one place that calls `fork()`.
//!
//! A forked child of a multi-threaded parent may only do async-signal-safe work, because
//! another thread could have held the allocator's or a logger's lock at the instant of the
//! fork. forkd's master is single-threaded by design (no signal thread, no non-blocking log
//! thread, no pool), which makes the child a faithful single-threaded copy that may run normal
//! Rust code. `spawn` checks that property in debug builds.
//!
//! The child never returns into the caller's code: its body's result becomes the exit code
//! through `_exit`, which skips destructors and atexit handlers that would flush or close the
//! parent's state a second time.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Once;

use nix::unistd::{fork, ForkResult, Pid};

/// Exit code of a child whose body panicked (EX_SOFTWARE).
pub const EXIT_PANIC: i32 = 70;

/// The static state a child writes right after the fork, kept on one page: each page of the
/// master's data that a child writes costs it a copy-on-write fault, and these two fields used
/// to lie on two pages.
#[repr(C, align(16))]
pub(crate) struct ChildState {
    /// Set in every child `spawn` makes, right after the fork.
    forked: AtomicBool,
    /// The child's scoreboard slot (`scoreboard::enter_slot`); `usize::MAX` in the master.
    pub(crate) slot: AtomicUsize,
}

pub(crate) static CHILD: ChildState = ChildState {
    forked: AtomicBool::new(false),
    slot: AtomicUsize::new(usize::MAX),
};

/// Makes a panic in a child end that child with [`EXIT_PANIC`] once the panic message is
/// printed, in every build: with the release profile's `panic = "abort"` it would otherwise
/// die of SIGABRT (and dump core, once per crashing request), and with unwinding it would run
/// destructors of state copied from the master. A panic in the master is left as it was.
/// Call it in the master before the first fork; the previous hook (the default one, or the
/// application's) still runs first.
pub fn exit_children_on_panic() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            previous(info);
            if CHILD.forked.load(Ordering::Relaxed) {
                // SAFETY: `_exit` ends the process at once; a child never returns into the
                // master's code, so nothing of the master's is skipped that it needed.
                unsafe { libc::_exit(EXIT_PANIC) }
            }
        }));
    });
}

/// Runs `body` in a new child process and returns the child's pid to the parent.
///
/// `body` starts with the parent's signal mask. A parent that handles signals keeps them
/// blocked (the master and the supervisor read theirs from a signalfd: `signals`), and its
/// dispositions are already the child's (`worker::set_child_dispositions`), so a signal sent
/// to the child before its set-up is done stays pending until the body unblocks it
/// (`worker::enter`); any other signal has its default action in both. So the fork needs no
/// mask change of its own, which would cost the master two system calls per connection.
///
/// `body` is moved into this call, so whatever it owns (an accepted connection, say) is
/// dropped in the parent when `spawn` returns: the parent cannot keep a copy by mistake.
pub fn spawn<F: FnOnce() -> i32>(body: F) -> nix::Result<Pid> {
    // Whoever forks (the master, or a probe before the master runs) gets exit code 70 for a
    // panicking child, never a SIGABRT and a core dump under `panic = "abort"`.
    exit_children_on_panic();
    debug_assert!(
        single_threaded(),
        "fork from a multi-threaded process: the child could inherit a held lock"
    );
    // SAFETY: this process is single-threaded (checked above in debug builds, and an
    // architecture invariant: see ARCHITECTURE.md), so the child owns a consistent copy of
    // every lock and may run ordinary code; it ends in `_exit` and never unwinds into ours.
    let forked = unsafe { fork() };
    match forked? {
        ForkResult::Parent { child } => Ok(child),
        ForkResult::Child => {
            CHILD.forked.store(true, Ordering::Relaxed);
            let code = catch_unwind(AssertUnwindSafe(body)).unwrap_or(EXIT_PANIC);
            // SAFETY: `_exit` ends the process at once; nothing of the parent's is flushed.
            unsafe { libc::_exit(code) }
        }
    }
}

/// True when the calling process has exactly one thread.
pub fn single_threaded() -> bool {
    std::fs::read_dir("/proc/self/task")
        .map(|d| d.count() == 1)
        .unwrap_or(true)
}

/// Does in the parent the lazy per-process work of the runtime that every child would
/// otherwise redo: the CPU feature cache behind `is_x86_feature_detected!` (used by SIMD code
/// such as httparse's) costs a series of `cpuid` instructions, each a trap under a hypervisor;
/// done once here, it was a tenth of the CPU time of a fork-per-connection server.
pub fn warm_up() {
    #[cfg(target_arch = "x86_64")]
    {
        let _ = std::arch::is_x86_feature_detected!("sse4.2");
    }
}

/// Leaves the heap, once the master has built what children inherit, in the state that costs
/// a fork least: glibc's fast bins off, and free memory given back.
///
/// A fast bin holds small freed chunks unmerged; the first allocation of 1 KiB or more in a
/// process then merges all of them (`malloc_consolidate`), writing to every heap page they lie
/// on. The master's start leaves many there, so each forked child paid that walk, a
/// copy-on-write fault per page, on its first larger allocation. Without fast bins (tcache
/// still serves small sizes quickly) a free merges at once, in the master, where it is paid
/// once. `malloc_trim` then merges what is left and returns free pages to the kernel, so the
/// master has fewer resident pages for every fork to copy page-table entries of.
pub fn tidy_heap() {
    // Free room kept at the top of the heap, as much as glibc's default `M_TOP_PAD`: a child's
    // first allocations fit there instead of each child growing the heap with `brk`.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    const TRIM_PAD: usize = 128 * 1024;
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt and malloc_trim take no pointers and only rearrange the allocator's own
    // free memory; this process is single-threaded here, and no allocation is in progress.
    unsafe {
        libc::mallopt(libc::M_MXFAST, 0);
        libc::malloc_trim(TRIM_PAD);
    }
}

/// Returns the heap's free pages to the kernel, after a process freed an unusually large
/// buffer that it will not need again soon: glibc keeps freed heap memory resident for reuse,
/// so one large answer would otherwise stay in a long-lived worker's RSS.
pub fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointer and only rearranges the allocator's own free memory;
    // glibc's allocator locks its arenas itself.
    unsafe {
        libc::malloc_trim(0);
    }
}
