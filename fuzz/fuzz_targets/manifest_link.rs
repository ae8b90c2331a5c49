//! Link text and manifest headers from arbitrary bytes.
//!
//! Invariants: a link that parses formats back to text that parses to the same link; a header
//! that validates has chunk lengths summing to its size and a hash body of 32 bytes per chunk.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proto_core::link::Link;
use proto_core::manifest::ManifestHeader;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(link) = Link::parse(text) {
            let again = Link::parse(&link.to_string()).expect("a formatted link parses");
            assert_eq!(again, link);
        }
    }
    if let Ok((header, _)) = postcard::take_from_bytes::<ManifestHeader>(data) {
        if header.validate().is_ok() {
            let count = header.chunk_count();
            // Summing every chunk is bounded: a valid header has at most 2^20 chunks.
            let total: u64 = (0..count).map(|i| u64::from(header.chunk_len(i))).sum();
            assert_eq!(total, header.size);
            assert_eq!(header.hashes_len(), u64::from(count) * 32);
            assert_eq!(header.chunk_len(count), 0);
        }
    }
});
