//! Helpers shared by the integration tests.
pub mod rootfs;
pub mod users;
