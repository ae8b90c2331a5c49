//! Connection handles and the fixed slot table the core keeps them in.

use core::fmt;

/// An opaque handle for one connection, issued by the core.
///
/// It carries a generation, so a handle kept past its connection's close can never reach the
/// connection that later reuses the same slot: the core ignores it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ConnId {
    index: u16,
    generation: u16,
}

impl ConnId {
    /// The slot index, dense from 0: adapters may use it to index their own tables.
    pub fn index(self) -> usize {
        self.index as usize
    }

    /// An id made by something that is not a core: a test harness playing a node by hand (the
    /// simulator's hostile peers) needs handles of the same type for its own connections. A
    /// core looks every id up in its own table, index and generation, so an id it did not hand
    /// out is simply ignored.
    pub const fn from_parts(index: u16, generation: u16) -> Self {
        ConnId { index, generation }
    }
}

impl fmt::Debug for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "conn#{}.{}", self.index, self.generation)
    }
}

/// The connection table is full; the adapter should refuse (close) the new socket.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct TableFull;

impl fmt::Display for TableFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("connection table full")
    }
}

impl core::error::Error for TableFull {}

/// `N` slots, each empty or holding a `T`, addressed by [`ConnId`].
pub(crate) struct Slots<T, const N: usize> {
    slots: [(u16, Option<T>); N],
}

impl<T, const N: usize> Slots<T, N> {
    pub(crate) fn new() -> Self {
        Slots {
            slots: core::array::from_fn(|_| (0, None)),
        }
    }

    pub(crate) fn insert(&mut self, value: T) -> Result<ConnId, TableFull> {
        let index = self
            .slots
            .iter()
            .position(|(_, v)| v.is_none())
            .ok_or(TableFull)?;
        let slot = &mut self.slots[index];
        slot.0 = slot.0.wrapping_add(1);
        slot.1 = Some(value);
        // N is a table size chosen at compile time; slot indices beyond u16 are not supported.
        Ok(ConnId {
            index: index as u16,
            generation: slot.0,
        })
    }

    pub(crate) fn get(&self, id: ConnId) -> Option<&T> {
        match self.slots.get(id.index as usize) {
            Some((g, Some(v))) if *g == id.generation => Some(v),
            _ => None,
        }
    }

    pub(crate) fn get_mut(&mut self, id: ConnId) -> Option<&mut T> {
        match self.slots.get_mut(id.index as usize) {
            Some((g, Some(v))) if *g == id.generation => Some(v),
            _ => None,
        }
    }

    pub(crate) fn remove(&mut self, id: ConnId) -> Option<T> {
        match self.slots.get_mut(id.index as usize) {
            Some((g, v)) if *g == id.generation => v.take(),
            _ => None,
        }
    }

    /// The id of the occupied slot at `index`, if any.
    pub(crate) fn id_at(&self, index: usize) -> Option<ConnId> {
        match self.slots.get(index) {
            Some((g, Some(_))) => Some(ConnId {
                index: index as u16,
                generation: *g,
            }),
            _ => None,
        }
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (ConnId, &T)> {
        self.slots.iter().enumerate().filter_map(|(i, (g, v))| {
            v.as_ref().map(|v| {
                (
                    ConnId {
                        index: i as u16,
                        generation: *g,
                    },
                    v,
                )
            })
        })
    }

    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = (ConnId, &mut T)> {
        self.slots.iter_mut().enumerate().filter_map(|(i, (g, v))| {
            let generation = *g;
            v.as_mut().map(|v| {
                (
                    ConnId {
                        index: i as u16,
                        generation,
                    },
                    v,
                )
            })
        })
    }
}

/// Visits table indices `0..len` starting at `*cursor` and wrapping; the first visit that
/// yields a value moves the cursor just past it, so the next round starts with the following
/// index and no connection can starve the others.
pub(crate) fn round_robin<T>(
    cursor: &mut usize,
    len: usize,
    mut visit: impl FnMut(usize) -> Option<T>,
) -> Option<T> {
    for step in 0..len {
        let index = (*cursor + step) % len;
        if let Some(t) = visit(index) {
            *cursor = (index + 1) % len;
            return Some(t);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use std::vec::Vec;

    #[test]
    fn stale_ids_never_reach_a_reused_slot() {
        let mut s = Slots::<u8, 2>::new();
        let a = s.insert(1).unwrap();
        let b = s.insert(2).unwrap();
        assert_eq!(s.insert(3), Err(TableFull));
        assert_eq!(s.remove(a), Some(1));
        let c = s.insert(4).unwrap();
        assert_eq!(c.index(), a.index());
        assert_eq!(s.get(a), None);
        assert_eq!(s.get(c), Some(&4));
        assert_eq!(s.remove(a), None);
        assert_eq!(s.iter().count(), 2);
        assert_eq!(s.id_at(1), Some(b));
    }

    #[test]
    fn round_robin_resumes_after_the_last_hit() {
        let mut cursor = 0;
        let hits = [false, true, false, true];
        let mut seen = Vec::new();
        for _ in 0..3 {
            seen.push(round_robin(&mut cursor, 4, |i| hits[i].then_some(i)));
        }
        assert_eq!(seen, [Some(1), Some(3), Some(1)]);
        assert_eq!(round_robin(&mut cursor, 4, |_| None::<()>), None);
    }
}
