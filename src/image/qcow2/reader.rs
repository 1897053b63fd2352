//! The streaming engine: a map of wanted host ranges, fed by the stream in file order.

use std::collections::{BTreeMap, VecDeque};
use std::io::{self, BufRead};
use std::ops::Bound::{Excluded, Unbounded};

use super::decompress::ClusterDecoder;
use super::header::{self, Header, HEADER_PREFIX};
use super::output::{feed_data, Fill, Fills};
use super::spill::{Missing, Spill};
use super::{GuestSink, Limits, Qcow2Error, Summary};
use crate::bytes::be64;

/// Offset bits of L1 and L2 entries (bits 9..55).
const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
/// L2 entry: the cluster is compressed.
const OFLAG_COMPRESSED: u64 = 1 << 62;
/// L2 entry: the cluster reads as zeros.
const OFLAG_ZERO: u64 = 1;
const SECTOR: u64 = 512;
/// First allocation for a table buffer; it grows with the bytes that actually arrive, so a
/// header that promises a huge L1 costs nothing until the data is there.
const FIRST_ALLOC: u64 = 1 << 20;

/// What a pending range is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Header,
    L1,
    L2 {
        guest: u64,
    },
    /// Plain clusters, host-contiguous and guest-contiguous; `guest_len` of them lie
    /// inside the virtual disk.
    Data {
        guest: u64,
        guest_len: u64,
    },
    Compressed {
        guest: u64,
    },
}

impl Kind {
    fn what(self) -> &'static str {
        match self {
            Kind::Header => "header",
            Kind::L1 => "L1 table",
            Kind::L2 { .. } => "L2 table",
            Kind::Data { .. } => "data cluster",
            Kind::Compressed { .. } => "compressed cluster",
        }
    }
}

/// A host range the reader waits for. Invariant while in the map: `start + fed` is the
/// stream position once the want is active, and `fed < len`.
#[derive(Debug)]
struct Want {
    len: u64,
    fed: u64,
    kind: Kind,
    /// Tables and compressed clusters: the bytes so far. Data runs: the part of a sector
    /// not yet written (always shorter than a sector).
    buf: Vec<u8>,
    /// Where bytes began to come from the stream rather than the spill.
    stream_from: u64,
}

impl Want {
    fn new(len: u64, kind: Kind) -> Self {
        Want {
            len,
            fed: 0,
            kind,
            buf: Vec::new(),
            stream_from: u64::MAX,
        }
    }
}

/// A push-style qcow2 reader: `feed` it the image in file order, then `finish`.
pub struct Qcow2Stream {
    limits: Limits,
    pos: u64,
    header: Option<Header>,
    wants: BTreeMap<u64, Want>,
    /// Completed wants, handled in host order (compressed tails go to the spill in order).
    done: VecDeque<(u64, Want)>,
    /// Header, L1 and L2 tables announced but not yet processed; while any is, unclaimed
    /// bytes go to the spill.
    tables_pending: usize,
    spill: Spill,
    /// Host ranges that are never guest data: the header cluster and the refcount table.
    keep_out: Vec<(u64, u64)>,
    decoder: Option<ClusterDecoder>,
    scratch: Vec<u8>,
    summary: Summary,
    failed: bool,
}

impl Qcow2Stream {
    /// A reader expecting the first byte of a qcow2 image.
    pub fn new(limits: Limits) -> Self {
        let mut wants = BTreeMap::new();
        wants.insert(0, Want::new(HEADER_PREFIX as u64, Kind::Header));
        Qcow2Stream {
            limits,
            pos: 0,
            header: None,
            wants,
            done: VecDeque::new(),
            tables_pending: 1,
            spill: Spill::new(limits.max_spill),
            keep_out: Vec::new(),
            decoder: None,
            scratch: Vec::new(),
            summary: Summary::default(),
            failed: false,
        }
    }

