//! The spill: a window over the most recent stream bytes that nobody claimed, kept in
//! memory while an L1 or L2 table that might reference them has not arrived yet.
//!
//! Memory rather than a temp file: in the deploy ramdisk a temp file is memory as well.
//! The window keeps the newest `cap` bytes and forgets the oldest, so memory stays flat
//! whatever the image size. qemu-img writes each table before the data it maps, except
//! that the first compressed cluster of a new L2 range may be packed into the previous
//! host cluster, just before its L2 table: such references reach back a cluster or so.
//! Images whose tables were rewritten later (internal snapshots, a grown L1) reach back
//! as far as the data before them; past the window the reader refuses them.

use std::collections::BTreeMap;

/// Largest segment; bounds the copy when a segment is split.
const SEGMENT: usize = 1 << 20;

/// Contiguous runs of kept bytes, keyed by host offset.
#[derive(Debug, Default)]
pub struct Spill {
    segs: BTreeMap<u64, Vec<u8>>,
    bytes: u64,
    peak: u64,
    cap: u64,
}

/// A byte the caller asked for is not in the spill.
#[derive(Debug, PartialEq, Eq)]
pub struct Missing(pub u64);

impl Spill {
    /// An empty spill holding at most `cap` bytes.
    pub fn new(cap: u64) -> Self {
        Spill {
            cap,
            ..Default::default()
        }
    }

    /// Most bytes held at once so far.
    pub fn peak(&self) -> u64 {
        self.peak
    }

    /// Keeps `data`, which sits at host offset `off`, forgetting the oldest bytes beyond
    /// the cap. Bytes below the end of what is kept are already there (each host offset
    /// has one value in a stream) and are skipped.
    pub fn put(&mut self, off: u64, mut data: &[u8]) {
        let mut off = off;
        if let Some((&s, v)) = self.segs.last_key_value() {
            let kept_end = s + v.len() as u64;
            if off < kept_end {
                let skip =
                    usize::try_from(kept_end - off).map_or(data.len(), |k| k.min(data.len()));
                data = &data[skip..];
                off += skip as u64;
            }
        }
        if data.len() as u64 > self.cap {
            // Only the newest `cap` bytes can survive; the cap is below data.len() here.
            let cap = usize::try_from(self.cap).expect("the cap is below data.len() here");
            let skip = data.len() - cap;
            data = &data[skip..];
            off += skip as u64;
        }
        self.bytes += data.len() as u64;
        self.evict();
        self.peak = self.peak.max(self.bytes);
        if let Some((&start, last)) = self.segs.iter_mut().next_back() {
            if start + last.len() as u64 == off && last.len() < SEGMENT {
                let n = (SEGMENT - last.len()).min(data.len());
                last.extend_from_slice(&data[..n]);
                data = &data[n..];
                off += n as u64;
            }
        }
        while !data.is_empty() {
            let n = SEGMENT.min(data.len());
            self.segs.insert(off, data[..n].to_vec());
            data = &data[n..];
            off += n as u64;
        }
    }

    /// Drops the oldest segments (lowest offsets) until the new total fits the cap.
    fn evict(&mut self) {
        while self.bytes > self.cap {
            let Some(first) = self.segs.first_entry() else {
                break;
            };
            let over = self.bytes - self.cap;
            let len = first.get().len() as u64;
            if len <= over {
                first.remove();
                self.bytes -= len;
            } else {
                // Keep the segment's newest bytes; its key moves up by what is dropped.
                let (start, mut seg) = first.remove_entry();
                let over_len = usize::try_from(over).expect("over is below the segment's length");
                let tail = seg.split_off(over_len);
                drop(seg);
                self.bytes -= over;
                self.segs.insert(start + over, tail);
            }
        }
    }

