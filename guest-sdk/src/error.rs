//! The error type a skill returns, and its conversions.

use std::borrow::Cow;
use std::fmt;

use serde::Serialize;

use crate::{approval, docker, exec};

/// `Result` with [`Error`] as the default error type.
///
/// ```
/// fn parse(text: &str) -> skillbox_sdk::Result<u64> {
///     text.trim().parse().map_err(|e| skillbox_sdk::Error::invalid_input(format!("{e}")))
/// }
/// assert_eq!(parse(" 42 ").unwrap(), 42);
/// ```
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a run failed, as reported to the host.
///
/// This mirrors the contract's `failure-kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The skill could not do its work.
    Failed,
    /// The sandbox refused something the skill needed (a file, a program, a
    /// socket, an environment variable).
    Denied,
    /// The input did not parse or did not make sense.
    InvalidInput,
}

impl ErrorKind {
    /// The kind's name as it appears in the contract: `failed`, `denied` or
    /// `invalid-input`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Failed => "failed",
            ErrorKind::Denied => "denied",
            ErrorKind::InvalidInput => "invalid-input",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed run: a kind, a one-line message and optional structured data.
///
/// Most errors come from `?` through the `From` conversions:
///
/// | source                      | kind                                                   |
/// |-----------------------------|--------------------------------------------------------|
/// | [`std::io::Error`]          | [`Denied`](ErrorKind::Denied) for `PermissionDenied`, else [`Failed`](ErrorKind::Failed) |
/// | [`exec::Error`]             | [`Denied`](ErrorKind::Denied) for [`exec::Error::Denied`], else [`Failed`](ErrorKind::Failed) |
/// | [`serde_json::Error`]       | [`Failed`](ErrorKind::Failed)                          |
/// | `String`, `&str`            | [`Failed`](ErrorKind::Failed)                          |
///
/// Input that does not deserialize never reaches the skill: [`export!`](crate::export)
/// reports it as [`InvalidInput`](ErrorKind::InvalidInput) itself.
///
/// ```
/// use skillbox_sdk::{Error, ErrorKind};
///
/// let err = Error::denied("no access to /secrets").with_data(serde_json::json!({ "path": "/secrets" }));
/// assert_eq!(err.kind(), ErrorKind::Denied);
/// assert_eq!(err.to_string(), "no access to /secrets");
/// assert_eq!(err.data_json(), Some(r#"{"path":"/secrets"}"#));
///
/// let io = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "nope");
/// assert_eq!(Error::from(io).kind(), ErrorKind::Denied);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    data: Option<String>,
}

impl Error {
    /// An error of the given kind with a one-line message.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            data: None,
        }
    }

    /// The skill could not do its work.
    pub fn failed(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Failed, message)
    }

    /// The sandbox refused something the skill needed.
    pub fn denied(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Denied, message)
    }

    /// The input did not parse or did not make sense.
    pub fn invalid_input(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidInput, message)
    }

    /// Attaches structured detail, serialized to JSON.
    ///
    /// If `data` cannot be serialized, no data is attached and the reason is
    /// appended to the message instead.
    pub fn with_data(mut self, data: impl Serialize) -> Self {
        match serde_json::to_string(&data) {
            Ok(json) => self.data = Some(json),
            Err(e) => {
                self.data = None;
                self.message =
                    format!("{} (error data could not be serialized: {e})", self.message);
            }
        }
        self
    }

    /// Prefixes the message with `context`, as in `"reading /data/a.txt: …"`.
    /// The kind and data are kept.
    pub fn context(mut self, context: impl fmt::Display) -> Self {
        self.message = format!("{context}: {}", self.message);
        self
    }

    /// The error's kind.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The one-line message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The attached data as JSON text, if any.
    pub fn data_json(&self) -> Option<&str> {
        self.data.as_deref()
    }

    pub(crate) fn into_parts(self) -> (ErrorKind, String, Option<String>) {
        (self.kind, self.message, self.data)
    }
}

/// Formats the message only; use [`Error::kind`] for the kind.
impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// `PermissionDenied` becomes [`ErrorKind::Denied`], anything else
/// [`ErrorKind::Failed`]. The message reads `"{kind:?}: {error}"`, for
/// example `"NotFound: No such file or directory (os error 44)"`.
impl From<std::io::Error> for Error {
    fn from(err: std::io::Error) -> Self {
        let kind = match err.kind() {
            std::io::ErrorKind::PermissionDenied => ErrorKind::Denied,
            _ => ErrorKind::Failed,
        };
        Error::new(kind, format!("{:?}: {err}", err.kind()))
    }
}

