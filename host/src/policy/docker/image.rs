//! Image references and image patterns: which tags a pattern covers.
//!
//! A reference is split the way the engine splits it: an optional
//! registry, a repository path of one or more components, and a tag
//! (`reg.local:5000/team/app:v2`). The first component is a registry only
//! if it contains `.` or `:`, is `localhost`, or has an upper-case letter
//! (which a repository component never has); so `myapp:5000/x:y` is the
//! repository `x` on the registry `myapp:5000`, not a tag of `myapp`.
//! Docker Hub's long forms name the same images as the short ones
//! (`docker.io/library/app` is `app`, `docker.io/u/app` is `u/app`) and are
//! folded into them.
//!
//! A pattern has the same shape with `*` (any run) and `?` (one character)
//! inside the parts, and a glob never crosses a separator: `*` stays within
//! the registry's host or port, one repository component, or the tag. So
//! `myapp:*` covers `myapp:v2` but not `myapp:5000/x:y`, `*:*` covers
//! `app:v1` but not `u/app:v1`, and `*/app:*` covers `u/app:v1` on Docker
//! Hub but not `evil.example/app:v1`. The lone pattern `*` covers every
//! image. References are validated strictly (the engine's grammar, tags
//! only, no digests or ids), so no other character can mean a separator.

use super::super::pattern::glob_match;

/// Longest repository name the engine accepts.
const MAX_NAME: usize = 255;
/// Longest tag the engine accepts.
const MAX_TAG: usize = 128;

/// A reference or pattern split into its parts.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Parts {
    /// `host` and optional `port`; `None` is Docker Hub.
    registry: Option<(String, Option<String>)>,
    /// Repository path components.
    path: Vec<String>,
    tag: String,
}

impl Parts {
    fn render(&self) -> String {
        let mut s = String::new();
        if let Some((host, port)) = &self.registry {
            s.push_str(host);
            if let Some(p) = port {
                s.push(':');
                s.push_str(p);
            }
            s.push('/');
        }
        s.push_str(&self.path.join("/"));
        s.push(':');
        s.push_str(&self.tag);
        s
    }

    /// Whether these parts, read as a pattern, cover `text`'s parts read
    /// literally (globs in `text` are just characters).
    fn covers(&self, text: &Parts) -> bool {
        let registry = match (&self.registry, &text.registry) {
            (None, None) => true,
            (Some((ph, pp)), Some((th, tp))) => {
                glob_match(ph, th)
                    && match (pp, tp) {
                        (None, None) => true,
                        (Some(p), Some(t)) => glob_match(p, t),
                        _ => false,
                    }
            }
            _ => false,
        };
        registry
            && self.path.len() == text.path.len()
            && self
                .path
                .iter()
                .zip(&text.path)
                .all(|(p, t)| glob_match(p, t))
            && glob_match(&self.tag, &text.tag)
    }
}

