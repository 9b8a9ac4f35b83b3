//! One attached channel, no policy: submit, reap, wait (the `shmd_channel_*`,
//! `shmd_sq_*`, `shmd_cq_*` layer of the C client).
//!
//! We produce the SQ and consume the CQ. Barriers, each with what the other
//! side must see first, are at the stores and fences below; the wake-up
//! handshake is io_uring's: a sleeper sets NEED_WAKEUP, fences (seq_cst) and
//! re-checks before it sleeps on the ring's `wake_seq` futex word (loaded
//! before NEED_WAKEUP is set); a publisher stores its index, fences and then
//! reads NEED_WAKEUP, and if set bumps `wake_seq` and wakes it. At least one
//! of the two sees the other's store, so no wake-up is lost.

use core::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

use crate::abi::{ChannelHeader, Request, Response, CHANNEL_MAGIC, RING_MAGIC};
use crate::ring::{Counter, Indices, Ring, Violation};
use crate::segment::Segment;
use crate::spin;
use crate::sys;
use crate::wake;
use crate::Error;

/// Counters of this side's wake-up traffic.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WakeStats {
    pub wakeups_posted: u64,
    pub sleeps: u64,
}

pub struct Channel {
    // Field order is drop order: rings before the segment they point into.
    sq: Ring,
    cq: Ring,
    seg: Segment,
    pub stats: WakeStats,
}

impl Channel {
    /// Map, hold exclusively and validate channel `channel` of `prefix`, and
    /// resume where its rings stand (the SQ from its tail, the CQ from its
    /// head: what a previous holder left in the CQ is reaped and dropped by id).
    pub fn attach(prefix: &str, channel: &str) -> Result<Channel, Error> {
        let seg = Segment::attach(prefix, channel)?;
        let base = seg.map.as_ptr();
        // SAFETY: both places were validated inside the mapping, which `seg` keeps alive beside the rings.
        let (mut sq, mut cq) = unsafe {
            (
                Ring::new(base.add(seg.sq.offset).cast(), size_of::<Request>(), Indices::new(seg.sq.capacity, 0, 0)),
                Ring::new(base.add(seg.cq.offset).cast(), size_of::<Response>(), Indices::new(seg.cq.capacity, 0, 0)),
            )
        };
        let (sq_head, sq_tail, cq_head) = (sq.load_head(), sq.load_tail(), cq.load_head());
        if sq_tail.wrapping_sub(sq_head) > u64::from(seg.sq.capacity) {
            return Err(Error::Corrupt(format!(
                "segment {}: submission indices invalid: head={sq_head} tail={sq_tail} capacity={}",
                seg.name, seg.sq.capacity
            )));
        }
        sq.idx = Indices::new(seg.sq.capacity, sq_tail, sq_head);
        cq.idx = Indices::new(seg.cq.capacity, cq_head, cq_head);
        Ok(Channel { sq, cq, seg, stats: WakeStats::default() })
    }

    /// "/{prefix}.{channel}"
    pub fn segment(&self) -> &str {
        &self.seg.name
    }

    pub fn sq_capacity(&self) -> u32 {
        self.sq.idx.capacity
    }

    pub fn cq_capacity(&self) -> u32 {
        self.cq.idx.capacity
    }

    fn header(&self) -> *mut ChannelHeader {
        self.seg.map.as_ptr().cast()
    }

    fn daemon_pid(&self) -> u32 {
        // SAFETY: the channel header is at the start of the live, page-aligned mapping.
        unsafe { AtomicU32::from_ptr(core::ptr::addr_of_mut!((*self.header()).daemon_pid)) }.load(Ordering::Relaxed)
    }

    fn heartbeat_ns(&self) -> u64 {
        // SAFETY: as daemon_pid.
        unsafe { AtomicU64::from_ptr(core::ptr::addr_of_mut!((*self.header()).daemon_heartbeat_ns)) }
            .load(Ordering::Relaxed)
    }

