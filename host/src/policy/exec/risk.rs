//! Exec rules that hand the skill a program able to run code of the
//! skill's choosing. Such a grant is not an escape — the program runs in
//! the exec sandbox (`caps::sandbox`) whatever it runs — but it is much
//! more than its name suggests: the skill gets whatever that sandbox
//! allows, not "just git". `inspect` and `run --dry-run` warn about it.

use super::ExecRule;

/// Interpreters and shells: any argument the skill chooses can be code.
const INTERPRETERS: &[&str] = &[
    "sh",
    "bash",
    "dash",
    "zsh",
    "ksh",
    "mksh",
    "fish",
    "csh",
    "tcsh",
    "busybox",
    "python",
    "python2",
    "python3",
    "perl",
    "ruby",
    "node",
    "nodejs",
    "deno",
    "bun",
    "php",
    "lua",
    "tclsh",
    "wish",
    "expect",
    "awk",
    "gawk",
    "mawk",
    "nawk",
    "Rscript",
    "julia",
    "guile",
    "osascript",
    "pwsh",
    "java",
    "jshell",
    "groovy",
    "scala",
    "erl",
    "escript",
    "gdb",
];

/// Programs with options or arguments that run other programs or code.
const RUNS_PROGRAMS: &[(&str, &str)] = &[
    (
        "git",
        "`-c alias.x='!cmd'`, `-c core.sshCommand=…`, hooks, `--upload-pack`",
    ),
    (
        "tar",
        "`--to-command`, `--checkpoint-action=exec=…`, `-I PROG`",
    ),
    ("find", "`-exec`, `-execdir`, `-ok`"),
    ("xargs", "its command"),
    ("env", "its command"),
    ("nice", "its command"),
    ("nohup", "its command"),
    ("timeout", "its command"),
    ("setsid", "its command"),
    ("stdbuf", "its command"),
    ("chroot", "its command"),
    ("sudo", "its command"),
    ("su", "`-c`"),
    ("ssh", "`-o ProxyCommand=…`, `-o LocalCommand=…`"),
    ("scp", "`-S PROG`, `-o ProxyCommand=…`"),
    ("rsync", "`-e PROG`, `--rsync-path`"),
    ("make", "the makefile's recipes, `--eval`"),
    ("cmake", "`-P script`, `-E`"),
    ("sed", "GNU sed's `e` command"),
    ("vim", "`-c '!cmd'`"),
    ("vi", "`-c '!cmd'`"),
    ("less", "`!cmd`, `LESSOPEN`"),
    ("man", "`-P PAGER`"),
    ("zip", "`-T -TT PROG`"),
    ("npm", "package scripts"),
    ("pip", "package builds"),
    ("cargo", "build scripts"),
    ("docker", "a container of its choosing"),
    ("kubectl", "`exec`, plugins"),
    ("systemd-run", "its command"),
    ("flock", "its command"),
    ("watch", "its command"),
    ("parallel", "its commands"),
    ("strace", "its command"),
    ("ltrace", "its command"),
];

fn has_wildcard(args: &[String]) -> bool {
    args.iter().any(|a| a.contains('*') || a.contains('?'))
}

/// Why `rule` lets the skill run code of its choosing, if it does.
pub fn runs_code_of_choice(rule: &ExecRule) -> Option<String> {
    let base = rule.program.rsplit('/').next().unwrap_or(&rule.program);
    // `python3.11`, `perl5.36`, `php8.2`: the interpreter all the same.
    let family = base.trim_end_matches(|c: char| c.is_ascii_digit() || c == '.');
    if !has_wildcard(&rule.args) {
        return None;
    }
    if INTERPRETERS.contains(&base) || INTERPRETERS.contains(&family) {
        return Some(format!(
            "`{rule}` lets the skill run any code it likes through {base} (an interpreter with \
             arguments of the skill's choosing)"
        ));
    }
    RUNS_PROGRAMS
        .iter()
        .find(|(p, _)| *p == base)
        .map(|(p, how)| {
            format!(
                "`{rule}` lets the skill run programs of its choosing through {p} ({how}); \
                 grant exact arguments to prevent it"
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(s: &str) -> ExecRule {
        ExecRule::parse_cli(s).unwrap()
    }

    #[test]
    fn wildcards_on_code_running_programs_are_flagged() {
        for risky in [
            "git **",
            "tar -xf *",
            "python3 -c *",
            "/usr/bin/python3.11 *",
            "sh -c *",
            "find . **",
            "xargs **",
            "perl5.36 -e *",
        ] {
            assert!(runs_code_of_choice(&rule(risky)).is_some(), "{risky}");
        }
        for fine in [
            "git rev-parse HEAD",
            "du -k -d 1 .",
            "uname -a",
            "stat -f -c '%b %f %S' .",
            "echo hi *",
            "tar -czf backup.tar.gz state",
        ] {
            assert!(runs_code_of_choice(&rule(fine)).is_none(), "{fine}");
        }
    }
}
