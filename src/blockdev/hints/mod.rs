//! Root device hints: parsing, normalisation and matching against disks, exactly as
//! IPA does it (`device_hints.py` on top of oslo.utils `specs_matcher`), plus the
//! `skip_block_devices` list built from the same hints.
//!
//! * `parse`: a JSON hint object -> [`RootDeviceHints`] (normalised expressions, IPA's
//!   validation messages).
//! * `specs`: the expression grammar and `match` of one value against one expression.
//! * `py`, `literal`: the Python built-ins whose behaviour the matching depends on.
//! * `skip`: the skip list (hint entries and md `volume_name` entries).
//!
//! Matching quirks kept on purpose (IPA: `find_devices_by_hints`): string values are
//! compared after the same normalisation as hints (trimmed, lower-cased, URL-quoted),
//! so `name: sda` matches nothing (no `/dev/` is added) and `name` has no globbing; a
//! null device value is compared as the string `none`; a blank one makes the device a
//! non-match; `size` is compared in GiB as a float (`size: 100` wants exactly 100 GiB,
//! and `<or>` on `size` never matches: it compares strings with that float).
//! Hints are evaluated in the JSON map's order (by name: `serde_json` without
//! `preserve_order`), which only decides which error a device raises first.
//! In list mode ([`HintDevice::list_mode`]) `serial` and `wwn` carry every identifier
//! the kernel and udev report, and a device matches when any of them does.

pub mod literal;
mod parse;
pub mod py;
pub mod skip;
pub mod specs;

use ira_hw::inventory::BlockDevice;
use serde_json::{Map, Value};

pub use parse::{
    bool_from_value, extract_operator_and_values, normalize_expression, HintError, NormalizeError,
};
pub use skip::{
    classify_raid_arrays, MdArray, RaidAction, RaidClassification, SkipList, SkipListError,
};
pub use specs::{EvalError, Operand, PyErrorKind};

/// 2^30: hint sizes are in GiB.
const GIB: f64 = 1_073_741_824.0;

/// A hint name IPA accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HintName {
    /// `size` (GiB, integer).
    Size,
    /// `model`.
    Model,
    /// `wwn`.
    Wwn,
    /// `serial`.
    Serial,
    /// `vendor`.
    Vendor,
    /// `wwn_with_extension`.
    WwnWithExtension,
    /// `wwn_vendor_extension`.
    WwnVendorExtension,
    /// `name` (full `/dev/...` path).
    Name,
    /// `rotational` (bool).
    Rotational,
    /// `hctl`.
    Hctl,
    /// `by_path`.
    ByPath,
    /// `tran` (IPA only; Ironic's validation rejects it).
    Tran,
}

/// The value type of a hint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HintKind {
    /// String expression.
    Str,
    /// Integer expression (`size`).
    Int,
    /// Boolean (`rotational`).
    Bool,
}

impl HintName {
    /// Every hint, in IPA's order (`VALID_ROOT_DEVICE_HINTS`, used in its messages).
    pub const ALL: [HintName; 12] = [
        Self::Size,
        Self::Model,
        Self::Wwn,
        Self::Serial,
        Self::Vendor,
        Self::WwnWithExtension,
        Self::WwnVendorExtension,
        Self::Name,
        Self::Rotational,
        Self::Hctl,
        Self::ByPath,
        Self::Tran,
    ];

    /// The JSON key.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Size => "size",
            Self::Model => "model",
            Self::Wwn => "wwn",
            Self::Serial => "serial",
            Self::Vendor => "vendor",
            Self::WwnWithExtension => "wwn_with_extension",
            Self::WwnVendorExtension => "wwn_vendor_extension",
            Self::Name => "name",
            Self::Rotational => "rotational",
            Self::Hctl => "hctl",
            Self::ByPath => "by_path",
            Self::Tran => "tran",
        }
    }

    /// The hint called `key`, if IPA knows it.
    pub fn from_name(key: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|n| n.as_str() == key)
    }

    /// Its value type.
    pub fn kind(self) -> HintKind {
        match self {
            Self::Size => HintKind::Int,
            Self::Rotational => HintKind::Bool,
            _ => HintKind::Str,
        }
    }
}

/// One parsed hint value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HintSpec {
    /// A `specs_matcher` expression, normalised (`s== foo%20model`, `>= 100`).
    Expr(String),
    /// A boolean (`rotational`).
    Bool(bool),
}

