//! Every foreign call of the crate, and the only `unsafe` that talks to libc.
//!
//! Each wrapper below is safe to call: it takes Rust types, checks the return
//! value and turns errno into `io::Error`. The struct layouts declared here
//! (`timespec`, `struct flock`) are those of 64-bit Linux (x86-64 and aarch64
//! agree), which the `compile_error!` below enforces.
//!
//! | call                                   | used for                                   |
//! |----------------------------------------|--------------------------------------------|
//! | `shm_open`                             | open a channel segment by name (never create) |
//! | `mmap` / `munmap`                      | map it shared, read-write                  |
//! | `fcntl(F_SETLK / F_GETLK)`             | exclusive hold: record lock on one byte    |
//! | `kill(pid, 0)`                         | is the daemon's pid a live process         |
//! | `clock_gettime(CLOCK_MONOTONIC)`       | the clock of `submit_ns` / `deadline_ns`   |
//! | `getrandom`                            | a random request-id base per attach        |
//! | `syscall(SYS_futex)`                   | wake-ups (`wake.rs`)                       |
//! | `geteuid`                              | trust a segment this user made (`segment.rs`) |

use core::ffi::{c_char, c_int, c_long, c_uint, c_void};
use core::sync::atomic::AtomicU32;
use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

#[cfg(not(all(target_os = "linux", target_pointer_width = "64")))]
compile_error!("shmd-client declares 64-bit Linux struct layouts (timespec, flock)");

const O_RDWR: c_int = 2;
const PROT_READ: c_int = 1;
const PROT_WRITE: c_int = 2;
const MAP_SHARED: c_int = 1;
const F_GETLK: c_int = 5;
const F_SETLK: c_int = 6;
const F_WRLCK: i16 = 1;
const F_UNLCK: i16 = 2;
const SEEK_SET: i16 = 0;
const CLOCK_MONOTONIC: c_int = 1;
const ESRCH: i32 = 3;
#[cfg(target_arch = "x86_64")]
const SYS_FUTEX: c_long = 202;
#[cfg(target_arch = "aarch64")]
const SYS_FUTEX: c_long = 98;
const FUTEX_WAKE: c_int = 1;
const FUTEX_WAIT_BITSET: c_int = 9;
const FUTEX_BITSET_MATCH_ANY: u32 = 0xffff_ffff;

#[repr(C)]
struct Timespec {
    tv_sec: i64,
    tv_nsec: c_long,
}

/// `struct flock` on 64-bit Linux: short, short, off_t, off_t, pid_t (+ padding).
#[repr(C)]
struct Flock {
    l_type: i16,
    l_whence: i16,
    l_start: i64,
    l_len: i64,
    l_pid: i32,
}
const _: () = assert!(size_of::<Flock>() == 32 && size_of::<Timespec>() == 16);

#[link(name = "rt")]
extern "C" {
    fn shm_open(name: *const c_char, oflag: c_int, mode: u32) -> c_int;
    fn mmap(addr: *mut c_void, len: usize, prot: c_int, flags: c_int, fd: c_int, off: i64) -> *mut c_void;
    fn munmap(addr: *mut c_void, len: usize) -> c_int;
    fn fcntl(fd: c_int, cmd: c_int, ...) -> c_int;
    fn kill(pid: i32, sig: c_int) -> c_int;
    fn clock_gettime(clock: c_int, ts: *mut Timespec) -> c_int;
    fn getrandom(buf: *mut c_void, len: usize, flags: c_uint) -> isize;
    fn syscall(num: c_long, ...) -> c_long;
    fn geteuid() -> u32;
}

fn c_name(name: &str) -> io::Result<CString> {
    CString::new(name).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "name contains a NUL byte"))
}

