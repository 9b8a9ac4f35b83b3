//! The wake-up primitive, and nothing else: the NEED_WAKEUP protocol around it
//! lives in channel.rs.
//!
//! ABI v2: each ring's `wake_seq` word is a shared futex (never
//! FUTEX_PRIVATE_FLAG: the daemon maps it too). A sleeper loads it before
//! setting NEED_WAKEUP and waits on the value it loaded; a waker increments it
//! and wakes it, so a wake-up between the load and the wait is never lost.

use core::sync::atomic::{AtomicU32, Ordering};

use crate::sys;

/// Wake the consumer sleeping on `word` (it set NEED_WAKEUP).
pub fn wake(word: &AtomicU32) {
    word.fetch_add(1, Ordering::SeqCst);
    sys::futex_wake(word);
}

/// Sleep while `word` still holds `expected`, until CLOCK_MONOTONIC reaches
/// `deadline_ns` or a signal arrives; the caller re-checks the ring whichever it was.
pub fn sleep_until(word: &AtomicU32, expected: u32, deadline_ns: u64) {
    sys::futex_wait_until(word, expected, deadline_ns);
}
