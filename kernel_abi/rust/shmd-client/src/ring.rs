//! One ring of an attached channel: the SPSC index protocol of ringbuf/_core.py.
//!
//! Indices are monotonically increasing u64 counters; slot = index & (capacity - 1).
//! Each side keeps its own index privately (`cached_own`) and only ever stores
//! it; it validates the peer's index on every load (never backwards,
//! `0 <= tail - head <= capacity`). A violation marks the ring corrupt, and no
//! slot is touched afterwards. `Indices` holds that logic with no memory
//! behind it (unit-tested below); `Ring` adds the shared words and slots.

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::abi::{RingHeader, RING_NEED_WAKEUP};

/// The peer broke the protocol: what we saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub peer: u64,
    pub last_peer: u64,
    pub own: u64,
    pub capacity: u32,
}

/// This side's private view of one ring's indices.
#[derive(Debug, Clone)]
pub struct Indices {
    pub capacity: u32,
    /// Producer: our tail; consumer: our head.
    pub cached_own: u64,
    /// The peer's index as last validated.
    pub cached_peer: u64,
    /// Sticky: set on the first violation.
    pub corrupt: bool,
}

impl Indices {
    pub fn new(capacity: u32, own: u64, peer: u64) -> Indices {
        Indices { capacity, cached_own: own, cached_peer: peer, corrupt: false }
    }

    fn violation(&mut self, peer: u64) -> Violation {
        self.corrupt = true;
        Violation { peer, last_peer: self.cached_peer, own: self.cached_own, capacity: self.capacity }
    }

    /// What we last knew, for the message of a ring already marked corrupt.
    pub fn violation_snapshot(&self) -> Violation {
        Violation { peer: self.cached_peer, last_peer: self.cached_peer, own: self.cached_own, capacity: self.capacity }
    }

    /// Producer: the free slots given the consumer's `head` just loaded.
    pub fn space(&mut self, head: u64) -> Result<u32, Violation> {
        let tail = self.cached_own;
        if self.corrupt || head < self.cached_peer || tail.wrapping_sub(head) > u64::from(self.capacity) {
            return Err(self.violation(head));
        }
        self.cached_peer = head;
        Ok(self.capacity - (tail - head) as u32)
    }

    /// Consumer: the records ready given the producer's `tail` just loaded.
    pub fn ready(&mut self, tail: u64) -> Result<u32, Violation> {
        if self.corrupt || tail < self.cached_peer || tail.wrapping_sub(self.cached_own) > u64::from(self.capacity) {
            return Err(self.violation(tail));
        }
        self.cached_peer = tail;
        Ok((tail - self.cached_own) as u32)
    }

    /// Byte offset of index `i`'s slot from the first slot.
    pub fn slot_offset(&self, i: u64, slot_size: usize) -> usize {
        (i & u64::from(self.capacity - 1)) as usize * slot_size
    }
}

/// One ring in a mapped segment. The pointers stay valid while the
/// `Mapping` that `Channel` owns beside it lives.
pub struct Ring {
    shm_hdr: *mut RingHeader,
    shm_slots: *mut u8,
    pub slot_size: usize,
    pub idx: Indices,
}

// SAFETY: the pointers refer to a shared mapping owned by the same Channel,
// which moves between threads as a whole.
unsafe impl Send for Ring {}

// The shared words. Each is 8-byte aligned inside a page-aligned mapping
// (attach checks ring offsets % 8), so the atomic casts are sound.
impl Ring {
    /// # Safety
    /// `hdr` must point at a ring header followed by `capacity * slot_size`
    /// bytes of slots, all inside a mapping that outlives the Ring.
    pub unsafe fn new(hdr: *mut RingHeader, slot_size: usize, idx: Indices) -> Ring {
        Ring { shm_hdr: hdr, shm_slots: hdr.cast::<u8>().add(size_of::<RingHeader>()), slot_size, idx }
    }

    fn word64(&self, field: *mut u64) -> &AtomicU64 {
        // SAFETY: field points into the live mapping and is 8-byte aligned.
        unsafe { AtomicU64::from_ptr(field) }
    }

    fn word32(&self, field: *mut u32) -> &AtomicU32 {
        // SAFETY: as word64, 4-byte aligned.
        unsafe { AtomicU32::from_ptr(field) }
    }

    pub fn load_head(&self) -> u64 {
        // SAFETY (addr_of): computes a field address, reads nothing.
        self.word64(unsafe { core::ptr::addr_of_mut!((*self.shm_hdr).head) }).load(Ordering::Acquire)
    }

    pub fn load_tail(&self) -> u64 {
        self.word64(unsafe { core::ptr::addr_of_mut!((*self.shm_hdr).tail) }).load(Ordering::Acquire)
    }

    pub fn store_head(&self, v: u64) {
        self.word64(unsafe { core::ptr::addr_of_mut!((*self.shm_hdr).head) }).store(v, Ordering::Release)
    }

    pub fn store_tail(&self, v: u64) {
        self.word64(unsafe { core::ptr::addr_of_mut!((*self.shm_hdr).tail) }).store(v, Ordering::Release)
    }

