//! Typed answers: a response's four outputs (`ModelId::output_names`) decoded
//! as the HTTP API decodes them (shmd/_codec.py `decode_outputs`: enum outputs
//! and predictedMemory truncated to integers).

use crate::abi::{
    AccessType, FailureType, ModelId, RecommendedAction, Response, ThreatType, N_OUTPUTS, RESP_CACHE_HIT,
};
use crate::Error;

/// The four numbers of an answer, meaning per model in `ModelId::output_names`.
pub type Outputs = [f64; N_OUTPUTS];

/// Who answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Daemon,
    /// The caller's rule-based fallback (the daemon was away, late or failing).
    Fallback,
}

/// What every typed answer carries beside its outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    pub source: Source,
    /// The daemon answered from its result cache.
    pub cache_hit: bool,
    /// The model's version (0 from the fallback).
    pub model_version: u16,
}

/// A typed answer of one model.
pub trait Prediction: Sized {
    const MODEL: ModelId;
    /// Decode an OK response's outputs; `BadAnswer` if an enum output names no member.
    fn decode(outputs: &Outputs, meta: Meta) -> Result<Self, Error>;
    /// The outputs this answer stands for (what a fallback returns).
    fn to_outputs(&self) -> Outputs;
    /// Who answered, and how.
    fn meta(&self) -> Meta;
}

/// A response (status OK) as its model's typed answer.
pub fn decode<P: Prediction>(resp: &Response, source: Source) -> Result<P, Error> {
    let meta = Meta { source, cache_hit: resp.flags & RESP_CACHE_HIT != 0, model_version: resp.model_version };
    P::decode(&resp.outputs, meta)
}

/// An output as the integer Python's `int()` makes of it (truncation toward zero).
fn int_output(value: f64) -> Option<u64> {
    let t = value.trunc();
    (t.is_finite() && t >= 0.0 && t < u64::MAX as f64).then_some(t as u64)
}

fn enum_output<E>(model: ModelId, i: usize, value: f64, from_raw: fn(u64) -> Option<E>) -> Result<E, Error> {
    int_output(value).and_then(from_raw).ok_or_else(|| {
        Error::BadAnswer(format!("{} output {} names no member: {}={value}", model.name(), i, model.output_names()[i]))
    })
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WorkloadPrediction {
    pub predicted_cpu: f64,
    /// Bytes.
    pub predicted_memory: u64,
    pub predicted_gpu: f64,
    pub confidence: f64,
    pub meta: Meta,
}

impl Prediction for WorkloadPrediction {
    const MODEL: ModelId = ModelId::Workload;
    fn decode(o: &Outputs, meta: Meta) -> Result<Self, Error> {
        let predicted_memory = int_output(o[1]).unwrap_or(0); // Python: int(); negative/NaN cannot be bytes
        Ok(WorkloadPrediction { predicted_cpu: o[0], predicted_memory, predicted_gpu: o[2], confidence: o[3], meta })
    }
    fn meta(&self) -> Meta {
        self.meta
    }
    fn to_outputs(&self) -> Outputs {
        [self.predicted_cpu, self.predicted_memory as f64, self.predicted_gpu, self.confidence]
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ThreatPrediction {
    pub threat_score: f64,
    pub threat_type: ThreatType,
    pub confidence: f64,
    pub recommended_action: RecommendedAction,
    pub meta: Meta,
}

impl Prediction for ThreatPrediction {
    const MODEL: ModelId = ModelId::Threat;
    fn decode(o: &Outputs, meta: Meta) -> Result<Self, Error> {
        Ok(ThreatPrediction {
            threat_score: o[0],
            threat_type: enum_output(Self::MODEL, 1, o[1], ThreatType::from_raw)?,
            confidence: o[2],
            recommended_action: enum_output(Self::MODEL, 3, o[3], RecommendedAction::from_raw)?,
            meta,
        })
    }
    fn meta(&self) -> Meta {
        self.meta
    }
    fn to_outputs(&self) -> Outputs {
        [self.threat_score, self.threat_type as u8 as f64, self.confidence, self.recommended_action as u8 as f64]
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FailurePrediction {
    pub failure_probability: f64,
    /// ms until the predicted failure.
    pub predicted_time: f64,
    pub confidence: f64,
    pub failure_type: FailureType,
    pub meta: Meta,
}

impl Prediction for FailurePrediction {
    const MODEL: ModelId = ModelId::Failure;
    fn decode(o: &Outputs, meta: Meta) -> Result<Self, Error> {
        Ok(FailurePrediction {
            failure_probability: o[0],
            predicted_time: o[1],
            confidence: o[2],
            failure_type: enum_output(Self::MODEL, 3, o[3], FailureType::from_raw)?,
            meta,
        })
    }
    fn meta(&self) -> Meta {
        self.meta
    }
    fn to_outputs(&self) -> Outputs {
        [self.failure_probability, self.predicted_time, self.confidence, self.failure_type as u8 as f64]
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MemoryPrediction {
    /// Normalised address, [0, 1].
    pub next_address: f64,
    pub access_probability: f64,
    pub access_type: AccessType,
    pub confidence: f64,
    pub meta: Meta,
}

impl Prediction for MemoryPrediction {
    const MODEL: ModelId = ModelId::Memory;
    fn decode(o: &Outputs, meta: Meta) -> Result<Self, Error> {
        Ok(MemoryPrediction {
            next_address: o[0],
            access_probability: o[1],
            access_type: enum_output(Self::MODEL, 2, o[2], AccessType::from_raw)?,
            confidence: o[3],
            meta,
        })
    }
    fn meta(&self) -> Meta {
        self.meta
    }
    fn to_outputs(&self) -> Outputs {
        [self.next_address, self.access_probability, self.access_type as u8 as f64, self.confidence]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const META: Meta = Meta { source: Source::Daemon, cache_hit: false, model_version: 1 };

    #[test]
    fn enum_outputs_decode_like_python_int() {
        let p = ThreatPrediction::decode(&[0.9, 2.0, 0.8, 3.7], META).unwrap();
        assert_eq!(
            (p.threat_type, p.recommended_action),
            (ThreatType::PrivilegeEscalation, RecommendedAction::Isolate)
        );
        assert_eq!(p.to_outputs(), [0.9, 2.0, 0.8, 3.0]);
    }

    #[test]
    fn an_enum_output_out_of_range_is_a_bad_answer_not_a_panic() {
        for bad in [6.0, -1.0, f64::NAN, f64::INFINITY] {
            let e = ThreatPrediction::decode(&[0.9, bad, 0.8, 0.0], META).unwrap_err();
            assert!(matches!(e, Error::BadAnswer(ref m) if m.contains("threatType=")), "{e:?}");
        }
        assert!(MemoryPrediction::decode(&[0.1, 0.2, 3.0, 0.5], META).is_err());
        assert!(FailurePrediction::decode(&[0.1, 2.0, 0.5, 5.0], META).is_ok());
    }

    #[test]
    fn cache_hit_and_source_come_from_the_response() {
        let resp =
            Response { flags: RESP_CACHE_HIT, model_version: 7, outputs: [0.5, 1e9, 0.0, 0.9], ..Response::default() };
        let p: WorkloadPrediction = decode(&resp, Source::Daemon).unwrap();
        assert_eq!(p.meta, Meta { source: Source::Daemon, cache_hit: true, model_version: 7 });
        assert_eq!(p.predicted_memory, 1_000_000_000);
    }
}