    /// Cheap per-call check: channel and ring magic/version still in place and
    /// a daemon pid set.
    pub fn check(&self) -> Result<(), Error> {
        // SAFETY: as daemon_pid.
        let magic =
            unsafe { AtomicU64::from_ptr(core::ptr::addr_of_mut!((*self.header()).magic)) }.load(Ordering::Relaxed);
        if magic != CHANNEL_MAGIC {
            return Err(Error::Corrupt(format!(
                "channel {} header overwritten: magic={magic:#x} found, {CHANNEL_MAGIC:#x} expected",
                self.seg.name
            )));
        }
        if !ring_layout_ok(&self.sq) || !ring_layout_ok(&self.cq) {
            return Err(Error::Corrupt(format!(
                "channel {} ring header overwritten (magic or abi_version)",
                self.seg.name
            )));
        }
        if self.daemon_pid() == 0 {
            return Err(Error::Dead(format!("channel {} has no daemon (daemon_pid=0): it stopped", self.seg.name)));
        }
        Ok(())
    }

    /// Thorough check for slow paths: `check`, plus the daemon's pid is a live
    /// process and its heartbeat is younger than `stale_ns` (0: skip).
    pub fn check_daemon(&self, stale_ns: u64) -> Result<(), Error> {
        self.check()?;
        let pid = self.daemon_pid();
        if !sys::pid_alive(pid) {
            return Err(Error::Dead(format!("channel {}: daemon pid {pid} is not running", self.seg.name)));
        }
        let (beat, now) = (self.heartbeat_ns(), sys::now_ns());
        // 0: the daemon has not done its first housekeeping yet.
        if stale_ns != 0 && beat != 0 && now > beat && now - beat > stale_ns {
            return Err(Error::Dead(format!(
                "channel {}: daemon pid {pid} is hung: heartbeat {:.0} ms old (limit {:.0} ms)",
                self.seg.name,
                (now - beat) as f64 / 1e6,
                stale_ns as f64 / 1e6
            )));
        }
        Ok(())
    }

    fn sq_corrupt(&self, v: Violation) -> Error {
        // corrupt_events sits in the consumer's block: the verdict stays private.
        Error::Corrupt(format!(
            "submission ring of {} is corrupt: head={} (last {}), tail={}, capacity={}",
            self.seg.name, v.peer, v.last_peer, v.own, v.capacity
        ))
    }

    fn cq_corrupt(&self, why: &str, v: Violation) -> Error {
        self.cq.count(Counter::CorruptEvents, 1); // consumer block: ours to write
        Error::Corrupt(format!(
            "completion ring of {} is corrupt ({why}): tail={} (last {}), head={}, capacity={}",
            self.seg.name, v.peer, v.last_peer, v.own, v.capacity
        ))
    }

    /// Free SQ slots now.
    pub fn sq_space_left(&mut self) -> Result<u32, Error> {
        if self.sq.idx.corrupt {
            return Err(self.sq_corrupt(self.sq.idx.violation_snapshot()));
        }
        // Pairs with the daemon's release store of head: its reads of those
        // slots are finished before we see the head that lets us overwrite them.
        let head = self.sq.load_head();
        self.sq.idx.space(head).map_err(|v| self.sq_corrupt(v))
    }

    fn post_if_sleeping(&mut self) {
        // Pairs with the daemon's fence between setting NEED_WAKEUP and
        // re-reading our tail: at least one of us sees the other's store.
        fence(Ordering::SeqCst);
        if self.sq.need_wakeup() {
            wake::wake(self.sq.wake_word());
            self.stats.wakeups_posted += 1;
        }
    }

    /// Copy up to `reqs.len()` requests into the SQ and publish them with one
    /// tail store (waking the daemon if it sleeps). The number accepted: 0 when
    /// the ring is full (back-pressure, never an overwrite).
    pub fn submit(&mut self, reqs: &[Request]) -> Result<usize, Error> {
        let space = self.sq_space_left()? as usize;
        let k = reqs.len().min(space);
        if k == 0 {
            if !reqs.is_empty() {
                self.sq.count(Counter::FullEvents, 1);
            }
            return Ok(0);
        }
        let tail = self.sq.idx.cached_own;
        for (j, req) in reqs[..k].iter().enumerate() {
            self.sq.write_slot(tail + j as u64, req);
        }
        self.sq.idx.cached_own = tail + k as u64;
        // The daemon must see the slot contents before it sees the tail.
        self.sq.store_tail(self.sq.idx.cached_own);
        self.sq.count(Counter::Produced, k as u64);
        self.post_if_sleeping();
        Ok(k)
    }

