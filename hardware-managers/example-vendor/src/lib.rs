//! Example vendor hardware manager (placeholder, filled in by the hardware-manager work).