/// Splits `s` into parts; `globs` allows `*` and `?` in them (a pattern).
/// A missing tag is `latest` for a reference and an error for a pattern.
fn split(s: &str, globs: bool) -> Result<Parts, String> {
    let what = if globs { "image pattern" } else { "image tag" };
    let bad = |why: &str| format!("{s:?} is not a valid {what}: {why}");
    if s.is_empty() {
        return Err(format!("the {what} is empty"));
    }
    if s.contains('@') {
        return Err(bad(
            "images are named by tag (e.g. \"myapp:v2\"), not by digest",
        ));
    }
    let (name, tag) = match s.rfind(':') {
        Some(i) if !s[i..].contains('/') => (&s[..i], Some(&s[i + 1..])),
        _ => (s, None),
    };
    let tag = match tag {
        Some(t) => t.to_string(),
        None if globs => {
            return Err(bad(
                "name a tag, e.g. \"myapp:*\" or \"registry.local/myapp:v*\"",
            ));
        }
        None => "latest".to_string(),
    };
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_' || (globs && matches!(c, '*' | '?'));
    if tag.is_empty()
        || tag.len() > MAX_TAG
        || tag.starts_with(['.', '-'])
        || !tag.chars().all(|c| word(c) || matches!(c, '.' | '-'))
    {
        return Err(bad(
            "a tag is 1-128 letters, digits, '_', '.' or '-', not starting with '.' or '-'",
        ));
    }
    if name.len() > MAX_NAME {
        return Err(bad("the name is longer than 255 characters"));
    }
    let mut components: Vec<&str> = name.split('/').collect();
    let first = components[0];
    let registry = if components.len() > 1
        && (first.contains(['.', ':'])
            || first == "localhost"
            || first.chars().any(|c| c.is_ascii_uppercase()))
    {
        components.remove(0);
        let (host, port) = match first.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (first, None),
        };
        let host_ok = !host.is_empty()
            && !host.starts_with(['.', '-'])
            && !host.ends_with(['.', '-'])
            && host.chars().all(|c| {
                c.is_ascii_alphanumeric()
                    || matches!(c, '.' | '-')
                    || (globs && matches!(c, '*' | '?'))
            });
        let port_ok = port.is_none_or(|p| {
            !p.is_empty() && p.chars().all(|c| c.is_ascii_digit() || (globs && word(c)))
        });
        if !host_ok || !port_ok {
            return Err(bad("the registry must be HOST or HOST:PORT"));
        }
        Some((host.to_string(), port.map(str::to_string)))
    } else {
        None
    };
    for c in &components {
        if !repository_component(c, globs) {
            return Err(bad(
                "repository components are lower-case letters and digits, separated by \
                 '.', '_', '__' or dashes",
            ));
        }
    }
    let mut parts = Parts {
        registry,
        path: components.iter().map(|c| c.to_string()).collect(),
        tag,
    };
    // Docker Hub's long forms are the short ones.
    if matches!(&parts.registry, Some((h, None)) if h == "docker.io" || h == "index.docker.io") {
        parts.registry = None;
    }
    if parts.registry.is_none() && parts.path.len() == 2 && parts.path[0] == "library" {
        parts.path.remove(0);
    }
    Ok(parts)
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*` (a repository name's component in
/// the distribution spec), with `*`/`?` as alphanumerics in a pattern.
pub(crate) fn repository_component(c: &str, globs: bool) -> bool {
    let alnum = |ch: char| {
        ch.is_ascii_lowercase() || ch.is_ascii_digit() || (globs && matches!(ch, '*' | '?'))
    };
    let b: Vec<char> = c.chars().collect();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep: String = b[start..i].iter().collect();
        if !(sep == "." || sep == "_" || sep == "__" || sep.chars().all(|ch| ch == '-')) {
            return false;
        }
    }
    true
}

/// Checks an image pattern: `*`, or `[REGISTRY/]REPOSITORY:TAG` with globs
/// inside the parts.
pub fn validate_pattern(p: &str) -> Result<(), String> {
    if p == "*" {
        return Ok(());
    }
    split(p, true).map(drop)
}

/// Normalises an image reference given by a guest to `[registry/]repo:tag`
/// (a bare `repo` means `repo:latest`; Docker Hub's long forms become the
/// short ones). Ids and digests are refused: images are named by tag so
/// that the grant's patterns mean something.
pub fn normalize_tag(reference: &str) -> Result<String, String> {
    let r = reference.trim();
    let hexish = r.len() >= 12 && r.chars().all(|c| c.is_ascii_hexdigit());
    if r.starts_with("sha256:") || r.contains('@') || hexish {
        return Err(format!(
            "{reference:?}: images are named by tag (e.g. \"myapp:v2\"), not by id or digest"
        ));
    }
    split(r, false).map(|p| p.render())
}

/// Whether `pattern` covers the normalised tag `tag`. A tag that does not
/// parse is covered by nothing but `*`.
pub fn pattern_covers(pattern: &str, tag: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    if tag == "*" {
        return false;
    }
    match (split(pattern, true), split(tag, true)) {
        (Ok(p), Ok(t)) => p.covers(&t),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_cover_tags_without_crossing_separators() {
        // (pattern, tag, covered)
        let table: &[(&str, &str, bool)] = &[
            ("myapp:*", "myapp:v2", true),
            ("myapp:*", "myapp:latest", true),
            ("myapp:*", "myapp:5000/x:y", false),
            ("myapp:*", "myapp/x:y", false),
            ("myapp:*", "other/myapp:v1", false),
            ("myapp:*", "reg.local/myapp:v1", false),
            ("myapp:*", "docker.io/library/myapp:v1", true),
            ("myapp:*", "library/myapp:v1", true),
            ("myapp:v*", "myapp:v2", true),
            ("myapp:v*", "myapp:previous", false),
            ("myapp*:*", "myapp-evil:v1", true),
            ("myapp*:*", "myapp:5000/x:y", false),
            ("myapp*:*", "myapp.evil/x:y", false),
            ("*:*", "app:v1", true),
            ("*:*", "u/app:v1", false),
            ("*:*", "reg.local/app:v1", false),
            ("*/app:*", "u/app:v1", true),
            ("*/app:*", "evil.example/app:v1", false),
            ("*/app:*", "localhost/app:v1", false),
            ("u/*:*", "u/app:v1", true),
            ("u/*:*", "u/app/x:v1", false),
            ("reg.local/myapp:*", "reg.local/myapp:v1", true),
            ("reg.local/myapp:*", "reg.local:5000/myapp:v1", false),
            ("reg.local:*/myapp:*", "reg.local:5000/myapp:v1", true),
            ("reg.local:*/myapp:*", "reg.local/myapp:v1", false),
            ("*.local/myapp:*", "reg.local/myapp:v1", true),
            ("*.local/myapp:*", "reg.local:5000/myapp:v1", false),
            ("localhost/app:*", "localhost/app:v1", true),
            ("docker.io/library/app:*", "app:v1", true),
            ("*", "reg.local:5000/x/y:z", true),
            ("myapp:*", "*", false),
        ];
        for &(p, t, want) in table {
            assert!(validate_pattern(p).is_ok(), "{p}");
            let tag = if t == "*" {
                t.to_string()
            } else {
                normalize_tag(t).unwrap()
            };
            assert_eq!(pattern_covers(p, &tag), want, "{p} vs {t}");
        }
    }

    #[test]
    fn references_are_normalised_and_checked() {
        for (r, want) in [
            ("myapp", "myapp:latest"),
            ("myapp:v2", "myapp:v2"),
            ("reg.local:5000/myapp", "reg.local:5000/myapp:latest"),
            ("docker.io/library/busybox:1", "busybox:1"),
            ("index.docker.io/u/app", "u/app:latest"),
            ("localhost/app:v1", "localhost/app:v1"),
            ("x/a__b.c-d---e/f:T_1.x-y", "x/a__b.c-d---e/f:T_1.x-y"),
        ] {
            assert_eq!(normalize_tag(r).unwrap(), want, "{r}");
        }
        for bad in [
            "",
            "sha256:0123456789abcdef",
            "0123456789abcdef",
            "myapp@sha256:00",
            "my app:1",
            "myapp:",
            "MyApp:1",
            "myapp:-x",
            "my..app:1",
            "-app:1",
            "app-:1",
            "reg.local:/app:1",
            "reg.local:50a0/app:1",
            "a//b:1",
            "app:v1:v2",
            "app:*",
        ] {
            assert!(normalize_tag(bad).is_err(), "{bad:?}");
        }
        for bad in [
            "myapp",
            "reg:5000/myapp",
            "my app:*",
            "app@sha256:*",
            "App:*",
        ] {
            assert!(validate_pattern(bad).is_err(), "{bad:?}");
        }
    }
}