    /// The parsed header, once its bytes have been fed.
    pub fn header(&self) -> Option<&Header> {
        self.header.as_ref()
    }

    /// Every guest byte has been reported; the rest of the stream (snapshots, refcounts)
    /// does not matter, though the caller still reads it for the checksum.
    pub fn is_complete(&self) -> bool {
        self.header.is_some() && self.tables_pending == 0 && self.wants.is_empty()
    }

    /// Consumes the next bytes of the image, emitting whatever guest data they complete.
    pub fn feed(&mut self, chunk: &[u8], sink: &mut dyn GuestSink) -> Result<(), Qcow2Error> {
        if self.failed {
            return Err(Qcow2Error::Failed);
        }
        let r = self.feed_inner(chunk, sink);
        self.failed = r.is_err();
        r
    }

    /// Ends the stream: decodes compressed clusters cut short by the end of the file
    /// (qemu reads past the end as zeros) and fails if anything referenced is missing.
    pub fn finish(mut self, sink: &mut dyn GuestSink) -> Result<Summary, Qcow2Error> {
        if self.failed {
            return Err(Qcow2Error::Failed);
        }
        for (start, w) in std::mem::take(&mut self.wants) {
            if !matches!(w.kind, Kind::Compressed { .. }) || start >= self.pos {
                return Err(Qcow2Error::Truncated {
                    what: w.kind.what(),
                    offset: start,
                });
            }
            self.done.push_back((start, w));
        }
        self.process_done(sink)?;
        if self.tables_pending > 0 {
            // Only possible before the header: every other table is a want.
            return Err(Qcow2Error::Truncated {
                what: "header",
                offset: 0,
            });
        }
        self.summary.bytes_read = self.pos;
        self.summary.peak_spill = self.spill.peak();
        Ok(self.summary)
    }

    fn feed_inner(&mut self, mut chunk: &[u8], sink: &mut dyn GuestSink) -> Result<(), Qcow2Error> {
        while !chunk.is_empty() {
            let p = self.pos;
            let mut b = p + chunk.len() as u64;
            let mut active = false;
            for (&s, w) in self.wants.range(..=p) {
                active = true;
                b = b.min(s + w.len);
            }
            if let Some((&s, _)) = self.wants.range((Excluded(p), Unbounded)).next() {
                b = b.min(s);
            }
            let n = usize::try_from(b - p).expect("b - p is at most chunk.len()");
            let (seg, rest) = chunk.split_at(n);
            if active {
                self.feed_active(p, seg, sink)?;
            } else if self.tables_pending > 0 {
                self.spill_unclaimed(p, seg);
            }
            self.pos = b;
            chunk = rest;
            self.process_done(sink)?;
        }
        Ok(())
    }

    fn feed_active(
        &mut self,
        p: u64,
        seg: &[u8],
        sink: &mut dyn GuestSink,
    ) -> Result<(), Qcow2Error> {
        let mut finished = Vec::new();
        for (&s, w) in self.wants.range_mut(..=p) {
            debug_assert_eq!(s + w.fed, p);
            if w.stream_from == u64::MAX {
                w.stream_from = p;
            }
            feed_want(w, seg, sink, &mut self.summary)?;
            if w.fed == w.len {
                finished.push(s);
            }
        }
        for s in finished {
            if let Some(w) = self.wants.remove(&s) {
                self.done.push_back((s, w));
            }
        }
        Ok(())
    }

    /// Keeps unclaimed bytes for tables still to come, minus ranges that are never data.
    fn spill_unclaimed(&mut self, p: u64, seg: &[u8]) {
        let end = p + seg.len() as u64;
        let mut cursor = p;
        while cursor < end {
            let blocked = self
                .keep_out
                .iter()
                .find(|&&(a, b)| a <= cursor && cursor < b);
            if let Some(&(_, b)) = blocked {
                cursor = b.min(end);
                continue;
            }
            let next = self
                .keep_out
                .iter()
                .filter(|&&(a, _)| a > cursor)
                .map(|&(a, _)| a)
                .min()
                .unwrap_or(end)
                .min(end);
            let within = |x: u64| usize::try_from(x - p).expect("both bounds lie within seg");
            self.spill.put(cursor, &seg[within(cursor)..within(next)]);
            cursor = next;
        }
    }

