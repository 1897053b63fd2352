//! The skip list, `node.properties.skip_block_devices` (IPA:
//! `list_block_devices_check_skip_list`, `_handle_raid_skip_list`).
//!
//! Each entry is either a hint set (same grammar as root device hints): every disk it
//! matches is removed from the candidates of erase steps, RAID creation and root-disk
//! choice; or `{"volume_name": "<md name>"}`, which protects software RAID arrays by
//! name. Arrays are then classified `keep` (named), `wipe` (another array sharing a
//! holder disk with a kept one: superblock kept, contents wiped) or `delete`; an array
//! named `esp` that would be wiped is kept. The classification is pure: the caller
//! describes the arrays ([`MdArray`]), reading them is left to the inventory side.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::{find_devices_by_hints, py, HintDevice, HintError, MatchError, RootDeviceHints};

/// The md volume name IPA treats as the EFI system partition array.
const ESP_VOLUME: &str = "esp";

/// A skip list that cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SkipListError {
    /// `skip_block_devices` is not a list.
    #[error("skip_block_devices must be a list, got {0}")]
    NotAList(String),
    /// An entry is not an object.
    #[error("skip_block_devices entry {index} must be an object, got {value}")]
    NotAnObject {
        /// Position in the list.
        index: usize,
        /// The entry as Python prints it.
        value: String,
    },
    /// An entry with no hints at all (IPA fails with a type error here).
    #[error("skip_block_devices entry {index} has no hints")]
    EmptyEntry {
        /// Position in the list.
        index: usize,
    },
    /// An entry's hints are invalid.
    #[error("{source}")]
    Hint {
        /// Position in the list.
        index: usize,
        /// IPA's validation message.
        #[source]
        source: HintError,
    },
    /// Matching an entry against a disk raised.
    #[error("{0}")]
    Match(#[from] MatchError),
}

/// A software RAID (md) array as the skip list needs it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MdArray {
    /// `/dev/mdN`.
    pub name: String,
    /// The array's volume name (`mdadm --detail` `Name :` without the host part).
    pub volume_name: Option<String>,
    /// The disks under the array (`/dev/sda` for a member `/dev/sda1`).
    pub holder_disks: Vec<String>,
    /// The member devices themselves (partitions or whole disks).
    pub components: Vec<String>,
}

/// What the skip list allows to happen to an md array.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RaidAction {
    /// Superblock and contents may go.
    Delete,
    /// Superblock kept, contents wiped (shares a holder disk with a kept array).
    Wipe,
    /// Untouched, and not a candidate for anything.
    Keep,
}

/// Every array's action, plus why arrays are wiped instead of deleted.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RaidClassification {
    /// Array name -> action.
    pub actions: BTreeMap<String, RaidAction>,
    /// Wiped array -> volume name of the kept array that caused it.
    pub causes: BTreeMap<String, String>,
}

impl RaidClassification {
    /// The action for device `name`; `None` when it is not an md array.
    pub fn action(&self, name: &str) -> Option<RaidAction> {
        self.actions.get(name).copied()
    }
}

/// Classifies `arrays` against the protected volume names `keep` (IPA:
/// `_handle_raid_skip_list`). Arrays are visited in the given order.
pub fn classify_raid_arrays(arrays: &[MdArray], keep: &BTreeSet<String>) -> RaidClassification {
    let mut out = RaidClassification::default();
    let mut on_disk: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let mut esp: Option<&str> = None;
    for array in arrays {
        out.actions.insert(array.name.clone(), RaidAction::Delete);
        for disk in &array.holder_disks {
            on_disk.entry(disk).or_default().push(&array.name);
        }
        // The last array named `esp` is the one IPA remembers.
        if array.volume_name.as_deref() == Some(ESP_VOLUME) {
            esp = Some(&array.name);
        }
    }
    for array in arrays {
        let Some(volume) = array.volume_name.as_deref().filter(|v| keep.contains(*v)) else {
            continue;
        };
        tracing::warn!(device = %array.name, volume, "RAID device will not be deleted");
        out.actions.insert(array.name.clone(), RaidAction::Keep);
        for disk in &array.holder_disks {
            for &neighbour in on_disk.get(disk.as_str()).into_iter().flatten() {
                if neighbour != array.name && out.action(neighbour) == Some(RaidAction::Delete) {
                    out.actions.insert(neighbour.to_owned(), RaidAction::Wipe);
                    out.causes.insert(neighbour.to_owned(), volume.to_owned());
                }
            }
        }
    }
    // An ESP array that would be wiped is kept, so the bootloader step can find it.
    if let Some(esp) = esp {
        if out.action(esp) == Some(RaidAction::Wipe) {
            out.actions.insert(esp.to_owned(), RaidAction::Keep);
        }
    }
    out
}

