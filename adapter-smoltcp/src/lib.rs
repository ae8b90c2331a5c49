//! shoal on a small device: a [`proto_core`] peer (or tracker) over smoltcp TCP sockets, with
//! its file on flash.
//!
//! - [`Driver`]: owns the node, its storage, the smoltcp interface and a fixed set of TCP
//!   sockets (the firmware chooses how many and how large their buffers are). The firmware's
//!   main loop (or an executor) calls [`Driver::poll`] with the time and the network device;
//!   it returns when it next needs to run.
//! - [`Storage`]: proto-core's storage contract; [`flash::FlashStore`] implements it on any
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
//!     driver: &mut Driver<'static, SmallPeer<'static>, FlashStore<RamFlash<[u8; 1 << 20]>>, 4>,
//!     now: impl Fn() -> Instant,
//!     sleep_until: impl Fn(Instant),
//! ) {
//!     loop {
//!         let wake = driver.poll(now(), device, |_peer, event| {
//!             // The store has journalled it already; show progress, act on completion.
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

/// What the driver needs of storage: proto-core's one storage contract (writes, reads and the
/// journal of verified chunks), with [`StorageError`] as the error of [`flash::FlashStore`].
pub use proto_core::storage::Storage;

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
