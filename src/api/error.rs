//! The HTTP fault body `{"faultcode": "Client"|"Server", "faultstring": "..."}` of every
//! non-2xx answer ([`ApiError::fault`]); agent errors inside it are IPA's classes from
//! [`crate::errors`].

use hyper::StatusCode;
use serde_json::{json, Value};

pub use crate::errors::{CommandError, IpaError};

/// Why a request was not answered with 200.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApiError {
    /// Missing or wrong `agent_token` (or none held yet).
    #[error("token invalid")]
    Unauthorized,
    /// The body is not acceptable JSON (framework-style 400).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// No route for the path.
    #[error("not found")]
    NotFound,
    /// A route exists but not for this method; carries the allowed methods.
    #[error("method not allowed")]
    MethodNotAllowed(&'static str),
    /// The body is larger than the limit.
    #[error("payload too large")]
    PayloadTooLarge,
    /// The client did not send its body in time.
    #[error("request timeout")]
    RequestTimeout,
    /// A bug on our side.
    #[error("internal error: {0}")]
    Internal(String),
    /// An agent error (the RESTError family).
    #[error("{0}")]
    Command(#[from] CommandError),
}

impl ApiError {
    /// HTTP status of the answer.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Command(e) => {
                StatusCode::from_u16(e.code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
            }
        }
    }

    /// `faultstring`: framework errors read `<code> <reason>: <description>` (Werkzeug's
    /// wording), agent errors `<message>: <details>`.
    pub fn faultstring(&self) -> String {
        let framework = |description: &str| {
            let status = self.status();
            format!(
                "{} {}: {description}",
                status.as_u16(),
                status.canonical_reason().unwrap_or("Error")
            )
        };
        match self {
            Self::Unauthorized => framework("Token invalid."),
            Self::BadRequest(d) => framework(d),
            Self::NotFound => framework(
                "The requested URL was not found on the server. If you entered the URL \
                 manually please check your spelling and try again.",
            ),
            Self::MethodNotAllowed(_) => {
                framework("The method is not allowed for the requested URL.")
            }
            Self::PayloadTooLarge => {
                framework("The data value transmitted exceeds the capacity limit.")
            }
            Self::RequestTimeout => framework("The request body was not received in time."),
            Self::Internal(_) => framework(
                "The server encountered an internal error and was unable to complete your \
                 request.",
            ),
            Self::Command(e) => e.to_string(),
        }
    }

    /// The fault body: `faultcode` is `Server` for statuses >= 500, else `Client`.
    pub fn fault(&self) -> Value {
        let faultcode = if self.status().is_server_error() {
            "Server"
        } else {
            "Client"
        };
        json!({"faultcode": faultcode, "faultstring": self.faultstring()})
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hardware::StepError;
    use ira_hw::StepKind;

    #[test]
    fn agent_fault_strings_follow_ipa_wording() {
        let cases = [
            (
                ApiError::from(CommandError::AgentIsBusy {
                    command: "execute_clean_step".into(),
                }),
                409,
                "Agent is busy: executing command execute_clean_step",
            ),
            (
                ApiError::from(CommandError::RequestedObjectNotFound {
                    what: "Extension",
                    id: "nope".into(),
                }),
                404,
                "Not found: Extension with id nope not found.",
            ),
            (
                ApiError::from(CommandError::InvalidCommand("Unknown command: frob".into())),
                400,
                "Invalid command: Unknown command: frob",
            ),
            (
                ApiError::Unauthorized,
                401,
                "401 Unauthorized: Token invalid.",
            ),
        ];
        for (err, status, text) in cases {
            assert_eq!(err.status().as_u16(), status);
            assert_eq!(
                err.fault(),
                json!({"faultcode": "Client", "faultstring": text})
            );
        }
    }

    #[test]
    fn server_errors_have_server_faultcode() {
        let err = ApiError::from(CommandError::CommandExecution("boom".into()));
        assert_eq!(err.fault()["faultcode"], "Server");
        assert_eq!(err.fault()["faultstring"], "Command execution failed: boom");
        assert_eq!(
            ApiError::Internal("x".into()).fault()["faultcode"],
            "Server"
        );
        assert_eq!(ApiError::NotFound.fault()["faultcode"], "Client");
    }

    #[test]
    fn step_errors_keep_their_class() {
        let mismatch = StepError::VersionMismatch {
            current: serde_json::Map::new(),
            ironic: json!({"x": "1"}),
        };
        let err = CommandError::from(&mismatch);
        assert!(err.is_version_mismatch());
        assert_eq!(err.code(), 409);
        assert_eq!(
            err.message(),
            "Hardware managers version mismatch, reload agent with correct version"
        );
        let failed = StepError::Failed {
            kind: StepKind::Deploy,
            step: "write_image".into(),
            message: "no disk".into(),
        };
        let ipa = CommandError::from(&failed).to_ipa();
        assert_eq!(ipa.kind, "DeploymentError");
        assert_eq!(ipa.message, "Deploy step failed");
        assert_eq!(ipa.code, 500);
    }
}