    fn process_done(&mut self, sink: &mut dyn GuestSink) -> Result<(), Qcow2Error> {
        while let Some((start, w)) = self.done.pop_front() {
            match w.kind {
                Kind::Header => {
                    self.on_header(&w.buf, sink)?;
                    self.tables_pending -= 1;
                }
                Kind::L1 => {
                    self.on_l1(start, &w.buf, sink)?;
                    self.tables_pending -= 1;
                }
                Kind::L2 { guest } => {
                    self.on_l2(start, guest, &w.buf, sink)?;
                    self.tables_pending -= 1;
                }
                Kind::Compressed { guest } => self.on_compressed(start, guest, &w, sink)?,
                Kind::Data { .. } => debug_assert!(w.buf.is_empty()),
            }
            if self.tables_pending == 0 {
                self.spill.clear();
            }
        }
        Ok(())
    }

    fn on_header(&mut self, buf: &[u8], sink: &mut dyn GuestSink) -> Result<(), Qcow2Error> {
        let h = header::parse(buf)?;
        let cs = h.cluster_size();
        tracing::debug!(
            version = h.version,
            cluster_size = cs,
            virtual_size = h.virtual_size,
            "qcow2 header"
        );
        self.keep_out.push((0, cs));
        if h.refcount_table_clusters > 0 {
            let rt = h.refcount_table_offset;
            self.keep_out
                .push((rt, rt + u64::from(h.refcount_table_clusters) * cs));
        }
        self.decoder = Some(ClusterDecoder::new(h.compression));
        self.summary.virtual_size = h.virtual_size;
        let needed = h.l1_entries_needed();
        let l1 = h.l1_table_offset;
        self.header = Some(h);
        if needed > 0 {
            self.tables_pending += 1;
            self.insert_want(l1, Want::new(needed * 8, Kind::L1), sink)?;
        }
        Ok(())
    }

    fn header_copy(&self) -> Header {
        self.header
            .clone()
            .expect("tables are only wanted after the header was parsed")
    }

    fn on_l1(&mut self, at: u64, buf: &[u8], sink: &mut dyn GuestSink) -> Result<(), Qcow2Error> {
        let h = self.header_copy();
        let (cs, cov, size) = (h.cluster_size(), h.l2_coverage(), h.virtual_size);
        let mut fills = Fills::default();
        for (i, e) in buf.chunks_exact(8).enumerate() {
            let e = be64(e, 0);
            let guest = i as u64 * cov;
            let l2 = e & OFFSET_MASK;
            if l2 == 0 {
                fills.add(
                    Fill::Unallocated,
                    guest,
                    cov.min(size - guest),
                    sink,
                    &mut self.summary,
                )?;
                continue;
            }
            if l2 % cs != 0 {
                return Err(Qcow2Error::Corrupt {
                    what: "L1 entry (unaligned L2 table offset)",
                    offset: at + 8 * i as u64,
                });
            }
            self.tables_pending += 1;
            self.insert_want(l2, Want::new(cs, Kind::L2 { guest }), sink)?;
            // A table served whole from the spill is handled now, not queued, so that
            // memory holds one table at a time.
            self.process_done(sink)?;
        }
        fills.flush(sink, &mut self.summary)
    }

