//! Returning freed heap memory to the kernel after one-off large allocations (building the
//! OpenAPI documents), so the server's resident size goes back down to its idle level.

/// Asks the C allocator to give free heap pages back to the kernel.
#[allow(unsafe_code)]
pub fn release_free_memory() {
    // SAFETY: malloc_trim only walks the allocator's own free lists; it takes no pointers
    // from us and is safe to call at any time from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}
