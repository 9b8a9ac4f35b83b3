//! What the three seed call-site examples share: one client per thread,
//! configured once from the command line, and a latency summary.

use std::cell::RefCell;
use std::sync::OnceLock;
use std::time::Duration;

use shmd_client::{Client, Fallback, Source};

/// `[PREFIX [CHANNEL [N]]]` of the example's command line.
pub struct Args {
    pub prefix: String,
    pub channel: String,
    pub n: usize,
}

pub fn args(default_channel: &str, default_n: usize) -> Args {
    let a: Vec<String> = std::env::args().skip(1).collect();
    Args {
        prefix: a.first().cloned().unwrap_or_else(|| "shmd".into()),
        channel: a.get(1).cloned().unwrap_or_else(|| default_channel.into()),
        n: a.get(2).and_then(|n| n.parse().ok()).unwrap_or(default_n),
    }
}

static TARGET: OnceLock<(String, String)> = OnceLock::new();
thread_local! {
    static CLIENT: RefCell<Option<Client>> = const { RefCell::new(None) };
}

/// Where `with_client` attaches (call once, before the first prediction).
pub fn configure(prefix: &str, channel: &str) {
    TARGET.set((prefix.to_owned(), channel.to_owned())).expect("configured once");
}

/// Run `f` with this thread's client, attaching it on first use: a kernel
/// crate keeps one client per thread for the life of the subsystem.
pub fn with_client<R>(fallback: fn() -> Fallback, f: impl FnOnce(&mut Client) -> R) -> R {
    CLIENT.with(|cell| {
        let mut slot = cell.borrow_mut();
        let client = slot.get_or_insert_with(|| {
            let (prefix, channel) = TARGET.get().expect("configure() first");
            Client::builder(prefix, channel)
                .fallback(fallback())
                .timeout(Duration::from_millis(500)) // a tick's budget; the first call after a cold start can take ~100 ms
                .attach()
                .expect("valid prefix and channel names")
        });
        f(client)
    })
}

/// Counts of who answered, and per-call latency.
#[derive(Default)]
pub struct Tally {
    pub daemon: usize,
    pub fallback: usize,
    pub none: usize,
    latency_ns: Vec<u64>,
}

impl Tally {
    pub fn add(&mut self, source: Option<Source>, ns: u64) {
        match source {
            Some(Source::Daemon) => self.daemon += 1,
            Some(Source::Fallback) => self.fallback += 1,
            None => self.none += 1,
        }
        self.latency_ns.push(ns);
    }

    pub fn report(mut self, what: &str) {
        self.latency_ns.sort_unstable();
        let q = |p: f64| self.latency_ns[((self.latency_ns.len() - 1) as f64 * p) as usize] as f64 / 1000.0;
        println!(
            "{} {what}: daemon={} fallback={} none={}",
            self.latency_ns.len(),
            self.daemon,
            self.fallback,
            self.none
        );
        println!("latency: n={} median={:.1} us p99={:.1} us", self.latency_ns.len(), q(0.5), q(0.99));
    }
}
