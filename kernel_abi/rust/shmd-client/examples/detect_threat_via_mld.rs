//! The seed's security-subsystem call site, over shared memory.
//!
//!   cargo run --release --example detect_threat_via_mld -- [PREFIX [CHANNEL [AGENTS]]]
//!
//! The security monitor scores each agent's recent behaviour and acts on the
//! recommended action; while the daemon is away a threshold rule answers.
//! Agents are scored one call each, then all again as one batch
//! (`predict_many`, one publish for the lot).

mod common;

use shmd_client::{
    CallOptions, Fallback, Features, RecommendedAction, Request, ThreatFeatures, ThreatPrediction, ThreatType,
};

/// Rule-based answer: errors and resource pressure, thresholded.
fn rules() -> Fallback {
    Box::new(|req: &Request| {
        let Some(f) = ThreatFeatures::from_request(req) else { return [0.0; 4] };
        let score = f64::from(0.5 * f.error_rate + 0.5 * f.resource_usage).clamp(0.0, 1.0);
        let action = if score > 0.8 { RecommendedAction::Throttle } else { RecommendedAction::Monitor };
        // threatScore, threatType, confidence, recommendedAction
        [score, f64::from(ThreatType::None as u8), 0.2, f64::from(action as u8)]
    })
}

pub fn detect_threat_via_mld(agent_id: u64, mut features: ThreatFeatures) -> Option<ThreatPrediction> {
    features.agent_hash = agent_id;
    common::with_client(rules, |c| c.detect_threat(&features)).ok()
}

fn behaviour(agent: usize) -> ThreatFeatures {
    let x = (agent % 10) as f32 / 10.0;
    let mut f = ThreatFeatures::for_id(&format!("agent-{agent}"));
    (f.average_latency, f.error_rate, f.resource_usage, f.message_frequency) =
        (20.0 + 200.0 * x, x / 2.0, x, 50.0 + 500.0 * x);
    f.historical_threats[..3].copy_from_slice(&[0.1 * x, 0.2 * x, 0.4 * x]);
    f.time_since_last_threat = 5000.0;
    if agent % 3 == 0 {
        f.anomaly_count = 2;
        f.severity_counts = [1, 0, 1, 0]; // one low, one high
        f.distinct_anomaly_types = 2;
    }
    f
}

fn main() {
    let args = common::args("security", 32);
    common::configure(&args.prefix, &args.channel);
    let (mut tally, mut isolate) = (common::Tally::default(), 0);
    for agent in 0..args.n {
        let f = behaviour(agent);
        let t0 = shmd_client::now_ns();
        let p = detect_threat_via_mld(f.agent_hash, f);
        tally.add(p.map(|p| p.meta.source), shmd_client::now_ns() - t0);
        isolate += usize::from(p.is_some_and(|p| p.recommended_action >= RecommendedAction::Isolate));
    }
    tally.report("threat checks");
    let batch: Vec<ThreatFeatures> = (0..args.n).map(behaviour).collect();
    let t0 = shmd_client::now_ns();
    let answers = common::with_client(rules, |c| c.predict_many(&batch, CallOptions::default()));
    let errors = answers.iter().filter(|a| a.is_err()).count();
    let batch_isolate = answers.iter().flatten().filter(|p| p.recommended_action >= RecommendedAction::Isolate).count();
    println!(
        "batch of {}: {:.1} us, errors={errors}, isolate={isolate} (batch {batch_isolate})",
        batch.len(),
        (shmd_client::now_ns() - t0) as f64 / 1000.0
    );
}
