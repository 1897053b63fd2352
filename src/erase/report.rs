//! The per-disk report an erase step puts in its result: which device, by which
//! method, how many bytes in how long, and how many samples were read back; or, for a
//! device the step leaves alone, why.

use serde::Serialize;

use super::ata::AtaErased;
use super::express::ExpressReport;
use super::nvme::NvmeErased;
use super::overwrite::VerifiedOverwrite;
use super::verify::VerifyReport;

/// The `method` of a skipped device.
pub const METHOD_NONE: &str = "none";

/// One disk's erase, as the step result shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DiskEraseReport {
    /// `/dev/<name>`.
    pub device: String,
    /// The disk's serial number, when it has one.
    pub serial: Option<String>,
    /// `overwrite`, `ata_enhanced_security_erase`, `ata_security_erase`, `nvme_format`,
    /// `secure_discard`, `discard`, `write_zeroes`, `metadata`, or [`METHOD_NONE`] when
    /// skipped.
    pub method: String,
    /// Bytes written or erased, all passes together.
    pub bytes: u64,
    /// Wall time.
    pub seconds: f64,
    /// Passes written (1 for a range erase, 0 for an empty overwrite plan).
    pub passes: u32,
    /// Blocks read back and found erased (0: not verified).
    pub verified_samples: usize,
    /// Why the device was left alone (virtual media, RAID member, read-only); absent
    /// for an erased device.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    /// Why a secure erase was not used before an overwrite (not supported, disabled,
    /// or failed with the continue flag set); absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
}

impl DiskEraseReport {
    /// The report of an overwrite of `device`.
    pub fn from_overwrite(device: &str, serial: Option<&str>, r: &VerifiedOverwrite) -> Self {
        Self {
            device: device.to_owned(),
            serial: serial.map(str::to_owned),
            method: "overwrite".to_owned(),
            bytes: r.overwrite.bytes,
            seconds: r.overwrite.seconds,
            passes: u32::try_from(r.overwrite.passes.len()).unwrap_or(u32::MAX),
            verified_samples: r.verify.as_ref().map_or(0, |v| v.samples),
            skipped: None,
            fallback: None,
        }
    }

    /// The report of an ATA security erase of `device` (`size` bytes), verified by
    /// `verify`.
    pub fn from_ata(device: &str, size: u64, r: &AtaErased, verify: &VerifyReport) -> Self {
        let serial = Some(r.serial.trim()).filter(|s| !s.is_empty());
        Self {
            device: device.to_owned(),
            serial: serial.map(str::to_owned),
            method: r.method.to_owned(),
            bytes: size,
            // Whole seconds are what the drive's erase is timed in.
            seconds: r.seconds as f64,
            passes: 1,
            verified_samples: verify.samples,
            skipped: None,
            fallback: None,
        }
    }

    /// The report of an NVMe erase of `device` (`size` bytes), verified by `verify`.
    pub fn from_nvme(device: &str, size: u64, r: &NvmeErased, verify: &VerifyReport) -> Self {
        let serial = Some(r.serial.trim()).filter(|s| !s.is_empty());
        Self {
            device: device.to_owned(),
            serial: serial.map(str::to_owned),
            method: r.method.as_str().to_owned(),
            bytes: size,
            seconds: r.seconds,
            passes: 1,
            verified_samples: verify.samples,
            skipped: None,
            fallback: None,
        }
    }

    /// The report of a metadata wipe (`destroy_disk_metadata`) of `device`: signatures
    /// and partition tables only, not the data.
    pub fn metadata(device: &str, seconds: f64) -> Self {
        Self {
            method: "metadata".to_owned(),
            seconds,
            skipped: None,
            ..Self::skipped(device, None, "")
        }
    }

    /// The report of a device the step left alone, and why.
    pub fn skipped(device: &str, serial: Option<&str>, reason: &str) -> Self {
        Self {
            device: device.to_owned(),
            serial: serial.map(str::to_owned),
            method: METHOD_NONE.to_owned(),
            bytes: 0,
            seconds: 0.0,
            passes: 0,
            verified_samples: 0,
            skipped: Some(reason.to_owned()),
            fallback: None,
        }
    }

    /// The same report noting why the secure erase was not used.
    pub fn with_fallback(mut self, reason: Option<String>) -> Self {
        self.fallback = reason;
        self
    }

    /// The report as step-result JSON.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("a report has string keys and finite numbers")
    }

    /// The report of an express erase of `device`.
    pub fn from_express(device: &str, serial: Option<&str>, r: &ExpressReport) -> Self {
        Self {
            device: device.to_owned(),
            serial: serial.map(str::to_owned),
            method: r.method.as_str().to_owned(),
            bytes: r.bytes,
            seconds: r.seconds,
            passes: 1,
            verified_samples: r.verify.samples,
            skipped: None,
            fallback: None,
        }
    }
}
