//! Partition images (hardware spec 6, 7 and 8.3/8.4; protocol 2.3, 2.6 and 10.2): the
//! layout IPA's `work_on_disk` makes, the root image streamed into its partition, the
//! ESP, swap, config drive and ephemeral filesystems, and the identifiers returned.
//!
//! Order, and why:
//! 1. Everything that can be refused is refused before the disk is touched: sizes,
//!    `ephemeral_format` and its mkfs tool, and the image's size when its first bytes
//!    tell it (a raw image's length, a qcow2 header's virtual size).
//! 2. On the whole disk, through one allow-listed handle and at whole-disk offsets:
//!    metadata destroyed (unless `preserve_ephemeral`), the table, the ESP, the config
//!    drive and the swap header. Then a flush and a table re-read.
//! 3. The partition nodes must appear and match the new table (a kernel still holding
//!    the old table would send the root image to old offsets).
//! 4. The ephemeral filesystem (an external mkfs), then the root image through the
//!    verified pipeline (its first MiB held back until the checksum matches).
//! 5. `root uuid` is read from the root partition itself.
//!
//! Boot mode and table type come from the cached node as IPA recomputes them;
//! `image_info.deploy_boot_mode` and `disk_label` are ignored, as IPA ignores them.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::fs::File;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::fcntl::PosixFadviseAdvice;
use uuid::Uuid;

use crate::blockdev::nodes::{self, await_block_devices, NodeOutlook};
use crate::image::format::{self, Compression, FormatError};
use crate::image::source::{HttpSource, RetryBudget};
use crate::image::{ImageError, ImageInfo};
use crate::partition::configdrive::ConfigDriveImage;
use crate::partition::fat::{make_fat32, ESP_LABEL};
use crate::partition::layout::{
    mib_ceil, table_kind_for, Layout, LayoutRequest, Role, WrittenLayout, WrittenPartition,
    EPHEMERAL_LABEL,
};
use crate::partition::swap::{make_swap, page_size, SWAP_LABEL};
use crate::partition::table::read_table;
use crate::partition::wipe::destroy_disk_metadata;
use crate::partition::{fsprobe, partition_path, Geometry};
use crate::sys::block;
use crate::task::blocking;

use super::bootmode::{disk_label, node_boot_mode, ramdisk_boot_mode};
use super::env::DeployEnv;
use super::error::DeployError;
use super::stream::{source_options, stream};
use super::target::open_target;
use super::PartitionUuids;

/// Where mkfs tools are looked for besides `PATH` (a ramdisk's PATH may lack sbin).
const TOOL_DIRS: [&str; 4] = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"];
/// Bytes of a failing tool's stderr kept for the error message.
const STDERR_KEPT: usize = 1000;

/// Lays out `device` for the partition image `info` and writes it.
pub async fn write(
    env: &DeployEnv,
    device: &Path,
    info: &ImageInfo,
    configdrive: Option<ConfigDriveImage>,
) -> Result<PartitionUuids, DeployError> {
    let plan = plan(env, info, configdrive.as_ref())?;
    tracing::info!(image = %info.id, device = %device.display(),
        boot_mode = ?plan.req.boot_mode, table = plan.req.table.as_str(),
        root_mib = plan.req.root_mib, swap_mib = plan.req.swap_mib,
        ephemeral_mib = plan.req.ephemeral_mib, configdrive_mib = plan.req.configdrive_mib,
        preserve_ephemeral = plan.preserve_ephemeral, "writing a partition image");
    check_image_fits(env, info, plan.req.root_mib).await?;

    let st = env.clone();
    let dev = device.to_path_buf();
    let laid = blocking(move || -> Result<Laid, DeployError> {
        let laid = lay_out(&st, &dev, &plan, configdrive.as_ref())?;
        wait_for_nodes(&st, &laid.layout, &laid.nodes)?;
        if let (Some(fs), Some(part)) = (&plan.ephemeral, laid.layout.get(Role::Ephemeral)) {
            fs.make(&st, &part.path)?;
        }
        Ok(laid)
    })
    .await??;

    let root = laid
        .layout
        .get(Role::Root)
        .cloned()
        .ok_or_else(|| DeployError::Disk("the layout has no root partition".into()))?;
    let report = stream(env, &root.path, info).await?;
    tracing::info!(image = %info.id, partition = %root.path.display(),
        bytes = report.image_size, "root image written and verified");

    let st = env.clone();
    let dev = device.to_path_buf();
    let root_uuid = blocking(move || {
        drop_disk_cache(&st, &dev);
        root_uuid(&st, &root)
    })
    .await??;
    let partitions: BTreeMap<String, String> = laid
        .layout
        .partitions_map()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    Ok(PartitionUuids::Partition {
        root_uuid,
        efi_system_partition_uuid: laid.esp_uuid,
        partitions,
    })
}

