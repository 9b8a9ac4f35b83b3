//! The wake-up primitive, and nothing else: the NEED_WAKEUP protocol around it
//! lives in channel.rs.
//!
//! ABI v1: two named POSIX semaphores, both the daemon's (opened, never
//! created: a client creating them after the daemon unlinked its own would
//! leave them behind): `/{prefix}.doorbell` wakes the daemon (one for all SQs
//! of a prefix) and `/{prefix}.{channel}.cq` wakes this client.

use crate::sys::Semaphore;
use crate::Error;

pub struct Wake {
    doorbell: Semaphore,
    cq: Semaphore,
}

fn open(name: &str) -> Result<Semaphore, Error> {
    Semaphore::open_existing(name).map_err(|e| {
        let msg = format!("sem_open({name}) failed: {e} (is the daemon up?)");
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::NotFound(msg)
        } else {
            Error::Sys(msg)
        }
    })
}

impl Wake {
    pub fn open(prefix: &str, segment: &str) -> Result<Wake, Error> {
        Ok(Wake { doorbell: open(&format!("/{prefix}.doorbell"))?, cq: open(&format!("{segment}.cq"))? })
    }

    /// Wake the daemon (it set NEED_WAKEUP on our SQ).
    pub fn wake_daemon(&self) {
        self.doorbell.post();
    }

    /// Sleep until the daemon posts our CQ, `deadline_ns` passes or a signal
    /// arrives; the caller re-checks the ring whichever it was.
    pub fn sleep_until(&self, deadline_ns: u64) {
        self.cq.wait_until(deadline_ns);
    }
}
