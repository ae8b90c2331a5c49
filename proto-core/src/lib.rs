//! shoal's protocol core: everything a tracker and a peer decide, and nothing they touch.
//!
//! This crate reads no clock, no socket, no file and no randomness. A node is an object; the
//! adapter around it (mio on Linux, smoltcp on a device, the simulator in tests) feeds it events
//! through `handle_*` methods and carries out what it asks for through one `poll_output`. The
//! same code therefore runs on a host, in firmware, and in a deterministic simulation.
//!
//! - [`time`]: the core's own [`Instant`](time::Instant) and [`Duration`](time::Duration).
//! - [`wire`]: framing and every [`Message`](wire::Message); decoding is bounded and fallible.
//! - [`manifest`]: manifests, file ids and the streaming [`ManifestBuilder`](manifest::ManifestBuilder).
//! - [`link`]: `shoal:` link text.
//! - [`auth`]: the optional swarm key and the handshake proof built from it.
//! - [`tracker`]: the [`Tracker`](tracker::Tracker) state machine.
//! - [`io`]: the contract: [`Output`](io::Output), [`Action`](io::Action), what `handle_recv` answers.
//! - [`storage`]: the storage requests nodes make, and the [`Storage`](storage::Storage) contract.
//! - [`node`]: the one [`Node`](node::Node) interface adapters drive a tracker or a peer through.
//!
//! # The run loop
//!
//! Every node follows the same contract: after each `handle_*` call (or command), call
//! `poll_output` until it returns [`Output::Timeout`](io::Output::Timeout), carrying out each
//! output as it comes; then wait until that instant or the next I/O event. The order of the
//! outputs is the core's (see [`io`]). Here is a whole tracker run over an in-memory "socket",
//! compiled as a doc test:
//!
//! ```
//! use proto_core::io::{Action, Output, FRAME_BUF_LEN};
//! use proto_core::time::Instant;
//! use proto_core::tracker::{SmallTrackerMemory, Tracker, TrackerConfig};
//! use proto_core::wire::{encode_frame, FrameDecoder, Hello, Item, Message, NodeId, PROTOCOL_VERSION};
//!
//! let mut now = Instant::ZERO;
//! // The tracker's tables live in memory we own (a device's static memory); with the `alloc`
//! // feature `Tracker::new` puts them on the heap instead.
//! let mut memory = SmallTrackerMemory::new();
//! let mut tracker = Tracker::with_memory(TrackerConfig::new(NodeId([1; 16])), now, &mut memory);
//!
//! // A peer connects from 10.0.0.2 and says hello, announcing that it listens on port 7000.
//! let conn = tracker.handle_accept(now, "10.0.0.2:51000".parse().unwrap()).unwrap().conn;
//! let mut wire = [0u8; 64];
//! let mut n = encode_frame(&Message::Hello(Hello { version: PROTOCOL_VERSION, node: NodeId([2; 16]), listen_port: 7000, nonce: [9; 16] }), &mut wire).unwrap();
//! n += encode_frame(&Message::Register, &mut wire[n..]).unwrap();
//!
//! let mut input = &wire[..n];
//! while !input.is_empty() {
//!     let recv = tracker.handle_recv(now, conn, input);
//!     if let Some(write) = recv.write {
//!         // store write.data under write.key at write.offset
//!     }
//!     input = &input[recv.consumed..];
//! }
//!
//! // Drain until `Timeout`: frames to send, actions, events; the core picks the order.
//! let mut buf = [0u8; FRAME_BUF_LEN];
//! let mut sent = Vec::new();
//! let wake = loop {
//!     match tracker.poll_output(&mut buf) {
//!         Output::Transmit(t) => sent.extend_from_slice(&buf[..t.len]), // then t.then from storage
//!         Output::Action(Action::Close(_conn)) => { /* close the socket */ }
//!         Output::Action(_) => { /* a tracker asks for nothing else but Discard */ }
//!         Output::Event(event) => println!("{event:?}"),
//!         Output::Timeout(at) => break at,
//!     }
//! };
//! now = wake; // sleep until then (or until a socket wakes us)
//! tracker.handle_timeout(now);
//!
//! // The peer sees Hello, then Registered with the address the tracker recorded.
//! let mut decoder = FrameDecoder::new(0);
//! let mut got = Vec::new();
//! let mut rest = &sent[..];
//! while let Ok((used, Some(Item::Message(m)))) = decoder.decode(rest) {
//!     got.push(m);
//!     rest = &rest[used..];
//! }
//! assert_eq!(got.last(), Some(&Message::Registered { addr: "10.0.0.2:7000".parse().unwrap() }));
//! ```
//!
//! An adapter with storage lets [`Node::poll_stored`](node::Node::poll_stored) carry out the
//! storage actions and the journal, so it only handles the network and the user.
//!
//! # Features
//!
//! - `alloc`: tables on the heap, sized from each node's config and grown on demand (hosts);
//!   without it a node's tables live in memory the adapter passes in (see `table`).
//! - `std`: `Instant::now()` for hosts (implies `alloc`).
//! - `defmt`: log through defmt and derive `defmt::Format` on public types.
//! - `log`: log through the `log` facade. At most one of `defmt` and `log`.
//! - `testing`: the `testing` module, the helpers every test harness shares (needs `std`).
#![cfg_attr(not(any(test, feature = "std")), no_std)]
#![warn(missing_docs)]
// Input from the network or a file must never panic the core: no unwrap/expect outside tests.
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

#[cfg(feature = "alloc")]
extern crate alloc;

#[macro_use]
mod fmt;

pub mod auth;
pub mod bitmap;
pub mod conn;
pub mod io;
pub mod link;
pub mod manifest;
pub mod node;
pub mod peer;
pub mod storage;
mod table;
#[cfg(feature = "testing")]
pub mod testing;
pub mod time;
pub mod tracker;
pub mod wire;