/// What the request asks for, checked before anything is written.
#[derive(Debug)]
struct Plan {
    req: LayoutRequest,
    preserve_ephemeral: bool,
    /// The filesystem to make on the ephemeral partition (none when preserved).
    ephemeral: Option<EphemeralFs>,
}

fn invalid(msg: impl Into<String>) -> DeployError {
    DeployError::InvalidRequest(msg.into())
}

fn plan(
    env: &DeployEnv,
    info: &ImageInfo,
    configdrive: Option<&ConfigDriveImage>,
) -> Result<Plan, DeployError> {
    let root_mib = info
        .root_mb
        .filter(|&m| m > 0)
        .ok_or_else(|| invalid("root_mb must be a positive size in MiB for a partition image"))?;
    let node = env.node.as_ref();
    // IPA: utils.get_node_boot_mode and get_partition_table_type_from_specs (spec 6.1).
    let boot_mode = node_boot_mode(node, ramdisk_boot_mode(env.sysroot()));
    let table = table_kind_for(boot_mode, disk_label(node).as_deref());
    let ppc64 = env.ppc64;
    let mut req = LayoutRequest::new(boot_mode, table, root_mib);
    req.swap_mib = info.swap_mb.unwrap_or(0);
    req.ephemeral_mib = info.ephemeral_mb.unwrap_or(0);
    req.configdrive_mib = configdrive.map_or(0, |c| mib_ceil(c.len()));
    req.ppc64 = ppc64;
    let preserve_ephemeral = info.preserve_ephemeral.unwrap_or(false);
    let ephemeral = if req.ephemeral_mib > 0 && !preserve_ephemeral {
        let fs = info
            .ephemeral_format
            .as_deref()
            .filter(|f| !f.is_empty())
            .ok_or_else(|| invalid("ephemeral_format is required when ephemeral_mb is set"))?;
        Some(EphemeralFs::find(fs)?)
    } else {
        None
    };
    Ok(Plan {
        req,
        preserve_ephemeral,
        ephemeral,
    })
}

/// Refuses an image whose size is known from its first bytes and exceeds the root
/// partition (IPA checks the virtual size before partitioning, spec 6.1), so such a
/// request leaves the disk untouched. A compressed image's size is only known once
/// decompressed; the pipeline bounds it by the partition's size then.
async fn check_image_fits(
    env: &DeployEnv,
    info: &ImageInfo,
    root_mib: u64,
) -> Result<(), DeployError> {
    let Some(size) = known_image_size(env, info).await? else {
        tracing::debug!(image = %info.id, "image size not known before writing");
        return Ok(());
    };
    let image_mib = mib_ceil(size);
    if image_mib > root_mib {
        return Err(invalid(format!(
            "Root partition is too small for requested image. Image virtual size: \
             {image_mib} MB, Root size: {root_mib} MB"
        )));
    }
    Ok(())
}

