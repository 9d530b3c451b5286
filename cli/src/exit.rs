//! What a failed command tells its caller: a message for people and an exit code for
//! pipelines. The codes are documented in docs/cli.md and never reused for something else.

use std::fmt;
use std::process::ExitCode;

/// Exit codes, by kind of failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    /// Anything else (an internal error, a file that cannot be read).
    Error = 1,
    /// Bad input: a file that does not parse, a field the server rejects, a bad flag.
    Invalid = 2,
    /// Someone changed the service first (stale revision), it already exists, or its state
    /// does not allow the operation.
    Conflict = 3,
    NotFound = 4,
    Unauthenticated = 5,
    /// The server could not be reached.
    Unavailable = 6,
    /// A rollout waited for was rolled back or aborted.
    RolledBack = 7,
    /// `--wait`: a proxy rejected the change, or not every proxy applied it in time.
    NotLive = 8,
    /// A rollout waited for was promoted without every gate shown safe: on its time limit
    /// (`on_timeout: promote`) or by a person.
    Unearned = 9,
    /// `diff`: there are differences.
    Differs = 10,
}

/// A failed command.
#[derive(Debug)]
pub struct Failure {
    pub code: Code,
    pub message: String,
}

impl Failure {
    pub fn new(code: Code, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Failure {
        Failure::new(Code::Invalid, message)
    }

    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(self.code as u8)
    }

    /// The same failure with `context: ` in front of its message.
    pub fn context(mut self, context: impl fmt::Display) -> Failure {
        self.message = format!("{context}: {}", self.message);
        self
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<tonic::Status> for Failure {
    fn from(s: tonic::Status) -> Failure {
        use tonic::Code as G;
        let code = match s.code() {
            G::InvalidArgument | G::OutOfRange | G::ResourceExhausted => Code::Invalid,
            G::FailedPrecondition | G::AlreadyExists | G::Aborted => Code::Conflict,
            G::NotFound => Code::NotFound,
            G::Unauthenticated | G::PermissionDenied => Code::Unauthenticated,
            G::Unavailable | G::DeadlineExceeded => Code::Unavailable,
            _ => Code::Error,
        };
        let message = if s.message().is_empty() {
            format!("the server answered {:?}", s.code())
        } else {
            s.message().to_string()
        };
        Failure::new(code, message)
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Failure {
        Failure::new(Code::Error, e.to_string())
    }
}

pub type Result<T> = std::result::Result<T, Failure>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_codes_map_to_exit_codes() {
        let f = Failure::from(tonic::Status::failed_precondition(
            "service `shop` is at revision 4",
        ));
        assert_eq!(f.code, Code::Conflict);
        assert_eq!(f.exit_code(), ExitCode::from(3));
        assert_eq!(
            Failure::from(tonic::Status::unavailable("")).code,
            Code::Unavailable
        );
        assert_eq!(
            Failure::from(tonic::Status::not_found("x")).code,
            Code::NotFound
        );
        assert_eq!(
            Failure::from(tonic::Status::invalid_argument("x")).code,
            Code::Invalid
        );
        assert_eq!(
            Failure::from(tonic::Status::unauthenticated("x")).code,
            Code::Unauthenticated
        );
    }
}
