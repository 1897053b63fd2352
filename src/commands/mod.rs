//! commands (work in progress).
