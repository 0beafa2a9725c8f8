//! `oci://HOST[:PORT]/REPO[:TAG][@sha256:HEX]`: where a skill lives in a
//! registry. The grammar is the distribution spec's, with the `oci://`
//! prefix required so that a reference is never mistaken for a path.

use std::fmt;

use super::client::OciError;

/// The prefix every reference starts with.
pub const SCHEME: &str = "oci://";

/// The shape shown in every parse error.
const EXPECTED: &str = "expected oci://HOST[:PORT]/REPO[:TAG][@sha256:DIGEST], \
                        e.g. oci://127.0.0.1:5000/skills/hello:0.1.0";

/// Longest `HOST:PORT/REPO` (docker's reference grammar).
const MAX_NAME: usize = 255;

/// The port of a registry written without one (plain HTTP).
pub const DEFAULT_PORT: u16 = 80;

/// A skill's place in a registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    /// `HOST:PORT`, the host as written and the port made explicit
    /// ([`DEFAULT_PORT`] if none was written).
    pub registry: String,
    /// The repository, e.g. `skills/hello`.
    pub repository: String,
    /// The tag; `latest` when neither a tag nor a digest was written.
    pub tag: Option<String>,
    /// `sha256:` and 64 hex digits.
    pub digest: Option<String>,
}

impl Reference {
    /// Parses `oci://HOST[:PORT]/REPO[:TAG][@sha256:HEX]`.
    pub fn parse(s: &str) -> Result<Reference, OciError> {
        let bad = |what: String| OciError::BadReference(format!("{s:?}: {what}; {EXPECTED}"));
        let rest = s
            .strip_prefix(SCHEME)
            .ok_or_else(|| bad(format!("it does not start with {SCHEME}")))?;
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (host, port) = split_authority(authority).map_err(bad)?;
        if path.is_empty() {
            return Err(bad(format!(
                "no repository after the registry {authority:?}"
            )));
        }
        let (name, digest) = match path.split_once('@') {
            Some((name, digest)) => {
                check_digest(digest).map_err(bad)?;
                (name, Some(digest.to_string()))
            }
            None => (path, None),
        };
        // The host is gone, so a ':' can only start the tag.
        let (repository, tag) = match name.split_once(':') {
            Some((repository, tag)) => {
                check_tag(tag).map_err(bad)?;
                (repository, Some(tag.to_string()))
            }
            None => (name, None),
        };
        check_repository(repository).map_err(bad)?;
        let registry = format!("{host}:{port}");
        if registry.len() + 1 + repository.len() > MAX_NAME {
            return Err(bad(format!(
                "the name {registry}/{repository} is longer than {MAX_NAME} characters"
            )));
        }
        let tag = match (&tag, &digest) {
            (None, None) => Some("latest".to_string()),
            _ => tag,
        };
        Ok(Reference {
            registry,
            repository: repository.to_string(),
            tag,
            digest,
        })
    }

    /// Whether `s` is meant as a reference rather than a path.
    pub fn is_reference(s: &str) -> bool {
        s.starts_with(SCHEME)
    }

    /// `HOST:PORT/REPO`: what a cosign signature names as its
    /// `docker-reference`.
    pub fn repository_name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The same repository and tag, pinned to `digest`.
    pub fn pinned(&self, digest: &str) -> Reference {
        Reference {
            digest: Some(digest.to_string()),
            ..self.clone()
        }
    }

