//! The step tables of the generic manager (spec hardware-and-disks.md 4.6): names,
//! interfaces, priorities, `abortable` flags and `argsinfo` keys, exactly as IPA's
//! `GenericHardwareManager` reports them. Descriptions are our own words.

use ira_hw::{Step, StepKind};

/// Description of `clean_uefi_nvram`'s `match_patterns` argument.
const MATCH_PATTERNS: &str = "JSON list of regular expressions; every UEFI boot entry whose \
     device path matches one of them (case-insensitive search) is deleted. Default: \
     [\"^HD\\\\(\", \"shim.*\\\\.efi\", \"grub.*\\\\.efi\"]";
/// Description of `apply_configuration`'s `raid_config` argument.
const RAID_CONFIG: &str = "The RAID configuration to apply.";
/// Description of `apply_configuration`'s `delete_existing` argument.
const DELETE_EXISTING: &str =
    "Delete the existing RAID configuration before creating the new one. Default: true.";
/// Description of `inject_files`'s `files` argument.
const FILES: &str = "Files to write into the instance: a list of objects with 'path', \
     'partition', 'content' (base64), 'mode' and 'dirmode'; merged with \
     node.properties.inject_files.";
/// Description of `inject_files`'s `verify_ca` argument.
const VERIFY_CA: &str =
    "Whether to verify TLS certificates when fetching content; agent options by default.";

/// Names of every step the generic manager lists, in any kind.
pub const ALL_STEP_NAMES: &[&str] = &[
    "erase_devices",
    "erase_devices_metadata",
    "erase_devices_express",
    "erase_pstore",
    "clean_uefi_nvram",
    "delete_configuration",
    "create_configuration",
    "apply_configuration",
    "burnin_cpu",
    "burnin_gpu",
    "burnin_disk",
    "burnin_memory",
    "burnin_network",
    "write_image",
    "inject_files",
    "execute_bootc_install",
];

/// The generic steps of `kind`; `inject_files_priority` is the configured priority
/// of `inject_files` (`ipa-inject-files-priority`).
pub fn steps(kind: StepKind, inject_files_priority: i64) -> Vec<Step> {
    match kind {
        StepKind::Clean => clean_steps(),
        StepKind::Deploy => deploy_steps(inject_files_priority),
        StepKind::Service => service_steps(inject_files_priority),
    }
}

/// A clean or service step: `abortable: true`.
fn abortable(name: &str, interface: &str, priority: i64) -> Step {
    Step::new(name, interface, priority).abortable(true)
}

fn clean_uefi_nvram() -> Step {
    Step::new("clean_uefi_nvram", "deploy", 0).arg("match_patterns", MATCH_PATTERNS, false)
}

fn apply_configuration() -> Step {
    Step::new("apply_configuration", "raid", 0)
        .arg("raid_config", RAID_CONFIG, true)
        .arg("delete_existing", DELETE_EXISTING, false)
}

fn inject_files(priority: i64) -> Step {
    Step::new("inject_files", "deploy", priority)
        .arg("files", FILES, false)
        .arg("verify_ca", VERIFY_CA, false)
}

fn clean_steps() -> Vec<Step> {
    vec![
        abortable("erase_devices", "deploy", 10),
        abortable("erase_devices_metadata", "deploy", 99),
        abortable("erase_devices_express", "deploy", 0),
        abortable("erase_pstore", "deploy", 0),
        clean_uefi_nvram().abortable(true),
        abortable("delete_configuration", "raid", 0),
        abortable("create_configuration", "raid", 0),
        abortable("burnin_cpu", "deploy", 0),
        abortable("burnin_gpu", "deploy", 0),
        abortable("burnin_disk", "deploy", 0),
        abortable("burnin_memory", "deploy", 0),
        abortable("burnin_network", "deploy", 0),
    ]
}

/// Deploy steps carry no `abortable` key and all run only on request (priority 0),
/// except `inject_files` whose priority the operator chooses.
fn deploy_steps(inject_files_priority: i64) -> Vec<Step> {
    vec![
        Step::new("erase_devices_metadata", "deploy", 0),
        apply_configuration(),
        clean_uefi_nvram(),
        Step::new("write_image", "deploy", 0),
        inject_files(inject_files_priority),
        Step::new("execute_bootc_install", "deploy", 0),
    ]
}

/// Service steps: `burnin_disk` and the erase steps are absent on purpose (they would
/// destroy a tenant's data on a provisioned machine).
fn service_steps(inject_files_priority: i64) -> Vec<Step> {
    vec![
        abortable("delete_configuration", "raid", 0),
        apply_configuration(),
        abortable("create_configuration", "raid", 0),
        abortable("burnin_cpu", "deploy", 0),
        abortable("burnin_gpu", "deploy", 0),
        abortable("burnin_memory", "deploy", 0),
        abortable("burnin_network", "deploy", 0),
        Step::new("write_image", "deploy", 0),
        inject_files(inject_files_priority),
        Step::new("execute_bootc_install", "deploy", 0),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_step_is_in_the_name_list() {
        for kind in StepKind::ALL {
            for step in steps(kind, 0) {
                assert!(
                    ALL_STEP_NAMES.contains(&step.step.as_str()),
                    "{} missing from ALL_STEP_NAMES",
                    step.step
                );
            }
        }
    }

    #[test]
    fn every_name_is_listed_in_some_kind() {
        for name in ALL_STEP_NAMES {
            let listed = StepKind::ALL
                .iter()
                .any(|k| steps(*k, 0).iter().any(|s| s.step == *name));
            assert!(listed, "{name} is in ALL_STEP_NAMES but no table");
        }
    }

    #[test]
    fn no_step_requests_a_reboot() {
        for kind in StepKind::ALL {
            assert!(steps(kind, 7).iter().all(|s| !s.reboot_requested));
        }
    }
}