    /// Hands `[off, off + len)` to `f` piece by piece, in order; with `remove`, the bytes
    /// are dropped afterwards so that a second reference to them fails.
    pub fn read<E>(
        &mut self,
        off: u64,
        len: u64,
        remove: bool,
        mut f: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<Result<(), Missing>, E> {
        let end = off + len;
        let mut cursor = off;
        let mut cuts = Vec::new();
        let first = self.segs.range(..=off).next_back().map_or(off, |(&s, _)| s);
        for (&s, seg) in self.segs.range(first..end) {
            let seg_end = s + seg.len() as u64;
            if seg_end <= cursor {
                continue;
            }
            if s > cursor {
                break;
            }
            let hi = seg_end.min(end);
            let inside =
                |x: u64| usize::try_from(x - s).expect("both bounds lie inside this segment");
            let (a, b) = (inside(cursor), inside(hi));
            f(&seg[a..b])?;
            cuts.push((s, cursor, hi));
            cursor = hi;
            if cursor == end {
                break;
            }
        }
        if cursor < end {
            return Ok(Err(Missing(cursor)));
        }
        if remove {
            for (s, lo, hi) in cuts {
                self.cut(s, lo, hi);
            }
        }
        Ok(Ok(()))
    }

    fn cut(&mut self, s: u64, lo: u64, hi: u64) {
        let Some(mut seg) = self.segs.remove(&s) else {
            return;
        };
        // `read` cut [lo, hi) out of this segment: both bounds lie inside it.
        let inside = |x: u64| usize::try_from(x - s).expect("cut bounds lie inside the segment");
        let tail = seg.split_off(inside(hi));
        seg.truncate(inside(lo));
        self.bytes -= hi - lo;
        if !tail.is_empty() {
            self.segs.insert(hi, tail);
        }
        if !seg.is_empty() {
            self.segs.insert(s, seg);
        }
    }

    /// Drops everything (no table can reference these bytes any more).
    pub fn clear(&mut self) {
        self.segs.clear();
        self.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(s: &mut Spill, off: u64, len: u64, remove: bool) -> Result<Vec<u8>, Missing> {
        let mut out = Vec::new();
        let r: Result<_, ()> = s.read(off, len, remove, |b| {
            out.extend_from_slice(b);
            Ok(())
        });
        r.unwrap().map(|()| out)
    }

    #[test]
    fn reads_across_segments_and_removes() {
        let mut s = Spill::new(u64::MAX);
        let data: Vec<u8> = (0..3 * SEGMENT as u64).map(|i| (i % 251) as u8).collect();
        s.put(1000, &data[..10]);
        s.put(1010, &data[10..]);
        let got = collect(&mut s, 1000 + SEGMENT as u64 - 5, 20, true).unwrap();
        assert_eq!(got, data[SEGMENT - 5..SEGMENT + 15]);
        assert_eq!(
            collect(&mut s, 1000 + SEGMENT as u64, 1, false),
            Err(Missing(1000 + SEGMENT as u64))
        );
        assert_eq!(collect(&mut s, 1000, 3, false).unwrap(), data[..3]);
        assert_eq!(s.bytes, 3 * SEGMENT as u64 - 20);
    }

    #[test]
    fn overlapping_puts_keep_one_copy() {
        let mut s = Spill::new(100);
        s.put(10, &[1; 10]);
        s.put(15, &[1; 10]);
        s.put(12, &[1; 3]);
        assert_eq!(s.bytes, 15);
        assert_eq!(collect(&mut s, 10, 15, false).unwrap(), vec![1; 15]);
    }

    #[test]
    fn window_forgets_oldest_and_reports_gaps() {
        let mut s = Spill::new(10);
        s.put(0, &[1; 6]);
        s.put(6, &[2; 5]);
        assert_eq!(collect(&mut s, 0, 1, false), Err(Missing(0)));
        assert_eq!(
            collect(&mut s, 1, 10, false).unwrap(),
            [[1; 5], [2; 5]].concat()
        );
        s.put(20, &[3; 4]);
        assert_eq!(s.bytes, 10);
        assert_eq!(collect(&mut s, 5, 18, false), Err(Missing(11)));
        s.put(30, &[4; 25]);
        assert_eq!(collect(&mut s, 45, 10, false).unwrap(), vec![4; 10]);
        assert_eq!(collect(&mut s, 44, 1, false), Err(Missing(44)));
        assert!(s.peak() <= 10);
    }
}
