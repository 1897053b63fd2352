//! A fixed pool of aligned buffers recycled through a channel, so a stream of any length
//! moves through the pipeline in constant memory.
//!
//! [`BufPool::new`] allocates every buffer once. A [`Buf`] taken from the pool goes back
//! to it when dropped, wherever that happens (a stage thread, a channel being torn
//! down). Taking waits until a buffer is free, which is how backpressure reaches the
//! network: the download stops reading while the disk is behind. Buffers are never
//! allocated per chunk (musl's allocator maps and unmaps every large block).

use std::ops::{Deref, DerefMut};

use tokio::sync::mpsc;

use super::aligned::AlignedBuf;

/// A buffer on loan from a [`BufPool`]; dropping it returns it, emptied.
#[derive(Debug)]
pub struct Buf {
    inner: Option<AlignedBuf>,
    home: mpsc::Sender<AlignedBuf>,
}

impl Deref for Buf {
    type Target = AlignedBuf;
    fn deref(&self) -> &AlignedBuf {
        self.inner.as_ref().expect("present until drop")
    }
}

impl DerefMut for Buf {
    fn deref_mut(&mut self) -> &mut AlignedBuf {
        self.inner.as_mut().expect("present until drop")
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        if let Some(mut b) = self.inner.take() {
            b.clear();
            // The channel has room for every buffer of the pool, so this only fails when
            // the pool itself is gone; then the buffer is simply freed.
            let _ = self.home.try_send(b);
        }
    }
}

/// A filled buffer and where its bytes belong in the stream or on the target.
#[derive(Debug)]
pub struct Chunk {
    /// Byte offset of `buf`'s first byte.
    pub offset: u64,
    /// The bytes (`buf.as_slice()`).
    pub buf: Buf,
}

/// The owner's end of a pool: hands out [`Buf`]s, waiting while all are on loan.
#[derive(Debug)]
pub struct BufPool {
    rx: mpsc::Receiver<AlignedBuf>,
    tx: mpsc::Sender<AlignedBuf>,
    size: usize,
}

impl BufPool {
    /// A pool of `count` buffers of `size` bytes each (rounded up to the alignment).
    pub fn new(count: usize, size: usize) -> Self {
        let count = count.max(1);
        let (tx, rx) = mpsc::channel(count);
        let mut size_rounded = size;
        for _ in 0..count {
            let b = AlignedBuf::new(size);
            size_rounded = b.capacity();
            tx.try_send(b).expect("channel sized for the pool");
        }
        Self {
            rx,
            tx,
            size: size_rounded,
        }
    }

    /// Capacity of each buffer.
    pub fn buf_size(&self) -> usize {
        self.size
    }

    fn wrap(&self, b: AlignedBuf) -> Buf {
        Buf {
            inner: Some(b),
            home: self.tx.clone(),
        }
    }

    /// Takes a free buffer, waiting (asynchronously) while none is.
    pub async fn get(&mut self) -> Buf {
        // The pool keeps a sender, so the channel never closes while `self` lives.
        let b = self.rx.recv().await.expect("pool holds a sender");
        self.wrap(b)
    }

    /// Takes a free buffer, blocking the thread while none is (stage threads only).
    pub fn blocking_get(&mut self) -> Buf {
        let b = self.rx.blocking_recv().expect("pool holds a sender");
        self.wrap(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn buffers_come_back_on_drop_and_are_reused() {
        let mut pool = BufPool::new(2, 4096);
        let mut a = pool.get().await;
        a.extend_from_slice(b"abc");
        let first = a.full().as_ptr();
        let b = pool.get().await;
        // Both are on loan: a third get must wait.
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(20), pool.get())
                .await
                .is_err()
        );
        drop(a);
        let c = pool.get().await;
        assert!(c.is_empty(), "a returned buffer comes back empty");
        assert_eq!(c.full().as_ptr(), first, "the same allocation is reused");
        drop((b, c));
    }
}

/// A `BufRead` over a channel of [`Chunk`]s (their offsets are ignored), for stages that
/// parse the stream: decompressors, format readers. Each buffer goes back to its pool
/// as soon as it is consumed. The channel closing is the end of the stream; whether the
/// stream was complete is the sending stage's to report.
#[derive(Debug)]
pub struct ChannelReader {
    rx: mpsc::Receiver<Chunk>,
    cur: Option<Buf>,
    pos: usize,
}

impl ChannelReader {
    /// A reader that starts with `first` (if any) and continues with `rx`.
    pub fn new(first: Option<Chunk>, rx: mpsc::Receiver<Chunk>) -> Self {
        Self {
            rx,
            cur: first.map(|c| c.buf),
            pos: 0,
        }
    }
}

impl std::io::Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let avail = std::io::BufRead::fill_buf(self)?;
        let n = avail.len().min(out.len());
        out[..n].copy_from_slice(&avail[..n]);
        std::io::BufRead::consume(self, n);
        Ok(n)
    }
}

impl std::io::BufRead for ChannelReader {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        while self.cur.as_ref().is_none_or(|b| self.pos >= b.len()) {
            // Return the consumed buffer before waiting for the next one.
            self.cur = None;
            self.pos = 0;
            match self.rx.blocking_recv() {
                Some(c) => self.cur = Some(c.buf),
                None => return Ok(&[]),
            }
        }
        let b = self.cur.as_ref().expect("checked above");
        Ok(&b.as_slice()[self.pos..])
    }

    fn consume(&mut self, amt: usize) {
        self.pos += amt;
    }
}
