//! What a Dockerfile makes the engine read besides the build context: base
//! images (`FROM`) and the sources of `COPY --from` and `RUN --mount=…,from=`,
//! also in `ONBUILD` triggers; and what it must never make the engine do on
//! its own authority (fetch a remote `ADD` source, run a `# syntax=`
//! frontend image).
//!
//! The engine reads images and URLs with its own authority, not the
//! skill's, so the host parses the exact Dockerfile bytes it sends and
//! checks each image against the grant before the engine sees them. The
//! parser follows the classic builder of dockerd 20.10 (the host asks for
//! that builder): the same line splitting (continuations with the escape
//! character, comment lines inside continuations, the `# escape=` parser
//! directive), the same flag extraction, case-insensitive instructions,
//! JSON and shell forms, `ARG`s before the first `FROM` with the request's
//! build arguments, and stage names and indexes. Where that builder's
//! reading could differ between versions or is not worth imitating
//! (quotes or escapes in a `FROM` image, variables in `--from` or in `ADD`
//! sources, a directive anywhere but the first line, `--platform`), the
//! Dockerfile is refused with a message saying how to write it instead:
//! the host never guesses what the engine will read.
//!
//! This module only computes; it never reads files or talks to the engine.

use std::collections::HashMap;

/// Build arguments the engine lets a Dockerfile use without declaring them
/// (visible in `FROM` lines too).
const BUILTIN_ARGS: &[&str] = &[
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// Instructions the classic builder knows; anything else fails the build.
const INSTRUCTIONS: &[&str] = &[
    "add",
    "arg",
    "cmd",
    "copy",
    "entrypoint",
    "env",
    "expose",
    "from",
    "healthcheck",
    "label",
    "maintainer",
    "onbuild",
    "run",
    "shell",
    "stopsignal",
    "user",
    "volume",
    "workdir",
];

/// One image a Dockerfile makes the engine read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageUse {
    /// Line of the instruction (1-based; 0 for a base image's trigger).
    pub line: usize,
    /// `FROM`, `COPY --from` or `RUN --mount from`, after `ONBUILD ` for a
    /// trigger.
    pub how: String,
    /// The reference as the engine reads it (after `ARG` expansion).
    pub reference: String,
}

impl ImageUse {
    /// Whether this is a base image (its own `ONBUILD` triggers run in the
    /// build).
    pub fn is_base(&self) -> bool {
        self.how == "FROM"
    }
}

fn refuse(line: usize, m: impl std::fmt::Display) -> String {
    if line == 0 {
        format!("Dockerfile: {m}")
    } else {
        format!("Dockerfile line {line}: {m}")
    }
}

/// The images `dockerfile` makes the engine read (stages and `scratch`
/// left out), in order. `build_args` are the request's; they override the
/// defaults of `ARG`s declared before the first `FROM`. Refuses what the
/// engine would do on its own authority and what this parser does not
/// read exactly as the engine does.
pub fn images(dockerfile: &[u8], build_args: &[(String, String)]) -> Result<Vec<ImageUse>, String> {
    let escape = directives(dockerfile)?;
    let mut p = Parser {
        escape,
        build_args: build_args.iter().cloned().collect(),
        meta: Vec::new(),
        stages: Vec::new(),
        current: None,
        images: Vec::new(),
    };
    for (line, text) in logical_lines(dockerfile, escape) {
        p.instruction(line, &text)?;
    }
    if p.current.is_none() {
        return Err(refuse(0, "no FROM instruction"));
    }
    Ok(p.images)
}

/// The images an `ONBUILD` trigger of a base image makes the engine read
/// when the build starts from that image.
pub fn trigger_images(trigger: &str) -> Result<Vec<ImageUse>, String> {
    let mut p = Parser {
        escape: b'\\',
        build_args: HashMap::new(),
        meta: Vec::new(),
        stages: Vec::new(),
        current: Some(None),
        images: Vec::new(),
    };
    p.checked(0, trigger.as_bytes(), true)
        .map_err(|e| format!("{e} (in the base image's ONBUILD trigger {trigger:?})"))?;
    Ok(p.images)
}

// --- lines --------------------------------------------------------------------

