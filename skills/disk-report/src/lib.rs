//! `disk-report`: what is taking up space in a directory.
//!
//! Input: `{"path": "/data", "top": 5}` (both optional). The skill
//!
//! 1. walks `path` recursively with `std::fs` (it lies inside a preopened
//!    directory), counting files, directories and bytes, keeping the `top`
//!    largest files and counting what it cannot read;
//! 2. runs `du -k -d 1 .` in `path` for per-subdirectory disk usage;
//! 3. runs `stat -f -c '%b %f %S' .` in `path` for the filesystem's size and
//!    free space (`df` needs `/proc`, which exec'd programs cannot read).
//!
//! It returns a markdown report and the same facts as data. The two programs
//! are optional extras: if the sandbox refuses or they fail, the report says
//! so and carries on with the walk's results.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use skillbox_sdk::exec::{self, Command};
use skillbox_sdk::{Context, Error, Summary, bail, human_bytes, info, progress, warn};

/// The most files `top` may ask for.
const MAX_TOP: usize = 1000;
/// How many unreadable paths are listed by name in the data.
const MAX_SKIPPED_EXAMPLES: usize = 10;
/// Report progress at least every this many entries.
const PROGRESS_EVERY: u64 = 1000;
/// Share of the progress bar given to the walk; the programs get the rest.
const WALK_SHARE: f32 = 0.8;
/// Timeout for each exec'd program.
const EXEC_TIMEOUT: Duration = Duration::from_secs(20);
/// Per-subdirectory usage; must match the manifest's `[exec]` rule exactly.
const DU: (&str, &[&str]) = ("du", &["-k", "-d", "1", "."]);
/// Filesystem size and free space; must match the manifest's `[exec]` rule.
const STAT: (&str, &[&str]) = ("stat", &["-f", "-c", "%b %f %S", "."]);

/// The skill's input.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Input {
    /// Guest path of the directory to report on.
    #[serde(default = "default_path")]
    path: String,
    /// How many of the largest files to list.
    #[serde(default = "default_top")]
    top: usize,
}

fn default_path() -> String {
    "/data".to_owned()
}

fn default_top() -> usize {
    5
}

/// The structured result.
#[derive(Serialize)]
struct Report {
    path: String,
    files: u64,
    dirs: u64,
    symlinks: u64,
    /// Sum of the sizes of all regular files.
    bytes: u64,
    /// Entries that could not be read (and were not counted).
    skipped: u64,
    /// The first few of those, with the reason.
    skipped_examples: Vec<Skipped>,
    /// The largest files, largest first, paths relative to `path`.
    largest: Vec<FileSize>,
    /// Per-subdirectory usage from `du`, largest first; `null` if `du` did
    /// not run.
    subdirs: Option<Vec<DirUsage>>,
    /// Filesystem size from `stat -f`; `null` if `stat` did not run.
    filesystem: Option<Filesystem>,
    /// Programs that were refused or failed.
    exec_problems: Vec<ExecProblem>,
}

#[derive(Serialize)]
struct Skipped {
    path: String,
    error: String,
}

#[derive(Serialize, PartialEq, Eq, PartialOrd, Ord)]
struct FileSize {
    bytes: u64,
    path: String,
}

#[derive(Serialize)]
struct DirUsage {
    /// Relative to the report's path; `.` is the directory itself.
    path: String,
    bytes: u64,
}

#[derive(Serialize)]
struct Filesystem {
    total_bytes: u64,
    free_bytes: u64,
}

#[derive(Serialize)]
struct ExecProblem {
    command: String,
    /// True when the sandbox refused the call (rather than it failing).
    denied: bool,
    message: String,
}

