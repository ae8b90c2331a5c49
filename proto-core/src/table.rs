//! Tables whose memory the adapter gives.
//!
//! Every table in a node is bounded by a capacity chosen at run time, and the memory behind it
//! comes from outside: a device hands over statically allocated arrays (nothing is allocated,
//! and the capacity is the array's length), a host with the `alloc` feature gives owned
//! vectors and B-trees that start empty and grow on demand up to the configured limit. The
//! node's code is the same for both: it sees a [`Slots`] table (stable indices, O(1) insert,
//! lookup and removal) and [`managed::ManagedMap`] indexes (a sorted array searched in
//! O(log n) on a device, a `BTreeMap` on a host).
//!
//! Why `managed`: it is the crate smoltcp uses for exactly this split (socket sets and
//! neighbour caches borrowed on devices, owned with alloc), it is small, has no dependencies,
//! and its `ManagedMap` keeps the borrowed case sorted, so ordered walks (the holders of one
//! file, the earliest handshake deadline, the next connection with output) cost the same
//! O(log n) on both kinds of memory. A generic "memory" type parameter would have done the
//! same at the cost of a type parameter on every node and every helper.

use core::marker::PhantomData;

use managed::ManagedSlice;

use crate::conn::{ConnId, TableFull};

/// Marks the end of a free list; also why a table holds at most 65,535 slots.
const NONE: u16 = u16::MAX;

/// One place in a [`Slots`] table: empty or holding a value, with the generation that tells
/// the value from earlier and later occupants of the same place.
pub(crate) struct Slot<T> {
    generation: u16,
    entry: Entry<T>,
}

enum Entry<T> {
    /// Empty; the index of the next empty slot (or `NONE`).
    Free(u16),
    Used(T),
}

impl<T> Slot<T> {
    /// An empty slot, for declaring a device's static table memory. Its link is filled in
    /// when a table is made over it ([`Slots::over`]).
    pub(crate) const EMPTY: Self = Slot {
        generation: 0,
        entry: Entry::Free(NONE),
    };

    /// An empty slot built at run time. Filling an array from the `EMPTY` constant makes the
    /// compiler keep a whole slot-sized image of it in flash to copy from (2.8 KB for the
    /// firmware's four connections); writing the two fields that matter does not.
    #[allow(clippy::new_without_default)]
    pub(crate) fn new() -> Self {
        Slot {
            generation: 0,
            entry: Entry::Free(NONE),
        }
    }
}

/// Memory for a table's slots: a [`ManagedSlice`], borrowed (fixed) or owned (grows up to
/// the table's limit).
pub(crate) trait Store<T> {
    /// The slots there are now.
    fn slots(&self) -> &[T];
    /// The slots there are now.
    fn slots_mut(&mut self) -> &mut [T];
    /// Appends `value` if this memory can grow; gives it back if it cannot.
    fn push(&mut self, value: T) -> Result<(), T>;
    /// Whether [`Store::push`] can succeed.
    fn can_grow(&self) -> bool;
}

impl<T> Store<T> for ManagedSlice<'_, T> {
    fn slots(&self) -> &[T] {
        self
    }
    fn slots_mut(&mut self) -> &mut [T] {
        self
    }
    fn push(&mut self, value: T) -> Result<(), T> {
        match self {
            ManagedSlice::Borrowed(_) => Err(value),
            #[cfg(feature = "alloc")]
            ManagedSlice::Owned(v) => {
                v.push(value);
                Ok(())
            }
        }
    }
    fn can_grow(&self) -> bool {
        match self {
            ManagedSlice::Borrowed(_) => false,
            #[cfg(feature = "alloc")]
            ManagedSlice::Owned(_) => true,
        }
    }
}

/// A table of values addressed by [`ConnId`]-style handles (index and generation), over memory
/// `S`. Insert, lookup and removal are O(1): empty slots form a free list, and owned memory
/// grows by one slot when the list is empty and the table is below its limit.
///
/// The bookkeeping is four 16-bit numbers, so a device's table costs nothing beyond its slots.
pub(crate) struct Slots<T, S> {
    store: S,
    /// The first empty slot, or `NONE`.
    free: u16,
    /// Occupied slots.
    used: u16,
    /// Most slots this table may have (its memory's length, if that is fixed).
    limit: u16,
    /// Where the round-robin transmit resumes.
    pub(crate) rr: u16,
    _t: PhantomData<T>,
}