/// The escape character, from a `# escape=` directive on the first line.
/// Other directives are refused where they could matter: `# syntax=` names
/// a frontend image the engine would pull and run (BuildKit; the classic
/// builder ignores it), and an `escape` below the first line is read
/// differently by different engine versions.
fn directives(dockerfile: &[u8]) -> Result<u8, String> {
    let mut escape = b'\\';
    for (i, raw) in physical_lines(dockerfile).enumerate() {
        let raw = if i == 0 {
            raw.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(raw)
        } else {
            raw
        };
        let text = trim_leading_space(trim_newline(raw));
        if text.is_empty() {
            continue;
        }
        if text[0] != b'#' {
            break;
        }
        let Some((key, value, plain)) = directive(text) else {
            continue;
        };
        match key.to_ascii_lowercase().as_str() {
            "syntax" => {
                return Err(refuse(
                    i + 1,
                    format!(
                        "the parser directive `# syntax={value}` would make the engine pull and \
                         run a frontend image; it is never allowed (skillbox builds with the \
                         classic builder, which ignores it: remove the line)"
                    ),
                ));
            }
            "escape" if i == 0 && plain && matches!(value.as_str(), "\\" | "`") => {
                escape = value.as_bytes()[0];
            }
            "escape" => {
                return Err(refuse(
                    i + 1,
                    "the escape directive must be the first line, written `# escape=\\` or \
                     `# escape=``",
                ));
            }
            _ => {}
        }
    }
    Ok(escape)
}

/// A `#KEY=VALUE` comment: its key, value, and whether only spaces and
/// tabs separate the parts (what every engine version reads alike).
fn directive(text: &[u8]) -> Option<(String, String, bool)> {
    // Invalid UTF-8 stays visible (as U+FFFD), so such a value is refused.
    let s = String::from_utf8_lossy(&text[1..]);
    let (key, value) = s.split_once('=')?;
    let space = |c: char| matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r');
    let k = key.trim_matches(space);
    let mut chars = k.chars();
    let ok_key = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric());
    let v = value.trim_matches(space);
    if !ok_key || v.is_empty() {
        return None;
    }
    let plain = !s.contains(['\n', '\x0b', '\x0c', '\r']);
    Some((k.to_string(), v.to_string(), plain))
}

/// Lines as Go's `bufio.ScanLines` yields them.
fn physical_lines(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let body = data.strip_suffix(b"\n").unwrap_or(data);
    let empty = data.is_empty();
    body.split(|&b| b == b'\n').filter(move |_| !empty)
}

fn trim_newline(b: &[u8]) -> &[u8] {
    let mut end = b.len();
    while end > 0 && matches!(b[end - 1], b'\r' | b'\n') {
        end -= 1;
    }
    &b[..end]
}

/// Leading Unicode white space, as Go's `unicode.IsSpace` (invalid UTF-8
/// is not space).
fn trim_leading_space(b: &[u8]) -> &[u8] {
    let mut i = 0;
    while i < b.len() {
        let (c, width) = decode(&b[i..]);
        if !c.is_some_and(char::is_whitespace) {
            break;
        }
        i += width;
    }
    &b[i..]
}

fn trim_space(b: &[u8]) -> &[u8] {
    let b = trim_leading_space(b);
    let mut end = b.len();
    while end > 0 {
        let start = (0..end).rev().find(|&s| (b[s] & 0xC0) != 0x80).unwrap_or(0);
        if !decode(&b[start..end]).0.is_some_and(char::is_whitespace) {
            break;
        }
        end = start;
    }
    &b[..end]
}

/// The first character of `b` and its width (1 for invalid UTF-8).
fn decode(b: &[u8]) -> (Option<char>, usize) {
    for w in 1..=b.len().min(4) {
        if let Ok(s) = std::str::from_utf8(&b[..w]) {
            return (s.chars().next(), w);
        }
    }
    (None, 1)
}

fn is_comment(raw: &[u8]) -> bool {
    trim_leading_space(trim_newline(raw)).first() == Some(&b'#')
}

/// Removes a final escape character followed by spaces or tabs; `true`
/// when there was none (the instruction ends here).
fn trim_continuation(line: &[u8], escape: u8) -> (&[u8], bool) {
    let mut end = line.len();
    while end > 0 && matches!(line[end - 1], b' ' | b'\t') {
        end -= 1;
    }
    if end > 0 && line[end - 1] == escape {
        (&line[..end - 1], false)
    } else {
        (line, true)
    }
}