fn disk_report(input: Input) -> Result<Summary, Error> {
    if input.top > MAX_TOP {
        bail!(Error::invalid_input(format!(
            "`top` is {}, at most {MAX_TOP} is allowed",
            input.top
        )));
    }
    let root = PathBuf::from(&input.path);
    info!("walking {}", root.display());

    let mut walk = Walk::new(&root, input.top);
    walk.run()?;
    info!(
        "{} files, {} directories, {} bytes, {} skipped",
        walk.files, walk.dirs, walk.bytes, walk.skipped
    );

    let mut problems = Vec::new();

    progress::report(WALK_SHARE, "measuring subdirectories with du");
    let subdirs = run_tool(DU, &input.path, &mut problems).map(|out| parse_du(&out));

    progress::report(0.9, "measuring the filesystem with stat");
    let filesystem = run_tool(STAT, &input.path, &mut problems).and_then(|out| {
        let parsed = parse_stat(&out);
        if parsed.is_none() {
            problems.push(ExecProblem {
                command: display_command(STAT),
                denied: false,
                message: format!("unexpected output: {:?}", out.trim()),
            });
        }
        parsed
    });
    progress::report(1.0, "done");

    let report = Report {
        path: input.path,
        files: walk.files,
        dirs: walk.dirs,
        symlinks: walk.symlinks,
        bytes: walk.bytes,
        skipped: walk.skipped,
        skipped_examples: walk.skipped_examples,
        largest: walk
            .largest
            .into_sorted_vec()
            .into_iter()
            .map(|Reverse(file)| file)
            .collect(),
        subdirs,
        filesystem,
        exec_problems: problems,
    };
    Ok(Summary::new(markdown(&report)).with_data(&report))
}

skillbox_sdk::export!(disk_report);

/// The recursive walk's state and results.
struct Walk<'a> {
    root: &'a Path,
    top: usize,
    files: u64,
    dirs: u64,
    symlinks: u64,
    bytes: u64,
    skipped: u64,
    skipped_examples: Vec<Skipped>,
    /// Min-heap of the `top` largest files seen so far.
    largest: BinaryHeap<Reverse<FileSize>>,
    /// Entries seen, for throttled progress reports.
    seen: u64,
    /// Current progress fraction (advances per top-level entry).
    fraction: f32,
}

impl<'a> Walk<'a> {
    fn new(root: &'a Path, top: usize) -> Self {
        Walk {
            root,
            top,
            files: 0,
            dirs: 0,
            symlinks: 0,
            bytes: 0,
            skipped: 0,
            skipped_examples: Vec::new(),
            largest: BinaryHeap::with_capacity(top + 1),
            seen: 0,
            fraction: 0.0,
        }
    }

    /// Walks the tree. Only failing to read the root itself is an error.
    fn run(&mut self) -> Result<(), Error> {
        let meta = std::fs::metadata(self.root)
            .with_context(|| format!("reading {}", self.root.display()))?;
        if !meta.is_dir() {
            bail!(Error::invalid_input(format!(
                "{} is not a directory",
                self.root.display()
            )));
        }
        let mut top_level: Vec<PathBuf> = std::fs::read_dir(self.root)
            .with_context(|| format!("listing {}", self.root.display()))?
            .filter_map(|entry| match entry {
                Ok(entry) => Some(entry.path()),
                Err(e) => {
                    self.skip(self.root, &e);
                    None
                }
            })
            .collect();
        top_level.sort();

        let count = top_level.len().max(1) as f32;
        for (i, path) in top_level.iter().enumerate() {
            self.fraction = WALK_SHARE * i as f32 / count;
            progress::report(self.fraction, format!("scanning {}", self.relative(path)));
            self.walk_from(path.clone());
        }
        Ok(())
    }

    /// Visits `start` and everything below it, without following symlinks
    /// and without recursion (deep trees cannot overflow the stack).
    fn walk_from(&mut self, start: PathBuf) {
        let mut pending = vec![start];
        while let Some(path) = pending.pop() {
            self.seen += 1;
            if self.seen.is_multiple_of(PROGRESS_EVERY) {
                progress::report(self.fraction, format!("{} entries scanned", self.seen));
            }
            let meta = match std::fs::symlink_metadata(&path) {
                Ok(meta) => meta,
                Err(e) => {
                    self.skip(&path, &e);
                    continue;
                }
            };
            let file_type = meta.file_type();
            if file_type.is_symlink() {
                self.symlinks += 1;
            } else if file_type.is_dir() {
                self.dirs += 1;
                match std::fs::read_dir(&path) {
                    Ok(entries) => {
                        for entry in entries {
                            match entry {
                                Ok(entry) => pending.push(entry.path()),
                                Err(e) => self.skip(&path, &e),
                            }
                        }
                    }
                    Err(e) => self.skip(&path, &e),
                }
            } else if file_type.is_file() {
                self.files += 1;
                self.bytes += meta.len();
                self.consider_largest(&path, meta.len());
            }
        }
    }