    /// (magic, abi_version) of block 0, re-read because a live segment can be scribbled on.
    pub fn layout_words(&self) -> (u64, u32) {
        let magic = self.word64(unsafe { core::ptr::addr_of_mut!((*self.shm_hdr).magic) });
        let version = self.word32(unsafe { core::ptr::addr_of_mut!((*self.shm_hdr).abi_version) });
        (magic.load(Ordering::Relaxed), version.load(Ordering::Relaxed))
    }

    /// The ring's futex word (`wake_seq`): the consumer sleeps on it, the producer bumps and wakes it.
    pub fn wake_word(&self) -> &AtomicU32 {
        self.word32(unsafe { core::ptr::addr_of_mut!((*self.shm_hdr).wake_seq) })
    }

    pub fn need_wakeup(&self) -> bool {
        let flags = self.word32(unsafe { core::ptr::addr_of_mut!((*self.shm_hdr).flags) });
        flags.load(Ordering::Acquire) & RING_NEED_WAKEUP != 0
    }

    /// Set or clear NEED_WAKEUP (the consumer's word: only we write it).
    pub fn set_need_wakeup(&self, on: bool) {
        let flags = self.word32(unsafe { core::ptr::addr_of_mut!((*self.shm_hdr).flags) });
        let old = flags.load(Ordering::Acquire);
        flags.store(if on { old | RING_NEED_WAKEUP } else { old & !RING_NEED_WAKEUP }, Ordering::Release);
    }

    /// Add to one of our own statistics counters (the peer only reads them).
    pub fn count(&self, which: Counter, n: u64) {
        let p = match which {
            Counter::Produced => unsafe { core::ptr::addr_of_mut!((*self.shm_hdr).produced) },
            Counter::FullEvents => unsafe { core::ptr::addr_of_mut!((*self.shm_hdr).full_events) },
            Counter::Consumed => unsafe { core::ptr::addr_of_mut!((*self.shm_hdr).consumed) },
            Counter::CorruptEvents => unsafe { core::ptr::addr_of_mut!((*self.shm_hdr).corrupt_events) },
        };
        let w = self.word64(p);
        w.store(w.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
    }

    /// Copy `rec` into the slot of index `i`. Only for indices we own
    /// (between the validated head and our tail + space).
    pub fn write_slot<T: Copy>(&self, i: u64, rec: &T) {
        debug_assert_eq!(size_of::<T>(), self.slot_size);
        let off = self.idx.slot_offset(i, self.slot_size);
        // SAFETY: off + slot_size lies inside the slots (capacity validated at attach).
        unsafe {
            core::ptr::copy_nonoverlapping((rec as *const T).cast::<u8>(), self.shm_slots.add(off), self.slot_size)
        }
    }

    /// Copy the record in the slot of index `i` out. `T` must be plain data
    /// for which every bit pattern is valid (the peer may write anything).
    pub fn read_slot<T: Copy>(&self, i: u64) -> T {
        debug_assert_eq!(size_of::<T>(), self.slot_size);
        let off = self.idx.slot_offset(i, self.slot_size);
        // SAFETY: in bounds as above; T is a generated #[repr(C)] struct of integers and floats.
        unsafe { core::ptr::read_unaligned(self.shm_slots.add(off).cast::<T>()) }
    }
}

#[derive(Clone, Copy)]
pub enum Counter {
    Produced,
    FullEvents,
    Consumed,
    CorruptEvents,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn space_counts_free_slots_and_follows_head() {
        let mut ix = Indices::new(8, 10, 4);
        assert_eq!(ix.space(4), Ok(2));
        assert_eq!(ix.space(10), Ok(8));
        assert_eq!(ix.cached_peer, 10);
    }

    #[test]
    fn head_moving_backwards_is_corrupt_and_sticks() {
        let mut ix = Indices::new(8, 10, 6);
        let v = ix.space(5).unwrap_err();
        assert_eq!(v, Violation { peer: 5, last_peer: 6, own: 10, capacity: 8 });
        assert!(ix.corrupt);
        assert!(ix.space(10).is_err(), "a corrupt ring stays corrupt");
    }

    #[test]
    fn head_past_tail_is_corrupt() {
        // tail - head wraps to a huge u64: more than capacity.
        assert!(Indices::new(8, 10, 6).space(11).is_err());
    }

    #[test]
    fn ready_counts_published_records() {
        let mut ix = Indices::new(4, 100, 100);
        assert_eq!(ix.ready(100), Ok(0));
        assert_eq!(ix.ready(104), Ok(4));
        assert_eq!(ix.cached_peer, 104);
    }

    #[test]
    fn tail_beyond_capacity_or_backwards_is_corrupt() {
        assert!(Indices::new(4, 100, 100).ready(105).is_err());
        let mut ix = Indices::new(4, 100, 102);
        assert!(ix.ready(101).is_err());
        assert!(ix.corrupt);
    }

    #[test]
    fn indices_near_u64_max_wrap_into_slots() {
        let mut ix = Indices::new(8, u64::MAX - 1, u64::MAX - 3);
        assert_eq!(ix.space(u64::MAX - 3), Ok(6));
        assert_eq!(ix.slot_offset(u64::MAX, 64), 7 * 64);
        assert_eq!(ix.slot_offset(8, 64), 0);
    }
}
