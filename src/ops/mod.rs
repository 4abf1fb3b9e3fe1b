//! ops (work in progress).