/// A parsed, normalised hint set; all hints must match (AND).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootDeviceHints {
    hints: Vec<(HintName, HintSpec)>,
}

impl RootDeviceHints {
    /// Parses a hint object (IPA: `parse_root_device_hints`); `Ok(None)` when it is
    /// empty, null or otherwise falsy.
    pub fn parse(value: &Value) -> Result<Option<Self>, HintError> {
        parse::parse_hints(value)
    }

    /// The hints in the order they were given (as the JSON map iterates).
    pub fn iter(&self) -> impl Iterator<Item = (HintName, &HintSpec)> {
        self.hints.iter().map(|(n, s)| (*n, s))
    }

    /// The spec of hint `name`, if set.
    pub fn get(&self, name: HintName) -> Option<&HintSpec> {
        self.iter().find(|(n, _)| *n == name).map(|(_, s)| s)
    }

    /// The normalised form as IPA's `parse_root_device_hints` returns it.
    pub fn to_json(&self) -> Value {
        let map: Map<String, Value> = self
            .iter()
            .map(|(n, s)| {
                let v = match s {
                    HintSpec::Expr(e) => Value::String(e.clone()),
                    HintSpec::Bool(b) => Value::Bool(*b),
                };
                (n.as_str().to_owned(), v)
            })
            .collect();
        Value::Object(map)
    }
}

/// A disk as hint matching sees it: the inventory fields, plus, in list mode, every
/// serial and WWN IPA collects (`all_serial_and_wwn=True`).
#[derive(Debug, Clone, PartialEq)]
pub struct HintDevice {
    /// The disk.
    pub device: BlockDevice,
    /// List mode: `[inventory serial, udev ID_SERIAL_SHORT, udev ID_SERIAL]` (null
    /// entries kept; they are ignored when matching). `None`: scalar mode.
    pub serials: Option<Vec<Option<String>>>,
    /// List mode: `[inventory wwn, udev ID_WWN]`. `None`: scalar mode.
    pub wwns: Option<Vec<Option<String>>>,
}

impl HintDevice {
    /// Scalar mode (erase steps): `serial` and `wwn` are the inventory's single values.
    pub fn scalar(device: BlockDevice) -> Self {
        Self {
            device,
            serials: None,
            wwns: None,
        }
    }

    /// List mode (root-disk choice): the inventory values first, then udev's
    /// `ID_SERIAL_SHORT`, `ID_SERIAL` and `ID_WWN` (or their `DM_` forms).
    pub fn list_mode(
        device: BlockDevice,
        udev_serial_short: Option<String>,
        udev_serial: Option<String>,
        udev_wwn: Option<String>,
    ) -> Self {
        let serials = vec![device.serial.clone(), udev_serial_short, udev_serial];
        let wwns = vec![device.wwn.clone(), udev_wwn];
        Self {
            device,
            serials: Some(serials),
            wwns: Some(wwns),
        }
    }

    /// `/dev/<kname>`.
    pub fn name(&self) -> &str {
        &self.device.name
    }

    /// The scalar string value of a string hint field.
    fn field(&self, name: HintName) -> Option<&str> {
        let d = &self.device;
        match name {
            HintName::Model => d.model.as_deref(),
            HintName::Wwn => d.wwn.as_deref(),
            HintName::Serial => d.serial.as_deref(),
            HintName::Vendor => d.vendor.as_deref(),
            HintName::WwnWithExtension => d.wwn_with_extension.as_deref(),
            HintName::WwnVendorExtension => d.wwn_vendor_extension.as_deref(),
            HintName::Name => Some(&d.name),
            HintName::Hctl => d.hctl.as_deref(),
            HintName::ByPath => d.by_path.as_deref(),
            HintName::Tran => d.tran.as_deref(),
            HintName::Size | HintName::Rotational => None,
        }
    }

    /// The list of a list-mode field (`serial`, `wwn`), if this device is in list mode.
    fn list(&self, name: HintName) -> Option<&[Option<String>]> {
        match name {
            HintName::Serial => self.serials.as_deref(),
            HintName::Wwn => self.wwns.as_deref(),
            _ => None,
        }
    }
}

/// Matching a device raised where IPA's matcher raises (a numeric operator on a
/// non-numeric value, a device value the grammar cannot parse, ...).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct MatchError {
    /// The device.
    pub device: String,
    /// The hint being evaluated.
    pub hint: HintName,
    /// Python's exception class.
    pub kind: PyErrorKind,
    /// What went wrong.
    pub message: String,
}

