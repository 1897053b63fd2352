//! The per-disk report an erase step puts in its result: which device, by which
//! method, how many bytes in how long, and how many samples were read back.

use serde::Serialize;

use super::express::ExpressReport;
use super::overwrite::VerifiedOverwrite;

/// One disk's erase, as the step result shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DiskEraseReport {
    /// `/dev/<name>`.
    pub device: String,
    /// The disk's serial number, when it has one.
    pub serial: Option<String>,
    /// `overwrite`, `secure_discard`, `discard` or `write_zeroes`.
    pub method: String,
    /// Bytes written or erased, all passes together.
    pub bytes: u64,
    /// Wall time.
    pub seconds: f64,
    /// Passes written (1 for a range erase, 0 for an empty overwrite plan).
    pub passes: u32,
    /// Blocks read back and found erased (0: not verified).
    pub verified_samples: usize,
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
        }
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
        }
    }
}
