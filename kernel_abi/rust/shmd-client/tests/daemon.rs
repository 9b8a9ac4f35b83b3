//! Against a real `shmd serve`: run by tests/test_rust.py, which starts the
//! daemon and passes its prefix in SHMD_TEST_PREFIX (channels rs1..rs5, one per test: tests run in parallel).
//! Without it these tests are ignored: `cargo test -- --include-ignored`.

use std::time::Duration;

use shmd_client::{
    CallOptions, Channel, Client, Error, Features, ModelId, Request, Response, Source, Status, ThreatFeatures,
    WorkloadFeatures,
};

fn prefix() -> String {
    std::env::var("SHMD_TEST_PREFIX").expect("SHMD_TEST_PREFIX: run through tests/test_rust.py")
}

/// The seed's workload example.
fn workload() -> WorkloadFeatures {
    WorkloadFeatures {
        historical_cpu: [0.5, 0.6, 0.55, 0.65, 0.6, 0.7, 0.65, 0.75, 0.7, 0.8],
        historical_memory: [
            209715200, 220200960, 214958080, 230686720, 220200960, 251658240, 230686720, 272629760, 251658240,
            293601280,
        ],
        historical_gpu: [0.3, 0.35, 0.32, 0.38, 0.35, 0.4, 0.38, 0.42, 0.4, 0.45],
        time_of_day: 14,
        day_of_week: 2,
        current_cpu: 0.75,
        current_memory: 272629760,
        current_gpu: 0.42,
        ..WorkloadFeatures::for_id("agent-123")
    }
}

fn fallback_marker(_: &Request) -> [f64; 4] {
    [-1.0, 0.0, 0.0, 0.0]
}

#[test]
#[ignore = "needs a running shmd serve (tests/test_rust.py)"]
fn typed_prediction_from_the_daemon_then_from_its_cache() {
    let mut c = Client::attach(&prefix(), "rs1").unwrap();
    let first = c.predict(&workload(), CallOptions { no_cache: true, ..CallOptions::default() }).unwrap();
    assert_eq!(first.meta.source, Source::Daemon);
    assert!(!first.meta.cache_hit);
    assert!((0.0..=1.0).contains(&first.predicted_cpu) && first.predicted_memory > 0);
    let again = c.predict_workload(&workload()).unwrap();
    let cached = c.predict_workload(&workload()).unwrap();
    assert!(cached.meta.cache_hit, "{again:?} then {cached:?}");
    assert_eq!(cached.predicted_cpu, first.predicted_cpu);
    assert_eq!(c.stats().daemon_answers, 3);
}

#[test]
#[ignore = "needs a running shmd serve (tests/test_rust.py)"]
fn invalid_input_names_the_field_and_is_not_hidden_by_the_fallback() {
    let mut c = Client::builder(&prefix(), "rs2").fallback(fallback_marker).attach().unwrap();
    let bad = WorkloadFeatures { current_cpu: 2.0, ..workload() };
    let err = c.predict_workload(&bad).unwrap_err();
    assert_eq!(err, Error::InvalidInput { model: ModelId::Workload, field: "current_cpu", error_field: 5 });
    assert!(err.to_string().contains("field=current_cpu"), "{err}");
    let bad = ThreatFeatures { anomaly_count: 3, ..ThreatFeatures::for_id("agent-7") }; // severities sum to 0
    assert!(matches!(c.detect_threat(&bad), Err(Error::InvalidInput { model: ModelId::Threat, .. })));
    assert_eq!(c.stats().fallback_answers, 0);
}