/// A parsed `skip_block_devices` list.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SkipList {
    /// Hint entries with their position, parsed only when there are disks to match.
    hint_entries: Vec<(usize, Value)>,
    volume_names: BTreeSet<String>,
}

impl SkipList {
    /// The skip list of a node (`properties.skip_block_devices`); `None` when unset or
    /// empty.
    pub fn from_node(node: &Value) -> Result<Option<Self>, SkipListError> {
        match node
            .get("properties")
            .and_then(|p| p.get("skip_block_devices"))
        {
            Some(list) => Self::from_value(list),
            None => Ok(None),
        }
    }

    /// Parses the list itself; `None` when it is null or empty.
    pub fn from_value(list: &Value) -> Result<Option<Self>, SkipListError> {
        if !py::truthy(list) {
            return Ok(None);
        }
        let Value::Array(entries) = list else {
            return Err(SkipListError::NotAList(py::repr_of(list)));
        };
        let mut out = Self::default();
        for (index, entry) in entries.iter().enumerate() {
            let Value::Object(map) = entry else {
                return Err(SkipListError::NotAnObject {
                    index,
                    value: py::repr_of(entry),
                });
            };
            // IPA: an entry with `volume_name` is only a RAID entry, whatever else it holds.
            match map.get("volume_name") {
                Some(Value::String(name)) => {
                    out.volume_names.insert(name.clone());
                }
                Some(other) => {
                    tracing::warn!(value = %py::repr_of(other), "volume_name that is not a string never matches");
                }
                None => out.hint_entries.push((index, entry.clone())),
            }
        }
        Ok(Some(out))
    }

    /// The protected md volume names.
    pub fn volume_names(&self) -> &BTreeSet<String> {
        &self.volume_names
    }

    /// Names of the devices some hint entry matches (IPA:
    /// `get_skip_list_from_node_for_disks`). Entries are only parsed when `devices` is
    /// not empty, as in IPA.
    pub fn skipped_disks(&self, devices: &[HintDevice]) -> Result<BTreeSet<String>, SkipListError> {
        let mut skipped = BTreeSet::new();
        if devices.is_empty() {
            return Ok(skipped);
        }
        for (index, entry) in &self.hint_entries {
            let hints = RootDeviceHints::parse(entry)
                .map_err(|source| SkipListError::Hint {
                    index: *index,
                    source,
                })?
                .ok_or(SkipListError::EmptyEntry { index: *index })?;
            let mut newly = Vec::new();
            for dev in find_devices_by_hints(devices, &hints) {
                let name = dev?.name().to_owned();
                if skipped.insert(name.clone()) {
                    newly.push(name);
                }
            }
            if !newly.is_empty() {
                tracing::warn!(entry = %py::repr_of(entry), devices = %newly.join(","), "skip list hint skips devices");
            }
        }
        Ok(skipped)
    }

    /// `devices` minus the disks hint entries match and the md arrays classified
    /// `keep` (and `wipe` when `include_wipe`, for the metadata erase steps).
    pub fn filter<'a>(
        &self,
        devices: &'a [HintDevice],
        md_arrays: &[MdArray],
        include_wipe: bool,
    ) -> Result<Vec<&'a HintDevice>, SkipListError> {
        let skipped = self.skipped_disks(devices)?;
        let raid = if self.volume_names.is_empty() {
            RaidClassification::default()
        } else {
            classify_raid_arrays(md_arrays, &self.volume_names)
        };
        Ok(devices
            .iter()
            .filter(|d| !skipped.contains(d.name()))
            .filter(|d| match raid.action(d.name()) {
                Some(RaidAction::Keep) => false,
                Some(RaidAction::Wipe) => !include_wipe,
                _ => true,
            })
            .collect())
    }
}
