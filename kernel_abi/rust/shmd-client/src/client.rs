//! The channel behind a circuit breaker (the `shmd_client_*` layer of the C
//! client, same semantics).
//!
//! When the daemon is absent (no segment, `daemon_pid` 0 or dead, heartbeat
//! stale), its channel is corrupt, or answers miss their deadline
//! (`trip_after` calls in a row; the daemon's DEADLINE_EXCEEDED, OVERLOADED
//! and INTERNAL count too), the breaker opens: the caller's fallback answers
//! (marked `RESP_FALLBACK` / `Source::Fallback`) until `cooldown` has passed;
//! then the next call re-attaches by name and probes, and an answer closes it.
//! Caller mistakes (INVALID_INPUT, UNKNOWN_MODEL, BAD_VERSION) are never
//! hidden by the fallback.

use std::time::Duration;

use crate::abi::{ModelId, Request, Response, Status, ABI_VERSION, RESP_FALLBACK};
use crate::channel::Channel;
use crate::prediction::{decode, Outputs, Prediction, Source};
use crate::request::{FailureFeatures, Features, MemoryFeatures, ThreatFeatures, WorkloadFeatures};
use crate::spin::SpinPolicy;
use crate::{segment, sys, Error, FailurePrediction, MemoryPrediction, ThreatPrediction, WorkloadPrediction};

/// Re-check the daemon's liveness this often while waiting.
const WAIT_SLICE_NS: u64 = 20_000_000;

/// Answers a request without the daemon: its four outputs (`ModelId::output_names`).
pub type Fallback = Box<dyn FnMut(&Request) -> Outputs + Send>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// The daemon answers.
    Closed,
    /// The fallback answers until the cool-down ends.
    Open,
    /// The next call probes the daemon.
    HalfOpen,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ClientStats {
    pub daemon_answers: u64,
    pub fallback_answers: u64,
    pub deadline_misses: u64,
    /// CLOSED -> OPEN transitions.
    pub trips: u64,
    /// HALF_OPEN -> CLOSED transitions.
    pub recoveries: u64,
    /// Responses for ids not outstanding (late, or duplicates after a daemon restart).
    pub dropped: u64,
}

/// Per-call options of the typed calls.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CallOptions {
    /// Answer within this long, or the fallback answers; sent to the daemon,
    /// which answers DEADLINE_EXCEEDED rather than infer late. None: the
    /// client's `timeout` bounds the wait and nothing is sent.
    pub deadline: Option<Duration>,
    /// A fresh inference even if the daemon's cache has an answer.
    pub no_cache: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Config {
    spin_ns: u64,
    timeout_ns: u64,
    cooldown_ns: u64,
    heartbeat_stale_ns: u64,
    trip_after: u32,
}

fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Configures a `Client`; defaults as the C client's.
pub struct ClientBuilder {
    prefix: String,
    channel: String,
    cfg: Config,
    fallback: Option<Fallback>,
}

impl ClientBuilder {
    /// The caller's rule-based answer while the daemon cannot give one.
    /// Without it, such calls fail with the reason.
    pub fn fallback(mut self, f: impl FnMut(&Request) -> Outputs + Send + 'static) -> Self {
        self.fallback = Some(Box::new(f));
        self
    }
    /// The longest spin for an answer before sleeping (default 50 µs); the
    /// window below it is learnt from answer times, as in the C client.
    pub fn spin(mut self, d: Duration) -> Self {
        self.cfg.spin_ns = ns(d);
        self
    }
    /// Wait bound for calls without a deadline (default 1 s).
    pub fn timeout(mut self, d: Duration) -> Self {
        self.cfg.timeout_ns = ns(d).max(1);
        self
    }
    /// Breaker open time before a probe (default 200 ms).
    pub fn cooldown(mut self, d: Duration) -> Self {
        self.cfg.cooldown_ns = ns(d);
        self
    }
    /// A daemon heartbeat older than this counts as hung (default 2 s).
    pub fn heartbeat_stale(mut self, d: Duration) -> Self {
        self.cfg.heartbeat_stale_ns = ns(d);
        self
    }
    /// Consecutive calls with missed deadlines that open the breaker (default 3).
    pub fn trip_after(mut self, n: u32) -> Self {
        self.cfg.trip_after = n.max(1);
        self
    }

