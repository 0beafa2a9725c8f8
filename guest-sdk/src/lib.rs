//! Write [skillbox] skills in ordinary Rust.
//!
//! A **skill** is a small program an agent can run to get something done —
//! summarise a directory, query a service, transform a file — compiled to a
//! WebAssembly component and run by the skillbox host in a sandbox. The skill
//! takes JSON input and returns a [`Summary`] (markdown text plus structured
//! data) or an [`Error`]. It sees nothing of the machine except what its
//! `skill.toml` manifest asks for and the operator grants:
//!
//! * **files** through `std::fs`, only inside the directories listed under
//!   `[fs]` (they appear at the guest paths given there);
//! * **programs** through [`exec::Command`], only with the exact program and
//!   argument patterns listed under `[exec]` — there is no shell;
//! * **environment variables** through `std::env`, only those under `[env]`;
//! * **network** through `std::net::TcpStream`, only to the `host:port`s
//!   under `[net]`;
//! * memory, wall-clock time and output size bounded by `[limits]`.
//!
//! A refused operation is an ordinary error (an `io::Error` of kind
//! `PermissionDenied`, an [`exec::Error::Denied`], …), never a crash; with
//! `?` it becomes an [`Error`] of kind [`ErrorKind::Denied`].
//!
//! Besides those, a skill can [report progress](progress), write [log
//! lines](info!), save [checkpoints](checkpoint) that survive a restart of
//! its task, and have the host compute [SHA-256 digests](digest) at native
//! speed.
//!
//! # Depending on the SDK
//!
//! `skillbox new NAME` writes a skill crate that depends on this SDK
//! without a registry or a checkout of skillbox: the `skillbox` binary
//! carries the SDK sources of its own version and lays them out in
//! `NAME/vendor/skillbox-sdk`, with a `Cargo.lock` pinning the versions
//! the SDK was tested with, so `skillbox build` also works offline:
//!
//! ```toml
//! skillbox-sdk = { version = "=0.1.0", path = "vendor/skillbox-sdk" }
//! ```
//!
//! Once the SDK is published, `skillbox-sdk = "0.1"` (or the line above
//! without `path`) depends on the registry's crate instead.
//!
//! # A complete skill
//!
//! `Cargo.toml` (as `skillbox new log-grep` writes it):
//!
//! ```toml
//! [package]
//! name = "log-grep"
//! version = "0.1.0"
//! edition = "2024"
//!
//! [lib]
//! crate-type = ["cdylib"]
//!
//! [dependencies]
//! skillbox-sdk = { version = "=0.1.0", path = "vendor/skillbox-sdk" }
//! serde = { version = "1", features = ["derive"] }
//!
//! # A skill is its own workspace, wherever it is created.
//! [workspace]
//! ```
//!
//! `src/lib.rs`:
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use serde::{Deserialize, Serialize};
//! use skillbox_sdk::exec::{self, Command};
//! use skillbox_sdk::{Context, Error, Summary, bail, checkpoint, info, progress, warn};
//!
//! /// Input: `{"pattern": "ERROR", "dir": "/logs"}`; `dir` is optional.
//! #[derive(Deserialize)]
//! struct Input {
//!     pattern: String,
//!     #[serde(default = "default_dir")]
//!     dir: String,
//! }
//!
//! fn default_dir() -> String {
//!     "/logs".to_owned()
//! }
//!
//! /// Matches in one file; also what the skill checkpoints as it goes.
//! #[derive(Serialize, Deserialize)]
//! struct Hits {
//!     file: String,
//!     lines: u64,
//! }
//!
//! fn run(input: Input) -> Result<Summary, Error> {
//!     if input.pattern.is_empty() {
//!         bail!(Error::invalid_input("`pattern` must not be empty"));
//!     }
//!
//!     // The directory is a preopen: plain std::fs works inside it.
//!     let mut files: Vec<String> = std::fs::read_dir(&input.dir)
//!         .with_context(|| format!("listing {}", input.dir))?
//!         .filter_map(|entry| entry.ok())
//!         .filter(|entry| entry.file_type().is_ok_and(|t| t.is_file()))
//!         .filter_map(|entry| entry.file_name().into_string().ok())
//!         .collect();
//!     files.sort();
//!
//!     // Resume where a previous, interrupted run of this task stopped.
//!     let mut hits: Vec<Hits> = checkpoint::load_json("hits")?.unwrap_or_default();
//!     if !hits.is_empty() {
//!         info!("resuming after {} files", hits.len());
//!     }
//!
//!     for (i, file) in files.iter().enumerate().skip(hits.len()) {
//!         progress::report(i as f32 / files.len() as f32, format!("searching {file}"));
//!         // Arguments are passed verbatim: run in the directory and pass a
//!         // relative name. skill.toml must allow this exact shape.
//!         let result = Command::new("grep")
//!             .args(["-c", "--", input.pattern.as_str(), file.as_str()])
//!             .cwd(&input.dir)
//!             .timeout(Duration::from_secs(30))
//!             .output();
//!         let out = match result {
//!             Ok(out) => out,
//!             Err(exec::Error::TimedOut) => {
//!                 warn!("grep timed out on {file}; skipping it");
//!                 continue;
//!             }
//!             // Denied, not found, …: give up, keeping the host's reason.
//!             Err(e) => return Err(Error::from(e).context(format!("searching {file}"))),
//!         };
//!         // grep exits 1 when nothing matched, 2 on trouble.
//!         if out.status > 1 {
//!             bail!("grep failed on {file}: {}", out.stderr_str().trim());
//!         }
//!         let lines = out.stdout_str().trim().parse().unwrap_or(0);
//!         hits.push(Hits { file: file.clone(), lines });
//!         checkpoint::save_json("hits", &hits)?;
//!     }
//!     progress::report(1.0, "done");
//!
//!     let total: u64 = hits.iter().map(|h| h.lines).sum();
//!     let mut text = format!("**{total}** lines match `{}`\n\n", input.pattern);
//!     text.push_str("| file | lines |\n|---|---:|\n");
//!     for hit in hits.iter().filter(|h| h.lines > 0) {
//!         text.push_str(&format!("| {} | {} |\n", hit.file, hit.lines));
//!     }
//!     Ok(Summary::new(text).with_data(&hits))
//! }
//!
//! // Makes `run` the skill's entry point.
//! skillbox_sdk::export!(run);
//! # fn main() {}
//! ```
//!
//! `skill.toml`, next to `Cargo.toml` (all tables but `[skill]` are optional):
//!
//! ```toml
//! [skill]
//! name = "log-grep"
//! version = "0.1.0"
//! description = "Counts the lines matching a pattern in each log file"
//! component = "log_grep.wasm"  # relative to skill.toml; `skillbox build` puts it here
//! sha256 = ""                  # filled in by `skillbox build`
//!
//! [fs]
//! "/logs" = { access = "read" }          # or "read-write"
//!
//! [exec]
//! # Each argument is an exact string or a glob (`*`, `?`); a final "**"
//! # matches any remaining arguments.
//! allow = [ { program = "grep", args = ["-c", "--", "*", "*"] } ]
//!
//! [limits]
//! memory = "64MiB"
//! timeout = "5m"
//! output = "1MiB"
//! ```
//!
//! Build with `cargo build --release --target wasm32-wasip2` (or `skillbox
//! build`, which also copies the component next to the manifest and records
//! its hash).
//!
//! # Input
//!
//! The input type can be anything that implements
//! [`serde::de::DeserializeOwned`], including [`serde_json::Value`] to take
//! the raw JSON. Input that does not deserialize never reaches the skill: the
//! run fails with [`ErrorKind::InvalidInput`] and serde's message. An empty
//! input or `null` is accepted as `{}` when the input type can be built from
//! `{}` (for example a struct whose fields all have defaults).
//!
//! # Output on stdout and stderr
//!
//! `println!` and `eprintln!` work, and the operator sees what they write,
//! but it is not part of the result: put what the caller needs in the
//! [`Summary`], and use [`progress`] and the logging macros for everything
//! else.
//!
//! [skillbox]: https://example.invalid/skillbox

