//! shoal on a small device.
//!
//! This crate will drive a [`proto_core`] peer over smoltcp TCP sockets with flash-style
//! storage. Until that lands it only re-exports the core, so the workspace builds with its
//! final shape (and, like the core, for bare-metal targets).
#![no_std]

pub use proto_core;