/// [`exec::Error::Denied`] becomes [`ErrorKind::Denied`], anything else
/// [`ErrorKind::Failed`]; the message is the exec error's `Display`, which
/// keeps the host's reason.
impl From<exec::Error> for Error {
    fn from(err: exec::Error) -> Self {
        let kind = match err {
            exec::Error::Denied(_) => ErrorKind::Denied,
            _ => ErrorKind::Failed,
        };
        Error::new(kind, err.to_string())
    }
}

/// [`docker::Error::Denied`] becomes [`ErrorKind::Denied`], anything else
/// [`ErrorKind::Failed`]; the message keeps the host's reason.
impl From<docker::Error> for Error {
    fn from(err: docker::Error) -> Self {
        let kind = match err {
            docker::Error::Denied(_) => ErrorKind::Denied,
            _ => ErrorKind::Failed,
        };
        Error::new(kind, err.to_string())
    }
}

/// [`approval::Error::Denied`] becomes [`ErrorKind::Denied`] (a denied
/// request is refused like an ungranted call), anything else
/// [`ErrorKind::Failed`].
impl From<approval::Error> for Error {
    fn from(err: approval::Error) -> Self {
        let kind = match err {
            approval::Error::Denied(_) => ErrorKind::Denied,
            _ => ErrorKind::Failed,
        };
        Error::new(kind, err.to_string())
    }
}

/// Always [`ErrorKind::Failed`]: by the time a skill handles JSON itself, a
/// JSON error is the skill's problem (bad input is caught earlier by
/// [`export!`](crate::export)).
impl From<serde_json::Error> for Error {
    fn from(err: serde_json::Error) -> Self {
        Error::failed(format!("JSON error: {err}"))
    }
}

/// An [`ErrorKind::Failed`] error with this message.
impl From<String> for Error {
    fn from(message: String) -> Self {
        Error::failed(message)
    }
}

/// An [`ErrorKind::Failed`] error with this message.
impl From<&str> for Error {
    fn from(message: &str) -> Self {
        Error::failed(message)
    }
}

/// An [`ErrorKind::Failed`] error with this message.
impl From<Cow<'_, str>> for Error {
    fn from(message: Cow<'_, str>) -> Self {
        Error::failed(message)
    }
}

/// Adds context to the error of a `Result`, converting it to [`Error`].
///
/// ```
/// use skillbox_sdk::{Context, ErrorKind};
///
/// let err = std::fs::read("/definitely/not/here").context("reading config").unwrap_err();
/// assert_eq!(err.kind(), ErrorKind::Failed);
/// assert!(err.message().starts_with("reading config: NotFound: "));
/// ```
pub trait Context<T> {
    /// Converts the error to [`Error`] and prefixes its message with `context`.
    fn context(self, context: impl fmt::Display) -> Result<T>;

    /// Like [`context`](Context::context), computing the context only on error.
    fn with_context<C: fmt::Display>(self, context: impl FnOnce() -> C) -> Result<T>;
}

impl<T, E: Into<Error>> Context<T> for std::result::Result<T, E> {
    fn context(self, context: impl fmt::Display) -> Result<T> {
        self.map_err(|e| e.into().context(context))
    }

    fn with_context<C: fmt::Display>(self, context: impl FnOnce() -> C) -> Result<T> {
        self.map_err(|e| e.into().context(context()))
    }
}

/// Returns early with an [`Error`].
///
/// With a format string, the error is [`ErrorKind::Failed`]; with any other
/// expression, that value is converted with [`From`] (so it can be an
/// [`Error`] of any kind, an `io::Error`, …).
///
/// ```
/// use skillbox_sdk::{bail, Error, ErrorKind, Result};
///
/// fn check(n: i32) -> Result<i32> {
///     if n < 0 {
///         bail!(Error::invalid_input(format!("{n} is negative")));
///     }
///     if n > 100 {
///         bail!("{n} is too large");
///     }
///     Ok(n)
/// }
///
/// assert_eq!(check(-1).unwrap_err().kind(), ErrorKind::InvalidInput);
/// assert_eq!(check(101).unwrap_err().to_string(), "101 is too large");
/// ```
#[macro_export]
macro_rules! bail {
    ($msg:literal $(,)?) => {
        return ::core::result::Result::Err($crate::Error::failed(::std::format!($msg)))
    };
    ($err:expr $(,)?) => {
        return ::core::result::Result::Err(::core::convert::From::from($err))
    };
    ($fmt:expr, $($arg:tt)*) => {
        return ::core::result::Result::Err($crate::Error::failed(::std::format!($fmt, $($arg)*)))
    };
}