    /// Wake the daemon if it sleeps while our SQ has records pending (after
    /// reaping: it stops draining an SQ whose CQ is full).
    pub fn nudge(&mut self) {
        if !self.sq.idx.corrupt && self.sq.idx.cached_own != self.sq.load_head() {
            self.post_if_sleeping();
        }
    }

    /// Responses published and not yet reaped.
    pub fn cq_ready(&mut self) -> Result<u32, Error> {
        if self.cq.idx.corrupt {
            return Err(self.cq_corrupt("already marked", self.cq.idx.violation_snapshot()));
        }
        if !ring_layout_ok(&self.cq) {
            self.cq.idx.corrupt = true;
            return Err(self.cq_corrupt("header magic or abi_version overwritten", self.cq.idx.violation_snapshot()));
        }
        // Pairs with the daemon's release store of tail: the response slots
        // are written before we see the tail that covers them.
        let tail = self.cq.load_tail();
        match self.cq.idx.ready(tail) {
            Ok(n) => Ok(n),
            Err(v) => Err(self.cq_corrupt("tail moved backwards or past capacity", v)),
        }
    }

    /// Copy up to `out.len()` responses out and release their slots (one head
    /// store); the number copied.
    pub fn reap(&mut self, out: &mut [Response]) -> Result<usize, Error> {
        let n = self.cq_ready()? as usize;
        let k = n.min(out.len());
        if k == 0 {
            return Ok(0);
        }
        let head = self.cq.idx.cached_own;
        for (j, slot) in out[..k].iter_mut().enumerate() {
            *slot = self.cq.read_slot(head + j as u64);
        }
        self.cq.idx.cached_own = head + k as u64;
        // The daemon must see our reads of those slots finished before it sees
        // the head that lets it overwrite them.
        self.cq.store_head(self.cq.idx.cached_own);
        self.cq.count(Counter::Consumed, k as u64);
        Ok(k)
    }

    /// Block until a response is ready or CLOCK_MONOTONIC passes `deadline_ns`:
    /// spin up to `spin_ns`, then set NEED_WAKEUP, fence, re-check and sleep.
    /// The ready count (0: the deadline passed).
    pub fn wait(&mut self, spin_ns: u64, deadline_ns: u64) -> Result<u32, Error> {
        let n = self.cq_ready()?;
        if n != 0 {
            return Ok(n);
        }
        let start = sys::now_ns();
        let mut now = start;
        let spin_end = start.saturating_add(spin_ns).min(deadline_ns);
        // Bounded spin: a reply within the window costs no wake-up.
        while now < spin_end {
            spin::pause(now - start);
            let n = self.cq_ready()?;
            if n != 0 {
                return Ok(n);
            }
            now = sys::now_ns();
        }
        loop {
            // Loaded before NEED_WAKEUP is set: a daemon that sees the flag bumps it after this.
            let seq = self.cq.wake_word().load(Ordering::Acquire);
            self.cq.set_need_wakeup(true);
            // Pairs with the daemon's fence after publishing the CQ tail: either
            // it sees NEED_WAKEUP (and posts) or we see its tail in the re-check.
            fence(Ordering::SeqCst);
            let mut n = self.cq_ready();
            if matches!(n, Ok(0)) {
                if sys::now_ns() >= deadline_ns {
                    self.cq.set_need_wakeup(false);
                    return Ok(0);
                }
                self.stats.sleeps += 1;
                wake::sleep_until(self.cq.wake_word(), seq, deadline_ns); // woken, timeout or EINTR: the re-check decides
                n = self.cq_ready();
            }
            self.cq.set_need_wakeup(false);
            if !matches!(n, Ok(0)) {
                return n;
            }
        }
    }
}

fn ring_layout_ok(ring: &Ring) -> bool {
    ring.layout_words() == (RING_MAGIC, u32::from(crate::abi::ABI_VERSION))
}