    /// What `GET /v2/<repo>/manifests/<ref>` takes: the digest if there
    /// is one, else the tag.
    pub fn manifest_ref(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME}{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// Splits `HOST[:PORT]` (HOST a name, an IPv4 address or a bracketed IPv6
/// address) into the host as written and the port.
pub(crate) fn split_authority(authority: &str) -> Result<(&str, u16), String> {
    let bad_host = || {
        format!(
            "the registry {authority:?} is not a host name, an IPv4 address or a [bracketed] \
             IPv6 address, with an optional :PORT"
        )
    };
    if authority.is_empty() {
        return Err("no registry host".into());
    }
    let (host, port) = if authority.starts_with('[') {
        let end = authority.find(']').ok_or_else(bad_host)?;
        let (host, rest) = authority.split_at(end + 1);
        let inner = &host[1..host.len() - 1];
        if inner.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(bad_host());
        }
        match rest {
            "" => (host, None),
            _ => (host, Some(rest.strip_prefix(':').ok_or_else(bad_host)?)),
        }
    } else {
        let (host, port) = match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        };
        let label_ok = |l: &str| {
            !l.is_empty()
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        };
        if !host.split('.').all(label_ok) {
            return Err(bad_host());
        }
        (host, port)
    };
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => Some(p)
            .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|p| p.parse::<u16>().ok())
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("the port {p:?} is not a number from 1 to 65535"))?,
    };
    Ok((host, port))
}

/// `sha256:` and 64 lowercase hex digits (the only algorithm skillbox
/// writes or accepts).
pub(crate) fn check_digest(digest: &str) -> Result<(), String> {
    let hex = digest.strip_prefix("sha256:").ok_or_else(|| {
        format!("the digest {digest:?} is not sha256:HEX (only sha256 digests are supported)")
    })?;
    if hex.len() != 64 || !hex.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')) {
        return Err(format!(
            "the digest {digest:?} is not valid: expected sha256: and 64 lowercase hex digits"
        ));
    }
    Ok(())
}

/// `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
pub(crate) fn check_tag(tag: &str) -> Result<(), String> {
    if tag.is_empty() {
        return Err("the tag after ':' is empty".into());
    }
    let first_ok = tag
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    let rest_ok = tag
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if tag.len() > 128 || !first_ok || !rest_ok {
        return Err(format!(
            "the tag {tag:?} is not valid: 1 to 128 letters, digits, '_', '.' and '-', \
             not starting with '.' or '-'"
        ));
    }
    Ok(())
}

