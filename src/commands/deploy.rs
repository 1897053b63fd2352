//! The `deploy` extension: `get_deploy_steps` (sync) and `execute_deploy_step` (async),
//! served by the shared step code in `steps.rs`.

use crate::commands::registry::Extension;
use crate::commands::steps;
use ira_hw::StepKind;

/// The `deploy` extension.
pub fn extension() -> Extension {
    steps::extension(StepKind::Deploy)
}
