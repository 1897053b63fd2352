//! `mkswap -L swap1` natively: a Linux swap header (`union swap_header` in
//! `<linux/swap.h>`, version 1) written at the start of a byte window of a disk.
//!
//! Layout of the first page: 1024 boot bytes (zeroed), then `version` (u32 = 1),
//! `last_page` (u32), `nr_badpages` (u32 = 0), a 16-byte UUID, a 16-byte label, and the
//! magic `SWAPSPACE2` in the last 10 bytes of the page. The page size is the running
//! kernel's, as `swapon` requires it to match.

use std::io;

use uuid::Uuid;

use super::rw::write_all_at;
use super::Disk;
use crate::bytes::put_le32;

/// The label IPA gives the swap partition (`mkswap -L swap1`).
pub const SWAP_LABEL: &str = "swap1";
/// mkswap refuses less than 10 pages.
const MIN_PAGES: u64 = 10;

/// Why swap could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SwapError {
    /// The window is smaller than 10 pages.
    #[error("swap area of {size} bytes is smaller than the minimum of {min} bytes")]
    TooSmall {
        /// Bytes offered.
        size: u64,
        /// Bytes needed.
        min: u64,
    },
    /// The label does not fit the 16-byte field.
    #[error("swap label {0:?} is longer than 16 bytes")]
    LabelTooLong(String),
    /// The page size is not one Linux uses.
    #[error("unsupported page size {0}")]
    PageSize(u64),
    /// Writing the header failed.
    #[error("writing the swap header: {0}")]
    Io(#[from] io::Error),
}

/// The running kernel's page size (4096 when it cannot be read).
pub fn page_size() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|v| u64::try_from(v).ok())
        .unwrap_or(4096)
}

/// What was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SwapArea {
    /// The swap UUID (blkid's `UUID`).
    pub uuid: Uuid,
    /// Usable pages (`last_page`).
    pub last_page: u32,
}

/// Writes a swap header for the `size` bytes at `start` of `disk`, with `page_size`
/// pages, `label` and `uuid`.
pub fn make_swap<D: Disk + ?Sized>(
    disk: &mut D,
    start: u64,
    size: u64,
    page_size: u64,
    label: &str,
    uuid: Uuid,
) -> Result<SwapArea, SwapError> {
    if !page_size.is_power_of_two() || !(4096..=65536).contains(&page_size) {
        return Err(SwapError::PageSize(page_size));
    }
    if label.len() > 16 {
        return Err(SwapError::LabelTooLong(label.to_owned()));
    }
    let pages = size / page_size;
    if pages < MIN_PAGES {
        return Err(SwapError::TooSmall {
            size,
            min: MIN_PAGES * page_size,
        });
    }
    // The kernel reads last_page as a u32; larger areas are simply capped, as mkswap does.
    let last_page = u32::try_from(pages - 1).unwrap_or(u32::MAX);
    let mut page = vec![0u8; usize::try_from(page_size).expect("page size fits usize")];
    put_le32(&mut page, 1024, 1);
    put_le32(&mut page, 1028, last_page);
    page[1036..1052].copy_from_slice(uuid.as_bytes());
    page[1052..1052 + label.len()].copy_from_slice(label.as_bytes());
    let magic = page.len() - 10;
    page[magic..].copy_from_slice(b"SWAPSPACE2");
    write_all_at(disk, start, &page)?;
    disk.flush()?;
    Ok(SwapArea { uuid, last_page })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::partition::fsprobe::{probe, FsKind};
    use std::io::Cursor;

    #[test]
    fn header_is_found_by_the_probe() {
        let mut d = Cursor::new(vec![0xffu8; 1 << 20]);
        let uuid = Uuid::new_v4();
        let area = make_swap(&mut d, 4096, 1 << 19, 4096, SWAP_LABEL, uuid).unwrap();
        assert_eq!(area.last_page, 127);
        let info = probe(&mut d, 4096, 1 << 19).unwrap().unwrap();
        assert_eq!(info.kind, FsKind::Swap);
        assert_eq!(info.label.as_deref(), Some("swap1"));
        assert_eq!(info.uuid, Some(uuid.to_string()));
        // Boot bytes were zeroed; bytes outside the first page were not touched.
        assert!(d.get_ref()[4096..5120].iter().all(|&b| b == 0));
        assert_eq!(d.get_ref()[8192], 0xff);
    }

    #[test]
    fn bad_inputs_are_refused() {
        let mut d = Cursor::new(vec![0u8; 1 << 20]);
        assert!(matches!(
            make_swap(&mut d, 0, 9 * 4096, 4096, "s", Uuid::nil()),
            Err(SwapError::TooSmall { .. })
        ));
        assert!(matches!(
            make_swap(
                &mut d,
                0,
                1 << 20,
                4096,
                "a-label-longer-than-16",
                Uuid::nil()
            ),
            Err(SwapError::LabelTooLong(_))
        ));
        assert!(matches!(
            make_swap(&mut d, 0, 1 << 20, 1000, "s", Uuid::nil()),
            Err(SwapError::PageSize(1000))
        ));
        assert!(page_size() >= 4096);
    }
}