/// The distribution spec's repository grammar: components of
/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*` joined by `/`.
pub(crate) fn check_repository(repository: &str) -> Result<(), String> {
    if repository.is_empty() {
        return Err("the repository is empty".into());
    }
    if !repository
        .split('/')
        .all(|c| crate::policy::docker::image::repository_component(c, false))
    {
        return Err(format!(
            "the repository {repository:?} is not valid: its components are lowercase letters \
             and digits, separated by '.', '_', '__' or dashes, and joined by '/'"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn err(s: &str) -> String {
        match Reference::parse(s) {
            Err(OciError::BadReference(m)) => {
                assert!(m.contains("expected oci://HOST"), "{m}");
                assert!(m.contains(&format!("{s:?}")), "{m}");
                m
            }
            other => panic!("{s}: {other:?}"),
        }
    }

    #[test]
    fn good_references_parse_and_print_back() {
        let r = Reference::parse("oci://127.0.0.1:5000/skills/hello:0.1.0").unwrap();
        assert_eq!(
            r,
            Reference {
                registry: "127.0.0.1:5000".into(),
                repository: "skills/hello".into(),
                tag: Some("0.1.0".into()),
                digest: None,
            }
        );
        assert_eq!(r.to_string(), "oci://127.0.0.1:5000/skills/hello:0.1.0");
        assert_eq!(r.repository_name(), "127.0.0.1:5000/skills/hello");
        assert_eq!(r.manifest_ref(), "0.1.0");

        // No tag and no digest: latest; no port: 80.
        let r = Reference::parse("oci://localhost/hello").unwrap();
        assert_eq!(r.registry, "localhost:80");
        assert_eq!(r.tag.as_deref(), Some("latest"));
        assert_eq!(r.to_string(), "oci://localhost:80/hello:latest");

        // A digest only: no tag invented.
        let d = format!("sha256:{HEX}");
        let r = Reference::parse(&format!("oci://[::1]:8080/a/b-c/d__e.f@{d}")).unwrap();
        assert_eq!(r.registry, "[::1]:8080");
        assert_eq!(r.repository, "a/b-c/d__e.f");
        assert_eq!(r.tag, None);
        assert_eq!(r.manifest_ref(), d);
        assert_eq!(r.to_string(), format!("oci://[::1]:8080/a/b-c/d__e.f@{d}"));

        // Tag and digest: both kept; the digest is what is fetched.
        let r = Reference::parse(&format!("oci://h.example:1/x---y:V_1.2-rc@{d}")).unwrap();
        assert_eq!(r.tag.as_deref(), Some("V_1.2-rc"));
        assert_eq!(r.manifest_ref(), d);
        assert_eq!(Reference::parse(&r.to_string()).unwrap(), r);

        let pinned = Reference::parse("oci://127.0.0.1:1/x:t")
            .unwrap()
            .pinned(&d);
        assert_eq!(pinned.to_string(), format!("oci://127.0.0.1:1/x:t@{d}"));
        assert_eq!(pinned.manifest_ref(), d);

        assert!(Reference::is_reference("oci://x/y"));
        assert!(!Reference::is_reference("skills/hello"));
        assert!(!Reference::is_reference("OCI://x/y"));
    }

    #[test]
    fn bad_references_say_what_is_wrong() {
        assert!(err("127.0.0.1:5000/hello").contains("does not start with oci://"));
        assert!(err("docker://127.0.0.1:5000/hello").contains("does not start with oci://"));
        assert!(err("oci://127.0.0.1:5000").contains("no repository"));
        assert!(err("oci://127.0.0.1:5000/").contains("no repository"));
        assert!(err("oci:///hello").contains("no registry host"));
        assert!(err("oci://127.0.0.1:http/hello").contains("the port \"http\""));
        assert!(err("oci://127.0.0.1:0/hello").contains("1 to 65535"));
        assert!(err("oci://127.0.0.1:65536/hello").contains("1 to 65535"));
        assert!(err("oci://127.0.0.1:/hello").contains("the port \"\""));
        assert!(err("oci://127.0.0.1:+80/hello").contains("the port"));
        assert!(err("oci://ho_st:1/hello").contains("not a host name"));
        assert!(err("oci://[::1/hello").contains("not a host name"));
        assert!(err("oci://[nope]:1/hello").contains("not a host name"));
        assert!(err("oci://user@host:1/hello").contains("not a host name"));
        assert!(err("oci://h:1/Hello").contains("the repository \"Hello\""));
        assert!(err("oci://h:1/a//b").contains("the repository"));
        assert!(err("oci://h:1/a/").contains("the repository"));
        assert!(err("oci://h:1/-a").contains("the repository"));
        assert!(err("oci://h:1/a..b").contains("the repository"));
        assert!(err("oci://h:1/a___b").contains("the repository"));
        assert!(err("oci://h:1/a_-b").contains("the repository"));
        assert!(err("oci://h:1/a b").contains("the repository"));
        assert!(err("oci://h:1/a:").contains("the tag after ':' is empty"));
        assert!(err("oci://h:1/a:.x").contains("the tag \".x\""));
        assert!(err("oci://h:1/a:-x").contains("the tag"));
        assert!(err("oci://h:1/a:x/y").contains("the tag \"x/y\""));
        assert!(err(&format!("oci://h:1/a:{}", "x".repeat(129))).contains("1 to 128"));
        assert!(err("oci://h:1/a@sha512:00").contains("only sha256"));
        assert!(err("oci://h:1/a@sha256:00").contains("64 lowercase hex"));
        assert!(
            err(&format!("oci://h:1/a@sha256:{}", HEX.to_uppercase())).contains("64 lowercase hex")
        );
        assert!(err(&format!("oci://h:1/{}", "a".repeat(260))).contains("longer than 255"));
        // The tag is always valid when only a digest is given; 128 is fine.
        assert!(Reference::parse(&format!("oci://h:1/a:{}", "x".repeat(128))).is_ok());
    }
}
