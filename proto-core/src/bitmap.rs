//! A fixed-capacity bitmap of chunks: the one bit per chunk the core may spend on a file.

use crate::wire::ChunkRange;

/// A set of chunk indices below `len`, stored in `W` 32-bit words (at most `32 * W` chunks).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ChunkBitmap<const W: usize> {
    words: [u32; W],
    len: u32,
    count: u32,
}

/// The bitmap cannot hold that many chunks.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct TooManyChunks;

impl<const W: usize> ChunkBitmap<W> {
    /// The most chunks a bitmap of this type can hold.
    pub const CAPACITY: u32 = (W as u32).saturating_mul(32);

    /// The most chunks a file may have in a node with these bitmaps: their capacity, or what a
    /// manifest allows, whichever is smaller.
    pub const MAX_FILE_CHUNKS: u32 = if Self::CAPACITY < crate::manifest::MAX_CHUNKS {
        Self::CAPACITY
    } else {
        crate::manifest::MAX_CHUNKS
    };

    /// An empty set over `len` chunks.
    pub fn new(len: u32) -> Result<Self, TooManyChunks> {
        if len > Self::CAPACITY {
            return Err(TooManyChunks);
        }
        Ok(ChunkBitmap {
            words: [0; W],
            len,
            count: 0,
        })
    }

    /// Number of chunks the set ranges over.
    pub fn len(&self) -> u32 {
        self.len
    }

    /// True when the set ranges over no chunks at all.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Chunks in the set.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// True when every chunk is in the set.
    pub fn is_full(&self) -> bool {
        self.count == self.len
    }

    /// Whether chunk `i` is in the set (false past the end).
    pub fn get(&self, i: u32) -> bool {
        i < self.len && self.words[(i / 32) as usize] & (1 << (i % 32)) != 0
    }

    /// Adds chunk `i`; returns true if it was not there before. Ignores `i` past the end.
    pub fn set(&mut self, i: u32) -> bool {
        if i >= self.len || self.get(i) {
            return false;
        }
        self.words[(i / 32) as usize] |= 1 << (i % 32);
        self.count += 1;
        true
    }

    /// Removes chunk `i`; returns true if it was there.
    pub fn clear(&mut self, i: u32) -> bool {
        if !self.get(i) {
            return false;
        }
        self.words[(i / 32) as usize] &= !(1 << (i % 32));
        self.count -= 1;
        true
    }

    /// Adds every chunk of `range` (clipped to the set's length); returns how many were new.
    pub fn set_range(&mut self, range: ChunkRange) -> u32 {
        (range.start..range.end.min(self.len))
            .filter(|&i| self.set(i))
            .count() as u32
    }

    /// Adds every chunk.
    pub fn fill(&mut self) {
        for i in 0..self.len {
            self.set(i);
        }
    }

    /// Byte `k` of the wire form: chunk `8k + i` in bit `i` (zero past the end).
    pub fn byte(&self, k: u32) -> u8 {
        let word = self.words.get((k / 4) as usize).copied().unwrap_or(0);
        (word >> ((k % 4) * 8)) as u8
    }

    /// Bytes of the wire form: `len.div_ceil(8)`.
    pub fn byte_len(&self) -> u32 {
        self.len.div_ceil(8)
    }

    /// The first run of set chunks starting at or after `from`.
    pub fn next_range(&self, from: u32) -> Option<ChunkRange> {
        let start = (from..self.len).find(|&i| self.get(i))?;
        let end = (start..self.len)
            .find(|&i| !self.get(i))
            .unwrap_or(self.len);
        Some(ChunkRange { start, end })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_count_and_ranges() {
        let mut b = ChunkBitmap::<2>::new(40).unwrap();
        assert!(ChunkBitmap::<2>::new(65).is_err());
        assert!(b.set(3) && !b.set(3) && !b.set(40));
        assert_eq!(b.set_range(ChunkRange { start: 30, end: 99 }), 10);
        assert_eq!(b.count(), 11);
        assert_eq!(b.next_range(0), Some(ChunkRange { start: 3, end: 4 }));
        assert_eq!(b.next_range(4), Some(ChunkRange { start: 30, end: 40 }));
        assert!(b.clear(35) && !b.clear(35));
        assert_eq!(b.next_range(31), Some(ChunkRange { start: 31, end: 35 }));
        assert!(!b.is_full());
        assert_eq!(
            (b.byte(0), b.byte(3), b.byte(4), b.byte_len()),
            (0b1000, 0b1100_0000, 0b1111_0111, 5)
        );
        b.fill();
        assert!(b.is_full() && b.count() == 40);
    }
}