    /// The client. Fails only on bad names: with the daemon away it exists
    /// anyway, breaker open, and its first call probes at once.
    pub fn attach(self) -> Result<Client, Error> {
        segment::check_names(&self.prefix, &self.channel)?;
        let mut c = Client {
            prefix: self.prefix,
            channel: self.channel,
            cfg: self.cfg,
            fallback: self.fallback,
            ch: None,
            state: BreakerState::Closed,
            open_until_ns: 0,
            misses: 0,
            next_id: 0,
            stats: ClientStats::default(),
            last_error: None,
            reaped: Vec::new(),
            outcome: Vec::new(),
            spin: SpinPolicy::new(self.cfg.spin_ns),
        };
        if let Err(e) = c.attach_channel() {
            // Open with the cool-down already over: the first call probes.
            c.state = BreakerState::Open;
            c.stats.trips += 1;
            c.last_error = Some(e);
        }
        Ok(c)
    }
}

/// What became of each request of the current call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Pending,
    Daemon,
    /// The daemon answered DEADLINE_EXCEEDED, OVERLOADED or INTERNAL (this status).
    Refused(u16),
    Fallback,
    /// Nobody could answer and there is no fallback.
    Unanswered,
}

/// The daemon's "too late / could not" statuses: the fallback answers those
/// (a status the ABI does not define stands, as a `BadAnswer`).
fn daemon_could_not(status: u16) -> bool {
    matches!(
        Status::from_raw(u64::from(status)),
        Some(Status::DeadlineExceeded | Status::Overloaded | Status::Internal)
    )
}

/// A shmd channel behind a circuit breaker. Not `Sync`: one per thread.
pub struct Client {
    prefix: String,
    channel: String,
    cfg: Config,
    fallback: Option<Fallback>,
    ch: Option<Channel>,
    state: BreakerState,
    open_until_ns: u64,
    misses: u32,
    next_id: u64,
    stats: ClientStats,
    last_error: Option<Error>,
    reaped: Vec<Response>,
    outcome: Vec<Outcome>,
    /// Sizes each call's spin window from the answer times learnt.
    spin: SpinPolicy,
}

impl Client {
    /// `Client::builder(prefix, channel).attach()`: defaults, no fallback.
    pub fn attach(prefix: &str, channel: &str) -> Result<Client, Error> {
        Client::builder(prefix, channel).attach()
    }

    pub fn builder(prefix: &str, channel: &str) -> ClientBuilder {
        ClientBuilder {
            prefix: prefix.to_owned(),
            channel: channel.to_owned(),
            cfg: Config {
                spin_ns: 50_000,
                timeout_ns: 1_000_000_000,
                cooldown_ns: 200_000_000,
                heartbeat_stale_ns: 2_000_000_000,
                trip_after: 3,
            },
            fallback: None,
        }
    }

    pub fn state(&self) -> BreakerState {
        self.state
    }
    pub fn stats(&self) -> &ClientStats {
        &self.stats
    }
    /// Why the breaker last opened, or the last call's trouble.
    pub fn last_error(&self) -> Option<&Error> {
        self.last_error.as_ref()
    }
    /// The attached channel (None while the daemon is away).
    pub fn channel(&self) -> Option<&Channel> {
        self.ch.as_ref()
    }

