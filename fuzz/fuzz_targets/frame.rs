//! Frame decoding of arbitrary bytes, fed in pieces whose sizes the input also chooses.
//!
//! Invariants beyond "no panic": the decoder never claims more than it was given, and a decoder
//! that stops without an item has consumed the whole piece (it never stalls on input).
#![no_main]

use libfuzzer_sys::fuzz_target;
use proto_core::wire::{FrameDecoder, Item};

fuzz_target!(|data: &[u8]| {
    let Some((&split, bytes)) = data.split_first() else {
        return;
    };
    let piece = usize::from(split % 64) + 1;
    let mut decoder = FrameDecoder::new(1 << 20);
    for mut chunk in bytes.chunks(piece) {
        while !chunk.is_empty() {
            let Ok((used, item)) = decoder.decode(chunk) else {
                return;
            };
            assert!(used <= chunk.len());
            if let Some(Item::Body { data, .. }) = &item {
                assert_eq!(data.len(), used);
            }
            if item.is_none() {
                assert_eq!(used, chunk.len());
            }
            chunk = &chunk[used..];
        }
    }
});
