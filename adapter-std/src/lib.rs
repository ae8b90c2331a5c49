//! shoal on a Linux host: the mio driver ([`driver`]), file storage ([`store`]) and the
//! commands of the `shoal` binary ([`cli`], the interactive [`console`], and the tracker's
//! operator page, [`status`]).

pub mod cli;
pub mod console;
pub mod driver;
pub mod folder;
pub mod hasher;
pub mod metainfo;
pub mod status;
pub mod store;
mod syncer;

pub use proto_core;
