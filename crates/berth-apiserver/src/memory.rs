//! Keeping the C allocator's resident size near what is in use (Rust's allocations go to the
//! binary's global allocator; glibc's malloc serves C code such as SQLite): few malloc arenas
//! (glibc makes one per thread otherwise), and freed heap returned to the kernel after one-off
//! large allocations and periodically after bursts of load.

/// Asks the C allocator to give free heap pages back to the kernel.
#[allow(unsafe_code)]
pub fn release_free_memory() {
    // SAFETY: malloc_trim only walks the allocator's own free lists; it takes no pointers
    // from us and is safe to call at any time from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Limits glibc to two malloc arenas. Call before starting threads.
#[allow(unsafe_code)]
pub fn limit_arenas() {
    // SAFETY: mallopt only sets an allocator tuning parameter; called before other threads
    // exist, as glibc requires for M_ARENA_MAX to take full effect.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Returns free heap to the kernel every `period` until the task is dropped.
pub async fn trim_periodically(period: std::time::Duration) {
    let mut tick = tokio::time::interval(period);
    tick.tick().await;
    loop {
        tick.tick().await;
        // Trimming walks the heap: keep it off the async workers.
        let _ = tokio::task::spawn_blocking(release_free_memory).await;
    }
}
