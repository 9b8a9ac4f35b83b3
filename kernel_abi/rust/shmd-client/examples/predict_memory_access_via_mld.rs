//! The seed's memory-manager call site (kernel-core `memory/ai_adaptive.rs`), over shared memory.
//!
//!   cargo run --release --example predict_memory_access_via_mld -- [PREFIX [CHANNEL [FAULTS]]]
//!
//! On each (simulated) page fault the memory manager asks where the agent
//! will touch next and prefetches when the daemon is confident; while the
//! daemon is away a stride rule answers instead.

mod common;

use shmd_client::{AccessType, Fallback, Features, MemoryFeatures, MemoryPrediction, Request};

/// Rule-based answer: the last stride continues.
fn rules() -> Fallback {
    Box::new(|req: &Request| {
        let Some(f) = MemoryFeatures::from_request(req) else { return [0.0; 4] };
        let h = f.access_history;
        let next = (h[19] + (h[19] - h[18])).clamp(0.0, 1.0);
        // nextAddress, accessProbability, accessType, confidence
        [f64::from(next), 0.5, f64::from(f.access_types[19]), 0.2]
    })
}

pub fn predict_memory_access_via_mld(agent_id: u64, mut features: MemoryFeatures) -> Option<MemoryPrediction> {
    features.agent_hash = agent_id;
    common::with_client(rules, |c| c.predict_memory(&features)).ok()
}

fn main() {
    let args = common::args("memory", 100);
    common::configure(&args.prefix, &args.channel);
    let (mut tally, mut prefetches, mut writes) = (common::Tally::default(), 0, 0);
    for fault in 0..args.n {
        let agent = (fault % 5) as u64;
        let stride = 0.002 * (agent + 1) as f32;
        let mut f = MemoryFeatures { locality_score: 0.8, ..MemoryFeatures::default() };
        for j in 0..20 {
            f.access_history[j] = (0.1 + stride * (fault + j) as f32).fract();
            f.access_timestamps[j] = 1000.0 + 10.0 * (fault + j) as f64;
            f.access_types[j] = ((fault + j) % 2) as u8;
        }
        f.current_address = f.access_history[19];
        let t0 = shmd_client::now_ns();
        let p = predict_memory_access_via_mld(shmd_client::hash_str(&format!("agent-{agent}")), f);
        tally.add(p.map(|p| p.meta.source), shmd_client::now_ns() - t0);
        if let Some(p) = p {
            prefetches += usize::from(p.access_probability > 0.5);
            writes += usize::from(p.access_type == AccessType::Write);
        }
    }
    println!("prefetches={prefetches} predicted_writes={writes}");
    tally.report("memory predictions");
}
