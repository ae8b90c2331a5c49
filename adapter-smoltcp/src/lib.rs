//! shoal on a small device: a [`proto_core`] peer (or tracker) over smoltcp TCP sockets, with
//! its file on flash.
//!
//! - [`Driver`]: owns the node, its storage, the smoltcp interface and a fixed set of TCP
//!   sockets (the firmware chooses how many and how large their buffers are). The firmware's
//!   main loop (or an executor) calls [`Driver::poll`] with the time and the network device;
//!   it returns when it next needs to run.
//! - [`Storage`]: what the driver needs of storage; [`flash::FlashStore`] implements it on any
//!   [`flash::Flash`] (erase by sector, program in order), and keeps a journal so a device
//!   resumes after a reset with every chunk it had verified.
//!
//! No allocation, no std, no clock: the caller passes `now`.
//!
//! # The run loop
//!
//! ```no_run
//! use adapter_smoltcp::flash::{FlashStore, RamFlash};
//! use adapter_smoltcp::Driver;
//! use proto_core::peer::{PeerEvent, SmallPeer};
//! use proto_core::time::Instant;
//!
//! fn run<D: smoltcp::phy::Device>(
//!     device: &mut D,
//!     driver: &mut Driver<'static, SmallPeer, FlashStore<RamFlash<[u8; 1 << 20]>>, 4>,
//!     now: impl Fn() -> Instant,
//!     sleep_until: impl Fn(Instant),
//! ) {
//!     loop {
//!         let wake = driver.poll(now(), device, |_peer, event| {
//!             // The store has already journalled it; show progress, act on completion.
//!             if let PeerEvent::FileComplete { .. } = event { /* boot the new image */ }
//!         });
//!         // Until `wake`, or until the network interrupt says a frame arrived.
//!         sleep_until(wake);
//!     }
//! }
//! ```
//!
//! `adapter-smoltcp/firmware` is a whole firmware built around this loop, and
//! `examples/tap_peer.rs` the same peer on a Linux TAP device.
//!
//! # Features
//!
//! - `defmt`: log through defmt (and derive `defmt::Format` on public types), for firmware.
//! - `log`: log through the `log` facade, for hosts.
//!
//! At most one of the two.
#![cfg_attr(not(test), no_std)]
#![warn(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

#[cfg(all(feature = "defmt", feature = "log"))]
compile_error!("adapter-smoltcp: enable at most one of the `defmt` and `log` features");

#[macro_use]
mod fmt;

mod driver;
pub mod flash;

pub use driver::{Driver, Socket};
pub use proto_core;
pub use smoltcp;

use proto_core::storage::StorageKey;

/// Where a node's bytes live: chunk hashes and file data, by the core's [`StorageKey`].
///
/// `E` is the node's event type: [`Storage::note`] sees every event before the firmware does,
/// which is where a store keeps its journal (verified chunks, the manifest).
pub trait Storage<E> {
    /// Stores `data` at `offset` of `key`.
    fn write(&mut self, key: StorageKey, offset: u64, data: &[u8]) -> Result<(), StorageError>;
    /// Reads up to `buf.len()` bytes at `offset` of `key`; returns how many.
    fn read(&mut self, key: StorageKey, offset: u64, buf: &mut [u8])
        -> Result<usize, StorageError>;
    /// The bytes under `key` are no longer wanted.
    fn discard(&mut self, key: StorageKey);
    /// An event from the node, before the firmware sees it. An error fails the key's file.
    fn note(&mut self, event: &E) -> Result<(), (StorageKey, StorageError)> {
        let _ = event;
        Ok(())
    }
}

/// Why storage failed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum StorageError {
    /// The flash failed.
    Flash(flash::FlashError),
    /// The file (or its manifest) does not fit.
    OutOfSpace,
    /// The file's chunk size is not a multiple of the flash sector size, so a chunk could not
    /// be rewritten without erasing its neighbours.
    ChunkNotSectorAligned,
    /// The store keeps one file; the node asked for another slot.
    NoSuchSlot,
}

impl From<flash::FlashError> for StorageError {
    fn from(e: flash::FlashError) -> Self {
        StorageError::Flash(e)
    }
}

impl core::fmt::Display for StorageError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            StorageError::Flash(e) => write!(f, "flash: {e}"),
            StorageError::OutOfSpace => f.write_str("the file does not fit the flash"),
            StorageError::ChunkNotSectorAligned => {
                f.write_str("chunk size is not a multiple of the flash sector size")
            }
            StorageError::NoSuchSlot => f.write_str("the store keeps one file only"),
        }
    }
}

impl core::error::Error for StorageError {}
