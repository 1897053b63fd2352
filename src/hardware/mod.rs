//! Hardware managers: the registry that orders them by support level and dispatches
//! calls as IPA does (`registry`), the merge of their step lists (`merge`), the errors
//! that map to IPA's error classes (`error`), the built-in generic manager
//! (`generic`) and executable managers found in the ramdisk at start (`exec`). Vendor
//! managers live in their own crates under `hardware-managers/` and are compiled in by
//! cargo features.

mod error;
pub mod exec;
pub mod generic;
mod merge;
mod registry;

pub use error::{DispatchError, StepError};
pub use generic::GenericHardwareManager;
pub use merge::{deduplicate_steps, Candidate};
pub use registry::{
    all_managers, builtin_managers, BuiltinOptions, Registry, DEFAULT_EXAMPLE_VENDOR,
};
