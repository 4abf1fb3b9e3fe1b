//! oci (work in progress).
