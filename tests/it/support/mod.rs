//! Helpers shared by the integration tests.
pub mod debian;
pub mod rootfs;
pub mod sandbox;
pub mod users;
