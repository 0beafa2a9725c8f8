//! Secrets a skill may *use* but never read.
//!
//! The operator names secrets and where their values come from (the host's
//! environment, a file, or a command it runs: [`SecretSource`]), in the
//! configuration file's `[secrets.NAME]` tables or with `run --secret
//! NAME=SOURCE`. A grant then lets a program the skill may exec receive a
//! secret in its environment (`--allow-exec-secret PROGRAM NAME`), or a
//! Docker build of a Dockerfile (a container of an image) the operator
//! pinned receive it as a build argument (a variable) the skill names by
//! [`reference()`] (`--allow-docker-build-secret NAME sha256:…`,
//! `--allow-docker-run-secret NAME sha256:…`); see
//! [`crate::policy::secrets`]. The guest never holds the value: it is not
//! in the guest's environment, and what flows back to the guest or out of
//! the run (an exec'd program's output, the guest's environment, its
//! stdout, stderr, logs, progress, summary, data and failure, every event
//! and audit record) has each value, and its base64 and hex forms,
//! replaced by `[redacted]` ([`Redactor`]).
//!
//! Values are read when a run starts (a rotated secret is picked up by the
//! next run), are held in the host's memory for that run only, and never
//! enter the task store, events, notifications or the audit log.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::events::{Event, EventObserver};

/// What replaces a secret's value.
pub const REDACTED: &str = "[redacted]";

/// How a skill names a secret where a value goes (a build argument):
/// `${secret:NAME}`.
pub fn reference(name: &str) -> String {
    format!("${{secret:{name}}}")
}

/// The secret `value` refers to, when it is a whole reference.
pub fn referenced(value: &str) -> Option<&str> {
    value.strip_prefix("${secret:")?.strip_suffix('}')
}

/// Shortest value treated as a secret to redact: a shorter one would
/// garble ordinary text and is refused as a secret.
pub const MIN_SECRET: usize = 8;

/// Where a secret's value comes from.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum SecretSource {
    /// An environment variable of the host process.
    Env(String),
    /// A file (its text, without a final newline).
    File(PathBuf),
    /// A program and its arguments (no shell), run by the host; its stdout,
    /// without a final newline.
    Command(Vec<String>),
}

impl SecretSource {
    /// Parses the CLI form: `env:VAR`, `file:PATH` or `cmd:PROGRAM ARGS…`
    /// (shell-like quoting, no shell).
    pub fn parse_cli(s: &str) -> Result<SecretSource, String> {
        let (kind, rest) = s
            .split_once(':')
            .ok_or_else(|| format!("{s:?}: use env:VAR, file:PATH or cmd:PROGRAM ARGS…"))?;
        let source = match kind {
            "env" => SecretSource::Env(rest.to_string()),
            "file" => SecretSource::File(PathBuf::from(rest)),
            "cmd" => SecretSource::Command(
                shell_words::split(rest).map_err(|e| format!("cmd:{rest}: {e}"))?,
            ),
            other => {
                return Err(format!(
                    "{other}:…: a secret comes from env:VAR, file:PATH or cmd:PROGRAM ARGS…"
                ));
            }
        };
        source.check()?;
        Ok(source)
    }

    fn check(&self) -> Result<(), String> {
        match self {
            SecretSource::Env(v) => crate::policy::env::validate_env_name(v),
            SecretSource::File(p) if !p.is_absolute() => {
                Err(format!("file {}: use an absolute path", p.display()))
            }
            SecretSource::Command(words) if words.is_empty() => {
                Err("command: name a program".into())
            }
            _ => Ok(()),
        }
    }

    /// Reads the value now.
    fn read(&self) -> Result<String, String> {
        let value = match self {
            SecretSource::Env(var) => crate::caller::var(var)
                .map_err(|_| format!("the environment variable {var} is not set"))?,
            SecretSource::File(path) => {
                std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?
            }
            SecretSource::Command(words) => {
                let out = crate::caller::command(&words[0])
                    .args(&words[1..])
                    .stdin(std::process::Stdio::null())
                    .output()
                    .map_err(|e| format!("{}: {e}", words[0]))?;
                if !out.status.success() {
                    return Err(format!(
                        "`{}` failed ({}): {}",
                        shell_words::join(words),
                        out.status,
                        String::from_utf8_lossy(&out.stderr).trim()
                    ));
                }
                String::from_utf8(out.stdout)
                    .map_err(|_| format!("`{}` printed no UTF-8", shell_words::join(words)))?
            }
        };
        let value = value.trim_end_matches(['\n', '\r']).to_string();
        if value.len() < MIN_SECRET {
            return Err(format!(
                "its value is shorter than {MIN_SECRET} bytes, too short to redact"
            ));
        }
        Ok(value)
    }
}