    fn attach_channel(&mut self) -> Result<(), Error> {
        self.ch = None;
        let ch = Channel::attach(&self.prefix, &self.channel)?;
        ch.check_daemon(self.cfg.heartbeat_stale_ns)?;
        // 63 bits like the Python client: a fresh base per attach, so answers
        // meant for an earlier holder (or re-sent after a daemon restart)
        // carry ids this client does not have outstanding.
        self.next_id = (sys::random_u64() & 0x7fff_ffff_ffff_ffff) | 1;
        self.reaped.resize(ch.cq_capacity() as usize, Response::default());
        self.ch = Some(ch);
        Ok(())
    }

    /// Open the breaker: the fallback answers until the cool-down ends.
    fn trip(&mut self, e: Error) {
        if self.state != BreakerState::Open {
            self.stats.trips += 1;
        }
        self.state = BreakerState::Open;
        self.open_until_ns = sys::now_ns().saturating_add(self.cfg.cooldown_ns);
        self.misses = 0;
        // A corrupt or orphaned mapping is of no further use; the probe re-attaches by name.
        if matches!(e, Error::Corrupt(_) | Error::Dead(_) | Error::NotFound(_)) {
            self.ch = None;
        }
        self.last_error = Some(e);
    }

    /// Predict a batch: ids, versions and times of `reqs` are filled in; model,
    /// flags, deadline_ns (absolute CLOCK_MONOTONIC, 0: the client's timeout,
    /// not sent) and payload are the caller's. All published together (one
    /// tail store per ring-full) and answered in order into `resps`; one shared
    /// deadline, the earliest non-zero one. Returns how many the fallback
    /// answered; without a fallback, an error naming why some went unanswered
    /// (their responses then carry status INTERNAL and `RESP_FALLBACK`, as in C).
    pub fn predict_batch(&mut self, reqs: &mut [Request], resps: &mut [Response]) -> Result<usize, Error> {
        if reqs.len() != resps.len() {
            return Err(Error::InvalidArgument(format!(
                "one response per request: requests={} responses={}",
                reqs.len(),
                resps.len()
            )));
        }
        self.run(reqs, resps);
        let unanswered = self.outcome.iter().filter(|o| matches!(o, Outcome::Refused(_) | Outcome::Unanswered)).count();
        if unanswered > 0 {
            return Err(self.reason());
        }
        Ok(self.outcome.iter().filter(|o| **o == Outcome::Fallback).count())
    }

    fn reason(&self) -> Error {
        self.last_error.clone().unwrap_or_else(|| Error::TimedOut("no answer".into()))
    }

    /// Every request answered by the daemon or the fallback (or marked unanswered).
    fn run(&mut self, reqs: &mut [Request], resps: &mut [Response]) {
        let n = reqs.len();
        self.outcome.clear();
        self.outcome.resize(n, Outcome::Pending);
        if n == 0 {
            return;
        }
        let now = sys::now_ns();
        let deadline = reqs.iter().map(|r| r.deadline_ns).filter(|&d| d != 0).min();
        let deadline = deadline.unwrap_or_else(|| now.saturating_add(self.cfg.timeout_ns));

        if self.state == BreakerState::Open {
            if now < self.open_until_ns {
                reqs.iter_mut().for_each(|r| r.request_id = 0); // never sent
                return self.fall_back_rest(reqs, resps);
            }
            self.state = BreakerState::HalfOpen; // cool-down over: this call probes
        }
        if self.state == BreakerState::HalfOpen || self.ch.is_none() {
            if let Err(e) = self.attach_channel() {
                self.trip(e);
                return self.fall_back_rest(reqs, resps);
            }
        }
        let checked = self.ch.as_ref().map_or(Ok(()), Channel::check);
        if let Err(e) = checked {
            self.trip(e);
            return self.fall_back_rest(reqs, resps);
        }
        let got = match self.exchange(reqs, resps, deadline) {
            Ok(got) => got,
            Err(e) => {
                // Corrupt or dead: what did arrive is still a valid answer.
                self.trip(e);
                return self.fall_back_rest(reqs, resps);
            }
        };
        // The daemon's own "too late / could not" answers go to the fallback too.
        let mut late = n - got;
        for (o, resp) in self.outcome.iter_mut().zip(resps.iter()) {
            if *o != Outcome::Daemon {
                continue;
            }
            if daemon_could_not(resp.status) {
                *o = Outcome::Refused(resp.status);
                late += usize::from(resp.status == Status::DeadlineExceeded as u16);
            } else {
                self.stats.daemon_answers += 1;
            }
        }
        if late > 0 {
            self.stats.deadline_misses += 1;
            let segment = self.ch.as_ref().map_or("", |c| c.segment());
            let e = Error::TimedOut(format!("{late} of {n} answers missed the deadline on channel {segment}"));
            self.misses += 1;
            if self.state == BreakerState::HalfOpen || self.misses >= self.cfg.trip_after {
                self.trip(e);
            } else {
                self.last_error = Some(e);
            }
        } else {
            if self.state == BreakerState::HalfOpen {
                self.stats.recoveries += 1;
            }
            self.state = BreakerState::Closed;
            self.misses = 0;
        }
        self.fall_back_rest(reqs, resps);
    }