impl<T, S: Store<Slot<T>>> Slots<T, S> {
    /// A table over `store`, holding at most `limit` values (and never more than 65,535: a
    /// handle's index is 16 bits). Whatever `store` holds is treated as empty; slots past
    /// the 65,535th are never used.
    pub(crate) fn over(mut store: S, limit: usize) -> Self {
        let slots = store.slots_mut();
        let len = slots.len().min(usize::from(NONE));
        for (i, s) in slots.iter_mut().take(len).enumerate() {
            let next = if i + 1 < len { i as u16 + 1 } else { NONE };
            s.entry = Entry::Free(next);
        }
        Slots {
            free: if len > 0 { 0 } else { NONE },
            store,
            used: 0,
            limit: limit.min(usize::from(NONE)) as u16,
            rr: 0,
            _t: PhantomData,
        }
    }

    /// Slots the table has now (occupied or not).
    pub(crate) fn capacity(&self) -> usize {
        self.store.slots().len()
    }

    /// Occupied slots.
    pub(crate) fn len(&self) -> usize {
        usize::from(self.used)
    }

    /// The most values the table may hold: its limit, or its memory's length if that cannot
    /// grow.
    pub(crate) fn limit(&self) -> usize {
        let limit = usize::from(self.limit);
        if self.store.can_grow() {
            limit
        } else {
            limit.min(self.capacity())
        }
    }

    pub(crate) fn insert(&mut self, value: T) -> Result<ConnId, TableFull> {
        if self.used >= self.limit {
            return Err(TableFull);
        }
        if self.free == NONE {
            // Below the limit, so below 65,535 slots: the index fits.
            let index = self.capacity() as u16;
            self.store.push(Slot::EMPTY).map_err(|_| TableFull)?;
            self.free = index;
        }
        let index = self.free;
        let slot = self
            .store
            .slots_mut()
            .get_mut(index as usize)
            .ok_or(TableFull)?;
        let Entry::Free(next) = slot.entry else {
            debug_assert!(false, "the free list names only free slots");
            return Err(TableFull);
        };
        self.free = next;
        slot.generation = slot.generation.wrapping_add(1);
        slot.entry = Entry::Used(value);
        self.used += 1;
        Ok(ConnId::from_parts(index, slot.generation))
    }

    // Not inlined: called from a hundred places, and each inlined copy (a bounds check, the
    // generation, the entry's tag) cost the firmware flash.
    #[inline(never)]
    pub(crate) fn get(&self, id: ConnId) -> Option<&T> {
        match self.store.slots().get(id.index()) {
            Some(Slot {
                generation,
                entry: Entry::Used(v),
            }) if *generation == id.generation() => Some(v),
            _ => None,
        }
    }

    #[inline(never)]
    pub(crate) fn get_mut(&mut self, id: ConnId) -> Option<&mut T> {
        match self.store.slots_mut().get_mut(id.index()) {
            Some(Slot {
                generation,
                entry: Entry::Used(v),
            }) if *generation == id.generation() => Some(v),
            _ => None,
        }
    }

    pub(crate) fn remove(&mut self, id: ConnId) -> Option<T> {
        let free = self.free;
        let slot = self.store.slots_mut().get_mut(id.index())?;
        if slot.generation != id.generation() || matches!(slot.entry, Entry::Free(_)) {
            return None;
        }
        let Entry::Used(v) = core::mem::replace(&mut slot.entry, Entry::Free(free)) else {
            return None;
        };
        self.free = id.index() as u16;
        self.used -= 1;
        Some(v)
    }