/// The operator's secrets: names and sources, no values.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(transparent)]
pub struct SecretBook(BTreeMap<String, SecretSource>);

impl SecretBook {
    /// An empty book.
    pub fn new() -> SecretBook {
        SecretBook::default()
    }

    /// Adds (or replaces) the secret `name`.
    pub fn define(&mut self, name: &str, source: SecretSource) -> Result<(), String> {
        crate::policy::env::validate_env_name(name).map_err(|e| format!("secret {e}"))?;
        source.check().map_err(|e| format!("secret {name}: {e}"))?;
        self.0.insert(name.to_string(), source);
        Ok(())
    }

    /// Parses `NAME=SOURCE` (`run --secret`) and defines it.
    pub fn define_cli(&mut self, s: &str) -> Result<(), String> {
        let (name, source) = s.split_once('=').ok_or_else(|| {
            format!("--secret {s:?}: use NAME=env:VAR, NAME=file:PATH or NAME=cmd:PROGRAM")
        })?;
        let source =
            SecretSource::parse_cli(source).map_err(|e| format!("--secret {name}: {e}"))?;
        self.define(name, source)
    }

    /// Adds `other`'s secrets; `other` wins on a name both define.
    pub fn merge(&mut self, other: &SecretBook) {
        for (k, v) in &other.0 {
            self.0.insert(k.clone(), v.clone());
        }
    }

    /// Checks the names and sources (a configuration file's).
    pub fn check(&self) -> Result<(), String> {
        for (name, source) in &self.0 {
            crate::policy::env::validate_env_name(name).map_err(|e| format!("[secrets] {e}"))?;
            source
                .check()
                .map_err(|e| format!("[secrets.{name}]: {e}"))?;
        }
        Ok(())
    }

    /// Whether `name` is defined.
    pub fn has(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }

    /// The names defined.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    /// Reads the values of `names` now.
    pub fn resolve<'a>(
        &self,
        names: impl IntoIterator<Item = &'a str>,
    ) -> Result<SecretValues, Error> {
        let mut values = BTreeMap::new();
        for name in names {
            if values.contains_key(name) {
                continue;
            }
            let source = self.0.get(name).ok_or_else(|| {
                Error::Grant(format!(
                    "the secret {name} is granted but this host does not define it: add \
                     [secrets.{name}] to its configuration (or, for `skillbox run`, \
                     --secret {name}=env:VAR)"
                ))
            })?;
            let value = source
                .read()
                .map_err(|e| Error::Grant(format!("the secret {name}: {e}")))?;
            values.insert(name.to_string(), value);
        }
        let hide = Redactor::new(values.values().cloned());
        Ok(SecretValues(Arc::new(Resolved { values, hide })))
    }
}

/// The values of one run's secrets, by name. Its `Debug` shows names only.
#[derive(Clone, Default)]
pub struct SecretValues(Arc<Resolved>);

/// The values and what hides them, made once per run.
#[derive(Default)]
struct Resolved {
    values: BTreeMap<String, String>,
    hide: Redactor,
}

impl std::fmt::Debug for SecretValues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.values.keys()).finish()
    }
}

impl SecretValues {
    /// The value of `name`, if resolved.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.values.get(name).map(String::as_str)
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.0.values.is_empty()
    }

    /// What hides these values (shared: made when they were read).
    pub fn redactor(&self) -> &Redactor {
        &self.0.hide
    }
}

/// Replaces values (and their base64 and hex forms) by `[redacted]`.
#[derive(Clone, Debug, Default)]
pub struct Redactor {
    /// Longest first, so that a value containing another goes whole.
    needles: Arc<Vec<String>>,
}

impl Redactor {
    /// Hides each of `values` at least [`MIN_SECRET`] bytes long.
    pub fn new(values: impl IntoIterator<Item = String>) -> Redactor {
        Redactor::with_min(values, MIN_SECRET)
    }

    /// Hides each of `values` at least `min` bytes long (and the base64
    /// and hex forms of those at least [`MIN_SECRET`] long).
    pub fn with_min(values: impl IntoIterator<Item = String>, min: usize) -> Redactor {
        use base64::Engine;
        let mut needles = Vec::new();
        for v in values.into_iter().filter(|v| v.len() >= min) {
            if v.len() >= MIN_SECRET {
                // Padded and not: the longer goes first.
                let b64 = base64::engine::general_purpose::STANDARD.encode(&v);
                needles.push(b64.trim_end_matches('=').to_string());
                needles.push(b64);
                needles.push(hex::encode(&v));
            }
            needles.push(v);
        }
        needles.sort_by_key(|v| std::cmp::Reverse(v.len()));
        needles.dedup();
        Redactor {
            needles: Arc::new(needles),
        }
    }

