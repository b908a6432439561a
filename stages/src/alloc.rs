//! Allocator settings for training processes.
//!
//! A training step allocates and frees the same large buffers (activations, a gradient per
//! weight) over and over. glibc serves allocations above its mmap threshold with fresh pages
//! and returns freed heap tops to the kernel, so every step pays page faults to touch memory it
//! just gave back: measured on mlp-8x1024 (8 micro-batches of 32, one core), 595 ms per step
//! with glibc's defaults and 507 ms with large blocks kept in the heap
//! (`cargo bench -p brigade-benches --bench step`). The process keeps its peak heap instead of
//! returning it, which is what a training process wants.

/// Keeps large blocks in the heap and freed memory in the process (glibc only; elsewhere a
/// no-op). Call once at start, before the first large allocation.
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is called before the threads that
    // allocate start.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        libc::mallopt(libc::M_TOP_PAD, 64 << 20);
    }
}
