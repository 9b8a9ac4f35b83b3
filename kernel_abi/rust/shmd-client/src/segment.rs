//! Attaching a channel segment: names, the exclusive hold, layout validation.
//!
//! Mirrors ringbuf/_segment.py (layout checks) and shmd/_lock.py (the hold),
//! with the names and the lock from kernel_abi/_rendezvous.py (generated into
//! abi.rs): a channel is `/{prefix}.{channel}` in POSIX shared memory; a client
//! holds it with a write record lock on byte 0 (the kernel drops it when the
//! client dies, and F_GETLK names the holder); attaching checks every header
//! word the protocol relies on before a pointer into the segment is formed.

use std::collections::HashSet;
use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::sync::Mutex;

use crate::abi::{
    segment_name, ChannelHeader, RingHeader, RingKind, ABI_VERSION, CHANNEL_HEADER_SIZE, CHANNEL_MAGIC, LOCK_LENGTH,
    LOCK_OFFSET, NAME_CHARS, NAME_MAX, REQUEST_SLOT_SIZE, RESERVED_NAMES, RESPONSE_SLOT_SIZE, RING_HEADER_SIZE,
    RING_MAGIC,
};
use crate::sys::{self, Lock, Mapping};
use crate::Error;

/// 1 to NAME_MAX of NAME_CHARS: what the daemon accepts, and safe inside a POSIX name.
pub fn valid_name(s: &str) -> bool {
    (1..=NAME_MAX).contains(&s.len()) && s.bytes().all(|b| NAME_CHARS.as_bytes().contains(&b))
}

pub fn check_names(prefix: &str, channel: &str) -> Result<(), Error> {
    for (what, value) in [("prefix", prefix), ("channel", channel)] {
        if !valid_name(value) {
            return Err(Error::InvalidArgument(format!(
                "{what} must be 1-{NAME_MAX} of [A-Za-z0-9_-]: {what}={value:?}"
            )));
        }
    }
    if RESERVED_NAMES.contains(&channel) {
        return Err(Error::InvalidArgument(format!(
            "channel name is reserved for the daemon's own segment: channel={channel:?}; pick another"
        )));
    }
    Ok(())
}

/// POSIX record locks never conflict within one process (and closing any of
/// its descriptors of a file drops them all), so segments held here are also
/// remembered here, before any descriptor is opened.
static HELD: Mutex<Option<HashSet<String>>> = Mutex::new(None);

/// This process's hold on a segment name; released on drop.
pub struct Held(String);

impl Held {
    fn take(segment: &str) -> Option<Held> {
        let mut held = HELD.lock().unwrap_or_else(|e| e.into_inner());
        held.get_or_insert_with(HashSet::new).insert(segment.to_owned()).then(|| Held(segment.to_owned()))
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(set) = HELD.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            set.remove(&self.0);
        }
    }
}

/// Where a ring lies in the segment and how big it is, once validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingPlace {
    pub offset: usize,
    pub capacity: u32,
}

/// Check a copy of the channel header against the mapping's size.
pub fn check_channel_header(segment: &str, h: &ChannelHeader, size: usize) -> Result<(), Error> {
    if h.magic != CHANNEL_MAGIC {
        return Err(Error::Layout(format!(
            "segment {segment} is not a shmd channel: magic={:#x} found, {CHANNEL_MAGIC:#x} expected",
            h.magic
        )));
    }
    if h.abi_version != u32::from(ABI_VERSION) {
        return Err(Error::Layout(format!(
            "segment {segment} speaks another ABI: abi_version={} found, {ABI_VERSION} expected; rebuild against the \
             daemon's abi.rs",
            h.abi_version
        )));
    }
    if h.segment_size as usize != size {
        return Err(Error::Layout(format!(
            "segment {segment}: segment_size={} found, {size} expected",
            h.segment_size
        )));
    }
    Ok(())
}

