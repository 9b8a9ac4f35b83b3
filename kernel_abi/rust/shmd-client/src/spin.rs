//! How long to spin for an answer before sleeping: the C client's adaptive
//! policy (`spin_window` / `learn_answer_time` in shmd_client.c), and the
//! spin's pause.
//!
//! Spinning pays only when the answer comes sooner than a wake-up of ours
//! would cost, so the window is twice the answer time learnt (at most the
//! configured bound), and nothing once answers take more than twice the
//! bound (the daemon wakes us then). An answer measured after a sleep
//! includes our own wake-up: hence the slack of 2 before giving up.

/// The first part of a spin only pauses; after it each look yields the CPU.
const YIELD_AFTER_NS: u64 = 2_000;

/// The learnt answer time and the bound it sizes the spin window under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpinPolicy {
    max_ns: u64,
    answer_ns: u64,
}

impl SpinPolicy {
    /// `max_ns` is the configured bound; 0 when this process may run on one
    /// CPU only (spinning would keep the daemon we wait for off it).
    pub fn new(max_ns: u64) -> SpinPolicy {
        let one_cpu = std::thread::available_parallelism().map_or(true, |n| n.get() < 2);
        let max_ns = if one_cpu { 0 } else { max_ns };
        SpinPolicy { max_ns, answer_ns: max_ns / 2 }
    }

    /// The spin window for the next call.
    pub fn window(&self) -> u64 {
        if self.answer_ns > 2 * self.max_ns {
            0
        } else {
            (2 * self.answer_ns).min(self.max_ns)
        }
    }

    /// Learn from a call's submit-to-answer time (EWMA, 1/8).
    pub fn learn(&mut self, sample_ns: u64) {
        let sample = sample_ns.min(4 * self.max_ns); // one preemption must not rule the next calls
        self.answer_ns = self.answer_ns - self.answer_ns / 8 + sample / 8;
    }
}

/// One wait of a spin loop that has spun `spun_ns` so far: pause for the first
/// 2 µs (an answer back to back comes within a microsecond), then yield the
/// CPU between looks. The daemon is often woken onto our CPU; a spinner the
/// scheduler does not preempt would keep it off for the whole window.
pub fn pause(spun_ns: u64) {
    if spun_ns < YIELD_AFTER_NS {
        core::hint::spin_loop();
    } else {
        std::thread::yield_now();
    }
}

#[cfg(test)]
mod tests {
    use super::SpinPolicy;

    #[test]
    fn window_follows_the_answer_time_and_stops_when_answers_are_slow() {
        let mut p = SpinPolicy { max_ns: 50_000, answer_ns: 25_000 };
        assert_eq!(p.window(), 50_000);
        for _ in 0..64 {
            p.learn(2_000);
        }
        assert!(p.window() < 6_000, "fast answers shrink the window: {}", p.window());
        for _ in 0..64 {
            p.learn(1_000_000);
        }
        assert_eq!(p.window(), 0, "answers slower than twice the bound: sleep at once");
    }
}