    fn on_l2(
        &mut self,
        at: u64,
        base: u64,
        buf: &[u8],
        sink: &mut dyn GuestSink,
    ) -> Result<(), Qcow2Error> {
        let h = self.header_copy();
        let (cs, size) = (h.cluster_size(), h.virtual_size);
        // Compressed descriptor: host offset in the low `shift` bits, then the number of
        // additional 512-byte sectors.
        let shift = 62 - (h.cluster_bits - 8);
        let nsec_mask = (1u64 << (h.cluster_bits - 8)) - 1;
        let coff_mask = (1u64 << shift) - 1;
        let mut fills = Fills::default();
        let mut run: Option<(u64, u64, u64)> = None; // host, guest, len
        for (j, e) in buf.chunks_exact(8).enumerate() {
            let guest = base + j as u64 * cs;
            if guest >= size {
                break;
            }
            let e = be64(e, 0);
            if e & OFLAG_COMPRESSED != 0 {
                self.flush_run(&mut run, sink)?;
                let coff = e & coff_mask;
                let nsec = ((e >> shift) & nsec_mask) + 1;
                let clen = nsec * SECTOR - (coff % SECTOR);
                self.insert_want(coff, Want::new(clen, Kind::Compressed { guest }), sink)?;
                self.process_done(sink)?;
                continue;
            }
            let fill_len = cs.min(size - guest);
            let host = e & OFFSET_MASK;
            if e & OFLAG_ZERO != 0 || host == 0 {
                self.flush_run(&mut run, sink)?;
                let kind = if e & OFLAG_ZERO != 0 {
                    Fill::Zero
                } else {
                    Fill::Unallocated
                };
                fills.add(kind, guest, fill_len, sink, &mut self.summary)?;
                continue;
            }
            if host % cs != 0 {
                return Err(Qcow2Error::Corrupt {
                    what: "L2 entry (unaligned cluster offset)",
                    offset: at + 8 * j as u64,
                });
            }
            fills.flush(sink, &mut self.summary)?;
            match &mut run {
                Some((rh, rg, rl)) if *rh + *rl == host && *rg + *rl == guest => *rl += cs,
                _ => {
                    self.flush_run(&mut run, sink)?;
                    run = Some((host, guest, cs));
                }
            }
        }
        fills.flush(sink, &mut self.summary)?;
        self.flush_run(&mut run, sink)
    }

    fn flush_run(
        &mut self,
        run: &mut Option<(u64, u64, u64)>,
        sink: &mut dyn GuestSink,
    ) -> Result<(), Qcow2Error> {
        let Some((host, guest, len)) = run.take() else {
            return Ok(());
        };
        let size = self.summary.virtual_size;
        let guest_len = len.min(size - guest);
        self.insert_want(host, Want::new(len, Kind::Data { guest, guest_len }), sink)
    }

    fn on_compressed(
        &mut self,
        at: u64,
        guest: u64,
        w: &Want,
        sink: &mut dyn GuestSink,
    ) -> Result<(), Qcow2Error> {
        let cs = usize::try_from(self.header_copy().cluster_size())
            .expect("the header check keeps clusters at 2 MiB or less");
        self.scratch.resize(cs, 0);
        let decoder = self
            .decoder
            .as_mut()
            .expect("compressed clusters are only wanted after the header was parsed");
        decoder
            .cluster(&w.buf, &mut self.scratch)
            .map_err(|reason| Qcow2Error::Decompress {
                offset: at,
                guest,
                reason,
            })?;
        let n = usize::try_from(self.summary.virtual_size - guest).map_or(cs, |left| left.min(cs));
        sink.write_at(guest, &self.scratch[..n])
            .map_err(|source| Qcow2Error::Sink {
                offset: guest,
                source,
            })?;
        self.summary.compressed_bytes += n as u64;
        // The last sector of this cluster may also hold the start of the next compressed
        // cluster, whose L2 table can come later (module doc of `spill`): keep it.
        let end = at + w.len;
        let tail = end.saturating_sub(SECTOR).max(at).max(w.stream_from);
        if self.tables_pending > 0 && tail < end.min(self.pos) {
            // An offset too large for usize is past the buffer anyway.
            let from = usize::try_from(tail - at).ok();
            let to = usize::try_from(end.min(self.pos) - at).ok();
            if let Some(bytes) = from.zip(to).and_then(|(from, to)| w.buf.get(from..to)) {
                self.spill.put(tail, bytes);
            }
        }
        Ok(())
    }