#![warn(missing_docs)]

// Lets the generated bindings name this crate as `skillbox_sdk` from inside
// it, the same way they name it from the skill crates that expand `export!`.
extern crate self as skillbox_sdk;

pub mod approval;
pub mod checkpoint;
pub mod digest;
pub mod docker;
mod error;
pub mod exec;
pub mod net;
pub mod progress;
#[cfg(feature = "schema")]
pub mod schema;
mod summary;

pub use error::{Context, Error, ErrorKind, Result};
pub use summary::{Summary, human_bytes};

/// Re-exported so skills can use serde without depending on it themselves.
/// (Deriving through the re-export needs `#[serde(crate = "skillbox_sdk::serde")]`;
/// depending on `serde` directly is simpler.)
pub use serde;
/// Re-exported for convenience, e.g. `skillbox_sdk::serde_json::json!`.
pub use serde_json;

/// Makes a function the skill's entry point.
///
/// The function takes the skill's input, any type implementing
/// [`serde::de::DeserializeOwned`], and returns `Result<Summary, Error>`
/// (more precisely: `Result<S, E>` with `S: Into<Summary>` and
/// `E: Into<Error>`). Use the macro exactly once per skill crate, at the top
/// level.
///
/// The generated entry point parses the input JSON (failing with
/// [`ErrorKind::InvalidInput`] and serde's message, naming the expected type,
/// when it does not parse), calls the function and hands the result to the
/// host.
///
/// ```no_run
/// fn echo(input: skillbox_sdk::serde_json::Value) -> skillbox_sdk::Result<skillbox_sdk::Summary> {
///     Ok(skillbox_sdk::Summary::new("echoed").with_data(input))
/// }
///
/// skillbox_sdk::export!(echo);
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! export {
    ($run:expr $(,)?) => {
        const _: () = {
            struct __SkillboxSkill;

            impl $crate::__private::Guest for __SkillboxSkill {
                fn run(
                    input: ::std::string::String,
                ) -> ::core::result::Result<$crate::__private::Summary, $crate::__private::Failure>
                {
                    $crate::__private::run_skill(&input, $run)
                }
            }

            $crate::__private::__export_skill! {
                __SkillboxSkill with_types_in $crate::__private
            }
        };
    };
}

