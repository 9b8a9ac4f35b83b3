//! shmd-client: ask shmd for predictions over shared memory, from Rust.
//!
//! ```no_run
//! use shmd_client::{Client, WorkloadFeatures};
//!
//! let mut client = Client::builder("shmd", "scheduler")
//!     .fallback(|_req| [0.5, 0.0, 0.0, 0.0]) // rule-based answer while the daemon is away
//!     .attach()?;
//! let features = WorkloadFeatures { current_cpu: 0.75, ..WorkloadFeatures::for_id("agent-123") };
//! let p = client.predict_workload(&features)?;
//! println!("cpu {:.2} ({:?})", p.predicted_cpu, p.meta.source);
//! # Ok::<(), shmd_client::Error>(())
//! ```
//!
//! Two layers, as in the C client (kernel_abi/c): [`Channel`] is one attached
//! channel with no policy (submit, reap, wait); [`Client`] puts it behind a
//! circuit breaker with a caller-supplied fallback. The wire format,
//! [`abi`], is generated from kernel_abi by `python -m kernel_abi.gen`. All
//! foreign calls are in `sys.rs`; the wake-up primitive is in `wake.rs`.

#[rustfmt::skip]
pub mod abi;
mod channel;
mod client;
mod error;
mod prediction;
mod request;
mod ring;
mod segment;
mod spin;
mod sys;
mod wake;

pub use abi::{
    AccessType, FailureType, ModelId, RecommendedAction, Request, Response, Severity, Status, ThreatType, RESP_FALLBACK,
};
pub use channel::{Channel, WakeStats};
pub use client::{BreakerState, CallOptions, Client, ClientBuilder, ClientStats, Fallback};
pub use error::Error;
pub use prediction::{
    FailurePrediction, MemoryPrediction, Meta, Outputs, Prediction, Source, ThreatPrediction, WorkloadPrediction,
};
pub use request::{hash_str, FailureFeatures, Features, MemoryFeatures, ThreatFeatures, WorkloadFeatures};
pub use sys::now_ns;