    /// The id of the occupied slot at `index`, if any.
    pub(crate) fn id_at(&self, index: usize) -> Option<ConnId> {
        match self.store.slots().get(index) {
            Some(Slot {
                generation,
                entry: Entry::Used(_),
            }) => Some(ConnId::from_parts(index as u16, *generation)),
            _ => None,
        }
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (ConnId, &T)> {
        self.store
            .slots()
            .iter()
            .enumerate()
            .filter_map(|(i, s)| match &s.entry {
                Entry::Used(v) => Some((ConnId::from_parts(i as u16, s.generation), v)),
                Entry::Free(_) => None,
            })
    }

    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = (ConnId, &mut T)> {
        self.store
            .slots_mut()
            .iter_mut()
            .enumerate()
            .filter_map(|(i, s)| match &mut s.entry {
                Entry::Used(v) => Some((ConnId::from_parts(i as u16, s.generation), v)),
                Entry::Free(_) => None,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use std::vec::Vec;

    #[test]
    fn stale_ids_never_reach_a_reused_slot() {
        let mut mem = [Slot::EMPTY, Slot::EMPTY];
        let mut s: Slots<u8, ManagedSlice<'_, Slot<u8>>> =
            Slots::over(ManagedSlice::Borrowed(&mut mem[..]), 2);
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
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn owned_memory_grows_to_its_limit_and_reuses_freed_slots() {
        let mut s: Slots<u32, ManagedSlice<'_, Slot<u32>>> =
            Slots::over(ManagedSlice::Owned(Vec::new()), 3);
        let ids: Vec<_> = (0..3).map(|v| s.insert(v).unwrap()).collect();
        assert_eq!(s.capacity(), 3);
        assert_eq!(s.insert(9), Err(TableFull));
        s.remove(ids[1]);
        let again = s.insert(7).unwrap();
        assert_eq!(again.index(), 1);
        assert_eq!(
            s.capacity(),
            3,
            "a freed slot is reused before the table grows"
        );
        assert_eq!(s.get(again), Some(&7));
    }

    #[test]
    fn borrowed_memory_is_fixed() {
        let mut mem = [Slot::EMPTY, Slot::EMPTY];
        let mut s: Slots<u8, ManagedSlice<'_, Slot<u8>>> =
            Slots::over(ManagedSlice::Borrowed(&mut mem[..]), 10);
        s.insert(1).unwrap();
        s.insert(2).unwrap();
        assert_eq!(s.insert(3), Err(TableFull));
    }
}

/// A first-in, first-out queue over memory the adapter gives: a borrowed array (fixed), or an
/// owned vector that grows up to a limit.
pub(crate) struct Ring<'a, T> {
    buf: ManagedSlice<'a, Option<T>>,
    head: usize,
    len: usize,
    limit: usize,
}

impl<'a, T> Ring<'a, T> {
    /// An empty queue over `buf` holding at most `limit` items.
    pub(crate) fn new(mut buf: ManagedSlice<'a, Option<T>>, limit: usize) -> Self {
        buf.iter_mut().for_each(|x| *x = None);
        Ring {
            buf,
            head: 0,
            len: 0,
            limit,
        }
    }

    /// Appends `item`, or gives it back when the queue is full.
    pub(crate) fn push(&mut self, item: T) -> Result<(), T> {
        if self.len >= self.limit {
            return Err(item);
        }
        if self.len == self.buf.len() {
            match &mut self.buf {
                ManagedSlice::Borrowed(_) => return Err(item),
                #[cfg(feature = "alloc")]
                ManagedSlice::Owned(v) => {
                    // Unwrap the ring so the new place is at its end.
                    v.rotate_left(self.head);
                    self.head = 0;
                    v.push(None);
                }
            }
        }
        let at = (self.head + self.len) % self.buf.len();
        self.buf[at] = Some(item);
        self.len += 1;
        Ok(())
    }

    /// Takes the oldest item.
    pub(crate) fn pop(&mut self) -> Option<T> {
        if self.len == 0 {
            return None;
        }
        let item = self.buf[self.head].take();
        self.head = (self.head + 1) % self.buf.len();
        self.len -= 1;
        item
    }
}

#[cfg(test)]
mod ring_tests {
    use super::*;
    extern crate std;
    use std::vec::Vec;

    #[test]
    fn a_ring_keeps_order_across_wrap_and_growth() {
        let mut r = Ring::new(ManagedSlice::Owned(Vec::new()), 4);
        for i in 0..3 {
            r.push(i).unwrap();
        }
        assert_eq!(r.pop(), Some(0));
        r.push(3).unwrap();
        r.push(4).unwrap();
        assert_eq!(r.push(5), Err(5), "the limit holds");
        let got: Vec<_> = core::iter::from_fn(|| r.pop()).collect();
        assert_eq!(got, [1, 2, 3, 4]);
        let mut mem = [None, None];
        let mut b = Ring::new(ManagedSlice::Borrowed(&mut mem[..]), 10);
        b.push('a').unwrap();
        b.push('b').unwrap();
        assert_eq!(b.push('c'), Err('c'), "borrowed memory does not grow");
    }
}

/// How many entries a table over `memory` may hold: `limit`, or the memory's length if it
/// cannot grow.
pub(crate) fn capacity<T>(memory: &ManagedSlice<'_, T>, limit: u16) -> u16 {
    if memory.can_grow() {
        limit
    } else {
        u16::try_from(memory.len()).unwrap_or(u16::MAX).min(limit)
    }
}

/// A free place in `table`: the first empty one, or a new one at the end if its memory can
/// grow and it has fewer than `limit` places. `None` when full.
pub(crate) fn vacancy<T>(table: &mut ManagedSlice<'_, Option<T>>, limit: usize) -> Option<usize> {
    if let Some(i) = table.iter().take(limit).position(Option::is_none) {
        return Some(i);
    }
    match table {
        ManagedSlice::Borrowed(_) => None,
        #[cfg(feature = "alloc")]
        ManagedSlice::Owned(v) if v.len() < limit => {
            v.push(None);
            Some(v.len() - 1)
        }
        #[cfg(feature = "alloc")]
        ManagedSlice::Owned(_) => None,
    }
}
