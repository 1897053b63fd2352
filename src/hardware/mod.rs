//! hardware (work in progress).
