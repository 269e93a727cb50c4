//! PocketLM's own count of the GPU buffers it holds, over every device: tensors (weights, KV
//! caches, activations), kernel parameter uniforms and per-step uniforms. A buffer counts from
//! its creation until it is destroyed or the last handle to it is dropped, so a count that does
//! not return to where it was after a model is unloaded is a leak (the soak tests check it).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

static COUNT: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

/// GPU buffers held now: how many, and their bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeldBuffers {
    pub count: u64,
    pub bytes: u64,
}

/// The GPU buffers PocketLM holds now, on every device.
pub fn held_buffers() -> HeldBuffers {
    HeldBuffers {
        count: COUNT.load(Ordering::Relaxed),
        bytes: BYTES.load(Ordering::Relaxed),
    }
}

/// One buffer's place in the count: released once, when it is destroyed or when the last
/// handle holding this `Arc` is dropped.
#[derive(Debug)]
pub(crate) struct Held {
    bytes: u64,
    released: AtomicBool,
}

impl Held {
    pub(crate) fn new(bytes: u64) -> Arc<Held> {
        COUNT.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(bytes, Ordering::Relaxed);
        Arc::new(Held {
            bytes,
            released: AtomicBool::new(false),
        })
    }

    /// Takes the buffer out of the count (its memory was freed); later calls do nothing.
    pub(crate) fn release(&self) {
        if !self.released.swap(true, Ordering::Relaxed) {
            COUNT.fetch_sub(1, Ordering::Relaxed);
            BYTES.fetch_sub(self.bytes, Ordering::Relaxed);
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_counts_until_released_or_dropped_once() {
        // Other tests create buffers concurrently: compare this test's own deltas only through
        // handles it owns.
        let a = Held::new(100);
        let b = Held::new(28);
        let shared = Arc::clone(&a);
        assert!(!a.released.load(Ordering::Relaxed));
        drop(a);
        assert!(
            !shared.released.load(Ordering::Relaxed),
            "a clone still holds it"
        );
        shared.release();
        shared.release();
        assert!(shared.released.load(Ordering::Relaxed));
        drop(shared);
        b.release();
        assert!(b.released.load(Ordering::Relaxed));
    }
}