/// Reads the head of the image (one short, aborted request through the same client,
/// auth and retry budget as the download) and derives its size on disk from it.
async fn known_image_size(env: &DeployEnv, info: &ImageInfo) -> Result<Option<u64>, DeployError> {
    let opts = source_options(env)?;
    let source = HttpSource::new(info, &opts).map_err(|e| DeployError::image(&info.id, e))?;
    let budget = RetryBudget::new(opts.retries, opts.retry_interval);
    let head = source
        .read_head(format::SNIFF_LEN, &budget)
        .await
        .map_err(|e| DeployError::image(&info.id, e))?;
    let settings = &env.settings;
    size_from_head(
        &head.bytes,
        head.total,
        info.disk_format.as_deref(),
        &settings.permitted_image_formats,
        settings.disable_deep_image_inspection,
    )
    .map_err(|e| DeployError::image(&info.id, ImageError::InvalidImage(e.to_string())))
}

/// The image's size on disk from its head and the announced stream length: the
/// length for bytes copied as they are, the header's virtual size for a format that has
/// one, nothing for compressed data. An uncompressed head the format gate refuses is
/// refused here already (IPA inspects before it partitions); the pipeline's gate runs
/// again on the bytes it writes.
fn size_from_head(
    head: &[u8],
    total: Option<u64>,
    declared: Option<&str>,
    permitted: &[String],
    inspection_disabled: bool,
) -> Result<Option<u64>, FormatError> {
    if Compression::sniff(head).is_some() {
        return Ok(None);
    }
    if !super::format_gate::inspects(declared) {
        return Ok(total);
    }
    let detected = format::detect(head);
    let found = format::gate(&detected, declared, permitted, inspection_disabled)?;
    let virtual_size = detected.resolve().ok().and_then(|i| i.virtual_size);
    Ok(match virtual_size {
        Some(v) => Some(v),
        None if found.is_raw_like() => total,
        None => None,
    })
}

/// The table as written (or found, with `preserve_ephemeral`) and the ESP's volume id.
#[derive(Debug)]
struct Laid {
    layout: WrittenLayout,
    esp_uuid: Option<String>,
    nodes: NodeOutlook,
}

/// Step 2 of the module docs, on a blocking thread.
fn lay_out(
    env: &DeployEnv,
    device: &Path,
    plan: &Plan,
    configdrive: Option<&ConfigDriveImage>,
) -> Result<Laid, DeployError> {
    let fail = |what: &str, e: &dyn Display| {
        DeployError::Disk(format!("{what} on {}: {e}", device.display()))
    };
    let mut disk = open_target(env, device)?;
    let geometry = Geometry::of_file(&disk).map_err(|e| fail("reading the geometry", &e))?;
    let layout =
        Layout::plan(&plan.req, geometry).map_err(|e| fail("planning the partitions", &e))?;
    let written = if plan.preserve_ephemeral {
        // IPA: make_partitions(commit=False): the table stays, only the paths are needed.
        existing_layout(&mut disk, geometry, device, &layout)?
    } else {
        destroy_disk_metadata(&mut disk, geometry)
            .map_err(|e| fail("destroying the disk metadata", &e))?;
        layout
            .write(&mut disk, geometry, device)
            .map_err(|e| fail("writing the partition table", &e))?
    };
    let mut esp_uuid = None;
    if let Some(esp) = written.get(Role::EfiSystem) {
        let volume = make_fat32(
            &mut disk,
            esp.start,
            esp.size,
            geometry.sector_size(),
            ESP_LABEL,
            rand::random(),
        )
        .map_err(|e| fail("making the EFI system partition", &e))?;
        esp_uuid = Some(volume.uuid());
    }
    if let (Some(part), Some(drive)) = (written.get(Role::ConfigDrive), configdrive) {
        // IPA: dd of the ISO, no mount test and no vfat rebuild for partition images (7).
        disk.write_all_at(drive.as_bytes(), part.start)
            .map_err(|e| fail("writing the config drive", &e))?;
    }
    if let Some(swap) = written.get(Role::Swap) {
        make_swap(
            &mut disk,
            swap.start,
            swap.size,
            page_size(),
            SWAP_LABEL,
            Uuid::new_v4(),
        )
        .map_err(|e| fail("making swap", &e))?;
    }
    disk.sync_all().map_err(|e| fail("flushing", &e))?;
    // Partition nodes are checked against the table next, so a failed re-read that left
    // the old partitions in the kernel is caught there.
    let nodes = nodes::reread(&disk, device, env.sysroot());
    tracing::info!(device = %device.display(), partitions = written.partitions.len(),
        "partition layout written");
    Ok(Laid {
        layout: written,
        esp_uuid,
        nodes,
    })
}

