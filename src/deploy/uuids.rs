//! The identifiers a write leaves behind, shaped as `standby.get_partition_uuids`
//! returns them (protocol spec 2.6; keys contain spaces and are exact).

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

/// What `get_partition_uuids` reports after a write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartitionUuids {
    /// A whole-disk image: the MBR disk signature as `0x` + 8 hex digits.
    WholeDisk {
        /// `root uuid`.
        root_uuid: String,
    },
    /// A partition image (hardware spec 6.4).
    Partition {
        /// `root uuid`: filesystem UUID of the root partition, else its PARTUUID.
        root_uuid: String,
        /// `efi system partition uuid`: the ESP's volume id; `None` without an ESP.
        efi_system_partition_uuid: Option<String>,
        /// `partitions`: role key -> device path, only the roles created.
        partitions: BTreeMap<String, String>,
    },
}

impl PartitionUuids {
    /// The `root uuid` value.
    pub fn root_uuid(&self) -> &str {
        match self {
            Self::WholeDisk { root_uuid } | Self::Partition { root_uuid, .. } => root_uuid,
        }
    }

    /// The `efi system partition uuid` value, if one was made.
    pub fn efi_system_partition_uuid(&self) -> Option<&str> {
        match self {
            Self::WholeDisk { .. } => None,
            Self::Partition {
                efi_system_partition_uuid,
                ..
            } => efi_system_partition_uuid.as_deref(),
        }
    }

    /// The `command_result` of `get_partition_uuids`.
    pub fn to_json(&self) -> Value {
        match self {
            Self::WholeDisk { root_uuid } => json!({ "root uuid": root_uuid }),
            Self::Partition {
                root_uuid,
                efi_system_partition_uuid,
                partitions,
            } => {
                let parts: Map<String, Value> = partitions
                    .iter()
                    .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                    .collect();
                json!({
                    "root uuid": root_uuid,
                    "efi system partition uuid": efi_system_partition_uuid,
                    "partitions": parts,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_disk_has_only_root_uuid() {
        let u = PartitionUuids::WholeDisk {
            root_uuid: "0x5b9d3c1e".into(),
        };
        assert_eq!(u.to_json(), json!({"root uuid": "0x5b9d3c1e"}));
        assert_eq!(u.efi_system_partition_uuid(), None);
    }

    #[test]
    fn partition_image_keys_are_exact() {
        let mut partitions = BTreeMap::new();
        partitions.insert("root".to_owned(), "/dev/vda2".to_owned());
        partitions.insert("efi system partition".to_owned(), "/dev/vda1".to_owned());
        let u = PartitionUuids::Partition {
            root_uuid: "3f1c2e9a-6d0b-4b53-9f27-0c1d2e3f4a5b".into(),
            efi_system_partition_uuid: None,
            partitions,
        };
        let v = u.to_json();
        assert_eq!(v["root uuid"], "3f1c2e9a-6d0b-4b53-9f27-0c1d2e3f4a5b");
        assert!(v["efi system partition uuid"].is_null());
        assert_eq!(v["partitions"]["efi system partition"], "/dev/vda1");
        assert_eq!(v.as_object().unwrap().len(), 3);
    }
}