/// Instructions with their first line number: continuation lines joined,
/// comment and empty lines inside a continuation skipped, comments dropped.
fn logical_lines(data: &[u8], escape: u8) -> Vec<(usize, Vec<u8>)> {
    let lines: Vec<&[u8]> = physical_lines(data).collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let mut raw = lines[i];
        if i == 0 {
            raw = raw.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(raw);
        }
        let first = trim_leading_space(trim_newline(raw));
        let first: &[u8] = if is_comment(first) { b"" } else { first };
        i += 1;
        let start = i;
        let (text, mut end) = trim_continuation(first, escape);
        if end && text.is_empty() {
            continue;
        }
        let mut line = text.to_vec();
        while !end && i < lines.len() {
            let raw = lines[i];
            i += 1;
            if is_comment(raw) {
                continue;
            }
            let next = trim_newline(raw);
            if trim_leading_space(next).is_empty() {
                continue;
            }
            let (text, e) = trim_continuation(next, escape);
            line.extend_from_slice(text);
            end = e;
        }
        out.push((start, line));
    }
    out
}

// --- instructions -----------------------------------------------------------

/// An `ARG` default: its text, or why it cannot be used in `FROM`.
type MetaArg = (String, Result<Option<String>, String>);

struct Parser {
    escape: u8,
    build_args: HashMap<String, String>,
    /// `ARG`s before the first `FROM`, in order.
    meta: Vec<MetaArg>,
    /// Completed stages' names (lower case), in order.
    stages: Vec<Option<String>>,
    /// The current stage's name; `None` before the first `FROM`.
    current: Option<Option<String>>,
    images: Vec<ImageUse>,
}

/// `[\t\v\f\r ]`, the separator of an instruction's words.
fn word_space(b: u8) -> bool {
    matches!(b, b'\t' | 0x0b | 0x0c | b'\r' | b' ')
}

/// Splits a line into its lower-case instruction, its `--flags` and the
/// rest, as the classic builder's parser does.
fn split_command(line: &[u8]) -> (String, Vec<String>, Vec<u8>) {
    let line = trim_space(line);
    let end = line
        .iter()
        .position(|&b| word_space(b))
        .unwrap_or(line.len());
    let cmd = String::from_utf8_lossy(&line[..end]).to_lowercase();
    let mut rest = &line[end..];
    while rest.first().is_some_and(|&b| word_space(b)) {
        rest = &rest[1..];
    }
    if end == line.len() {
        return (cmd, Vec::new(), Vec::new());
    }
    let (args, flags) = extract_flags(rest);
    (cmd, flags, trim_space(&args).to_vec())
}

/// A byte as Go's `unicode.IsSpace(rune(b))`: the flag scanner looks at
/// bytes, not characters.
fn byte_space(b: u8) -> bool {
    matches!(b, b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | b' ' | 0x85 | 0xA0)
}

/// Leading words starting with `--` (quotes and `\` processed; `--` ends
/// them): the classic builder's `extractBuilderFlags`, byte for byte.
fn extract_flags(line: &[u8]) -> (Vec<u8>, Vec<String>) {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let mut words: Vec<Vec<u8>> = Vec::new();
    let mut phase = Phase::Spaces;
    let mut word: Vec<u8> = Vec::new();
    let mut quote = 0u8;
    let mut blank_ok = false;
    let mut ch = 0u8;
    let mut pos = 0;
    let finish = |words: Vec<Vec<u8>>| -> Vec<String> {
        words
            .into_iter()
            .map(|w| String::from_utf8_lossy(&w).into_owned())
            .collect()
    };
    while pos <= line.len() {
        if pos != line.len() {
            ch = line[pos];
        }
        if phase == Phase::Spaces {
            if pos == line.len() {
                break;
            }
            if byte_space(ch) {
                pos += 1;
                continue;
            }
            if ch != b'-' || pos + 1 == line.len() || line[pos + 1] != b'-' {
                return (line[pos..].to_vec(), finish(words));
            }
            phase = Phase::Word;
        }
        if phase != Phase::Spaces && pos == line.len() {
            if word != b"--" && (blank_ok || !word.is_empty()) {
                words.push(word);
            }
            break;
        }
        if phase == Phase::Word {
            if byte_space(ch) {
                phase = Phase::Spaces;
                if word == b"--" {
                    return (line[pos..].to_vec(), finish(words));
                }
                if blank_ok || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                word.clear();
                blank_ok = false;
                pos += 1;
                continue;
            }
            if ch == b'\'' || ch == b'"' {
                quote = ch;
                blank_ok = true;
                phase = Phase::Quote;
                pos += 1;
                continue;
            }
            if ch == b'\\' {
                if pos + 1 == line.len() {
                    pos += 1;
                    continue;
                }
                pos += 1;
                ch = line[pos];
            }
            word.push(ch);
            pos += 1;
            continue;
        }
        // In quotes.
        if ch == quote {
            phase = Phase::Word;
            pos += 1;
            continue;
        }
        if ch == b'\\' {
            if pos + 1 == line.len() {
                phase = Phase::Word;
                pos += 1;
                continue;
            }
            pos += 1;
            ch = line[pos];
        }
        word.push(ch);
        pos += 1;
    }
    (Vec::new(), finish(words))
}