/// The planned layout located on the disk's current table, which must match it
/// exactly: with `preserve_ephemeral` nothing is repartitioned, so filesystems are
/// made at these offsets only if they are the partitions the kernel knows.
fn existing_layout(
    disk: &mut File,
    geometry: Geometry,
    device: &Path,
    layout: &Layout,
) -> Result<WrittenLayout, DeployError> {
    let refuse = |why: String| {
        DeployError::Disk(format!(
            "preserve_ephemeral is set but {why} on {}; refusing to write",
            device.display()
        ))
    };
    let table = read_table(disk, geometry)
        .map_err(|e| refuse(format!("the partition table cannot be read ({e})")))?
        .ok_or_else(|| refuse("there is no partition table".into()))?;
    if table.kind() != layout.table {
        return Err(refuse(format!(
            "the table is {} where {} was requested",
            table.kind().as_str(),
            layout.table.as_str()
        )));
    }
    let existing = table.partitions(geometry);
    let ss = geometry.sector_size();
    let mut partitions = Vec::with_capacity(layout.partitions.len());
    for p in &layout.partitions {
        let (first, last) = p.sectors(geometry);
        let (start, size) = (first * ss, (last - first + 1) * ss);
        let found = existing
            .iter()
            .find(|e| e.number == p.number && e.start == start && e.size == size)
            .ok_or_else(|| {
                refuse(format!(
                    "partition {} ({}) is not at MiB {}-{}",
                    p.number,
                    p.role.key(),
                    p.start_mib,
                    p.end_mib
                ))
            })?;
        partitions.push(WrittenPartition {
            role: p.role,
            number: p.number,
            path: partition_path(device, p.number),
            start,
            size,
            part_uuid: found.part_uuid.clone(),
        });
    }
    Ok(WrittenLayout {
        table: layout.table,
        partitions,
    })
}

/// Waits (bounded) for every partition node, then checks each has its new size.
fn wait_for_nodes(
    env: &DeployEnv,
    layout: &WrittenLayout,
    outlook: &NodeOutlook,
) -> Result<(), DeployError> {
    let paths: Vec<PathBuf> = layout
        .partitions
        .iter()
        .map(|p| env.rooted(&p.path))
        .collect();
    let missing: Vec<&WrittenPartition> = await_block_devices(&paths, outlook)
        .into_iter()
        .map(|i| &layout.partitions[i])
        .collect();
    if let Some(first) = missing.first() {
        // IPA checks the other roles first and the root last, with these messages.
        let p = missing
            .iter()
            .find(|p| p.role != Role::Root)
            .unwrap_or(first);
        return Err(DeployError::Disk(match p.role {
            Role::Root => format!("Root device '{}' not found", p.path.display()),
            role => format!("'{}' device '{}' not found", role.key(), p.path.display()),
        }));
    }
    for p in &layout.partitions {
        let path = env.rooted(&p.path);
        let size = File::open(&path)
            .map_err(|e| e.to_string())
            .and_then(|f| block::device_size(&f).map_err(|e| e.to_string()))
            .map_err(|e| DeployError::Disk(format!("probing {}: {e}", p.path.display())))?;
        if size != p.size {
            return Err(DeployError::Disk(format!(
                "partition {} has {size} bytes but the new table gives it {}: the kernel \
                 did not take the new partition table",
                p.path.display(),
                p.size
            )));
        }
    }
    Ok(())
}

