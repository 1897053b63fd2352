//! The streaming qcow2 reader (header, L1/L2 tables, compressed clusters) on arbitrary
//! input fed in arbitrary chunk sizes: errors are fine, panics and runaway memory are not.
#![no_main]

use std::io;

use ira::image::qcow2::{GuestSink, Limits, Qcow2Stream};
use libfuzzer_sys::fuzz_target;

/// Checks call shapes only, so absurd virtual sizes cost nothing.
struct Check {
    size: Option<u64>,
}

impl GuestSink for Check {
    fn write_at(&mut self, off: u64, data: &[u8]) -> io::Result<()> {
        assert!(!data.is_empty() && data.len() <= 2 << 20);
        assert_eq!(off % 512, 0);
        if let Some(size) = self.size {
            assert!(off + data.len() as u64 <= size);
        }
        Ok(())
    }
    fn zero(&mut self, off: u64, len: u64) -> io::Result<()> {
        assert!(len > 0);
        if let Some(size) = self.size {
            assert!(off + len <= size);
        }
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, img)) = data.split_first() else {
        return;
    };
    let chunk = 1 + usize::from(sel) * 97;
    let limits = Limits {
        max_spill: 1 << 20,
        max_pending: 1 << 14,
    };
    let mut q = Qcow2Stream::new(limits);
    let mut sink = Check { size: None };
    for c in img.chunks(chunk) {
        if q.feed(c, &mut sink).is_err() {
            return;
        }
        if sink.size.is_none() {
            sink.size = q.header().map(|h| h.virtual_size);
        }
    }
    let _ = q.finish(&mut sink);
});