/// Whether `dev` satisfies every hint. Hints are evaluated in order and the first
/// mismatch ends the evaluation, so an error in a later hint is only raised for
/// devices that matched the earlier ones (as in IPA).
pub fn device_matches(dev: &HintDevice, hints: &RootDeviceHints) -> Result<bool, MatchError> {
    for (name, spec) in hints.iter() {
        let fail = |e: EvalError| MatchError {
            device: dev.name().to_owned(),
            hint: name,
            kind: e.kind,
            message: e.message,
        };
        let ok = match (name.kind(), spec) {
            (_, HintSpec::Bool(want)) => dev.device.rotational == *want,
            (HintKind::Int, HintSpec::Expr(expr)) => {
                // Bytes to GiB as a float, never rounded (IPA: size / units.Gi).
                let gib = dev.device.size as f64 / GIB;
                specs::matches(Operand::Num(gib), expr).map_err(fail)?
            }
            (_, HintSpec::Expr(expr)) => match dev.list(name) {
                Some(values) => list_matches(dev, name, values, expr)?,
                None => scalar_matches(dev, name, expr).map_err(fail)?,
            },
        };
        if !ok {
            tracing::debug!(device = %dev.name(), hint = name.as_str(), "hint does not match");
            return Ok(false);
        }
    }
    Ok(true)
}

/// A scalar string field: null becomes `none` (Python's `str(None)`), blank is a
/// non-match.
fn scalar_matches(dev: &HintDevice, name: HintName, expr: &str) -> Result<bool, EvalError> {
    let raw = dev.field(name).unwrap_or("None");
    match normalize_expression(raw) {
        Ok(value) => specs::matches(Operand::Str(&value), expr),
        Err(NormalizeError::Empty) => {
            tracing::warn!(device = %dev.name(), attr = name.as_str(), "device attribute is empty, skipping device");
            Ok(false)
        }
        Err(NormalizeError::Syntax) => Err(unparseable(raw)),
    }
}

/// A list-mode field: null entries dropped; any entry that matches is enough; an entry
/// whose evaluation raises `ValueError` is skipped (IPA catches only that class).
fn list_matches(
    dev: &HintDevice,
    name: HintName,
    values: &[Option<String>],
    expr: &str,
) -> Result<bool, MatchError> {
    let present: Vec<&str> = values.iter().flatten().map(String::as_str).collect();
    if present.is_empty() {
        tracing::warn!(device = %dev.name(), attr = name.as_str(), "device attribute is empty, skipping device");
        return Ok(false);
    }
    for raw in present {
        let result = match normalize_expression(raw) {
            Ok(value) => specs::matches(Operand::Str(&value), expr),
            Err(NormalizeError::Empty) => continue,
            Err(NormalizeError::Syntax) => Err(unparseable(raw)),
        };
        match result {
            Ok(true) => return Ok(true),
            Ok(false) => {}
            Err(e) if e.kind == PyErrorKind::Value => {}
            Err(e) => {
                return Err(MatchError {
                    device: dev.name().to_owned(),
                    hint: name,
                    kind: e.kind,
                    message: e.message,
                })
            }
        }
    }
    Ok(false)
}

fn unparseable(raw: &str) -> EvalError {
    EvalError {
        kind: PyErrorKind::Other,
        message: format!("device value {raw:?} cannot be parsed as an expression"),
    }
}

/// Every device of `devices` that matches all `hints`, in order (IPA:
/// `find_devices_by_hints`); an `Err` item is where IPA's generator would raise.
pub fn find_devices_by_hints<'a, I>(
    devices: I,
    hints: &'a RootDeviceHints,
) -> impl Iterator<Item = Result<&'a HintDevice, MatchError>> + 'a
where
    I: IntoIterator<Item = &'a HintDevice>,
    I::IntoIter: 'a,
{
    devices
        .into_iter()
        .filter_map(move |dev| match device_matches(dev, hints) {
            Ok(true) => Some(Ok(dev)),
            Ok(false) => None,
            Err(e) => Some(Err(e)),
        })
}

/// The first device that matches all `hints` (IPA: `match_root_device_hints`).
pub fn match_root_device_hints<'a>(
    devices: &'a [HintDevice],
    hints: &RootDeviceHints,
) -> Result<Option<&'a HintDevice>, MatchError> {
    for dev in devices {
        if device_matches(dev, hints)? {
            return Ok(Some(dev));
        }
    }
    Ok(None)
}
