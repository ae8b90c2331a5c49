//! A fixed-capacity bitmap of chunks: the one bit per chunk the core may spend on a file.

use managed::ManagedSlice;

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
        get(&self.words, self.len, i)
    }

    /// Adds chunk `i`; returns true if it was not there before. Ignores `i` past the end.
    pub fn set(&mut self, i: u32) -> bool {
        let new = set(&mut self.words, self.len, i);
        self.count += u32::from(new);
        new
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

    /// Chunks `32k` to `32k + 31`, chunk `32k + i` in bit `i` (zero past the end).
    pub fn word(&self, k: usize) -> u32 {
        self.words.get(k).copied().unwrap_or(0)
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
        next_range(&self.words, self.len, from)
    }
}

// The operations on words shared by a `ChunkBitmap` and a bitmap kept in a `BitPool`.

/// Whether chunk `i` of a set over `len` chunks stored in `words` is in it.
pub(crate) fn get(words: &[u32], len: u32, i: u32) -> bool {
    i < len
        && words
            .get((i / 32) as usize)
            .is_some_and(|w| w & (1 << (i % 32)) != 0)
}

/// Adds chunk `i`; true if it was not there before (ignores `i` past the end).
pub(crate) fn set(words: &mut [u32], len: u32, i: u32) -> bool {
    if i >= len || get(words, len, i) {
        return false;
    }
    match words.get_mut((i / 32) as usize) {
        Some(w) => {
            *w |= 1 << (i % 32);
            true
        }
        None => false,
    }
}

/// The first run of set chunks starting at or after `from`.
pub(crate) fn next_range(words: &[u32], len: u32, from: u32) -> Option<ChunkRange> {
    let start = (from..len).find(|&i| get(words, len, i))?;
    let end = (start..len).find(|&i| !get(words, len, i)).unwrap_or(len);
    Some(ChunkRange { start, end })
}

/// Bitmaps of one size (`stride` words each) in memory the adapter gives: a borrowed array cut
/// into `stride`-word pieces, or an owned vector that grows a piece at a time up to a limit.
/// Pieces are addressed by index; a free piece's first word links to the next free one.
pub(crate) struct BitPool<'a> {
    words: ManagedSlice<'a, u32>,
    stride: usize,
    /// The first free piece, or `u32::MAX`.
    free: u32,
    used: usize,
    limit: usize,
}

const NO_PIECE: u32 = u32::MAX;

impl<'a> BitPool<'a> {
    /// A pool of pieces of `stride` words (at least one) over `words`, at most `limit` pieces.
    pub(crate) fn new(mut words: ManagedSlice<'a, u32>, stride: usize, limit: usize) -> Self {
        let stride = stride.max(1);
        let pieces = words.len() / stride;
        for i in 0..pieces {
            words[i * stride] = if i + 1 < pieces {
                i as u32 + 1
            } else {
                NO_PIECE
            };
        }
        BitPool {
            words,
            stride,
            free: if pieces > 0 { 0 } else { NO_PIECE },
            used: 0,
            limit: limit.min(NO_PIECE as usize),
        }
    }

    /// Bitmaps handed out.
    pub(crate) fn used(&self) -> usize {
        self.used
    }

    /// A cleared bitmap, or `None` when the pool is at its limit.
    pub(crate) fn take(&mut self) -> Option<u32> {
        if self.used >= self.limit {
            return None;
        }
        if self.free == NO_PIECE {
            match &mut self.words {
                ManagedSlice::Borrowed(_) => return None,
                #[cfg(feature = "alloc")]
                ManagedSlice::Owned(v) => {
                    let piece = (v.len() / self.stride) as u32;
                    v.resize(v.len() + self.stride, 0);
                    self.used += 1;
                    return Some(piece);
                }
            }
        }
        let piece = self.free;
        let words = self.words_mut(piece);
        let next = words.first().copied().unwrap_or(NO_PIECE);
        words.fill(0);
        self.free = next;
        self.used += 1;
        Some(piece)
    }

    /// Gives bitmap `piece` back.
    pub(crate) fn give(&mut self, piece: u32) {
        let free = self.free;
        if let Some(w) = self.words_mut(piece).first_mut() {
            *w = free;
            self.free = piece;
            self.used -= 1;
        }
    }

    /// The words of bitmap `piece`.
    pub(crate) fn words(&self, piece: u32) -> &[u32] {
        let at = piece as usize * self.stride;
        self.words.get(at..at + self.stride).unwrap_or(&[])
    }

    /// The words of bitmap `piece`.
    pub(crate) fn words_mut(&mut self, piece: u32) -> &mut [u32] {
        let at = piece as usize * self.stride;
        self.words.get_mut(at..at + self.stride).unwrap_or(&mut [])
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

    #[test]
    fn a_pool_hands_out_cleared_pieces_and_takes_them_back() {
        let mut mem = [7u32; 6];
        let mut pool = BitPool::new(ManagedSlice::Borrowed(&mut mem[..]), 2, 10);
        let (a, b, c) = (
            pool.take().unwrap(),
            pool.take().unwrap(),
            pool.take().unwrap(),
        );
        assert_eq!(pool.take(), None, "borrowed memory does not grow");
        assert!(set(pool.words_mut(b), 64, 40));
        assert_eq!(pool.words(b), &[0, 1 << 8]);
        pool.give(b);
        assert_eq!(pool.take(), Some(b));
        assert_eq!(pool.words(b), &[0, 0], "a piece comes back cleared");
        assert_eq!((a, c, pool.used()), (0, 2, 3));
    }
}