    /// Whether it hides nothing.
    pub fn is_empty(&self) -> bool {
        self.needles.is_empty()
    }

    /// `s` with every value replaced.
    pub fn text(&self, s: &str) -> String {
        let mut out = s.to_string();
        for n in self.needles.iter() {
            if out.contains(n.as_str()) {
                out = out.replace(n.as_str(), REDACTED);
            }
        }
        out
    }

    /// The longest text it hides: how far past a cap output must be read
    /// for a value across the cut to be found whole.
    pub fn longest(&self) -> usize {
        self.needles.first().map_or(0, String::len)
    }

    /// Output read up to `cap` + [`longest`](Self::longest) bytes
    /// (`cut`: the read stopped there), redacted, then cut to `cap`: a
    /// value across the cut is found whole, and the start of one left at
    /// the end by a cut is dropped too, so that moving the cut cannot read
    /// a value out byte by byte. Returns whether it was cut.
    pub fn capped(&self, b: &[u8], cap: usize, cut: bool) -> (Vec<u8>, bool) {
        let mut out = self.bytes(b);
        if out.len() <= cap && !cut {
            return (out, false);
        }
        out.truncate(cap);
        let partial = self
            .needles
            .iter()
            .filter_map(|n| {
                let n = n.as_bytes();
                (1..n.len()).rev().find(|k| out.ends_with(&n[..*k]))
            })
            .max();
        if let Some(k) = partial {
            out.truncate(out.len() - k);
            out.extend_from_slice(REDACTED.as_bytes());
        }
        (out, true)
    }

    /// [`capped`](Self::capped) for text read up to `cap` +
    /// [`longest`](Self::longest) bytes (cut there when it is that long,
    /// give or take the end of a character).
    pub fn capped_text(&self, s: &str, cap: usize) -> String {
        let cut = !self.is_empty() && s.len() + 3 >= cap + self.longest();
        let (b, _) = self.capped(s.as_bytes(), cap, cut);
        String::from_utf8_lossy(&b).into_owned()
    }

    /// `b` with every value replaced (bytes that are not UTF-8 are
    /// searched as they are).
    pub fn bytes(&self, b: &[u8]) -> Vec<u8> {
        if self.needles.is_empty() {
            return b.to_vec();
        }
        let mut out = b.to_vec();
        for n in self.needles.iter() {
            let n = n.as_bytes();
            let mut result = Vec::with_capacity(out.len());
            let mut i = 0;
            while i < out.len() {
                if out[i..].starts_with(n) {
                    result.extend_from_slice(REDACTED.as_bytes());
                    i += n.len();
                } else {
                    result.push(out[i]);
                    i += 1;
                }
            }
            out = result;
        }
        out
    }