    fn consider_largest(&mut self, path: &Path, bytes: u64) {
        if self.top == 0 {
            return;
        }
        if self.largest.len() == self.top {
            match self.largest.peek() {
                Some(Reverse(smallest)) if smallest.bytes >= bytes => return,
                _ => {}
            }
            self.largest.pop();
        }
        self.largest.push(Reverse(FileSize {
            bytes,
            path: self.relative(path),
        }));
    }

    fn skip(&mut self, path: &Path, err: &std::io::Error) {
        self.skipped += 1;
        if self.skipped_examples.len() < MAX_SKIPPED_EXAMPLES {
            self.skipped_examples.push(Skipped {
                path: self.relative(path),
                error: format!("{:?}: {err}", err.kind()),
            });
        }
    }

    fn relative(&self, path: &Path) -> String {
        match path.strip_prefix(self.root) {
            Ok(rel) if rel.as_os_str().is_empty() => ".".to_owned(),
            Ok(rel) => rel.display().to_string(),
            Err(_) => path.display().to_string(),
        }
    }
}

/// Runs an optional helper program in `cwd` and returns its stdout.
///
/// Problems are recorded (and logged) rather than returned: a refusal or a
/// failure to run gives `None`; a non-zero exit still gives whatever the
/// program printed (`du` exits 1 when it cannot read some directory but
/// reports the rest).
fn run_tool(
    (program, args): (&str, &[&str]),
    cwd: &str,
    problems: &mut Vec<ExecProblem>,
) -> Option<String> {
    let command = display_command((program, args));
    let result = Command::new(program)
        .args(args.iter().copied())
        .cwd(cwd)
        .timeout(EXEC_TIMEOUT)
        .output();
    let (stdout, denied, message) = match result {
        Ok(out) if out.success() => return Some(out.stdout_str().into_owned()),
        Ok(out) => {
            let stdout = out.stdout_str().into_owned();
            let partial = if stdout.trim().is_empty() {
                ""
            } else {
                " (its results may be incomplete)"
            };
            let message = format!(
                "exited with status {}{partial}: {}",
                out.status,
                excerpt(&out.stderr_str())
            );
            (
                Some(stdout).filter(|s| !s.trim().is_empty()),
                false,
                message,
            )
        }
        Err(e) => (None, matches!(e, exec::Error::Denied(_)), e.to_string()),
    };
    warn!(
        "`{command}` {}: {message}",
        if denied { "was refused" } else { "failed" }
    );
    problems.push(ExecProblem {
        command,
        denied,
        message,
    });
    stdout
}

/// The first few lines of a program's stderr, on one line.
fn excerpt(stderr: &str) -> String {
    const MAX_LINES: usize = 3;
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let mut text = lines
        .iter()
        .take(MAX_LINES)
        .copied()
        .collect::<Vec<_>>()
        .join("; ");
    if lines.len() > MAX_LINES {
        let _ = write!(text, "; … ({} more lines)", lines.len() - MAX_LINES);
    }
    text
}

/// `du -k -d 1 .` output (`KIB<TAB>PATH` per line) as byte sizes, largest first.
fn parse_du(out: &str) -> Vec<DirUsage> {
    let mut dirs: Vec<DirUsage> = out
        .lines()
        .filter_map(|line| {
            let (kib, path) = line.split_once('\t')?;
            let kib: u64 = kib.trim().parse().ok()?;
            let path = path.strip_prefix("./").unwrap_or(path);
            Some(DirUsage {
                path: path.to_owned(),
                bytes: kib.saturating_mul(1024),
            })
        })
        .collect();
    dirs.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.path.cmp(&b.path)));
    dirs
}