    /// Submit everything (as space allows) and collect answers until the
    /// deadline: how many arrived, or the channel's error (corrupt, dead).
    fn exchange(&mut self, reqs: &mut [Request], resps: &mut [Response], deadline: u64) -> Result<usize, Error> {
        let Client { ch, cfg, next_id, stats, reaped, outcome, spin, .. } = self;
        let ch = ch.as_mut().ok_or_else(|| Error::NotFound("not attached".into()))?;
        let n = reqs.len();
        let first = *next_id;
        *next_id = first.wrapping_add(n as u64);
        let now = sys::now_ns();
        for (i, r) in reqs.iter_mut().enumerate() {
            r.request_id = first.wrapping_add(i as u64);
            r.abi_version = ABI_VERSION;
            r.payload_len = ModelId::from_raw(u64::from(r.model_id)).map_or(0, ModelId::payload_len);
            r.submit_ns = now;
        }
        let (mut sent, mut got) = (0, 0);
        let spin_ns = spin.window();
        loop {
            if sent < n {
                sent += ch.submit(&reqs[sent..])?;
            }
            let r = ch.reap(reaped)?;
            if r > 0 {
                ch.nudge(); // the daemon may have stopped draining our SQ for want of CQ room
            }
            for resp in &reaped[..r] {
                let idx = resp.request_id.wrapping_sub(first); // ids below first wrap to huge
                match outcome.get_mut(idx as usize) {
                    Some(o) if idx < n as u64 && *o == Outcome::Pending => {
                        resps[idx as usize] = *resp;
                        *o = Outcome::Daemon;
                        got += 1;
                    }
                    _ => stats.dropped += 1, // late answer to an earlier call, or a duplicate
                }
            }
            if got == n {
                if n <= 4 {
                    // a big batch's time says nothing about the next single answer
                    spin.learn(sys::now_ns().saturating_sub(now));
                }
                return Ok(n);
            }
            let t = sys::now_ns();
            if t >= deadline {
                return Ok(got);
            }
            if ch.wait(spin_ns, t.saturating_add(WAIT_SLICE_NS).min(deadline))? == 0 {
                // A whole slice without an answer: is the daemon still there?
                ch.check_daemon(cfg.heartbeat_stale_ns)?;
            }
        }
    }

    /// The fallback for every request the daemon did not answer.
    fn fall_back_rest(&mut self, reqs: &[Request], resps: &mut [Response]) {
        for ((o, req), resp) in self.outcome.iter_mut().zip(reqs).zip(resps.iter_mut()) {
            if *o == Outcome::Daemon {
                continue;
            }
            *resp = Response {
                request_id: req.request_id,
                model_id: req.model_id,
                flags: RESP_FALLBACK,
                status: Status::Internal as u16,
                ..Response::default()
            };
            match self.fallback.as_mut() {
                Some(f) => {
                    resp.status = Status::Ok as u16;
                    resp.outputs = f(req);
                    self.stats.fallback_answers += 1;
                    *o = Outcome::Fallback;
                }
                None if *o == Outcome::Pending => *o = Outcome::Unanswered,
                None => {}
            }
        }
    }

