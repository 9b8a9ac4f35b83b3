//! shmd_rs_tool: test and benchmark driver of the Rust client (tests/test_rust.py,
//! `python -m bench native`); the same commands and output as kernel_abi/c/tools.
//!
//!   shmd_rs_tool rt PREFIX CHANNEL [batch]   < requests.bin
//!       Reads raw request records from stdin and predicts each one through the
//!       typed API (`Client::predict`), or all as one raw batch (`predict_batch`);
//!       prints one line per request: `index status flags source out0 out1 out2 out3`.
//!       Exit status 0 when the daemon answered every request, 3 otherwise.
//!   shmd_rs_tool watch PREFIX CHANNEL SECONDS   < request.bin
//!       Predicts the one request every 2 ms (deadline 100 ms) for SECONDS and
//!       prints `source=daemon|fallback state=.. error=..` whenever the source
//!       changes, then a final `stats ...` line.
//!   shmd_rs_tool bench PREFIX CHANNEL miss|hit|batch N [BATCH]   < request.bin
//!       As kernel_abi/c/tools/shmd_bench.c: one sample (ns) per line, then
//!       `done count=.. batch=.. total_ns=.. fallbacks=.. cache_hits=..`.
//!   shmd_rs_tool hash STRING...
//!       The FNV-1a hash of each argument, in hex.

use std::io::{Read, Write};
use std::process::ExitCode;
use std::time::Duration;

use shmd_client::abi::{REQUEST_SLOT_SIZE, REQ_NO_CACHE, RESP_CACHE_HIT};
use shmd_client::{
    hash_str, now_ns, CallOptions, Client, Error, FailureFeatures, Features, MemoryFeatures, ModelId, Outputs,
    Prediction, Request, Response, Source, ThreatFeatures, WorkloadFeatures, RESP_FALLBACK,
};

/// Rule-based fallback: a recognisable marker the tests look for.
fn marker(req: &Request) -> Outputs {
    [-1.0, f64::from(req.model_id), 0.0, 0.0]
}

fn read_requests() -> Vec<Request> {
    let mut buf = Vec::new();
    std::io::stdin().read_to_end(&mut buf).expect("read stdin");
    buf.chunks_exact(REQUEST_SLOT_SIZE).map(|c| Request::from_bytes(c.try_into().expect("one slot"))).collect()
}

fn client(prefix: &str, channel: &str, cooldown_ms: u64, fallback: bool) -> Result<Client, Error> {
    let b =
        Client::builder(prefix, channel).timeout(Duration::from_secs(5)).cooldown(Duration::from_millis(cooldown_ms));
    if fallback { b.fallback(marker) } else { b }.attach()
}

/// One typed prediction of `req`: (status, flags, outputs) as a response would carry them.
fn typed<F: Features>(c: &mut Client, req: &Request) -> Result<(u16, u16, Outputs), Error> {
    let f = F::from_request(req).expect("model_id matches");
    let opts = CallOptions { deadline: None, no_cache: req.flags & REQ_NO_CACHE != 0 };
    let p = c.predict(&f, opts)?;
    let meta = p.meta();
    let flags = if meta.cache_hit { RESP_CACHE_HIT } else { 0 }
        | if meta.source == Source::Fallback { RESP_FALLBACK } else { 0 };
    Ok((0, flags, p.to_outputs()))
}

