//! Registry client for the OCI distribution API (work in progress).
