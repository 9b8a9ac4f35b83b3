//! The crate's one error type: what went wrong, with a message that names it.

use std::fmt;

use crate::abi::{ModelId, Response, Status};

/// Everything a call can fail with. Channel errors carry a message of the form
/// "what: name=value" with the likely fix; daemon answers map one variant per
/// `Status`.
#[derive(Debug, Clone, PartialEq)]
pub enum Error {
    /// No segment or wake-up object: the daemon is not serving this channel.
    NotFound(String),
    /// Another process (or another client in this one) holds the channel.
    Busy(String),
    /// The segment has another magic, ABI version or layout.
    Layout(String),
    /// A peer index or header word went invalid while attached.
    Corrupt(String),
    /// The daemon's pid is 0 or names no live process, or its heartbeat is stale.
    Dead(String),
    /// No answer before the deadline.
    TimedOut(String),
    /// A system call failed.
    Sys(String),
    /// A bad argument (the message names it).
    InvalidArgument(String),
    /// The segment's owner is not the uid the daemon is expected to run as.
    Untrusted(String),
    /// Status INVALID_INPUT: the daemon rejected a payload field.
    InvalidInput { model: ModelId, field: &'static str, error_field: u16 },
    /// Status UNKNOWN_MODEL: the daemon serves no model with this id.
    UnknownModel { model_id: u16 },
    /// Status DEADLINE_EXCEEDED: the request's deadline had passed before inference.
    DeadlineExceeded,
    /// Status OVERLOADED: the daemon shed the request.
    Overloaded,
    /// Status INTERNAL: the daemon failed; the request itself may be fine.
    Internal,
    /// Status BAD_VERSION: the record's abi_version is not the daemon's.
    BadVersion,
    /// A status value the ABI does not define, or an output that decodes to no
    /// member of its enum (a hostile or buggy peer, or fallback).
    BadAnswer(String),
}

impl Error {
    /// The error a response's status stands for, or None for OK.
    pub fn from_response(resp: &Response) -> Option<Error> {
        let model = ModelId::from_raw(u64::from(resp.model_id));
        Some(match Status::from_raw(u64::from(resp.status)) {
            Some(Status::Ok) => return None,
            Some(Status::InvalidInput) => match model {
                Some(model) => Error::InvalidInput {
                    model,
                    field: usize::from(resp.error_field)
                        .checked_sub(1)
                        .and_then(|i| model.field_names().get(i).copied())
                        .unwrap_or(""),
                    error_field: resp.error_field,
                },
                None => Error::UnknownModel { model_id: resp.model_id },
            },
            Some(Status::UnknownModel) => Error::UnknownModel { model_id: resp.model_id },
            Some(Status::DeadlineExceeded) => Error::DeadlineExceeded,
            Some(Status::Overloaded) => Error::Overloaded,
            Some(Status::Internal) => Error::Internal,
            Some(Status::BadVersion) => Error::BadVersion,
            None => Error::BadAnswer(format!("response status is not in the ABI: status={}", resp.status)),
        })
    }

    /// True for errors the fallback answers (the daemon could not); false for
    /// the caller's own mistakes, which a fallback must not hide.
    pub fn is_unavailable(&self) -> bool {
        !matches!(
            self,
            Error::InvalidInput { .. } | Error::UnknownModel { .. } | Error::BadVersion | Error::InvalidArgument(_)
        )
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotFound(m)
            | Error::Busy(m)
            | Error::Layout(m)
            | Error::Corrupt(m)
            | Error::Dead(m)
            | Error::TimedOut(m)
            | Error::Sys(m)
            | Error::InvalidArgument(m)
            | Error::Untrusted(m)
            | Error::BadAnswer(m) => f.write_str(m),
            Error::InvalidInput { model, field, error_field } => write!(
                f,
                "the daemon rejected a {} payload field: field={field} (error_field={error_field}); check its range",
                model.name()
            ),
            Error::UnknownModel { model_id } => write!(f, "the daemon serves no such model: model_id={model_id}"),
            Error::DeadlineExceeded => f.write_str("the request's deadline passed before inference"),
            Error::Overloaded => f.write_str("the daemon shed the request (overloaded)"),
            Error::Internal => f.write_str("the daemon failed to answer (internal error)"),
            Error::BadVersion => f.write_str("the daemon speaks another ABI version; rebuild against its abi.rs"),
        }
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(status: u16, model_id: u16, error_field: u16) -> Response {
        Response { status, model_id, error_field, ..Response::default() }
    }

    #[test]
    fn statuses_map_to_variants() {
        assert_eq!(Error::from_response(&resp(0, 1, 0)), None);
        assert_eq!(
            Error::from_response(&resp(1, 1, 5)),
            Some(Error::InvalidInput { model: ModelId::Workload, field: "current_cpu", error_field: 5 })
        );
        assert_eq!(Error::from_response(&resp(2, 9, 0)), Some(Error::UnknownModel { model_id: 9 }));
        assert_eq!(Error::from_response(&resp(3, 1, 0)), Some(Error::DeadlineExceeded));
        assert_eq!(Error::from_response(&resp(4, 1, 0)), Some(Error::Overloaded));
        assert_eq!(Error::from_response(&resp(5, 1, 0)), Some(Error::Internal));
        assert_eq!(Error::from_response(&resp(6, 1, 0)), Some(Error::BadVersion));
        assert!(matches!(Error::from_response(&resp(77, 1, 0)), Some(Error::BadAnswer(m)) if m.contains("status=77")));
    }

    #[test]
    fn an_out_of_range_error_field_names_no_field() {
        let e = Error::from_response(&resp(1, 3, 200)).unwrap();
        assert_eq!(e, Error::InvalidInput { model: ModelId::Failure, field: "", error_field: 200 });
    }

    #[test]
    fn only_daemon_trouble_goes_to_the_fallback() {
        assert!(Error::DeadlineExceeded.is_unavailable() && Error::Dead(String::new()).is_unavailable());
        assert!(!Error::BadVersion.is_unavailable() && !Error::UnknownModel { model_id: 1 }.is_unavailable());
    }
}