/// Check a copy of a ring header found at `offset` of a `size`-byte segment.
pub fn check_ring_header(
    segment: &str,
    what: &str,
    h: &RingHeader,
    offset: usize,
    size: usize,
    kind: RingKind,
    slot_size: usize,
) -> Result<RingPlace, Error> {
    if h.magic != RING_MAGIC {
        return Err(Error::Layout(format!(
            "segment {segment} is not a shmd channel: {what} magic={:#x} found, {RING_MAGIC:#x} expected",
            h.magic
        )));
    }
    if h.abi_version != u32::from(ABI_VERSION) {
        return Err(Error::Layout(format!(
            "segment {segment} speaks another ABI: {what} abi_version={} found, {ABI_VERSION} expected",
            h.abi_version
        )));
    }
    if h.kind != kind as u32 || h.slot_size as usize != slot_size {
        return Err(Error::Layout(format!(
            "segment {segment}: {what} kind={} slot_size={} found, kind={} slot_size={slot_size} expected",
            h.kind, h.slot_size, kind as u32
        )));
    }
    let cap = h.capacity;
    let end = (cap as usize).checked_mul(slot_size).and_then(|b| b.checked_add(offset + RING_HEADER_SIZE));
    if cap < 2 || !cap.is_power_of_two() || end.is_none_or(|end| end > size) {
        return Err(Error::Layout(format!(
            "segment {segment} has an impossible {what} capacity: capacity={cap}, size={size}"
        )));
    }
    Ok(RingPlace { offset, capacity: cap })
}

fn check_ring_offset(segment: &str, what: &str, offset: u32, size: usize) -> Result<usize, Error> {
    let off = offset as usize;
    if off < CHANNEL_HEADER_SIZE || off % 8 != 0 || off + RING_HEADER_SIZE > size {
        return Err(Error::Layout(format!(
            "segment {segment} has an impossible {what} offset: offset={offset}, size={size}"
        )));
    }
    Ok(off)
}

/// A mapped, held, validated channel segment.
pub struct Segment {
    pub name: String,
    pub map: Mapping,
    pub sq: RingPlace,
    pub cq: RingPlace,
    // Dropped after the mapping: closing the file drops the record lock, and
    // only then is the name free for another client of this process.
    _file: File,
    _held: Held,
}

fn sys_err(what: String, e: io::Error) -> Error {
    Error::Sys(format!("{what} failed: {e}"))
}

/// Anyone can create /dev/shm/<prefix>.<channel> first: trust only a segment
/// owned by the daemon's uid: $SHMD_DAEMON_UID when set, else root, this
/// process's euid or the `shmd` user (the rule of ringbuf.Trust.daemon).
fn owner_trusted(owner: u32) -> Result<bool, Error> {
    if let Some(want) = std::env::var("SHMD_DAEMON_UID").ok().filter(|v| !v.trim().is_empty()) {
        let uid = want.trim().parse::<u32>().map_err(|_| {
            Error::InvalidArgument(format!("SHMD_DAEMON_UID must be a numeric uid: SHMD_DAEMON_UID={want:?}"))
        })?;
        return Ok(uid == owner);
    }
    let service_uid = std::fs::read_to_string("/etc/passwd").ok().and_then(|passwd| {
        passwd.lines().find_map(|line| line.strip_prefix("shmd:")?.split(':').nth(1)?.parse::<u32>().ok())
    });
    Ok(owner == 0 || owner == sys::euid() || service_uid == Some(owner))
}

