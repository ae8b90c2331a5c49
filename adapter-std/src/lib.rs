//! shoal on a Linux host.
//!
//! This crate will hold the mio event loop that drives a [`proto_core`] tracker or peer, the
//! crash-safe file storage, and the `shoal` command. Until those land it only re-exports the
//! core, so the workspace builds with its final shape.

pub use proto_core;
