//! Fixed-width integers read from and written to byte slices, big- and little-endian:
//! the one set of helpers every on-disk format reader (GPT, MBR, FAT, qcow2, VHD, UEFI
//! variables, SMBIOS) uses.
//!
//! The plain readers and writers panic when the slice is too short, so callers use them
//! only after checking the length (a header already read whole); the `try_` readers
//! answer `None` instead, for data of untrusted length.

/// `N` bytes at `at`; panics when the slice is too short.
fn array<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&b[at..at + N]);
    a
}

/// `N` bytes at `at`, or `None` when the slice is too short.
fn try_array<const N: usize>(b: &[u8], at: usize) -> Option<[u8; N]> {
    b.get(at..at.checked_add(N)?)?.try_into().ok()
}

/// Big-endian u16 at `at`.
pub fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes(array(b, at))
}

/// Big-endian u32 at `at`.
pub fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(array(b, at))
}

/// Big-endian u64 at `at`.
pub fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(array(b, at))
}

/// Little-endian u16 at `at`.
pub fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(array(b, at))
}

/// Little-endian u32 at `at`.
pub fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(array(b, at))
}

/// Little-endian u64 at `at`.
pub fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(array(b, at))
}

/// Little-endian u16 at `at`, `None` past the end.
pub fn try_le16(b: &[u8], at: usize) -> Option<u16> {
    try_array(b, at).map(u16::from_le_bytes)
}

/// Little-endian u32 at `at`, `None` past the end.
pub fn try_le32(b: &[u8], at: usize) -> Option<u32> {
    try_array(b, at).map(u32::from_le_bytes)
}

/// Little-endian u64 at `at`, `None` past the end.
pub fn try_le64(b: &[u8], at: usize) -> Option<u64> {
    try_array(b, at).map(u64::from_le_bytes)
}

/// Stores `v` little-endian at `at`.
pub fn put_le16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

/// Stores `v` little-endian at `at`.
pub fn put_le32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

/// Stores `v` little-endian at `at`.
pub fn put_le64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_byte_orders_at_an_offset() {
        let b = [0xff, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08];
        assert_eq!(be16(&b, 1), 0x0102);
        assert_eq!(le16(&b, 1), 0x0201);
        assert_eq!(be32(&b, 1), 0x0102_0304);
        assert_eq!(le32(&b, 1), 0x0403_0201);
        assert_eq!(be64(&b, 1), 0x0102_0304_0506_0708);
        assert_eq!(le64(&b, 1), 0x0807_0605_0403_0201);
    }

    #[test]
    fn checked_reads_stop_at_the_end() {
        let b = [1, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(try_le16(&b, 6), Some(0));
        assert_eq!(try_le16(&b, 7), None);
        assert_eq!(try_le32(&b, 0), Some(1));
        assert_eq!(try_le32(&b, 5), None);
        assert_eq!(try_le64(&b, 0), Some(1));
        assert_eq!(try_le64(&b, 1), None);
        assert_eq!(try_le64(&b, usize::MAX), None);
    }

    #[test]
    fn writes_read_back() {
        let mut b = [0u8; 16];
        put_le16(&mut b, 0, 0xbeef);
        put_le32(&mut b, 2, 0xdead_beef);
        put_le64(&mut b, 6, 0x0123_4567_89ab_cdef);
        assert_eq!(le16(&b, 0), 0xbeef);
        assert_eq!(le32(&b, 2), 0xdead_beef);
        assert_eq!(le64(&b, 6), 0x0123_4567_89ab_cdef);
        assert_eq!(b[14..], [0, 0]);
    }

    #[test]
    #[should_panic(expected = "range end index 4 out of range")]
    fn plain_reads_panic_past_the_end() {
        le32(&[0u8; 3], 0);
    }
}