/// CLOCK_MONOTONIC in ns: the clock of `submit_ns` and `deadline_ns`.
pub fn now_ns() -> u64 {
    let mut ts = Timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: ts is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { clock_gettime(CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// 64 random bits from the kernel, or a time/pid mix if getrandom fails.
pub fn random_u64() -> u64 {
    let mut x = 0u64;
    // SAFETY: writes at most 8 bytes into x.
    let n = unsafe { getrandom((&mut x as *mut u64).cast(), 8, 0) };
    if n == 8 {
        x
    } else {
        now_ns() ^ (u64::from(std::process::id()) << 32)
    }
}

/// This process's effective uid.
pub fn euid() -> u32 {
    // SAFETY: geteuid takes nothing and cannot fail.
    unsafe { geteuid() }
}

/// Open an existing shared-memory object read-write (never create it).
pub fn shm_open_rw(name: &str) -> io::Result<File> {
    let cname = c_name(name)?;
    // SAFETY: cname is NUL-terminated; without O_CREAT the mode is ignored.
    let fd = unsafe { shm_open(cname.as_ptr(), O_RDWR, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor that nothing else owns.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// A shared read-write mapping of a whole file, unmapped on drop.
pub struct Mapping {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is plain memory; all access to it goes through raw
// pointers and atomics in ring.rs / channel.rs, which own the synchronisation.
unsafe impl Send for Mapping {}

impl Mapping {
    pub fn map_shared(file: &File, len: usize) -> io::Result<Mapping> {
        // SAFETY: a fresh mapping chosen by the kernel; len > 0 is checked by the caller.
        let ptr = unsafe { mmap(core::ptr::null_mut(), len, PROT_READ | PROT_WRITE, MAP_SHARED, file.as_raw_fd(), 0) };
        if ptr as isize == -1 {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping { ptr: ptr.cast(), len })
    }

    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: ptr/len are exactly what mmap returned; nothing refers to it any more.
        unsafe { munmap(self.ptr.cast(), self.len) };
    }
}

/// The outcome of trying to hold bytes of a file exclusively.
#[derive(Debug, PartialEq, Eq)]
pub enum Lock {
    Taken,
    /// Held by this pid (None: the kernel would not say).
    HeldBy(Option<i32>),
}

fn flock_cmd(file: &File, cmd: c_int, l_type: i16, offset: i64, len: i64) -> io::Result<Flock> {
    let mut fl = Flock { l_type, l_whence: SEEK_SET, l_start: offset, l_len: len, l_pid: 0 };
    // SAFETY: F_SETLK/F_GETLK take a pointer to a struct flock, which fl is.
    let rc = unsafe { fcntl(file.as_raw_fd(), cmd, &mut fl as *mut Flock) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fl)
}

/// A POSIX record lock (write) on `len` bytes at `offset`: the kernel drops
/// it when the process dies or closes any descriptor of the file.
pub fn try_lock(file: &File, offset: i64, len: i64) -> Lock {
    for _ in 0..3 {
        if flock_cmd(file, F_SETLK, F_WRLCK, offset, len).is_ok() {
            return Lock::Taken;
        }
        match flock_cmd(file, F_GETLK, F_WRLCK, offset, len) {
            Err(_) => return Lock::HeldBy(None),
            Ok(probe) if probe.l_type != F_UNLCK => return Lock::HeldBy(Some(probe.l_pid)),
            Ok(_) => {} // released between our two calls: try again
        }
    }
    Lock::HeldBy(None)
}

/// False only when `pid` names no process at all (ESRCH).
pub fn pid_alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else { return false };
    // SAFETY: signal 0 only checks for existence and permission.
    let rc = unsafe { kill(pid, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() != Some(ESRCH)
}

/// FUTEX_WAKE one sleeper on `word` (shared futex: the word is in a shared mapping).
pub fn futex_wake(word: &AtomicU32) {
    // SAFETY: word is a valid, aligned u32 for the duration of the call.
    unsafe { syscall(SYS_FUTEX, word.as_ptr(), FUTEX_WAKE, 1 as c_int, core::ptr::null::<Timespec>(), 0usize, 0u32) };
}

/// Sleep while `*word == expected`, until CLOCK_MONOTONIC reaches `deadline_ns`
/// (FUTEX_WAIT_BITSET takes an absolute monotonic time), or a signal arrives.
pub fn futex_wait_until(word: &AtomicU32, expected: u32, deadline_ns: u64) {
    let ts =
        Timespec { tv_sec: (deadline_ns / 1_000_000_000) as i64, tv_nsec: (deadline_ns % 1_000_000_000) as c_long };
    // SAFETY: word is a valid, aligned u32 and ts a valid timespec for the duration of the call.
    unsafe {
        syscall(
            SYS_FUTEX,
            word.as_ptr(),
            FUTEX_WAIT_BITSET,
            expected,
            &ts as *const Timespec,
            0usize,
            FUTEX_BITSET_MATCH_ANY,
        )
    };
}