    /// `v` with every string (and key) redacted.
    pub fn json(&self, v: &serde_json::Value) -> serde_json::Value {
        use serde_json::Value;
        match v {
            Value::String(s) => Value::String(self.text(s)),
            Value::Array(a) => Value::Array(a.iter().map(|x| self.json(x)).collect()),
            Value::Object(o) => Value::Object(
                o.iter()
                    .map(|(k, x)| (self.text(k), self.json(x)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    /// An observer that passes `inner` every event with its text redacted.
    pub fn observer(&self, inner: Arc<dyn EventObserver>) -> Arc<dyn EventObserver> {
        if self.is_empty() {
            return inner;
        }
        Arc::new(Redacting {
            inner,
            redactor: self.clone(),
        })
    }
}

/// Redacts every event on its way to the run's observer.
struct Redacting {
    inner: Arc<dyn EventObserver>,
    redactor: Redactor,
}

impl EventObserver for Redacting {
    fn event(&self, event: Event) {
        let r = &self.redactor;
        self.inner.event(match event {
            Event::Progress { fraction, message } => Event::Progress {
                fraction,
                message: r.text(&message),
            },
            Event::Log { level, message } => Event::Log {
                level,
                message: r.text(&message),
            },
            Event::Output { stream, text } => Event::Output {
                stream,
                text: r.text(&text),
            },
            Event::Audit {
                capability,
                detail,
                allowed,
                reason,
            } => Event::Audit {
                capability,
                detail: r.text(&detail),
                allowed,
                reason: r.text(&reason),
            },
            other => other,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_takes_the_longest_value_first_and_encoded_forms() {
        let r = Redactor::new([
            "s3cret-and-more".to_string(),
            "s3cret-0".to_string(),
            "short".into(),
        ]);
        assert_eq!(
            r.text("a s3cret-and-more b s3cret-0 short"),
            "a [redacted] b [redacted] short"
        );
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode("s3cret-0");
        assert_eq!(r.text(&format!("x{b64}y")), "x[redacted]y");
        assert_eq!(r.text(&hex::encode("s3cret-0")), "[redacted]");
        assert_eq!(r.bytes(b"\xffs3cret-0\xfe"), b"\xff[redacted]\xfe");
        // A cut inside a value, wherever it falls, shows none of it.
        let out = b"0123s3cret-0 and more";
        for cap in 0..out.len() {
            let (got, cut) = r.capped(out, cap, false);
            let text = String::from_utf8_lossy(&got);
            assert!(cut || cap >= out.len());
            for k in 1..=4 {
                assert!(!text.ends_with(&"s3cret-0"[..k]), "cap {cap}: {text:?}");
            }
            assert!(!text.contains("s3c"), "cap {cap}: {text:?}");
        }
        assert_eq!(r.capped(out, 100, false).0, b"0123[redacted] and more");
        // Text read to the cap and the longest value, stopped before a
        // character that did not fit, whose values redacted leave it under
        // the cap: the start of a value at its end is hidden too.
        let cap = 40;
        let long = hex::encode("s3cret-and-more");
        assert_eq!(cap + r.longest(), 70);
        let text = format!("{long}{long}ééés3");
        assert_eq!(text.len(), 68, "a 2-byte character would not fit");
        let shown = r.capped_text(&text, cap);
        assert_eq!(shown, "[redacted][redacted]ééé[redacted]");
        let v = serde_json::json!({"k": ["x s3cret-0", 1, {"s3cret-0": true}]});
        assert_eq!(
            r.json(&v),
            serde_json::json!({"k": ["x [redacted]", 1, {"[redacted]": true}]})
        );
    }

    #[test]
    fn the_configuration_names_one_source_per_secret() {
        let c = crate::config::HostConfig::parse(
            "[secrets.A]\nenv = \"V\"\n[secrets.B]\nfile = \"/etc/b\"\n[secrets.C]\ncommand = [\"pass\", \"show\", \"c\"]\n",
        )
        .unwrap();
        assert_eq!(c.secrets.names().collect::<Vec<_>>(), ["A", "B", "C"]);
        for bad in [
            "[secrets.A]\nenv = \"V\"\nfile = \"/x\"\n",
            "[secrets.A]\nvault = \"x\"\n",
            "[secrets.A]\nfile = \"relative\"\n",
            "[secrets.\"1A\"]\nenv = \"V\"\n",
            "[secrets.A]\ncommand = []\n",
        ] {
            assert!(crate::config::HostConfig::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sources_parse_and_read() {
        let mut book = SecretBook::new();
        book.define_cli("A_TOKEN=cmd:printf '%s' 'value-from-a-command'")
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("t"), "value-from-a-file\n").unwrap();
        book.define_cli(&format!(
            "B={}",
            format_args!("file:{}", dir.path().join("t").display())
        ))
        .unwrap();
        let v = book.resolve(["A_TOKEN", "B"]).unwrap();
        assert_eq!(v.get("A_TOKEN"), Some("value-from-a-command"));
        assert_eq!(v.get("B"), Some("value-from-a-file"));
        assert_eq!(format!("{v:?}"), "{\"A_TOKEN\", \"B\"}");
        let e = book.resolve(["C"]).unwrap_err().to_string();
        assert!(e.contains("add [secrets.C]"), "{e}");
        for (bad, says) in [
            ("X", "use NAME=env:VAR"),
            ("X=ssm:/a", "a secret comes from"),
            ("X=file:rel", "absolute path"),
            ("X=cmd:", "name a program"),
            ("1X=env:A", "not an environment variable name"),
        ] {
            let e = SecretBook::new().define_cli(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
        book.define_cli("SHORT=cmd:echo tiny").unwrap();
        let e = book.resolve(["SHORT"]).unwrap_err().to_string();
        assert!(e.contains("too short to redact"), "{e}");
        book.define_cli("FAILS=cmd:false").unwrap();
        let e = book.resolve(["FAILS"]).unwrap_err().to_string();
        assert!(e.contains("`false` failed"), "{e}");
    }
}
