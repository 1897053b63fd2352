//! Agent life cycle (work in progress).