/// `stat -f -c '%b %f %S' .` output: total blocks, free blocks, block size.
fn parse_stat(out: &str) -> Option<Filesystem> {
    let mut fields = out.split_whitespace().map(str::parse::<u64>);
    let (Some(Ok(blocks)), Some(Ok(free)), Some(Ok(block_size)), None) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return None;
    };
    Some(Filesystem {
        total_bytes: blocks.saturating_mul(block_size),
        free_bytes: free.saturating_mul(block_size),
    })
}

/// The command line as a user would type it, for messages.
fn display_command((program, args): (&str, &[&str])) -> String {
    let mut line = program.to_owned();
    for arg in args {
        if arg.contains(' ') {
            let _ = write!(line, " '{arg}'");
        } else {
            let _ = write!(line, " {arg}");
        }
    }
    line
}

/// The human-readable report.
fn markdown(report: &Report) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "## Disk report for {}\n", code(&report.path));
    let _ = writeln!(md, "| | |\n|---|---:|");
    let _ = writeln!(md, "| files | {} |", report.files);
    let _ = writeln!(md, "| directories | {} |", report.dirs);
    if report.symlinks > 0 {
        let _ = writeln!(md, "| symlinks (not followed) | {} |", report.symlinks);
    }
    let _ = writeln!(
        md,
        "| total size of files | {} |",
        human_bytes(report.bytes)
    );
    if let Some(total) = report.subdirs.iter().flatten().find(|d| d.path == ".") {
        let _ = writeln!(md, "| size on disk (du) | {} |", human_bytes(total.bytes));
    }
    if report.skipped > 0 {
        let _ = writeln!(md, "| unreadable, skipped | {} |", report.skipped);
    }
    if let Some(fs) = &report.filesystem {
        let percent = if fs.total_bytes == 0 {
            0.0
        } else {
            100.0 * fs.free_bytes as f64 / fs.total_bytes as f64
        };
        let _ = writeln!(
            md,
            "| filesystem | {} total, {} free ({percent:.0}%) |",
            human_bytes(fs.total_bytes),
            human_bytes(fs.free_bytes)
        );
    }

    if !report.largest.is_empty() {
        let _ = writeln!(md, "\n### Largest files\n\n| file | size |\n|---|---:|");
        for file in &report.largest {
            let _ = writeln!(md, "| {} | {} |", code(&file.path), human_bytes(file.bytes));
        }
    }

    if let Some(subdirs) = &report.subdirs {
        let subdirs: Vec<_> = subdirs.iter().filter(|d| d.path != ".").collect();
        if !subdirs.is_empty() {
            let _ = writeln!(
                md,
                "\n### Subdirectories (du)\n\n| directory | size on disk |\n|---|---:|"
            );
            for dir in subdirs {
                let _ = writeln!(md, "| {} | {} |", code(&dir.path), human_bytes(dir.bytes));
            }
        }
    }

    if !report.exec_problems.is_empty() {
        md.push('\n');
        for problem in &report.exec_problems {
            let what = if problem.denied {
                "was refused by the sandbox"
            } else {
                "did not succeed"
            };
            let _ = writeln!(
                md,
                "> ⚠️ {} {what}: {}",
                code(&problem.command),
                problem.message.replace('\n', " ")
            );
        }
    }
    md
}

/// `text` as inline code that survives a markdown table cell.
fn code(text: &str) -> String {
    let text = text.replace('|', "\\|").replace('\n', " ");
    if text.contains('`') {
        format!("`` {text} ``")
    } else {
        format!("`{text}`")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_du() {
        let dirs = parse_du("4\t./a\n120\t./b b\n124\t.\n");
        let got: Vec<_> = dirs.iter().map(|d| (d.path.as_str(), d.bytes)).collect();
        assert_eq!(got, [(".", 124 * 1024), ("b b", 120 * 1024), ("a", 4096)]);
    }

    #[test]
    fn parses_stat() {
        let fs = parse_stat("100 25 4096\n").unwrap();
        assert_eq!((fs.total_bytes, fs.free_bytes), (409_600, 102_400));
        assert!(parse_stat("100 25").is_none());
    }
}
