//! Deploy: puts an image on the install device and tells the conductor what it wrote.
//!
//! - `error`: [`DeployError`] and its one mapping to IPA's classes.
//! - `env`: what a deploy command works with ([`DeployEnv`]), built where it starts.
//! - `target`: the install device (IPA's `get_os_install_device`) and opening it.
//! - `prepare`: `standby.prepare_image` / `cache_image`, shared by the `write_image`
//!   deploy step; `whole_disk` and `partition_image` do the two kinds of image, both
//!   through `stream` (download options, pipeline, progress).
//! - `format_gate`: which stage turns the downloaded stream into disk bytes (raw copy or the
//!   qcow2 reader behind the format gate).
//! - `configdrive`: fetch and decode the config drive, place it on a whole-disk image.
//! - `uuids`: what `standby.get_partition_uuids` answers.
//! - `status`: download/write progress into the heartbeat's status message.
//! - `bootmode`: the node's boot mode as IPA derives it.
//! - `bootloader`: `image.install_bootloader`; `instance_root`: mounting the written root;
//!   `inject`: the `inject_files` step that writes files into it.

pub mod bootloader;
pub mod bootmode;
pub mod configdrive;
pub mod env;
pub mod error;
pub mod format_gate;
pub mod inject;
pub mod instance_root;
pub mod mount;
pub mod partition_image;
pub mod prepare;
pub mod status;
pub mod stream;
pub mod target;
pub mod uuids;
pub mod whole_disk;

use std::path::PathBuf;
use std::sync::Mutex;

pub use env::DeployEnv;
pub use error::DeployError;
pub use uuids::PartitionUuids;

/// What the last successful write put where; `get_partition_uuids` and the image cache
/// read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// `image_info.id` of the image; empty when a step wrote the image itself (such a
    /// record is never taken for a cached image).
    pub image_id: crate::image::info::ImageId,
    /// The install device it went to.
    pub device: PathBuf,
    /// The identifiers `get_partition_uuids` returns.
    pub uuids: PartitionUuids,
}

impl Written {
    /// Whether this record is image `image_id` written to `device` by the agent itself,
    /// so writing it again can be skipped.
    pub fn holds(&self, image_id: &crate::image::info::ImageId, device: &std::path::Path) -> bool {
        !self.image_id.as_str().is_empty() && self.image_id == *image_id && self.device == device
    }
}

/// Deploy state kept for the life of the agent process (IPA keeps it in the standby
/// extension: `cached_image_id`, `partition_uuids`).
#[derive(Debug, Default)]
pub struct DeployState {
    written: Mutex<Option<Written>>,
}

impl DeployState {
    /// The last write, if any.
    pub fn written(&self) -> Option<Written> {
        self.written.lock().expect("deploy state poisoned").clone()
    }

    /// Records a successful write.
    pub fn record(&self, written: Written) {
        *self.written.lock().expect("deploy state poisoned") = Some(written);
    }

    /// Forgets the last write (the disk no longer holds a verified image).
    pub fn forget(&self) {
        *self.written.lock().expect("deploy state poisoned") = None;
    }
}