/// Drops the whole disk's cached pages. The layout went through the disk node and the
/// root image through the partition node, and the kernel caches the two apart: without
/// this, a later read through the disk (a partition lookup by UUID) could be served the
/// blocks the metadata wipe zeroed inside what is now the root filesystem.
fn drop_disk_cache(env: &DeployEnv, device: &Path) {
    let dropped = File::open(env.rooted(device))
        .map_err(|e| e.to_string())
        .and_then(|disk| {
            nix::fcntl::posix_fadvise(&disk, 0, 0, PosixFadviseAdvice::POSIX_FADV_DONTNEED)
                .map_err(|e| e.to_string())
        });
    if let Err(e) = dropped {
        tracing::warn!(device = %device.display(), error = %e,
            "could not drop the disk's page cache");
    }
}

/// `root uuid`: the root filesystem's UUID, else the partition's PARTUUID (IPA: lsblk
/// `UUID`, then `PARTUUID`). Read through the partition node, the path the image was
/// written through, so no stale cache of the whole disk is consulted.
fn root_uuid(env: &DeployEnv, root: &WrittenPartition) -> Result<String, DeployError> {
    let path = env.rooted(&root.path);
    let fail = |e: std::io::Error| {
        DeployError::Disk(format!(
            "reading the root filesystem on {}: {e}",
            root.path.display()
        ))
    };
    let mut part = File::open(&path).map_err(fail)?;
    let fs = fsprobe::probe(&mut part, 0, root.size).map_err(fail)?;
    Ok(fs
        .and_then(|f| f.uuid)
        .unwrap_or_else(|| root.part_uuid.clone()))
}

/// The ephemeral filesystem and the tool that makes it.
#[derive(Debug)]
struct EphemeralFs {
    format: String,
    program: PathBuf,
    args: Vec<String>,
}

impl EphemeralFs {
    /// IPA's `utils.mkfs(fs, path, label="ephemeral0")`: `mkfs -t <fs> [-F] -L
    /// ephemeral0` (`-F` for ext3/ext4, `-n` for the label of vfat/msdos, `mkswap` for
    /// swap). The tools must exist now; a missing one fails the deploy before anything
    /// is written rather than leaving an unformatted ephemeral partition.
    fn find(format: &str) -> Result<Self, DeployError> {
        if !format
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(invalid(format!(
                "ephemeral_format {format:?} is not a filesystem name"
            )));
        }
        let missing = |tool: &str| {
            DeployError::Disk(format!(
                "cannot make the {format} filesystem on the ephemeral partition: {tool} not \
                 found (searched PATH and {})",
                TOOL_DIRS.join(", ")
            ))
        };
        let label_opt = if matches!(format, "vfat" | "msdos") {
            "-n"
        } else {
            "-L"
        };
        let label = [label_opt.to_owned(), EPHEMERAL_LABEL.to_owned()];
        if format == "swap" {
            let program = find_tool("mkswap").ok_or_else(|| missing("mkswap"))?;
            return Ok(Self {
                format: format.to_owned(),
                program,
                args: label.to_vec(),
            });
        }
        let program = find_tool("mkfs").ok_or_else(|| missing("mkfs"))?;
        let helper = format!("mkfs.{format}");
        find_tool(&helper).ok_or_else(|| missing(&helper))?;
        let mut args = vec!["-t".to_owned(), format.to_owned()];
        if matches!(format, "ext3" | "ext4") {
            args.push("-F".to_owned());
        }
        args.extend(label);
        Ok(Self {
            format: format.to_owned(),
            program,
            args,
        })
    }

    /// Runs the tool on `part` (a `/dev` name) after the write door accepted that node.
    fn make(&self, env: &DeployEnv, part: &Path) -> Result<(), DeployError> {
        // The door checks the allow-list and the running system's disks; the handle stays
        // open so the node checked is the node the tool opens by path.
        let _door = open_target(env, part)?;
        let path = env.rooted(part);
        tracing::info!(partition = %part.display(), format = %self.format,
            "making the ephemeral filesystem");
        let out = Command::new(&self.program)
            .args(&self.args)
            .arg(&path)
            .env("LC_ALL", "C")
            .output()
            .map_err(|e| {
                DeployError::Disk(format!(
                    "running {} on {}: {e}",
                    self.program.display(),
                    part.display()
                ))
            })?;
        if out.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: String = stderr
            .trim()
            .chars()
            .rev()
            .take(STDERR_KEPT)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        Err(DeployError::Disk(format!(
            "making the {} filesystem on {} failed ({}): {tail}",
            self.format,
            part.display(),
            out.status
        )))
    }
}

