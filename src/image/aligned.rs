//! `AlignedBuf`: a fixed-capacity byte buffer whose start is aligned for `O_DIRECT`.
//!
//! `O_DIRECT` needs the memory address, the file offset and the length of each write
//! aligned to the device's logical block size (512 or 4096 bytes). [`ALIGN`] is 4096, so
//! a buffer from here suits every device. This is the only module of the image pipeline
//! that uses `unsafe`: one allocation, one deallocation and two slice views, each with
//! its SAFETY note. The memory is zeroed when allocated, so every byte of the capacity
//! is always initialised and the slice views never expose uninitialised memory.
#![allow(unsafe_code)]

use std::alloc::{self, Layout};
use std::ptr::NonNull;

/// Alignment of every buffer: the largest logical block size devices use.
pub const ALIGN: usize = 4096;

/// A heap buffer aligned to [`ALIGN`], with a capacity fixed at creation and a length
/// that marks how much of it holds data.
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    cap: usize,
    len: usize,
}

// SAFETY: AlignedBuf owns its allocation exclusively (like Vec<u8>); nothing is shared.
unsafe impl Send for AlignedBuf {}
// SAFETY: &AlignedBuf only gives out &[u8]; mutation needs &mut.
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// A zeroed buffer of `cap` bytes, rounded up to a multiple of [`ALIGN`] (at least one block).
    pub fn new(cap: usize) -> Self {
        let cap = cap.max(1).div_ceil(ALIGN) * ALIGN;
        let layout = Layout::from_size_align(cap, ALIGN).expect("buffer size fits isize");
        // SAFETY: the layout has a non-zero size (cap >= ALIGN).
        let raw = unsafe { alloc::alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(raw) else {
            alloc::handle_alloc_error(layout)
        };
        Self { ptr, cap, len: 0 }
    }

    /// Bytes the buffer can hold.
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Bytes of data held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the buffer holds no data.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// True when the buffer holds `capacity()` bytes.
    pub fn is_full(&self) -> bool {
        self.len == self.cap
    }

    /// The data held (`..len`).
    pub fn as_slice(&self) -> &[u8] {
        &self.full()[..self.len]
    }

    /// The whole capacity, for reading into or writing zeros over.
    pub fn full(&self) -> &[u8] {
        // SAFETY: ptr points to cap bytes allocated and zero-initialised in new(), owned
        // by self and alive for the borrow; u8 has no invalid bit patterns.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.cap) }
    }

    /// The whole capacity, mutable.
    pub fn full_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in full(); &mut self guarantees the only live view.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.cap) }
    }

    /// The unused part (`len..capacity`), to read data into; follow with [`Self::advance`].
    pub fn spare_mut(&mut self) -> &mut [u8] {
        let len = self.len;
        &mut self.full_mut()[len..]
    }

    /// Marks `n` more bytes of the spare part as data.
    pub fn advance(&mut self, n: usize) {
        assert!(n <= self.cap - self.len, "advance past capacity");
        self.len += n;
    }

    /// Sets the data length (the bytes keep their content).
    pub fn set_len(&mut self, len: usize) {
        assert!(len <= self.cap, "length past capacity");
        self.len = len;
    }

    /// Copies as much of `data` as fits after the current data; returns the count copied.
    pub fn extend_from_slice(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(self.cap - self.len);
        self.spare_mut()[..n].copy_from_slice(&data[..n]);
        self.len += n;
        n
    }

    /// Empties the buffer (the capacity stays allocated).
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Fills the whole capacity with zeros and marks it as data.
    pub fn fill_zero(&mut self) {
        self.full_mut().fill(0);
        self.len = self.cap;
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        let layout = Layout::from_size_align(self.cap, ALIGN).expect("layout valid in new()");
        // SAFETY: ptr was allocated in new() with exactly this layout and is freed once.
        unsafe { alloc::dealloc(self.ptr.as_ptr(), layout) }
    }
}

impl std::fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlignedBuf")
            .field("cap", &self.cap)
            .field("len", &self.len)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn start_is_aligned_and_zeroed() {
        for cap in [1, 512, 4096, 4097, 1 << 20] {
            let b = AlignedBuf::new(cap);
            assert_eq!(b.full().as_ptr() as usize % ALIGN, 0);
            assert_eq!(b.capacity() % ALIGN, 0);
            assert!(b.capacity() >= cap);
            assert!(b.full().iter().all(|&x| x == 0));
            assert!(b.is_empty());
        }
    }

    proptest! {
        #[test]
        fn extend_never_passes_capacity(cap in 1usize..20_000, chunks in prop::collection::vec(0usize..9000, 0..8)) {
            let mut b = AlignedBuf::new(cap);
            let mut expect = Vec::new();
            for (i, n) in chunks.iter().enumerate() {
                let data = vec![u8::try_from(i).unwrap() + 1; *n];
                let took = b.extend_from_slice(&data);
                expect.extend_from_slice(&data[..took]);
                prop_assert!(b.len() <= b.capacity());
            }
            prop_assert_eq!(b.as_slice(), &expect[..]);
        }
    }
}