/// A flag's name and value (`--name=value`).
fn flag(f: &str) -> (String, &str) {
    let f = f.strip_prefix("--").unwrap_or(f);
    match f.split_once('=') {
        Some((n, v)) => (n.to_ascii_lowercase(), v),
        None => (f.to_ascii_lowercase(), ""),
    }
}

impl Parser {
    fn instruction(&mut self, line: usize, text: &[u8]) -> Result<(), String> {
        self.checked(line, text, false)
    }

    /// Checks one instruction; `onbuild` for the body of an `ONBUILD` (it
    /// runs later, in a build whose stages are unknown).
    fn checked(&mut self, line: usize, text: &[u8], onbuild: bool) -> Result<(), String> {
        let (cmd, flags, args) = split_command(text);
        if !INSTRUCTIONS.contains(&cmd.as_str()) {
            return Err(refuse(
                line,
                format!("unknown instruction {:?}", cmd.to_uppercase()),
            ));
        }
        let prefix = if onbuild { "ONBUILD " } else { "" };
        if self.current.is_none() && cmd != "from" && cmd != "arg" {
            return Err(refuse(
                line,
                format!(
                    "{} before the first FROM (only ARG may come first)",
                    cmd.to_uppercase()
                ),
            ));
        }
        // Any `--from` or `--mount …,from=` names an image or a stage,
        // whatever the instruction (the engine refuses unknown flags, but
        // the host does not rely on it).
        for f in &flags {
            let (name, value) = flag(f);
            match name.as_str() {
                "from" => self.source(
                    line,
                    &format!("{prefix}{} --from", cmd.to_uppercase()),
                    value,
                    onbuild,
                )?,
                "mount" => {
                    for field in value.split(',') {
                        let field = field.trim().trim_matches(['"', '\'']);
                        if let Some((k, v)) = field.split_once('=')
                            && k.trim().eq_ignore_ascii_case("from")
                        {
                            let v = v.trim().trim_matches(['"', '\'']);
                            self.source(line, &format!("{prefix}RUN --mount from"), v, onbuild)?;
                        }
                    }
                }
                "platform" if cmd == "from" => {
                    return Err(refuse(
                        line,
                        "FROM --platform is not allowed: it can make the engine pull an image, \
                         and nothing is pulled for a skill (remove the flag)",
                    ));
                }
                _ => {}
            }
        }
        match cmd.as_str() {
            "from" if onbuild => Err(refuse(line, "ONBUILD FROM is not allowed")),
            "onbuild" if onbuild => Err(refuse(line, "ONBUILD ONBUILD is not allowed")),
            "from" => self.from(line, &flags, &args),
            "arg" if self.current.is_none() => self.meta_arg(line, &args),
            "add" => add_sources(line, &args, self.escape, prefix),
            "onbuild" => self.checked(line, &args, true),
            _ => Ok(()),
        }
    }

    fn from(&mut self, line: usize, flags: &[String], args: &[u8]) -> Result<(), String> {
        if let Some(f) = flags.first() {
            return Err(refuse(line, format!("FROM does not take {f:?}")));
        }
        let words: Vec<&[u8]> = args
            .split(|&b| word_space(b))
            .filter(|w| !w.is_empty())
            .collect();
        let name = match words.as_slice() {
            [_] => None,
            [_, as_, name] if as_.eq_ignore_ascii_case(b"as") => {
                Some(String::from_utf8_lossy(name).to_lowercase())
            }
            _ => {
                return Err(refuse(
                    line,
                    "FROM takes an image and an optional `AS name`",
                ));
            }
        };
        let base = self.expand_base(line, words[0])?;
        if let Some(done) = self.current.take() {
            self.stages.push(done);
        }
        self.current = Some(name);
        if base == "scratch" || self.stage_named(&base) {
            return Ok(());
        }
        self.image(line, "FROM", &base)
    }

