//! The `clean` extension: `get_clean_steps` (sync) and `execute_clean_step` (async),
//! served by the shared step code in `steps.rs`.

use crate::commands::registry::Extension;
use crate::commands::steps;
use ira_hw::StepKind;

/// The `clean` extension.
pub fn extension() -> Extension {
    steps::extension(StepKind::Clean)
}
