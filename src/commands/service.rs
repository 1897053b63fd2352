//! The `service` extension: `get_service_steps` (sync) and `execute_service_step` (async),
//! served by the shared step code in `steps.rs`.

use crate::commands::registry::Extension;
use crate::commands::steps;
use ira_hw::StepKind;

/// The `service` extension.
pub fn extension() -> Extension {
    steps::extension(StepKind::Service)
}
