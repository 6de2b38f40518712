//! How the process's memory allocator is set up: on glibc, buffers freed by one batch are kept
//! for the next instead of being handed back to the kernel.
//!
//! glibc's malloc returns memory to the kernel eagerly: a block above its mmap threshold is
//! mapped on allocation and unmapped on free, and a free top of the heap above its trim
//! threshold is released. casewatch builds and drops batch-sized buffers all the time (the
//! rows of every flush, the engine's tables of a replay), so the kernel kept mapping fresh
//! pages and every first write to each 4 KiB page faulted and zeroed it. On the engine
//! benchmark that was about 10,000 page faults per simulated county year and a sixth of the
//! time (ARCHITECTURE.md, "Session 5: page faults, fact-neutral events, compact facts").
//!
//! [`configure`] fixes both thresholds: blocks below 8 MiB come from the heap, and up to
//! 128 MiB of free heap top is kept. Larger blocks (the engine's case table of a big partition)
//! are still mapped, so that growing them moves pages rather than copying, and the memory
//! held for open cases stays within its budget (295 bytes per open case against 300; higher
//! thresholds keep more of the engine's growth buffers in the heap).
//! Other platforms and allocators are left as they are.

/// Blocks at least this large are mapped directly.
pub(crate) const MMAP_THRESHOLD: usize = 8 << 20;
/// Free heap top kept for reuse.
pub(crate) const TRIM_THRESHOLD: usize = 128 << 20;

/// Sets the allocator up; call first thing in `main` (before any thread starts).
/// Returns whether the settings were applied.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn configure() -> bool {
    // SAFETY: `mallopt` only sets allocator parameters; it takes plain integers and is
    // documented as safe to call at any time (glibc serialises it with the arena lock).
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD as libc::c_int) == 1
            && libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD as libc::c_int) == 1
    }
}

/// Sets the allocator up (nothing to do on this platform).
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn configure() -> bool {
    false
}
