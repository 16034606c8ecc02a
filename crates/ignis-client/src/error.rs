//! The errors of the client: one enum, so that a caller (the CLI) can map each kind to an exit
//! code.

use std::error::Error as StdError;
use std::fmt;

/// Everything that can go wrong talking to an Ignis server.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The client is not configured (no server URL, no key, a malformed config file) or was
    /// asked something it cannot express (an unsupported URL).
    #[error("{0}")]
    Config(String),

    /// The server could not be reached at all: nothing listens, DNS failed, connect timed out.
    #[error("cannot reach the Ignis server at {url} (is `ignis serve` running?)")]
    Connect {
        /// The server's base URL.
        url: String,
        /// Why the connection failed.
        source: TransportError,
    },

    /// A connection was made but the exchange failed part-way (reset, closed, malformed HTTP).
    #[error("request to the Ignis server at {url} failed")]
    Transport {
        /// The server's base URL.
        url: String,
        /// Why the exchange failed.
        source: TransportError,
    },

    /// The server refused the request and said why (its JSON error), or answered with an HTTP
    /// error that did not come from Ignis (a proxy's 502, say).
    #[error("{message} ({status} {code})")]
    Api {
        /// HTTP status.
        status: u16,
        /// The stable error code, e.g. `not_found`, `invalid_spec`, `too_many_requests`.
        code: String,
        /// The server's explanation.
        message: String,
        /// Seconds to wait before retrying, from `Retry-After` (429 and 503 answers).
        retry_after: Option<u64>,
    },

    /// An invocation reached the function and the function failed: it raised an error, timed
    /// out, ran out of memory or crashed, or the platform could not run it.
    #[error("{status}: {}{message} (activation {activation_id})", kind_prefix(.kind))]
    FunctionFailed {
        /// The activation status, e.g. `application_error`, `timeout`, `oom`.
        status: String,
        /// The error type, e.g. `ValueError`, `Timeout` (may be empty).
        kind: String,
        /// The error message.
        message: String,
        /// The activation that records the failure (and its logs).
        activation_id: String,
    },

    /// The server answered success with a body this client does not understand.
    #[error("unexpected {what} from the server")]
    Decode {
        /// What was being decoded, e.g. "function version".
        what: &'static str,
        /// The JSON error.
        source: serde_json::Error,
    },
}

fn kind_prefix(kind: &str) -> String {
    if kind.is_empty() {
        String::new()
    } else {
        format!("{kind}: ")
    }
}

impl ClientError {
    /// The HTTP status of an [`ClientError::Api`] error, or `None` for every other kind.
    pub fn api_status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A failure of the HTTP exchange, displayed as its chain of causes on one line
/// (e.g. `tcp connect error: Connection refused (os error 111)`).
///
/// The whole chain is in the message, so [`std::error::Error::source`] returns `None`; the
/// original error is available through [`TransportError::inner`].
#[derive(Debug)]
pub struct TransportError(Box<dyn StdError + Send + Sync + 'static>);

impl TransportError {
    pub(crate) fn new(err: impl Into<Box<dyn StdError + Send + Sync + 'static>>) -> Self {
        TransportError(err.into())
    }

    /// The underlying error (from hyper or hyper-util).
    pub fn inner(&self) -> &(dyn StdError + Send + Sync + 'static) {
        &*self.0
    }
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let top: &(dyn StdError + 'static) = &*self.0;
        // hyper-util's own message ("client error (Connect)") says nothing its causes do not.
        let mut current = match (
            top.downcast_ref::<hyper_util::client::legacy::Error>(),
            top.source(),
        ) {
            (Some(_), Some(cause)) => Some(cause),
            _ => Some(top),
        };
        let mut previous = String::new();
        let mut first = true;
        while let Some(err) = current {
            let msg = err.to_string();
            if msg != previous {
                if !first {
                    f.write_str(": ")?;
                }
                f.write_str(&msg)?;
                first = false;
            }
            previous = msg;
            current = err.source();
        }
        Ok(())
    }
}

impl StdError for TransportError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Outer(std::io::Error);
    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("tcp connect error")
        }
    }
    impl StdError for Outer {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn transport_errors_show_their_causes_on_one_line() {
        let err = TransportError::new(Outer(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "connection refused",
        )));
        assert_eq!(err.to_string(), "tcp connect error: connection refused");
        assert!(err.source().is_none());
    }

    #[test]
    fn function_failures_read_as_one_line() {
        let err = ClientError::FunctionFailed {
            status: "application_error".into(),
            kind: "ValueError".into(),
            message: "bad input".into(),
            activation_id: "abc".into(),
        };
        assert_eq!(
            err.to_string(),
            "application_error: ValueError: bad input (activation abc)"
        );
        let err = ClientError::FunctionFailed {
            status: "timeout".into(),
            kind: String::new(),
            message: "took longer than 3s".into(),
            activation_id: "abc".into(),
        };
        assert_eq!(
            err.to_string(),
            "timeout: took longer than 3s (activation abc)"
        );
    }
}