#[test]
#[ignore = "needs a running shmd serve (tests/test_rust.py)"]
fn a_batch_answers_in_order_with_per_item_errors() {
    let mut c = Client::attach(&prefix(), "rs3").unwrap();
    let items: Vec<WorkloadFeatures> = (0..300)
        .map(|i| WorkloadFeatures { current_cpu: if i == 7 { -1.0 } else { i as f32 / 300.0 }, ..workload() })
        .collect();
    let got = c.predict_many(&items, CallOptions { no_cache: true, ..CallOptions::default() });
    assert_eq!(got.len(), 300);
    for (i, r) in got.iter().enumerate() {
        match (i, r) {
            (7, Err(Error::InvalidInput { field: "current_cpu", .. })) => {}
            (7, other) => panic!("item 7: {other:?}"),
            (_, Ok(p)) => assert_eq!(p.meta.source, Source::Daemon),
            (_, Err(e)) => panic!("item {i}: {e}"),
        }
    }
    // Raw: an unknown model is the caller's mistake, answered UNKNOWN_MODEL, not by a fallback.
    let mut reqs = [Request::new(workload()), Request { model_id: 9, ..Request::new(workload()) }];
    let mut resps = [Response::default(); 2];
    assert_eq!(c.predict_batch(&mut reqs, &mut resps), Ok(0));
    assert_eq!((resps[0].status, resps[1].status), (Status::Ok as u16, Status::UnknownModel as u16));
    assert_eq!(resps[1].request_id, reqs[1].request_id);
}

#[test]
#[ignore = "needs a running shmd serve (tests/test_rust.py)"]
fn a_passed_deadline_goes_to_the_fallback_or_fails_without_one() {
    let late = CallOptions { deadline: Some(Duration::ZERO), no_cache: true };
    let mut with = Client::builder(&prefix(), "rs4").fallback(fallback_marker).attach().unwrap();
    let p = with.predict(&workload(), late).unwrap();
    assert_eq!((p.meta.source, p.predicted_cpu), (Source::Fallback, -1.0));
    assert_eq!(with.stats().deadline_misses, 1);
    drop(with);
    let mut without = Client::attach(&prefix(), "rs4").unwrap();
    let err = without.predict(&workload(), late).unwrap_err();
    assert!(matches!(err, Error::DeadlineExceeded | Error::TimedOut(_)), "{err:?}");
    // A reasonable deadline is met, and the breaker did not open on one miss.
    let ok = without.predict(&workload(), CallOptions { deadline: Some(Duration::from_secs(2)), no_cache: true });
    assert_eq!(ok.map(|p| p.meta.source), Ok(Source::Daemon));
}

#[test]
#[ignore = "needs a running shmd serve (tests/test_rust.py)"]
fn the_channel_layer_applies_back_pressure_and_holds_exclusively() {
    let p = prefix();
    let mut ch = Channel::attach(&p, "rs5").unwrap();
    let err = Channel::attach(&p, "rs5").err().expect("second attach refused");
    assert!(matches!(&err, Error::Busy(m) if m.contains("is held by this process")), "{err}");
    // More requests than the SQ holds: the ring takes what fits, never overwrites.
    let cap = ch.sq_capacity() as usize;
    let reqs: Vec<Request> =
        (0..cap + 5).map(|i| Request { request_id: i as u64, ..Request::new(workload()).no_cache(true) }).collect();
    let taken = ch.submit(&reqs).unwrap();
    assert!(taken <= cap && taken > 0, "taken={taken} capacity={cap}");
    let mut answers = vec![Response::default(); ch.cq_capacity() as usize];
    let (mut got, mut sent, mut seen) = (0, taken, vec![false; reqs.len()]);
    let deadline = shmd_client::now_ns() + 10_000_000_000;
    while got < reqs.len() && shmd_client::now_ns() < deadline {
        if sent < reqs.len() {
            sent += ch.submit(&reqs[sent..]).unwrap();
        }
        ch.wait(50_000, shmd_client::now_ns() + 100_000_000).unwrap();
        let n = ch.reap(&mut answers).unwrap();
        for a in &answers[..n] {
            assert_eq!(a.status, Status::Ok as u16);
            assert!(!std::mem::replace(&mut seen[a.request_id as usize], true), "one answer per request");
        }
        got += n;
        ch.nudge();
    }
    assert_eq!(got, reqs.len());
    // Nothing outstanding: wait returns 0 at its deadline.
    assert_eq!(ch.wait(1_000, shmd_client::now_ns() + 5_000_000), Ok(0));
    assert!(WorkloadFeatures::from_request(&reqs[0]).is_some());
}
