//! Pooled buffers for the tile kernels' intermediate values.
//!
//! A reverse pass over a tile of 16 rows (what online adaptation runs, thousands of times
//! a second) allocates some forty `[rows, width]` buffers and frees them again; at that
//! size the allocator (`calloc`, `free`, and glibc's consolidation of freed chunks) took
//! about a sixth of the fit's time in a profile. A [`Buf`] is a zeroed `Vec<f32>` taken
//! from the calling thread's free list and handed back to it when dropped, so a kernel
//! that runs over and over on one thread reuses the same memory. The list is bounded
//! ([`KEPT`] buffers, [`KEPT_FLOATS`] values in all per thread); beyond it buffers go back
//! to the allocator.

use std::{
    cell::RefCell,
    ops::{Deref, DerefMut},
};

/// Buffers a thread keeps for reuse.
const KEPT: usize = 64;

/// Values (f32) a thread keeps in its free buffers, at most (32 MiB).
const KEPT_FLOATS: usize = 8 << 20;

/// A thread's free buffers and their total capacity.
#[derive(Default)]
struct FreeList {
    buffers: Vec<Vec<f32>>,
    floats: usize,
}

thread_local! {
    static FREE: RefCell<FreeList> = RefCell::default();
}

/// A zeroed `f32` buffer from the calling thread's pool, given back to the pool of the
/// thread that drops it. Dereferences to `Vec<f32>`.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Buf(Vec<f32>);

impl Buf {
    /// `len` zeros, in a buffer reused from this thread's pool where one is free.
    pub(super) fn zeroed(len: usize) -> Self {
        let mut v = Self::take(len);
        v.clear();
        v.resize(len, 0.0);
        Self(v)
    }

    /// `len` values left from the buffer's last use (zeros where it grows), for an output
    /// every element of which is written before it is read: a GEMM's destination, a tanh's.
    /// Zeroing those took 6 % of an SVD training step in `memset` (BENCHMARKS.md).
    pub(super) fn overwritten(len: usize) -> Self {
        let mut v = Self::take(len);
        if v.len() >= len {
            v.truncate(len);
        } else {
            v.resize(len, 0.0);
        }
        Self(v)
    }

    /// A buffer of at least `len` capacity from this thread's pool where one is free.
    fn take(len: usize) -> Vec<f32> {
        let reused = FREE
            .try_with(|free| {
                let mut free = free.try_borrow_mut().ok()?;
                // The most recently freed buffer that fits, else the most recent one.
                let at = free
                    .buffers
                    .iter()
                    .rposition(|b| b.capacity() >= len)
                    .or_else(|| free.buffers.len().checked_sub(1))?;
                let buffer = free.buffers.swap_remove(at);
                free.floats -= buffer.capacity();
                Some(buffer)
            })
            .ok()
            .flatten();
        reused.unwrap_or_default()
    }

    /// A pooled copy of `values`.
    pub(super) fn from_slice(values: &[f32]) -> Self {
        let mut b = Self::zeroed(0);
        b.0.extend_from_slice(values);
        b
    }
}

impl Clone for Buf {
    fn clone(&self) -> Self {
        Self::from_slice(&self.0)
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        let v = std::mem::take(&mut self.0);
        let capacity = v.capacity();
        if capacity == 0 {
            return;
        }
        // At thread exit the list may be gone already: the buffer is then simply freed.
        let _ = FREE.try_with(|free| {
            if let Ok(mut free) = free.try_borrow_mut()
                && free.buffers.len() < KEPT
                && free.floats + capacity <= KEPT_FLOATS
            {
                free.floats += capacity;
                free.buffers.push(v);
            }
        });
    }
}

impl Deref for Buf {
    type Target = Vec<f32>;

    fn deref(&self) -> &Vec<f32> {
        &self.0
    }
}

impl DerefMut for Buf {
    fn deref_mut(&mut self) -> &mut Vec<f32> {
        &mut self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pooled() -> (usize, usize) {
        FREE.with_borrow(|f| (f.buffers.len(), f.floats))
    }

    #[test]
    fn a_buffer_is_zeroed_reused_and_bounded() {
        // Whatever earlier tests on this thread left, the accounting holds.
        let (kept, floats) = pooled();
        let mut a = Buf::zeroed(100);
        a.iter_mut().for_each(|v| *v = 7.0);
        let pointer = a.as_ptr();
        drop(a);
        let b = Buf::zeroed(50);
        assert_eq!(b.as_ptr(), pointer, "the freed buffer is reused");
        assert!(b.iter().all(|v| *v == 0.0) && b.len() == 50, "and zeroed");
        let c = b.clone();
        assert_eq!(*c, *b);
        drop((b, c));
        assert!(pooled().0 <= kept + 2);
        // An output buffer keeps what its last use left, and is zero where it grew.
        let mut d = Buf::zeroed(10);
        d.iter_mut().for_each(|v| *v = 3.0);
        drop(d);
        let e = Buf::overwritten(12);
        assert_eq!(e.len(), 12);
        assert!(e[..10].iter().all(|v| *v == 3.0) && e[10..].iter().all(|v| *v == 0.0));
        drop(e);
        assert!(
            Buf::zeroed(12).iter().all(|v| *v == 0.0),
            "zeroed still zeroes"
        );
        // Far more buffers than the list keeps: it stays within its bounds.
        let many: Vec<Buf> = (0..3 * KEPT).map(|_| Buf::zeroed(1000)).collect();
        drop(many);
        let (kept_now, floats_now) = pooled();
        assert!(kept_now <= KEPT && floats_now <= KEPT_FLOATS.max(floats));
        // A buffer over the whole budget is not kept.
        drop(Buf::zeroed(KEPT_FLOATS + 1));
        assert!(pooled().1 <= KEPT_FLOATS);
    }
}
