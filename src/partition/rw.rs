//! Positioned reads and writes on a `Read + Write + Seek`, and little-endian field access,
//! shared by the table and filesystem code.

use std::io::{self, Read, Seek, SeekFrom, Write};
use std::ops::Range;

/// Zeroes are written in chunks of this size so a large range never needs a large buffer.
const ZERO_CHUNK: usize = 1 << 20;

/// Reads exactly `buf.len()` bytes at `offset`.
pub(crate) fn read_exact_at<R: Read + Seek + ?Sized>(
    r: &mut R,
    offset: u64,
    buf: &mut [u8],
) -> io::Result<()> {
    r.seek(SeekFrom::Start(offset))?;
    r.read_exact(buf)
}

/// Reads `len` bytes at `offset` into a new buffer (callers bound `len`).
pub(crate) fn read_vec_at<R: Read + Seek + ?Sized>(
    r: &mut R,
    offset: u64,
    len: usize,
) -> io::Result<Vec<u8>> {
    let mut buf = vec![0; len];
    read_exact_at(r, offset, &mut buf)?;
    Ok(buf)
}

/// Writes all of `buf` at `offset`.
pub(crate) fn write_all_at<W: Write + Seek + ?Sized>(
    w: &mut W,
    offset: u64,
    buf: &[u8],
) -> io::Result<()> {
    w.seek(SeekFrom::Start(offset))?;
    w.write_all(buf)
}

/// Writes zeroes over `range`.
pub(crate) fn zero_range<W: Write + Seek + ?Sized>(w: &mut W, range: Range<u64>) -> io::Result<()> {
    if range.is_empty() {
        return Ok(());
    }
    let len = range.end - range.start;
    let chunk = vec![0u8; usize::try_from(len).map_or(ZERO_CHUNK, |l| l.min(ZERO_CHUNK))];
    w.seek(SeekFrom::Start(range.start))?;
    let mut left = len;
    while left > 0 {
        let n = usize::try_from(left).map_or(chunk.len(), |l| l.min(chunk.len()));
        w.write_all(&chunk[..n])?;
        left -= n as u64;
    }
    Ok(())
}

/// CRC-32 (IEEE, as GPT and gzip use it).
pub(crate) fn crc32(data: &[u8]) -> u32 {
    let mut crc = flate2::Crc::new();
    crc.update(data);
    crc.sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_the_reference_vector() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
    }

    #[test]
    fn zero_range_writes_exactly_the_range() {
        let mut c = io::Cursor::new(vec![0xffu8; 3 << 20]);
        zero_range(&mut c, 10..(2 << 20) + 7).unwrap();
        let v = c.into_inner();
        assert_eq!(v[9], 0xff);
        assert!(v[10..(2 << 20) + 7].iter().all(|&b| b == 0));
        assert_eq!(v[(2 << 20) + 7], 0xff);
    }
}
