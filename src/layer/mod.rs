//! layer (work in progress).
