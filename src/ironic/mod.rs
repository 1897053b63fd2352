//! ironic (work in progress).