    fn stage_named(&self, name: &str) -> bool {
        let lower = name.to_lowercase();
        self.stages
            .iter()
            .any(|s| s.as_deref() == Some(lower.as_str()))
    }

    /// A `--from` value: a completed stage (by name or index) or an image.
    fn source(&mut self, line: usize, how: &str, value: &str, onbuild: bool) -> Result<(), String> {
        if value.is_empty() {
            return Ok(());
        }
        if value.contains('$') {
            return Err(refuse(
                line,
                format!(
                    "{how}={value}: variables in --from are not allowed; name the stage or image"
                ),
            ));
        }
        let numeric = value
            .strip_prefix(['+', '-'])
            .unwrap_or(value)
            .chars()
            .all(|c| c.is_ascii_digit());
        if numeric {
            let index: Option<usize> = value.strip_prefix('+').unwrap_or(value).parse().ok();
            if onbuild || index.is_none_or(|i| i >= self.stages.len()) {
                return Err(refuse(
                    line,
                    format!("{how}={value} names no earlier stage of this Dockerfile"),
                ));
            }
            return Ok(());
        }
        if !onbuild && self.stage_named(value) {
            return Ok(());
        }
        self.image(line, how, value)
    }

    fn image(&mut self, line: usize, how: &str, reference: &str) -> Result<(), String> {
        // An untagged name of hex digits could be taken for an image id.
        let last = reference.rsplit('/').next().unwrap_or(reference);
        if !last.contains(':') && last.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(refuse(
                line,
                format!(
                    "{how} {reference}: name the image with a tag (e.g. {reference}:latest); a bare hex name can mean an image id"
                ),
            ));
        }
        self.images.push(ImageUse {
            line,
            how: how.to_string(),
            reference: reference.to_string(),
        });
        Ok(())
    }

    /// `ARG NAME[=default] …` before the first `FROM`.
    fn meta_arg(&mut self, line: usize, args: &[u8]) -> Result<(), String> {
        let text = String::from_utf8_lossy(args).into_owned();
        let tricky = text.contains(['\'', '"']) || text.as_bytes().contains(&self.escape);
        for word in text.split(char::is_whitespace).filter(|w| !w.is_empty()) {
            let (name, default) = match word.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (word, None),
            };
            let value = if tricky {
                Err(format!(
                    "line {line}: ARG {name} uses quotes or escapes, which FROM cannot use here; write the value plainly"
                ))
            } else {
                match self.build_args.get(name) {
                    Some(v) => Ok(Some(v.clone())),
                    None => match default {
                        Some(d) => self.expand(d).map(Some),
                        None => Ok(None),
                    },
                }
            };
            self.meta.push((name.to_string(), value));
        }
        Ok(())
    }

    /// The value of a variable in a `FROM` line or an `ARG` default.
    fn var(&self, name: &str) -> Result<String, String> {
        if let Some((_, v)) = self.meta.iter().rev().find(|(n, _)| n == name) {
            return v.clone().map(Option::unwrap_or_default);
        }
        if BUILTIN_ARGS.contains(&name) {
            return Ok(self.build_args.get(name).cloned().unwrap_or_default());
        }
        Ok(String::new())
    }

    fn expand_base(&self, line: usize, word: &[u8]) -> Result<String, String> {
        let s = String::from_utf8_lossy(word);
        if !s.is_ascii() || s.contains(['\'', '"']) || word.contains(&self.escape) {
            return Err(refuse(
                line,
                format!(
                    "FROM {s}: quotes, escapes and non-ASCII characters are not allowed in a base image name; write it plainly"
                ),
            ));
        }
        self.expand(&s)
            .map_err(|e| refuse(line, format!("FROM {s}: {e}")))
    }

    /// `$NAME`, `${NAME}`, `${NAME:-word}` and `${NAME:+word}` (with a
    /// plain word): the forms every engine version reads alike.
    fn expand(&self, s: &str) -> Result<String, String> {
        let unsupported = || {
            format!(
                "{s:?}: only $NAME, ${{NAME}}, ${{NAME:-default}} and ${{NAME:+alternative}} \
                 are supported here"
            )
        };
        let name_ok = |n: &str| {
            let mut c = n.chars();
            c.next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && c.all(|c| c.is_ascii_alphanumeric() || c == '_')
        };
        let mut out = String::new();
        let mut rest = s;
        while let Some(i) = rest.find('$') {
            out.push_str(&rest[..i]);
            rest = &rest[i + 1..];
            if let Some(inner) = rest.strip_prefix('{') {
                let end = inner.find('}').ok_or_else(unsupported)?;
                let body = &inner[..end];
                rest = &inner[end + 1..];
                let (name, op) = match body.find(':') {
                    Some(j) => (&body[..j], Some(&body[j + 1..])),
                    None => (body, None),
                };
                if !name_ok(name) {
                    return Err(unsupported());
                }
                let value = self.var(name)?;
                match op {
                    None => out.push_str(&value),
                    Some(op) => {
                        let (kind, word) = op.split_at(op.len().min(1));
                        if word.contains(['$', '{', '\'', '"', '\\', '`']) {
                            return Err(unsupported());
                        }
                        match (kind, value.is_empty()) {
                            ("-", true) | ("+", false) => out.push_str(word),
                            ("-", false) => out.push_str(&value),
                            ("+", true) => {}
                            _ => return Err(unsupported()),
                        }
                    }
                }
            } else {
                let end = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len());
                let name = &rest[..end];
                if !name_ok(name) {
                    return Err(unsupported());
                }
                out.push_str(&self.var(name)?);
                rest = &rest[end..];
            }
        }
        out.push_str(rest);
        Ok(out)
    }
}

