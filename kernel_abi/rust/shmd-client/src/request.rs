//! Requests: the typed payloads per model (the seed's `*Features`), building
//! a request record from them, and reading one back.

use crate::abi::{
    FailurePayload, MemoryPayload, ModelId, Request, RequestPayload, ThreatPayload, WorkloadPayload, ABI_VERSION,
    PAYLOAD_OFFSET, REQUEST_SLOT_SIZE, REQ_NO_CACHE,
};

/// Features of a workload prediction: the wire payload itself (`Default` is all zeros).
pub type WorkloadFeatures = WorkloadPayload;
/// Features of a threat detection.
pub type ThreatFeatures = ThreatPayload;
/// Features of a failure prediction.
pub type FailureFeatures = FailurePayload;
/// Features of a memory-access prediction.
pub type MemoryFeatures = MemoryPayload;

/// 64-bit FNV-1a over the UTF-8 bytes of `s`: how agentId and component travel.
pub const fn hash_str(s: &str) -> u64 {
    let bytes = s.as_bytes();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325; // FNV-1a 64 offset basis
    let mut i = 0;
    while i < bytes.len() {
        h ^= bytes[i] as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3); // FNV-1a 64 prime; wrap-around is the hash's modulus
        i += 1;
    }
    h
}

/// A model's payload: which model it is for and how it sits in a request.
pub trait Features: Copy + Sized {
    const MODEL: ModelId;
    /// The typed answer (`crate::prediction`).
    type Prediction: crate::Prediction;
    fn into_payload(self) -> RequestPayload;
    /// This payload from a request for `Self::MODEL`.
    fn from_request(req: &Request) -> Option<Self>;
}

macro_rules! features {
    ($ty:ty, $model:ident, $field:ident, $pred:ty, $id:ident) => {
        impl Features for $ty {
            const MODEL: ModelId = ModelId::$model;
            type Prediction = $pred;
            fn into_payload(self) -> RequestPayload {
                // Zeroed first: the union's bytes past this member must be initialised too.
                let mut payload = RequestPayload { raw: [0; REQUEST_SLOT_SIZE - PAYLOAD_OFFSET] };
                payload.$field = self;
                payload
            }
            fn from_request(req: &Request) -> Option<Self> {
                // SAFETY: every union member is plain integers and floats, so any bytes are a valid value.
                (req.model_id == ModelId::$model as u16).then(|| unsafe { req.payload.$field })
            }
        }

        impl $ty {
            /// Zeroed features for the named agent or component (its FNV-1a hash travels).
            pub fn for_id(id: &str) -> Self {
                Self { $id: hash_str(id), ..Self::default() }
            }
        }
    };
}

features!(WorkloadFeatures, Workload, workload, crate::WorkloadPrediction, agent_hash);
features!(ThreatFeatures, Threat, threat, crate::ThreatPrediction, agent_hash);
features!(FailureFeatures, Failure, failure, crate::FailurePrediction, component_hash);
features!(MemoryFeatures, Memory, memory, crate::MemoryPrediction, agent_hash);

impl Default for Request {
    fn default() -> Request {
        Request {
            request_id: 0,
            model_id: 0,
            abi_version: ABI_VERSION,
            flags: 0,
            payload_len: 0,
            reserved: 0,
            submit_ns: 0,
            deadline_ns: 0,
            payload: RequestPayload { raw: [0; REQUEST_SLOT_SIZE - PAYLOAD_OFFSET] },
        }
    }
}

impl Request {
    /// A request for `features`' model; ids and times are set by the client.
    pub fn new<F: Features>(features: F) -> Request {
        let mut req = Request::for_model(F::MODEL);
        req.payload = features.into_payload();
        req
    }

    /// A zeroed request for `model` (model_id, abi_version, payload_len set).
    pub fn for_model(model: ModelId) -> Request {
        Request { model_id: model as u16, payload_len: model.payload_len(), ..Request::default() }
    }

    /// Ask for a fresh inference even if the daemon's cache has an answer.
    pub fn no_cache(mut self, on: bool) -> Request {
        self.flags = if on { self.flags | REQ_NO_CACHE } else { self.flags & !REQ_NO_CACHE };
        self
    }

    /// The model this request is for, if its model_id is one.
    pub fn model(&self) -> Option<ModelId> {
        ModelId::from_raw(u64::from(self.model_id))
    }

    /// The record's bytes, as they travel.
    pub fn as_bytes(&self) -> &[u8; REQUEST_SLOT_SIZE] {
        // SAFETY: Request is #[repr(C)], exactly REQUEST_SLOT_SIZE bytes (asserted in abi.rs), no
        // uninitialised bytes: every padding byte is an explicit field.
        unsafe { &*(self as *const Request).cast() }
    }

    /// A record from its bytes (for tools reading records written by other clients).
    pub fn from_bytes(bytes: &[u8; REQUEST_SLOT_SIZE]) -> Request {
        // SAFETY: same size; every bit pattern is a valid Request (integers, floats, a POD union).
        unsafe { core::ptr::read_unaligned(bytes.as_ptr().cast()) }
    }
}

impl core::fmt::Debug for Request {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Request")
            .field("request_id", &self.request_id)
            .field("model_id", &self.model_id)
            .field("abi_version", &self.abi_version)
            .field("flags", &self.flags)
            .field("payload_len", &self.payload_len)
            .field("submit_ns", &self.submit_ns)
            .field("deadline_ns", &self.deadline_ns)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_the_reference_values() {
        // Reference values of FNV-1a 64 (also kernel_abi.hash_str and shmd_hash_str).
        assert_eq!(hash_str(""), 0xcbf29ce484222325);
        assert_eq!(hash_str("a"), 0xaf63dc4c8601ec8c);
        assert_eq!(hash_str("foobar"), 0x85944171f73967e8);
    }

    #[test]
    fn a_request_carries_model_length_and_payload() {
        let f = WorkloadFeatures { current_cpu: 0.75, ..WorkloadFeatures::for_id("agent-123") };
        let req = Request::new(f).no_cache(true);
        assert_eq!(req.model(), Some(ModelId::Workload));
        assert_eq!((req.payload_len, req.abi_version, req.flags), (192, ABI_VERSION, REQ_NO_CACHE));
        assert_eq!(WorkloadFeatures::from_request(&req), Some(f));
        assert_eq!(ThreatFeatures::from_request(&req), None);
        assert_eq!(Request::from_bytes(req.as_bytes()).as_bytes(), req.as_bytes());
        assert_eq!(&req.as_bytes()[PAYLOAD_OFFSET..PAYLOAD_OFFSET + 8], &hash_str("agent-123").to_le_bytes());
    }
}