/// The first executable `name` in `PATH` or [`TOOL_DIRS`].
fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(TOOL_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size(head: &[u8], total: Option<u64>, declared: Option<&str>) -> Option<u64> {
        let permitted = ["raw", "qcow2"].map(str::to_owned);
        size_from_head(head, total, declared, &permitted, false).unwrap()
    }

    #[test]
    fn raw_size_is_the_stream_length_and_compressed_is_unknown() {
        let head = vec![0u8; 4096];
        assert_eq!(size(&head, Some(5 << 20), Some("raw")), Some(5 << 20));
        assert_eq!(size(&head, Some(5 << 20), None), Some(5 << 20));
        assert_eq!(size(&head, None, Some("raw")), None);
        let gz = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0];
        assert_eq!(size(&gz, Some(1 << 20), Some("raw")), None);
    }

    fn qcow2_head(backing: bool) -> Vec<u8> {
        let mut h = vec![0u8; 4096];
        h[..4].copy_from_slice(b"QFI\xfb");
        h[4..8].copy_from_slice(&3u32.to_be_bytes());
        if backing {
            h[8..16].copy_from_slice(&512u64.to_be_bytes());
        }
        h[20..24].copy_from_slice(&16u32.to_be_bytes());
        h[24..32].copy_from_slice(&(64u64 << 20).to_be_bytes());
        h[100..104].copy_from_slice(&104u32.to_be_bytes());
        h
    }

    #[test]
    fn qcow2_size_is_the_header_virtual_size_after_the_gate() {
        let h = qcow2_head(false);
        assert_eq!(size(&h, Some(300_000), Some("qcow2")), Some(64 << 20));
        // Declared raw: copied as it is, so the stream length counts.
        assert_eq!(size(&h, Some(300_000), Some("raw")), Some(300_000));
        let permitted = ["raw", "qcow2"].map(str::to_owned);
        let unsafe_head = qcow2_head(true);
        assert!(matches!(
            size_from_head(&unsafe_head, None, Some("qcow2"), &permitted, false),
            Err(FormatError::Unsafe { .. })
        ));
        assert!(matches!(
            size_from_head(&h, None, Some("qcow2"), &permitted[..1], false),
            Err(FormatError::NotPermitted { .. })
        ));
    }

    #[test]
    fn ephemeral_tools_are_found_or_named() {
        assert!(matches!(
            EphemeralFs::find("ext4; rm"),
            Err(DeployError::InvalidRequest(_))
        ));
        match EphemeralFs::find("nosuchfs") {
            Err(DeployError::Disk(m)) => assert!(m.contains("mkfs.nosuchfs"), "{m}"),
            other => panic!("{other:?}"),
        }
        if find_tool("mkfs.ext4").is_some() && find_tool("mkfs").is_some() {
            let fs = EphemeralFs::find("ext4").unwrap();
            assert_eq!(fs.args, ["-t", "ext4", "-F", "-L", "ephemeral0"]);
        }
        if find_tool("mkfs.vfat").is_some() && find_tool("mkfs").is_some() {
            let fs = EphemeralFs::find("vfat").unwrap();
            assert_eq!(fs.args, ["-t", "vfat", "-n", "ephemeral0"]);
        }
    }
}
