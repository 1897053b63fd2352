//! What a deploy left on the disk and in the command result, checked against the
//! image.

use std::process::Command;

use serde_json::{json, Value};

use super::client::Agent;
use super::SIG;
use crate::common::cmd::sfdisk_json;
use crate::common::loopdev::LoopDev;

/// The byte range where `a` and `b` differ (first and last differing offsets), if any.
pub fn diff(a: &[u8], b: &[u8]) -> Option<(usize, usize)> {
    let first = a.iter().zip(b).position(|(x, y)| x != y)?;
    let last = a.iter().zip(b).rposition(|(x, y)| x != y)?;
    Some((first, last))
}

/// What `sgdisk -v` says about the table on `path` (stdout and stderr).
pub fn sgdisk_verify(path: &str) -> String {
    let out = Command::new("sgdisk").arg("-v").arg(path).output().unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The message of a successful `prepare_image` of `id` onto `disk`.
pub fn expected_message(id: &str, disk: &LoopDev) -> String {
    format!(
        "image ({id}) written to device {} root_uuid=0x{SIG:08x}",
        disk.path_str()
    )
}

/// `r` is a succeeded `write_image` step that wrote image `id` onto `disk`.
pub fn assert_step_succeeded(r: &Value, id: &str, disk: &LoopDev) {
    assert_eq!(r["command_status"], "SUCCEEDED", "{r}");
    assert!(r["command_error"].is_null(), "{r}");
    assert_eq!(r["command_result"]["deploy_step"]["step"], "write_image");
    assert_eq!(r["command_result"]["deploy_step"]["interface"], "deploy");
    let msg = r["command_result"]["deploy_result"]["result"]
        .as_str()
        .unwrap_or_else(|| panic!("no deploy_result.result: {r}"));
    assert!(
        msg.starts_with(&format!(
            "prepare_image: image ({id}) written to device {} root_uuid=0x",
            disk.path_str()
        )),
        "{msg}"
    );
    assert_eq!(
        msg,
        format!("prepare_image: {}", expected_message(id, disk))
    );
}

/// `r` is a failed command; returns its error type and details.
pub fn assert_failed(r: &Value) -> (String, String) {
    assert_eq!(r["command_status"], "FAILED", "{r}");
    assert!(r["command_result"].is_null(), "{r}");
    let e = &r["command_error"];
    (
        e["type"].as_str().unwrap().to_owned(),
        e["details"].as_str().unwrap().to_owned(),
    )
}

/// The disk holds `image` with the backup GPT moved to the disk's end: every byte of
/// the image but the GPT headers is there, the table verifies clean and lists the
/// image's partitions (plus `extra` more), and the MBR signature is [`SIG`].
pub fn assert_whole_disk_written(disk: &LoopDev, image: &[u8], extra: usize) {
    let len = image.len() as u64;
    let back = disk.read(0, len);
    assert_eq!(back[..446], image[..446], "boot code and disk signature");
    assert_eq!(back[510..512], [0x55, 0xAA]);
    // The protective entry now covers the whole disk, as `sgdisk -e` leaves it.
    let sectors = disk.size() / 512;
    assert_eq!(back[446 + 4], 0xEE, "protective type");
    let lba = |o: usize| u32::from_le_bytes(back[o..o + 4].try_into().unwrap());
    assert_eq!(lba(446 + 8), 1);
    assert_eq!(u64::from(lba(446 + 12)), sectors - 1);
    assert!(back[462..510].iter().all(|&b| b == 0), "one MBR entry only");
    // LBA 1 (primary header) changes: it now points at the new backup. The image's
    // entries (from LBA 2, 128 bytes each) and all partition data are the image's.
    let img_entries = 2 * 128;
    assert_eq!(
        diff(
            &back[1024..1024 + img_entries],
            &image[1024..1024 + img_entries]
        ),
        None,
        "the image's partition entries"
    );
    let data_end = usize::try_from(len - 33 * 512).unwrap();
    assert_eq!(
        diff(&back[34 * 512..data_end], &image[34 * 512..data_end]),
        None,
        "partition data differs from the image"
    );
    assert_eq!(u32::from_le_bytes(back[440..444].try_into().unwrap()), SIG);

    let verify = sgdisk_verify(disk.path_str());
    assert!(verify.contains("No problems found"), "{verify}");
    let table = sfdisk_json(disk.path_str());
    assert_eq!(table["label"], "gpt");
    assert_eq!(table["lastlba"].as_u64(), Some(sectors - 34), "{table}");
    let img_path = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(img_path.path(), image).unwrap();
    let img_table = sfdisk_json(img_path.path().to_str().unwrap());
    let parts = table["partitions"].as_array().unwrap();
    let img_parts = img_table["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), img_parts.len() + extra, "{table}");
    for (p, q) in parts.iter().zip(img_parts) {
        for key in ["start", "size", "type", "uuid", "name"] {
            assert_eq!(p[key], q[key], "{key}: {p} vs {q}");
        }
    }
    assert_eq!(table["id"], img_table["id"], "disk GUID kept");
}

/// `get_partition_uuids` names the signature read at byte 440 of the disk.
pub async fn assert_root_uuid(agent: &Agent, disk: &LoopDev) {
    let raw = disk.read(440, 4);
    let on_disk = format!("0x{:08x}", u32::from_le_bytes(raw.try_into().unwrap()));
    assert_eq!(on_disk, format!("0x{SIG:08x}"));
    assert_eq!(agent.partition_uuids().await, json!({"root uuid": on_disk}));
}
