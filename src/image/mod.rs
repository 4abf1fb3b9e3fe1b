//! image (work in progress).
