//! Reading and writing bytes at an offset of a file or block device, to check and
//! plant on-disk data.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

/// The `len` bytes at `offset` of `path`.
pub fn read_at(path: &Path, offset: u64, len: usize) -> Vec<u8> {
    let mut f = File::open(path).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    let mut buf = vec![0; len];
    f.read_exact(&mut buf).unwrap();
    buf
}

/// Writes `data` at `offset` of `path` and syncs it.
pub fn write_at(path: &Path, offset: u64, data: &[u8]) {
    let mut f = OpenOptions::new().write(true).open(path).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(data).unwrap();
    f.sync_all().unwrap();
}

/// Fills `len` bytes at `offset` of `path` with `byte` (an old install, say) and syncs.
pub fn fill(path: &Path, byte: u8, offset: u64, len: u64) {
    const CHUNK: u64 = 1 << 20;
    let f = OpenOptions::new().write(true).open(path).unwrap();
    let chunk = vec![byte; usize::try_from(len.min(CHUNK)).unwrap()];
    let mut done = 0;
    while done < len {
        let n = (len - done).min(CHUNK);
        f.write_all_at(&chunk[..usize::try_from(n).unwrap()], offset + done)
            .unwrap();
        done += n;
    }
    f.sync_all().unwrap();
}
