//! GPT/MBR parsing and the fix-ups that write back, on arbitrary disk contents: never a
//! panic, never a write outside the disk, whatever the tenant's image holds.
//!
//! Input: one flag byte (bit 0: 4096-byte sectors; bit 1: run the GPT fix-up; bit 2:
//! place a config drive), then the disk's first bytes. Random bytes rarely pass the GPT
//! CRCs, so seed the corpus with real tables, e.g.
//! `truncate -s 256K d && sgdisk -n 1:34:100 -n 2:101:400 d && (printf '\x06'; cat d) > seed`
//! (and the same with `sfdisk` for MBR, extended and logical partitions).
#![no_main]

use std::io::Cursor;
use std::path::Path;

use ira::partition::configdrive::{place_on_whole_disk, ConfigDriveImage};
use ira::partition::find::describe;
use ira::partition::fixup::{fix_gpt_partition, validate_partitioning};
use ira::partition::table::read_table;
use ira::partition::{wipe, Geometry};
use libfuzzer_sys::fuzz_target;

/// Disks are at least this large so both GPT copies can exist; inputs are laid out at
/// the start, and the last 64 KiB of input are also copied to the end (backup GPT).
const MIN_DISK: usize = 256 << 10;
const MAX_DISK: usize = 4 << 20;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, body)) = data.split_first() else {
        return;
    };
    let sector = if flags & 1 == 0 { 512 } else { 4096 };
    let size = (body.len().max(MIN_DISK) + 4095) / 4096 * 4096;
    if size > MAX_DISK {
        return;
    }
    let mut disk = vec![0u8; size];
    disk[..body.len()].copy_from_slice(body);
    let tail = body.len().min(64 << 10);
    disk[size - tail..].copy_from_slice(&body[body.len() - tail..]);
    let geometry = Geometry::new(size as u64, sector).expect("valid geometry");
    let dev = Path::new("/dev/fuzz0");

    let mut c = Cursor::new(disk);
    if let Ok(Some(table)) = read_table(&mut c, geometry) {
        for p in table.partitions(geometry) {
            let _ = p.end();
        }
    }
    let _ = describe(&mut c, geometry, dev);
    let _ = validate_partitioning(&mut c, geometry, dev);
    let _ = wipe::metadata_ranges(
        geometry,
        &wipe::declared_gpt_ranges(&mut c, geometry).expect("in-memory read"),
    );

    // The write paths: they must keep within the disk.
    if flags & 2 != 0 {
        let _ = fix_gpt_partition(&mut c, geometry, dev, None);
    }
    if flags & 4 != 0 {
        let image = ConfigDriveImage::from_bytes(vec![0xcd; 4096], "fuzz").expect("small image");
        let _ = place_on_whole_disk(&mut c, geometry, dev, "fuzz", &image);
    }
    assert_eq!(
        c.get_ref().len(),
        size,
        "a write went past the end of the disk"
    );
});
