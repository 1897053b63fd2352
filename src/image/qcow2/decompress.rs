//! One compressed cluster in, exactly one cluster out, with qemu's acceptance rules
//! (`qcow2_decompress`, `qcow2_zstd_decompress` in block/qcow2-threads.c): the output
//! must fill the cluster; input past the end of the compressed data is sector padding
//! (or the next cluster's data) and is ignored.

use std::io;

use flate2::{Decompress, FlushDecompress, Status};
use zstd::stream::raw::{DParameter, Decoder, InBuffer, Operation, OutBuffer};

use super::header::ClusterCompression;

/// Largest zstd window accepted: clusters are at most 2 MiB, so 8 MiB is ample and keeps
/// a hostile frame from asking for zstd's default 128 MiB.
const ZSTD_WINDOW_LOG_MAX: u32 = 23;

/// A reusable cluster decompressor for one image.
pub struct ClusterDecoder {
    kind: ClusterCompression,
    deflate: Decompress,
    zstd: Option<Decoder<'static>>,
}

impl ClusterDecoder {
    /// A decoder for clusters of this compression type.
    pub fn new(kind: ClusterCompression) -> Self {
        ClusterDecoder {
            kind,
            // Raw deflate; a 15-bit window also reads qemu's 12-bit-window streams.
            deflate: Decompress::new(false),
            zstd: None,
        }
    }

    /// Fills `out` (one cluster) from `input`; the error says why it could not.
    pub fn cluster(&mut self, input: &[u8], out: &mut [u8]) -> Result<(), String> {
        match self.kind {
            ClusterCompression::Deflate => self.deflate(input, out),
            ClusterCompression::Zstd => self.zstd(input, out).map_err(|e| e.to_string()),
        }
    }

    fn deflate(&mut self, input: &[u8], out: &mut [u8]) -> Result<(), String> {
        self.deflate.reset(false);
        let status = self
            .deflate
            .decompress(input, out, FlushDecompress::Finish)
            .map_err(|e| format!("deflate: {e}"))?;
        // qemu accepts Z_STREAM_END and Z_BUF_ERROR alike as long as the cluster is full.
        let full = self.deflate.total_out() == out.len() as u64;
        match status {
            Status::Ok | Status::BufError | Status::StreamEnd if full => Ok(()),
            _ => Err(format!(
                "deflate data ends after {} of {} bytes",
                self.deflate.total_out(),
                out.len()
            )),
        }
    }

    fn zstd(&mut self, input: &[u8], out: &mut [u8]) -> io::Result<()> {
        let dec = match &mut self.zstd {
            Some(d) => {
                d.reinit()?;
                d
            }
            None => {
                let mut d = Decoder::new()?;
                d.set_parameter(DParameter::WindowLogMax(ZSTD_WINDOW_LOG_MAX))?;
                self.zstd.insert(d)
            }
        };
        let len = out.len();
        let mut inb = InBuffer::around(input);
        let mut outb = OutBuffer::around(out);
        let mut hint = 1;
        while outb.pos() < len {
            let before = (inb.pos(), outb.pos());
            hint = dec.run(&mut inb, &mut outb)?;
            if (inb.pos(), outb.pos()) == before {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("zstd data ends after {} of {len} bytes", outb.pos()),
                ));
            }
        }
        // Output full but frame unfinished: the cluster would be larger than a cluster.
        if hint != 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "zstd frame is larger than a cluster",
            ));
        }
        Ok(())
    }
}