/// `ADD` sources: never a remote URL (the engine would fetch it with its
/// own network access, whatever the build's network), and no variables in
/// them (the host could not tell what they become).
fn add_sources(line: usize, args: &[u8], escape: u8, prefix: &str) -> Result<(), String> {
    let words: Vec<String> = match serde_json::from_slice::<Vec<String>>(args) {
        Ok(list) if args.starts_with(b"[") => list,
        _ => args
            .split(|&b| word_space(b))
            .filter(|w| !w.is_empty())
            .map(|w| String::from_utf8_lossy(w).into_owned())
            .collect(),
    };
    let sources = &words[..words.len().saturating_sub(1)];
    for src in sources {
        if src.contains('$') {
            return Err(refuse(
                line,
                format!(
                    "{prefix}ADD {src}: variables are not allowed in ADD sources; write the path \
                     out, or use COPY"
                ),
            ));
        }
        // Quotes and escapes are removed before the engine looks at it.
        let plain: String = src
            .chars()
            .filter(|&c| !matches!(c, '"' | '\'' | '\\') && c != char::from(escape))
            .collect::<String>()
            .to_ascii_lowercase();
        if plain.contains("://") || plain.starts_with("git@") {
            return Err(refuse(
                line,
                format!(
                    "{prefix}ADD {src}: a remote source is never allowed: the engine would fetch \
                     it with its own network access, not the skill's. Fetch it through the \
                     skill's granted network (--allow-net) into the build context and COPY it"
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refs(df: &str) -> Vec<String> {
        images(df.as_bytes(), &[])
            .unwrap_or_else(|e| panic!("{df:?}: {e}"))
            .into_iter()
            .map(|i| format!("{} {}", i.how, i.reference))
            .collect()
    }

    fn refused(df: &str) -> String {
        images(df.as_bytes(), &[]).expect_err(df)
    }

    #[test]
    fn base_images_and_copy_sources_are_found() {
        assert_eq!(refs("FROM scratch\nCOPY a /a\n"), Vec::<String>::new());
        assert_eq!(refs("FROM foreign\n"), ["FROM foreign"]);
        assert_eq!(refs("from foreign:v1 as b\n"), ["FROM foreign:v1"]);
        assert_eq!(
            refs("FROM scratch\nCOPY --from=foreign /s /s\n"),
            ["COPY --from foreign"]
        );
        assert_eq!(
            refs("FROM scratch\ncopy --chown=1:1 --from=reg.local:5000/x:y /s /s\n"),
            ["COPY --from reg.local:5000/x:y"]
        );
        // Flags as the engine reads them: quotes and backslashes removed.
        assert_eq!(
            refs("FROM scratch\nCOPY --\"from\"='foreign' /s /s\n"),
            ["COPY --from foreign"]
        );
        assert_eq!(
            refs("FROM scratch\nCOPY --fr\\om=foreign /s /s\n"),
            ["COPY --from foreign"]
        );
        // JSON form after flags.
        assert_eq!(
            refs("FROM scratch\nCOPY --from=foreign [\"/s\", \"/s\"]\n"),
            ["COPY --from foreign"]
        );
        // A JSON list is not a flag.
        assert_eq!(
            refs("FROM scratch\nCOPY [\"--from=foreign\", \"/s\"]\n"),
            Vec::<String>::new()
        );
        assert_eq!(
            refs("FROM scratch\nRUN --mount=type=bind,from=foreign,target=/x true\n"),
            ["RUN --mount from foreign"]
        );
        assert_eq!(
            refs("FROM scratch\nONBUILD COPY --from=foreign /s /s\n"),
            ["ONBUILD COPY --from foreign"]
        );
        assert_eq!(
            refs("FROM scratch\nonbuild run --mount=from=foreign true\n"),
            ["ONBUILD RUN --mount from foreign"]
        );
    }

    #[test]
    fn lines_are_joined_as_the_engine_joins_them() {
        assert_eq!(refs("FROM \\\n  foreign\n"), ["FROM foreign"]);
        assert_eq!(
            refs("FROM \\  \t\n# a comment\n\n  foreign\n"),
            ["FROM foreign"]
        );
        assert_eq!(
            refs("FROM scratch\nCOPY \\\n--from=foreign /s /s\n"),
            ["COPY --from foreign"]
        );
        // A comment is a whole line only; `#` inside is literal.
        assert_eq!(refs("  # FROM x\nFROM foreign\n"), ["FROM foreign"]);
        assert!(refused("FROM foreign # no\n").contains("optional `AS name`"));
        // CRLF line ends and a byte-order mark.
        assert_eq!(
            refs("\u{feff}FROM foreign\r\nCOPY a b\r\n"),
            ["FROM foreign"]
        );
        // The escape directive changes the continuation character.
        assert_eq!(refs("# escape=`\nFROM `\n foreign\n"), ["FROM foreign"]);
        assert_eq!(
            refs("#ESCAPE = `\nFROM scratch\nCOPY --from=foreign `\n/s /s\n"),
            ["COPY --from foreign"]
        );
        // Without it, a backtick is an ordinary character.
        assert_eq!(refs("FROM foreign`\n"), ["FROM foreign`"]);
    }

    #[test]
    fn arguments_before_the_first_from_are_expanded() {
        assert_eq!(refs("ARG B=foreign\nFROM $B\n"), ["FROM foreign"]);
        assert_eq!(refs("ARG B=foreign\nFROM ${B}:v1\n"), ["FROM foreign:v1"]);
        assert_eq!(
            refs("ARG R=reg.local\nARG B=$R/x\nFROM ${B}\n"),
            ["FROM reg.local/x"]
        );
        assert_eq!(refs("ARG B\nFROM ${B:-foreign}\n"), ["FROM foreign"]);
        assert_eq!(refs("ARG B=x\nFROM ${B:+foreign}\n"), ["FROM foreign"]);
        assert_eq!(refs("ARG B=scratch\nFROM $B\n"), Vec::<String>::new());
        let with = |df: &str, args: &[(&str, &str)]| {
            let args: Vec<(String, String)> = args
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            images(df.as_bytes(), &args)
                .map(|v| v.into_iter().map(|i| i.reference).collect::<Vec<_>>())
        };
        // The request's build arguments override the defaults…
        assert_eq!(
            with("ARG B=scratch\nFROM $B\n", &[("B", "foreign")]).unwrap(),
            ["foreign"]
        );
        // …but only of declared ARGs (and the engine's built-in proxy ones).
        assert!(with("FROM scratch$B\n", &[("B", "x")]).unwrap().is_empty());
        assert_eq!(
            with("FROM x$HTTP_PROXY\n", &[("HTTP_PROXY", "y")]).unwrap(),
            ["xy"]
        );
        // An ARG inside a stage does not reach the next FROM.
        assert_eq!(
            refs("FROM scratch\nARG B=foreign\nFROM scratch$B\n"),
            Vec::<String>::new()
        );
        // Forms read differently by engine versions are refused.
        for df in [
            "ARG B=foreign\nFROM ${B-x}\n",
            "ARG B=foreign\nFROM ${B:?x}\n",
            "ARG B=\"foreign\"\nFROM $B\n",
            "FROM \"foreign\"\n",
            "FROM fo\\reign\n",
            "FROM $1\n",
        ] {
            refused(df);
        }
    }

    #[test]
    fn stages_are_not_images() {
        let df = "FROM scratch AS Build\nCOPY a /a\nFROM build\nCOPY --from=BUILD /a /a\nCOPY --from=0 /a /b\n";
        assert_eq!(refs(df), Vec::<String>::new());
        // A stage is known only once it is complete.
        assert_eq!(
            refs("FROM scratch AS st\nCOPY --from=st /x /x\n"),
            ["COPY --from st"]
        );
        assert!(refused("FROM scratch\nCOPY --from=0 /x /x\n").contains("no earlier stage"));
        assert!(refused("FROM scratch\nCOPY --from=-1 /x /x\n").contains("no earlier stage"));
        // An ONBUILD trigger runs in another build: names are images there.
        assert_eq!(
            refs("FROM scratch AS st\nFROM scratch\nONBUILD COPY --from=st /x /x\n"),
            ["ONBUILD COPY --from st"]
        );
    }

    #[test]
    fn what_the_engine_would_do_on_its_own_is_refused() {
        for (df, needle) in [
            ("# syntax=docker/dockerfile:1\nFROM scratch\n", "syntax"),
            ("#SYNTAX = evil/frontend\nFROM scratch\n", "syntax"),
            ("# hello\n# syntax=evil\nFROM scratch\n", "syntax"),
            (
                "FROM scratch\nADD http://127.0.0.1:1/x /x\n",
                "remote source",
            ),
            (
                "FROM scratch\nadd HTTPS://example.com/x /x\n",
                "remote source",
            ),
            (
                "FROM scratch\nADD [\"http://h/x\", \"/x\"]\n",
                "remote source",
            ),
            ("FROM scratch\nADD \"http\"://h/x /x\n", "remote source"),
            (
                "FROM scratch\nADD git@github.com:a/b.git /x\n",
                "remote source",
            ),
            (
                "FROM scratch\nADD --chown=1 git://h/r /x\n",
                "remote source",
            ),
            ("FROM scratch\nONBUILD ADD http://h/x /x\n", "remote source"),
            ("FROM scratch\nADD \\\n  http://h/x /x\n", "remote source"),
            ("FROM scratch\nARG U=http://h/x\nADD $U /x\n", "variables"),
            ("FROM scratch\nCOPY --from=$X /x /x\n", "variables"),
            ("FROM --platform=linux/arm64 scratch\n", "--platform"),
            ("# a\n# escape=`\nFROM scratch\n", "first line"),
            ("# escape=x\nFROM scratch\n", "first line"),
            ("#\x0cescape=`\nFROM scratch\n", "first line"),
            ("COPY a b\nFROM scratch\n", "before the first FROM"),
            ("FROM scratch\nFRUM x\n", "unknown instruction"),
            ("FROM scratch\nONBUILD FROM x\n", "ONBUILD FROM"),
            ("FROM abc123\n", "with a tag"),
            ("", "no FROM"),
            ("FROM a b\n", "optional `AS name`"),
        ] {
            let e = refused(df);
            assert!(e.contains(needle), "{df:?}: {e}");
        }
        // Local ADD sources are fine; an escape directive on the first line too.
        assert!(refs("FROM scratch\nADD app.tar.gz /app/\nADD a $DEST\n").is_empty());
        assert!(refs("# escape=`\nFROM scratch\n").is_empty());
        assert!(refs("# check=skip\nFROM scratch\n").is_empty());
        assert!(
            images(b"FROM scratch\nADD http://h/x /x\n", &[])
                .unwrap_err()
                .starts_with("Dockerfile line 2: ADD http://h/x")
        );
    }

    #[test]
    fn flags_are_extracted_byte_for_byte() {
        let (rest, flags) = extract_flags(b"--a=1 --b='x y' -- --c /s /d");
        assert_eq!(flags, ["--a=1", "--b=x y"]);
        assert_eq!(rest, b" --c /s /d");
        let (rest, flags) = extract_flags(b"--from=a\xC2\x85--x /s");
        // 0x85, the second byte of U+0085, is a space to the byte scanner.
        assert_eq!(
            flags,
            [
                String::from_utf8_lossy(b"--from=a\xC2").into_owned(),
                "--x".into()
            ]
        );
        assert_eq!(rest, b"/s");
    }

    #[test]
    fn triggers_of_a_base_image_are_checked() {
        let got = trigger_images("COPY --from=foreign /s /s").unwrap();
        assert_eq!(got[0].reference, "foreign");
        assert_eq!(got[0].how, "ONBUILD COPY --from");
        assert!(
            trigger_images("ADD http://h/x /x")
                .unwrap_err()
                .contains("remote source")
        );
        assert!(trigger_images("RUN true").unwrap().is_empty());
    }
}