impl Segment {
    /// Map channel `channel` of `prefix`, hold it, validate its layout.
    pub fn attach(prefix: &str, channel: &str) -> Result<Segment, Error> {
        check_names(prefix, channel)?;
        let name = segment_name(prefix, channel);
        let held = Held::take(&name).ok_or_else(|| {
            Error::Busy(format!(
                "channel '{channel}' (prefix '{prefix}') is held by this process; detach there first or pick another \
                 channel"
            ))
        })?;
        let file = sys::shm_open_rw(&name).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => Error::NotFound(format!(
                "no channel segment {name}: is `shmd serve --prefix {prefix}` running with channel '{channel}'?"
            )),
            io::ErrorKind::PermissionDenied => match std::fs::metadata(format!("/dev/shm{name}")) {
                Ok(m) => Error::Sys(format!(
                    "cannot open {name} as uid {}: owner uid={} gid={} mode={:04o}; run as uid {} or as a member of \
                     gid {} (the daemon's --group)",
                    sys::euid(),
                    m.uid(),
                    m.gid(),
                    m.mode() & 0o7777,
                    m.uid(),
                    m.gid()
                )),
                Err(_) => sys_err(format!("shm_open({name})"), e),
            },
            _ => sys_err(format!("shm_open({name})"), e),
        })?;
        let meta = file.metadata().map_err(|e| sys_err(format!("fstat({name})"), e))?;
        if !owner_trusted(meta.uid())? {
            return Err(Error::Untrusted(format!(
                "segment {name} is not trusted: owner uid={} mode={:04o} found, the daemon's uid expected; set \
                 SHMD_DAEMON_UID to its uid if that is expected",
                meta.uid(),
                meta.mode() & 0o7777
            )));
        }
        let size = meta.len() as usize;
        if size < CHANNEL_HEADER_SIZE {
            return Err(Error::Layout(format!(
                "segment {name} is too small for a channel: size={size} found, >= {CHANNEL_HEADER_SIZE} expected"
            )));
        }
        let map = Mapping::map_shared(&file, size).map_err(|e| sys_err(format!("mmap({name})"), e))?;
        // Validate copies, so a peer rewriting the header meanwhile cannot make
        // a checked value differ from the one used.
        // SAFETY: the mapping is at least CHANNEL_HEADER_SIZE bytes and page-aligned.
        let chan: ChannelHeader = unsafe { core::ptr::read_volatile(map.as_ptr().cast::<ChannelHeader>()) };
        check_channel_header(&name, &chan, size)?;
        let ring = |what: &str, offset: u32, kind: RingKind, slot: usize| -> Result<RingPlace, Error> {
            let off = check_ring_offset(&name, what, offset, size)?;
            // SAFETY: off + RING_HEADER_SIZE <= size and off is 8-byte aligned.
            let h: RingHeader = unsafe { core::ptr::read_volatile(map.as_ptr().add(off).cast::<RingHeader>()) };
            check_ring_header(&name, what, &h, off, size, kind, slot)
        };
        let sq = ring("submission", chan.sq_offset, RingKind::Submission, REQUEST_SLOT_SIZE)?;
        let cq = ring("completion", chan.cq_offset, RingKind::Completion, RESPONSE_SLOT_SIZE)?;
        // Exclusive hold across processes: the kernel drops the lock when we die.
        if let Lock::HeldBy(pid) = sys::try_lock(&file, LOCK_OFFSET, LOCK_LENGTH) {
            let by = pid.map_or_else(|| "another process".to_owned(), |p| format!("pid {p}"));
            return Err(Error::Busy(format!(
                "channel '{channel}' (prefix '{prefix}') is held by {by}; detach there first or pick another channel"
            )));
        }
        Ok(Segment { name, map, sq, cq, _file: file, _held: held })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good_ring(kind: RingKind, slot: usize, cap: u32) -> RingHeader {
        // SAFETY: RingHeader is integers only; all-zero is a valid value.
        let mut h: RingHeader = unsafe { core::mem::zeroed() };
        h.magic = RING_MAGIC;
        h.abi_version = u32::from(ABI_VERSION);
        h.kind = kind as u32;
        h.slot_size = slot as u32;
        h.capacity = cap;
        h
    }

    #[test]
    fn names_follow_the_daemon_rule() {
        assert!(valid_name("scheduler") && valid_name("a-b_C9") && valid_name(&"x".repeat(64)));
        assert!(!valid_name("") && !valid_name("a.b") && !valid_name("a/b") && !valid_name(&"x".repeat(65)));
        assert!(check_names("ok", "stats").unwrap_err().to_string().contains("reserved"));
        let err = check_names("ok", "bad name").unwrap_err();
        assert_eq!(err, Error::InvalidArgument("channel must be 1-64 of [A-Za-z0-9_-]: channel=\"bad name\"".into()));
    }

    #[test]
    fn a_valid_ring_header_is_placed() {
        let h = good_ring(RingKind::Completion, RESPONSE_SLOT_SIZE, 64);
        let size = 256 + RING_HEADER_SIZE + 64 * RESPONSE_SLOT_SIZE;
        let place = check_ring_header("/p.c", "completion", &h, 256, size, RingKind::Completion, RESPONSE_SLOT_SIZE);
        assert_eq!(place, Ok(RingPlace { offset: 256, capacity: 64 }));
    }

    #[test]
    fn bad_ring_headers_are_refused_with_what_was_found() {
        let size = 256 + RING_HEADER_SIZE + 64 * RESPONSE_SLOT_SIZE;
        let check = |h: &RingHeader| {
            check_ring_header("/p.c", "completion", h, 256, size, RingKind::Completion, RESPONSE_SLOT_SIZE)
                .unwrap_err()
                .to_string()
        };
        let mut h = good_ring(RingKind::Completion, RESPONSE_SLOT_SIZE, 64);
        h.magic = 0xdead;
        assert!(check(&h).contains("completion magic=0xdead found"));
        let mut h = good_ring(RingKind::Completion, RESPONSE_SLOT_SIZE, 64);
        h.abi_version += 1;
        assert!(check(&h).contains(&format!("abi_version={} found", ABI_VERSION + 1)));
        let h = good_ring(RingKind::Submission, RESPONSE_SLOT_SIZE, 64);
        assert!(check(&h).contains("kind=1 slot_size=64 found, kind=2"));
        let h = good_ring(RingKind::Completion, RESPONSE_SLOT_SIZE, 48);
        assert!(check(&h).contains("impossible completion capacity: capacity=48"));
        let h = good_ring(RingKind::Completion, RESPONSE_SLOT_SIZE, 128); // slots past the end
        assert!(check(&h).contains("capacity=128"));
        let h = good_ring(RingKind::Completion, RESPONSE_SLOT_SIZE, 1 << 31); // would overflow usize math on 32-bit
        assert!(check(&h).contains("impossible"));
    }

    #[test]
    fn ring_offsets_must_be_aligned_and_inside() {
        assert!(check_ring_offset("/p.c", "submission", 260, 10_000).is_err());
        assert!(check_ring_offset("/p.c", "submission", 0, 10_000).is_err());
        assert!(check_ring_offset("/p.c", "submission", 9_984, 10_000).is_err());
        assert_eq!(check_ring_offset("/p.c", "submission", 256, 10_000), Ok(256));
    }

    #[test]
    fn channel_header_checks_magic_version_and_size() {
        // SAFETY: integers only.
        let mut h: ChannelHeader = unsafe { core::mem::zeroed() };
        h.magic = CHANNEL_MAGIC;
        h.abi_version = u32::from(ABI_VERSION);
        h.segment_size = 4096;
        assert_eq!(check_channel_header("/p.c", &h, 4096), Ok(()));
        assert!(check_channel_header("/p.c", &h, 8192).unwrap_err().to_string().contains("segment_size=4096 found"));
        h.magic = 1;
        assert!(matches!(check_channel_header("/p.c", &h, 4096), Err(Error::Layout(m)) if m.contains("magic=0x1")));
    }

    #[test]
    fn a_segment_is_held_once_per_process() {
        let first = Held::take("/unit.held").expect("free");
        assert!(Held::take("/unit.held").is_none());
        drop(first);
        assert!(Held::take("/unit.held").is_some());
    }
}
