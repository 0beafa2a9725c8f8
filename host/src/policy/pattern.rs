//! Argument patterns for exec rules: exact strings or globs.
//!
//! `*` matches any run of characters (including none) within one argument,
//! `?` exactly one character; a final pattern of `**` matches any number of
//! remaining arguments (including none). Nothing else is special: there is no
//! shell, so quotes, `;`, `|` and `$` are ordinary characters.
//!
//! A pattern written `path:GLOB` (GLOB an absolute guest path pattern, e.g.
//! `path:/backup/*.tar.gz`) matches the guest's argument against GLOB and
//! marks that argument as a guest path: the host hands the program the
//! host path it names, beneath a granted directory (see
//! `caps::exec`), or refuses the call.

/// The prefix of a path pattern.
pub const PATH: &str = "path:";

/// A pattern's glob, and whether it is a path pattern.
pub fn split(pattern: &str) -> (bool, &str) {
    match pattern.strip_prefix(PATH) {
        Some(glob) => (true, glob),
        None => (false, pattern),
    }
}

/// The positions of `patterns` that are path patterns.
pub fn path_positions(patterns: &[String]) -> Vec<usize> {
    (0..patterns.len())
        .filter(|&i| split(&patterns[i]).0)
        .collect()
}

/// Whether the argument `arg` matches the argument pattern `pattern`.
fn arg_match(pattern: &str, arg: &str) -> bool {
    glob_match(split(pattern).1, arg)
}

/// Whether every argument `narrow` matches is matched by `wide`, both of a
/// kind (path or plain).
fn arg_cover(wide: &str, narrow: &str) -> bool {
    let ((wp, wg), (np, ng)) = (split(wide), split(narrow));
    wp == np && glob_match(wg, ng)
}

/// Whether `text` matches the single-argument glob `pattern`.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    // Iterative wildcard matching with backtracking to the last `*`.
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Whether the argument list `args` matches the pattern list `patterns`.
pub fn args_match(patterns: &[String], args: &[String]) -> bool {
    match patterns.split_last() {
        Some((last, init)) if last == "**" => {
            args.len() >= init.len() && init.iter().zip(args).all(|(p, a)| arg_match(p, a))
        }
        _ => {
            patterns.len() == args.len() && patterns.iter().zip(args).all(|(p, a)| arg_match(p, a))
        }
    }
}

/// Whether every argument list matched by `narrow` is also matched by `wide`
/// (conservative: may answer `false` for some true inclusions).
pub fn args_cover(wide: &[String], narrow: &[String]) -> bool {
    if wide == narrow {
        return true;
    }
    let wide_tail = wide.last().is_some_and(|l| l == "**");
    let narrow_tail = narrow.last().is_some_and(|l| l == "**");
    let w = if wide_tail {
        &wide[..wide.len() - 1]
    } else {
        wide
    };
    let n = if narrow_tail {
        &narrow[..narrow.len() - 1]
    } else {
        narrow
    };
    if narrow_tail && !wide_tail {
        return false;
    }
    let lengths_fit = if wide_tail {
        n.len() >= w.len()
    } else {
        n.len() == w.len()
    };
    lengths_fit && w.iter().zip(n).all(|(wp, np)| arg_cover(wp, np))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn globs() {
        assert!(glob_match("*", ""));
        assert!(glob_match("myapp:*", "myapp:1.2"));
        assert!(!glob_match("myapp:*", "other:1.2"));
        assert!(glob_match("a?c", "abc"));
        assert!(!glob_match("a?c", "ac"));
        assert!(glob_match("*.log", "x.tar.log"));
        assert!(!glob_match("-sh", "-sh;rm"));
        assert!(glob_match("a*b*c", "aXbYc"));
        assert!(!glob_match("a*b*c", "aXbY"));
    }

    #[test]
    fn arg_lists() {
        assert!(args_match(&v(&["-k", "."]), &v(&["-k", "."])));
        assert!(!args_match(&v(&["-k", "."]), &v(&["-k", ".", "/etc"])));
        assert!(!args_match(&v(&["-k"]), &v(&[])));
        assert!(args_match(&v(&["-c", "**"]), &v(&["-c"])));
        assert!(args_match(&v(&["-c", "**"]), &v(&["-c", "x", "y"])));
        assert!(!args_match(&v(&["-c", "**"]), &v(&["-x", "y"])));
        assert!(args_match(&v(&[]), &v(&[])));
    }

    #[test]
    fn coverage() {
        assert!(args_cover(&v(&["**"]), &v(&["-k", "."])));
        assert!(args_cover(&v(&["-k", "*"]), &v(&["-k", "."])));
        assert!(!args_cover(&v(&["-k", "."]), &v(&["-k", "*"])));
        assert!(!args_cover(&v(&["-k"]), &v(&["-k", "**"])));
        assert!(args_cover(&v(&["-k", "**"]), &v(&["-k", "x", "**"])));
    }
}