/// Implementation details used by [`export!`]; not part of the API.
#[doc(hidden)]
#[allow(missing_docs, clippy::all)]
pub mod __private {
    pub use wit_bindgen;

    wit_bindgen::generate!({
        // `wit` is a symlink to the repository's `wit/`, the one source of
        // the contract: `cargo package` stores what it points to, so the
        // published crate (and the copy `skillbox new` vendors) carries it.
        path: "wit",
        world: "skill",
        pub_export_macro: true,
        export_macro_name: "__export_skill",
        default_bindings_module: "skillbox_sdk::__private",
        runtime_path: "skillbox_sdk::__private::wit_bindgen::rt",
    });

    use serde::de::DeserializeOwned;

    use self::skillbox::skill::types::FailureKind;
    use crate::{Error, ErrorKind};

    /// Parses `input`, calls `run`, and converts its result for the host.
    pub fn run_skill<I, S, E>(
        input: &str,
        run: impl FnOnce(I) -> Result<S, E>,
    ) -> Result<Summary, Failure>
    where
        I: DeserializeOwned,
        S: Into<crate::Summary>,
        E: Into<Error>,
    {
        let input = parse_input::<I>(input).map_err(failure)?;
        let summary = run(input).map_err(|e| failure(e.into()))?.into();
        let (text, data) = summary.into_parts();
        match data {
            Ok(data) => Ok(Summary { text, data }),
            Err(e) => Err(failure(Error::failed(format!(
                "the skill's summary data could not be serialized: {e}"
            )))),
        }
    }

    fn parse_input<I: DeserializeOwned>(input: &str) -> Result<I, Error> {
        let input = match input.trim() {
            "" => "null",
            trimmed => trimmed,
        };
        match serde_json::from_str::<I>(input) {
            Ok(value) => Ok(value),
            Err(err) => {
                // `null` (or nothing) stands for "no input": accept it as `{}`
                // when the input type is happy with that.
                if input == "null" {
                    if let Ok(value) = serde_json::from_str::<I>("{}") {
                        return Ok(value);
                    }
                }
                Err(Error::invalid_input(format!(
                    "invalid input, expected {}: {err}",
                    std::any::type_name::<I>()
                )))
            }
        }
    }

    fn failure(err: Error) -> Failure {
        let (kind, message, data) = err.into_parts();
        Failure {
            kind: match kind {
                ErrorKind::Failed => FailureKind::Failed,
                ErrorKind::Denied => FailureKind::Denied,
                ErrorKind::InvalidInput => FailureKind::InvalidInput,
            },
            message,
            data,
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[derive(serde::Deserialize, Debug, PartialEq)]
        struct WithDefaults {
            #[serde(default)]
            name: String,
        }

        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Required {
            name: String,
        }

        #[test]
        fn empty_and_null_input_default() {
            let expected = WithDefaults {
                name: String::new(),
            };
            assert_eq!(parse_input::<WithDefaults>("").unwrap(), expected);
            assert_eq!(parse_input::<WithDefaults>(" null ").unwrap(), expected);
            assert_eq!(
                parse_input::<serde_json::Value>("").unwrap(),
                serde_json::Value::Null
            );
        }

        #[test]
        fn bad_input_is_invalid_input_naming_the_type() {
            let err = parse_input::<Required>("{}").unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidInput);
            assert!(err.message().contains("Required"), "{err}");
            assert!(err.message().contains("missing field `name`"), "{err}");
        }

        #[test]
        fn results_convert() {
            let ok = run_skill("{}", |_: serde_json::Value| {
                Ok::<_, Error>(crate::Summary::new("hi").with_data([1, 2]))
            })
            .unwrap();
            assert_eq!((ok.text.as_str(), ok.data.as_str()), ("hi", "[1,2]"));

            let err = run_skill("{}", |_: serde_json::Value| {
                Err::<crate::Summary, _>(std::io::Error::from(std::io::ErrorKind::PermissionDenied))
            })
            .unwrap_err();
            assert!(matches!(err.kind, FailureKind::Denied));

            let mut bad = std::collections::HashMap::new();
            bad.insert((1, 2), 3);
            let err = run_skill("{}", |_: serde_json::Value| {
                Ok::<_, Error>(crate::Summary::new("x").with_data(&bad))
            })
            .unwrap_err();
            assert!(matches!(err.kind, FailureKind::Failed));
        }
    }
}