    /// The typed answer (or error) of request `i` of the last call.
    fn typed<P: Prediction>(&self, i: usize, resp: &Response) -> Result<P, Error> {
        match self.outcome[i] {
            Outcome::Daemon => match Error::from_response(resp) {
                None => decode(resp, Source::Daemon),
                Some(e) => Err(e),
            },
            Outcome::Fallback => decode(resp, Source::Fallback),
            Outcome::Refused(status) => {
                Err(Error::from_response(&Response { status, ..*resp }).unwrap_or(Error::Internal))
            }
            Outcome::Unanswered | Outcome::Pending => Err(self.reason()),
        }
    }

    fn request<F: Features>(f: &F, opts: CallOptions) -> Request {
        let mut req = Request::new(*f).no_cache(opts.no_cache);
        if let Some(d) = opts.deadline {
            req.deadline_ns = sys::now_ns().saturating_add(ns(d)).max(1);
        }
        req
    }

    /// One prediction of `features`' model.
    pub fn predict<F: Features>(&mut self, features: &F, opts: CallOptions) -> Result<F::Prediction, Error> {
        let mut req = [Client::request(features, opts)];
        let mut resp = [Response::default()];
        self.run(&mut req, &mut resp);
        self.typed(0, &resp[0])
    }

    /// Predictions of many items of one model, published together; one result per item.
    pub fn predict_many<F: Features>(&mut self, items: &[F], opts: CallOptions) -> Vec<Result<F::Prediction, Error>> {
        let mut reqs: Vec<Request> = items.iter().map(|f| Client::request(f, opts)).collect();
        let mut resps = vec![Response::default(); items.len()];
        self.run(&mut reqs, &mut resps);
        resps.iter().enumerate().map(|(i, r)| self.typed(i, r)).collect()
    }

    pub fn predict_workload(&mut self, f: &WorkloadFeatures) -> Result<WorkloadPrediction, Error> {
        self.predict(f, CallOptions::default())
    }
    pub fn detect_threat(&mut self, f: &ThreatFeatures) -> Result<ThreatPrediction, Error> {
        self.predict(f, CallOptions::default())
    }
    pub fn predict_failure(&mut self, f: &FailureFeatures) -> Result<FailurePrediction, Error> {
        self.predict(f, CallOptions::default())
    }
    pub fn predict_memory(&mut self, f: &MemoryFeatures) -> Result<MemoryPrediction, Error> {
        self.predict(f, CallOptions::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fallback_answers_what_the_daemon_could_not() {
        let could_not: Vec<Status> = Status::ALL.into_iter().filter(|s| daemon_could_not(*s as u16)).collect();
        assert_eq!(could_not, [Status::DeadlineExceeded, Status::Overloaded, Status::Internal]);
        assert!(!daemon_could_not(99));
    }

    #[test]
    fn without_a_daemon_the_client_exists_and_falls_back_or_says_why() {
        let mut c = Client::builder("unitnodaemon", "none").fallback(|_| [-1.0, 0.0, 0.0, 0.0]).attach().unwrap();
        assert_eq!(c.state(), BreakerState::Open);
        let p = c.predict_workload(&WorkloadFeatures::default()).unwrap();
        assert_eq!((p.meta.source, p.predicted_cpu), (Source::Fallback, -1.0));
        let mut bare = Client::attach("unitnodaemon", "none2").unwrap();
        let e = bare.predict_workload(&WorkloadFeatures::default()).unwrap_err();
        assert!(matches!(&e, Error::NotFound(m) if m.contains("no channel segment /unitnodaemon.none2")), "{e:?}");
        assert!(Client::attach("bad/prefix", "x").is_err());
    }
}
