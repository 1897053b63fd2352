//! blockdev (work in progress).
