//! transport (work in progress).
