//! The seed's scheduler call site (kernel-agent `ai_scheduler.rs`), over shared memory.
//!
//!   cargo run --release --example predict_workload_via_mld -- [PREFIX [CHANNEL [ROUNDS]]]
//!
//! Same signature as the seed's HTTP version; the prediction comes from the
//! daemon in microseconds, or from the rule below while the daemon is away.
//! Each round asks for 8 agents and places each: above 80% CPU a dedicated
//! core, below 20% a shared one.

mod common;

use shmd_client::{Fallback, Features, Request, WorkloadFeatures, WorkloadPrediction};

/// Rule-based answer: mean of the last three CPU samples plus their trend.
fn rules() -> Fallback {
    Box::new(|req: &Request| {
        let Some(f) = WorkloadFeatures::from_request(req) else { return [0.0; 4] };
        let (h, m, g) = (f.historical_cpu, f.historical_memory, f.historical_gpu);
        let cpu = (h[7] + h[8] + h[9]) / 3.0 + (h[9] - h[7]) / 2.0;
        // predictedCpu, predictedMemory, predictedGpu, confidence (the rules are less sure than the model)
        [f64::from(cpu.clamp(0.0, 1.0)), m[9] as f64, f64::from(g[9]), 0.3]
    })
}

pub fn predict_workload_via_mld(agent_id: u64, mut features: WorkloadFeatures) -> Option<WorkloadPrediction> {
    features.agent_hash = agent_id;
    common::with_client(rules, |c| c.predict_workload(&features)).ok()
}

/// A load pattern per agent: some hot, some idle, the rest varying.
fn load(agent: u64, t: usize) -> f32 {
    let phase = (t as u64 + agent * 7) % 20;
    let wave = (if phase < 10 { phase } else { 20 - phase }) as f32 / 10.0;
    match agent % 4 {
        0 => 0.85 + 0.1 * wave,
        1 => 0.05 + 0.1 * wave,
        _ => 0.2 + 0.6 * wave,
    }
}

fn main() {
    let args = common::args("scheduler", 20);
    common::configure(&args.prefix, &args.channel);
    let (mut tally, mut dedicated, mut shared) = (common::Tally::default(), 0, 0);
    for round in 0..args.n {
        for agent in 0..8u64 {
            let mut f = WorkloadFeatures { time_of_day: 14, day_of_week: 2, ..WorkloadFeatures::default() };
            for j in 0..10 {
                f.historical_cpu[j] = load(agent, round + j);
                f.historical_gpu[j] = load(agent + 1, round + j) / 2.0;
                f.historical_memory[j] = (256 << 20) + (f.historical_cpu[j] * (1u64 << 30) as f32) as u64;
            }
            (f.current_cpu, f.current_gpu, f.current_memory) =
                (f.historical_cpu[9], f.historical_gpu[9], f.historical_memory[9]);
            let t0 = shmd_client::now_ns();
            let p = predict_workload_via_mld(shmd_client::hash_str(&format!("agent-{agent}")), f);
            tally.add(p.map(|p| p.meta.source), shmd_client::now_ns() - t0);
            match p {
                Some(p) if p.predicted_cpu > 0.8 => dedicated += 1,
                Some(p) if p.predicted_cpu < 0.2 => shared += 1,
                _ => {}
            }
        }
    }
    println!("placements: dedicated={dedicated} shared={shared}");
    tally.report("workload predictions");
}
