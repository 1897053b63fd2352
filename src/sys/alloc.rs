//! The agent's global allocator: the system's malloc with a cache of two freed large
//! blocks in front of it.
//!
//! Why: musl's malloc serves every block above its mmap threshold (about 128 KiB) with a
//! fresh `mmap` and gives it back with `munmap` on free, so each such block costs two
//! system calls and a page fault per 4 KiB touched. The HTTP client's read buffer is
//! one (hyper's 408 KiB `BytesMut`): hyper reads the next piece of a body while the
//! previous one is still being copied out, so it cannot reclaim its buffer and
//! allocates a new one about every 400 KiB of an image, 2,400 `mmap`/`munmap` pairs per
//! 2 GiB. Keeping the last freed blocks of such sizes and handing them out again for
//! the same layout makes that a lock and a pointer swap. The cache holds at most
//! [`SLOTS`] blocks of at most [`MAX`] bytes each; anything else goes straight to the
//! system allocator. glibc's malloc caches such blocks itself; with it this costs a lock.
//!
//! Soundness: a cached block is always one the system allocator made for exactly the
//! layout it is cached under (it was freed with that layout), and it is handed out only
//! for that same layout, so every block the system allocator later sees (realloc, free)
//! comes with the layout it was made for.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::ptr;
use std::sync::Mutex;

/// Smallest block kept: below it musl's malloc recycles blocks itself.
pub const MIN: usize = 128 << 10;
/// Largest block kept.
pub const MAX: usize = 2 << 20;
/// Blocks kept at most (one would do for the HTTP buffer's pattern; two leave slack).
pub const SLOTS: usize = 2;

#[derive(Clone, Copy)]
struct Slot {
    /// The block's address; 0 when the slot is empty.
    addr: usize,
    size: usize,
    align: usize,
}

const EMPTY: Slot = Slot {
    addr: 0,
    size: 0,
    align: 0,
};

/// The freed blocks, newest kept: a full cache gives its oldest block back to make room,
/// so blocks of a size nobody asks for again (start-up) do not stay.
struct Cache {
    slots: [Slot; SLOTS],
    /// The slot to give up next when all are full.
    next: usize,
}

/// A `Mutex` does not allocate on Linux (a futex word), and no code under it can panic,
/// so poisoning never happens (and is ignored if it did).
static CACHE: Mutex<Cache> = Mutex::new(Cache {
    slots: [EMPTY; SLOTS],
    next: 0,
});

/// The global allocator: `System` with a cache of freed large blocks.
#[derive(Debug, Default, Clone, Copy)]
pub struct LargeBlockCache;

fn cached(layout: Layout) -> bool {
    (MIN..=MAX).contains(&layout.size())
}

fn take(layout: Layout) -> *mut u8 {
    let mut c = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    for s in c.slots.iter_mut() {
        if s.addr != 0 && s.size == layout.size() && s.align == layout.align() {
            let addr = s.addr;
            *s = EMPTY;
            return addr as *mut u8;
        }
    }
    ptr::null_mut()
}

/// Keeps `block`; returns the block it displaced, if any, for the caller to free.
fn put(block: *mut u8, layout: Layout) -> Option<Slot> {
    let mut c = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    let new = Slot {
        addr: block as usize,
        size: layout.size(),
        align: layout.align(),
    };
    if let Some(s) = c.slots.iter_mut().find(|s| s.addr == 0) {
        *s = new;
        return None;
    }
    let i = c.next;
    c.next = (i + 1) % SLOTS;
    Some(std::mem::replace(&mut c.slots[i], new))
}

// SAFETY: every method either delegates to `System` with the caller's arguments, or
// hands out / keeps a block `System` allocated for exactly the caller's layout (see the
// module doc), which `System` would have been allowed to return itself.
// Not inlined: LTO would otherwise copy the cache's lock into every allocation site (the
// agent's binary was 37 KB larger).
unsafe impl GlobalAlloc for LargeBlockCache {
    #[inline(never)]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if cached(layout) {
            let p = take(layout);
            if !p.is_null() {
                return p;
            }
        }
        // SAFETY: the caller's contract (non-zero size) is passed on unchanged.
        unsafe { System.alloc(layout) }
    }

    #[inline(never)]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if cached(layout) {
            let p = take(layout);
            if !p.is_null() {
                // SAFETY: p is a live block of layout.size() bytes owned by us alone.
                unsafe { ptr::write_bytes(p, 0, layout.size()) };
                return p;
            }
        }
        // SAFETY: as in alloc.
        unsafe { System.alloc_zeroed(layout) }
    }

    #[inline(never)]
    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        if !cached(layout) {
            // SAFETY: block came from System with this layout.
            return unsafe { System.dealloc(block, layout) };
        }
        if let Some(old) = put(block, layout) {
            let l = Layout::from_size_align(old.size, old.align)
                .expect("the layout of a block once allocated");
            // SAFETY: the displaced block came from System with exactly this layout.
            unsafe { System.dealloc(old.addr as *mut u8, l) }
        }
    }

    #[inline(never)]
    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: block came from System with this layout; System's realloc keeps musl's
        // mremap path for large blocks.
        unsafe { System.realloc(block, layout, new_size) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Only these tests use the cache (the test binary's allocator is the system's), one
    // at a time.
    const ODD: usize = 200_003;
    static SERIAL: Mutex<()> = Mutex::new(());

    #[test]
    fn a_freed_large_block_is_handed_out_again_for_the_same_layout_only() {
        let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let a = LargeBlockCache;
        let l = Layout::from_size_align(ODD, 8).unwrap();
        // SAFETY: non-zero layout; every block is freed with the layout it was made for.
        unsafe {
            let p = a.alloc(l);
            assert!(!p.is_null());
            p.write_bytes(0xAB, ODD);
            a.dealloc(p, l);
            // Another size or alignment does not get it.
            let other = Layout::from_size_align(ODD + 1, 8).unwrap();
            let q = a.alloc(other);
            assert_ne!(q, p);
            let z = a.alloc_zeroed(l);
            assert_eq!(z, p, "the cached block comes back");
            assert!(
                std::slice::from_raw_parts(z, ODD).iter().all(|&b| b == 0),
                "zeroed even when it comes from the cache"
            );
            // Held blocks are not handed out twice.
            let w = a.alloc(l);
            assert_ne!(w, z);
            a.dealloc(q, other);
            a.dealloc(z, l);
            a.dealloc(w, l);
        }
    }

    #[test]
    fn a_full_cache_keeps_the_newest_blocks() {
        let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let a = LargeBlockCache;
        let stale = Layout::from_size_align(ODD + 4096, 8).unwrap();
        let l = Layout::from_size_align(ODD + 8192, 8).unwrap();
        // SAFETY: non-zero layouts; every block is freed with the layout it was made for.
        unsafe {
            // Fill every slot with blocks of a size asked for only once.
            let old: Vec<*mut u8> = (0..SLOTS).map(|_| a.alloc(stale)).collect();
            for p in old {
                a.dealloc(p, stale);
            }
            let p = a.alloc(l);
            a.dealloc(p, l);
            assert_eq!(a.alloc(l), p, "the newest block displaced a stale one");
            a.dealloc(p, l);
        }
    }

    #[test]
    fn small_and_huge_blocks_bypass_the_cache() {
        assert!(!cached(Layout::from_size_align(MIN - 1, 8).unwrap()));
        assert!(cached(Layout::from_size_align(MIN, 8).unwrap()));
        assert!(cached(Layout::from_size_align(MAX, 4096).unwrap()));
        assert!(!cached(Layout::from_size_align(MAX + 1, 8).unwrap()));
    }
}