fn cmd_rt(prefix: &str, channel: &str, batch: bool) -> ExitCode {
    let mut reqs = read_requests();
    let mut c = match client(prefix, channel, 200, true) {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    let mut rows: Vec<(u16, u16, Outputs)> = Vec::with_capacity(reqs.len());
    if batch {
        let mut resps = vec![Response::default(); reqs.len()];
        if let Err(e) = c.predict_batch(&mut reqs, &mut resps) {
            return fail(&e);
        }
        rows.extend(resps.iter().map(|r| (r.status, r.flags, r.outputs)));
    } else {
        for req in &reqs {
            let row = match req.model() {
                Some(ModelId::Workload) => typed::<WorkloadFeatures>(&mut c, req),
                Some(ModelId::Threat) => typed::<ThreatFeatures>(&mut c, req),
                Some(ModelId::Failure) => typed::<FailureFeatures>(&mut c, req),
                Some(ModelId::Memory) => typed::<MemoryFeatures>(&mut c, req),
                None => Err(Error::InvalidArgument(format!("unknown model: model_id={}", req.model_id))),
            };
            match row {
                Ok(row) => rows.push(row),
                Err(e) => return fail(&e),
            }
        }
    }
    let mut out = std::io::stdout().lock();
    let mut fallbacks = 0;
    for (i, (status, flags, o)) in rows.iter().enumerate() {
        let source = if flags & RESP_FALLBACK != 0 { "fallback" } else { "daemon" };
        fallbacks += usize::from(flags & RESP_FALLBACK != 0);
        writeln!(out, "{i} {status} {flags} {source} {:?} {:?} {:?} {:?}", o[0], o[1], o[2], o[3]).unwrap();
    }
    if fallbacks > 0 {
        eprintln!("fallback answered {fallbacks}: {}", c.last_error().map_or(String::new(), Error::to_string));
        return ExitCode::from(3);
    }
    ExitCode::SUCCESS
}

fn cmd_watch(prefix: &str, channel: &str, seconds: f64) -> ExitCode {
    let Some(tmpl) = read_requests().into_iter().next() else {
        eprintln!("watch: expected one request record on stdin");
        return ExitCode::from(2);
    };
    let f = WorkloadFeatures::from_request(&tmpl).expect("a workload record");
    let mut c = match client(prefix, channel, 100, true) {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    let opts = CallOptions { deadline: Some(Duration::from_millis(100)), no_cache: true };
    let end = now_ns() + (seconds * 1e9) as u64;
    let (mut last, mut calls) = (None, 0u64);
    while now_ns() < end {
        let p = match c.predict(&f, opts) {
            Ok(p) => p,
            Err(e) => return fail(&e),
        };
        calls += 1;
        if last != Some(p.meta.source) {
            let error = match p.meta.source {
                Source::Daemon => "-".to_owned(),
                Source::Fallback => c.last_error().map_or(String::new(), |e| format!("{e:?}")),
            };
            println!(
                "source={} state={:?} out0={:?} error={error}",
                source_name(p.meta.source),
                c.state(),
                p.predicted_cpu
            );
            last = Some(p.meta.source);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let s = c.stats();
    println!(
        "stats calls={calls} daemon={} fallback={} trips={} recoveries={} misses={} dropped={}",
        s.daemon_answers, s.fallback_answers, s.trips, s.recoveries, s.deadline_misses, s.dropped
    );
    ExitCode::SUCCESS
}

fn source_name(s: Source) -> &'static str {
    match s {
        Source::Daemon => "daemon",
        Source::Fallback => "fallback",
    }
}

fn cmd_bench(prefix: &str, channel: &str, mode: &str, n: usize, batch: usize) -> ExitCode {
    let Some(mut tmpl) = read_requests().into_iter().next() else {
        eprintln!("bench: expected one request record on stdin");
        return ExitCode::from(2);
    };
    if mode != "hit" {
        tmpl.flags |= REQ_NO_CACHE;
    }
    let mut c = match client(prefix, channel, 200, false) {
        Ok(c) if c.channel().is_some() => c,
        Ok(c) => return fail(c.last_error().unwrap_or(&Error::NotFound("not attached".into()))),
        Err(e) => return fail(&e),
    };
    let mut reqs = vec![tmpl; batch];
    let mut resps = vec![Response::default(); batch];
    for _ in 0..100 {
        // Warm-up: fills the cache for `hit`, faults pages in for all modes.
        let _ = c.predict_batch(&mut reqs[..1], &mut resps[..1]);
        reqs[0] = tmpl;
    }
    let mut samples = Vec::with_capacity(n);
    let mut hits = 0usize;
    let t_start = now_ns();
    for _ in 0..n {
        reqs.iter_mut().for_each(|r| *r = tmpl);
        let t0 = now_ns();
        let rc = c.predict_batch(&mut reqs, &mut resps);
        samples.push(now_ns() - t0);
        if let Err(e) = rc {
            return fail(&e);
        }
        hits += resps.iter().filter(|r| r.flags & RESP_CACHE_HIT != 0).count();
    }
    let total = now_ns() - t_start;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for s in &samples {
        writeln!(out, "{s}").unwrap();
    }
    writeln!(out, "done count={n} batch={batch} total_ns={total} fallbacks=0 cache_hits={hits}").unwrap();
    ExitCode::SUCCESS
}

fn fail(e: &Error) -> ExitCode {
    eprintln!("shmd_rs_tool: {e}");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    match a.get(1..) {
        Some(["rt", prefix, channel, rest @ ..]) => cmd_rt(prefix, channel, rest.first() == Some(&"batch")),
        Some(["watch", prefix, channel, secs]) => cmd_watch(prefix, channel, secs.parse().unwrap_or(1.0)),
        Some(["bench", prefix, channel, mode, n, rest @ ..]) => {
            let batch = if *mode == "batch" { rest.first().and_then(|b| b.parse().ok()).unwrap_or(1) } else { 1 };
            cmd_bench(prefix, channel, mode, n.parse().unwrap_or(0).max(1), batch.max(1))
        }
        Some(["hash", words @ ..]) => {
            words.iter().for_each(|w| println!("{:016x}", hash_str(w)));
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("usage: shmd_rs_tool rt|watch|bench|hash ... (see the source's header)");
            ExitCode::from(2)
        }
    }
}
