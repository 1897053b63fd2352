//! The written instance's root filesystem, mounted for steps that change files in it
//! (`inject_files`, vendor deploy steps).

use std::path::Path;

use crate::agent::AgentState;
use crate::hw::{HwError, HwResult};

/// Mounts the instance root (or `partition`), runs `f` on the mount point, unmounts.
pub fn with_instance_root(
    _state: &AgentState,
    _partition: Option<&str>,
    _f: &mut dyn FnMut(&Path) -> HwResult<()>,
) -> HwResult<()> {
    Err(HwError::Failed(
        "mounting the instance root is not supported by this agent yet".to_owned(),
    ))
}