    /// Registers a wanted range: checked against ranges that are never data and against
    /// pending wants; a range that starts behind the stream is served from the spill.
    fn insert_want(
        &mut self,
        start: u64,
        mut w: Want,
        sink: &mut dyn GuestSink,
    ) -> Result<(), Qcow2Error> {
        let what = w.kind.what();
        let end = start + w.len;
        if self.keep_out.iter().any(|&(a, b)| start < b && a < end) {
            return Err(Qcow2Error::Overlap {
                what,
                offset: start,
            });
        }
        if start < self.pos {
            let avail = end.min(self.pos) - start;
            // Plain data and tables take their bytes, so a second reference fails;
            // compressed clusters may share a sector and leave them.
            let remove = !matches!(w.kind, Kind::Compressed { .. });
            let summary = &mut self.summary;
            let got = self.spill.read(start, avail, remove, |b| {
                feed_want(&mut w, b, &mut *sink, &mut *summary)
            })?;
            if let Err(Missing(_)) = got {
                return Err(Qcow2Error::Behind {
                    what,
                    offset: start,
                });
            }
            if w.fed == w.len {
                self.done.push_back((start, w));
                return Ok(());
            }
        }
        let compressed = matches!(w.kind, Kind::Compressed { .. });
        if let Some((&s, pw)) = self.wants.range(..=start).next_back() {
            let both_compressed = compressed && matches!(pw.kind, Kind::Compressed { .. });
            if s == start || (s + pw.len > start && !both_compressed) {
                return Err(Qcow2Error::Overlap {
                    what,
                    offset: start,
                });
            }
        }
        if let Some((&s, pw)) = self.wants.range((Excluded(start), Unbounded)).next() {
            let both_compressed = compressed && matches!(pw.kind, Kind::Compressed { .. });
            if s < end && !both_compressed {
                return Err(Qcow2Error::Overlap {
                    what,
                    offset: start,
                });
            }
        }
        if self.wants.len() >= self.limits.max_pending {
            return Err(Qcow2Error::PendingLimit {
                cap: self.limits.max_pending,
            });
        }
        if w.fed > 0 {
            w.stream_from = self.pos;
        }
        self.wants.insert(start, w);
        Ok(())
    }
}

/// Hands bytes that continue `w` to it: tables and compressed clusters collect them, data
/// runs write whole sectors to the sink at once.
fn feed_want(
    w: &mut Want,
    data: &[u8],
    sink: &mut dyn GuestSink,
    summary: &mut Summary,
) -> Result<(), Qcow2Error> {
    let rel = w.fed;
    w.fed += data.len() as u64;
    match w.kind {
        Kind::Data { guest, guest_len } => {
            feed_data(guest, guest_len, rel, &mut w.buf, data, sink, summary)
        }
        _ => {
            if w.buf.capacity() == 0 {
                w.buf.reserve_exact(w.len.min(FIRST_ALLOC) as usize);
            }
            w.buf.extend_from_slice(data);
            Ok(())
        }
    }
}

/// Streams a whole qcow2 image from `reader` into `sink`, feeding the reader's own
/// buffers (no copy, no buffer of its own: the pipeline's pool buffers pass straight in).
pub fn stream<R: BufRead, S: GuestSink>(
    mut reader: R,
    sink: &mut S,
    limits: Limits,
) -> Result<Summary, Qcow2Error> {
    let mut q = Qcow2Stream::new(limits);
    loop {
        let buf = match reader.fill_buf() {
            Ok([]) => break,
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Qcow2Error::Read(e)),
        };
        let n = buf.len();
        q.feed(buf, sink)?;
        reader.consume(n);
    }
    q.finish(sink)
}
