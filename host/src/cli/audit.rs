//! `skillbox audit`: the store's tamper-evident record of every capability
//! decision, its verification, and its export for a SIEM.

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use skillbox::store::audit::{AuditFilter, AuditHead, AuditRecord, Verified, Verifier};
use skillbox::units::HumanDuration;

use super::exit;
use super::listing::when;
use super::serve::DaemonAddr;
use super::tasks::{Failure, answer, fail, print_json};

/// The audit trail: every capability call a task made (allowed or refused:
/// fs, exec, net, env, docker, secrets) and every operator decision on a
/// request for approval, with who decided. Records are chained by hash, so
/// an edited, removed or reordered record is found by `audit verify`.
#[derive(Args, Debug)]
pub struct AuditArgs {
    #[command(subcommand)]
    pub command: AuditCommand,
}

/// `skillbox audit` subcommands.
#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Show records, oldest first.
    Show {
        #[command(flatten)]
        which: Which,
        /// At most this many.
        #[arg(long, default_value_t = 200)]
        limit: u32,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        at: DaemonAddr,
    },
    /// Check the chain: every record's hash, each record's link to the one
    /// before, no record missing (pruned ranges are vouched for by the
    /// record pruning left), the last one the head. Exits 1, naming the
    /// first broken record, if it does not hold.
    Verify {
        /// Verify an export (`audit export`) instead of the daemon's
        /// store. A file cannot show records cut from its end: compare its
        /// last hash with the head `audit verify` prints.
        #[arg(long, value_name = "FILE")]
        file: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        at: DaemonAddr,
    },
    /// Write records as JSON lines, oldest first: one object per record
    /// with seq, at_ms, task, host, kind (call, decision, pruned),
    /// capability, detail, allowed, reason, by, through, through_hash,
    /// prev and hash. The format is stable; `audit verify --file` checks
    /// an export.
    Export {
        /// The format: jsonl.
        #[arg(long, default_value = "jsonl")]
        format: ExportFormat,
        #[command(flatten)]
        which: Which,
        /// Write to FILE instead of stdout.
        #[arg(long, short, value_name = "FILE")]
        output: Option<PathBuf>,
        #[command(flatten)]
        at: DaemonAddr,
    },
}

/// Export formats.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum ExportFormat {
    /// One JSON object per line.
    Jsonl,
}

/// Which records.
#[derive(Args, Debug)]
pub struct Which {
    /// Only records of this task (an id, or the start of one).
    #[arg(long, value_name = "ID")]
    pub task: Option<String>,
    /// Only records since then: a duration ago (30m, 2h, 7d) or a date and
    /// time (RFC 3339, e.g. 2026-12-01T03:00:00Z).
    #[arg(long, value_name = "WHEN")]
    pub since: Option<String>,
}

/// `skillbox audit`.
pub async fn audit(args: AuditArgs) -> u8 {
    match args.command {
        AuditCommand::Show {
            which,
            limit,
            json,
            at,
        } => {
            let result = async {
                let client = at.client()?;
                let filter = AuditFilter {
                    limit: Some(limit),
                    ..filter(&which, &client).await?
                };
                Ok::<_, Failure>(client.audit(&filter).await?)
            }
            .await;
            answer(result, json, |records| {
                if records.is_empty() {
                    outln!("no audit records");
                }
                records.iter().for_each(print_record);
            })
        }
        AuditCommand::Verify { file, json, at } => {
            let result = async {
                match file {
                    Some(path) => verify_file(&path),
                    None => Ok(at.client()?.verify_audit().await?),
                }
            }
            .await;
            match result {
                Ok(v) => report(&v, json),
                Err(e) => fail(e, json),
            }
        }
        AuditCommand::Export {
            format: ExportFormat::Jsonl,
            which,
            output,
            at,
        } => match export(&which, output, &at).await {
            Ok(n) => {
                errln!("exported {n} audit record(s)");
                exit::OK
            }
            Err(e) => fail(e, false),
        },
    }
}

async fn filter(
    which: &Which,
    client: &skillbox::server::client::Client,
) -> Result<AuditFilter, Failure> {
    let task = match &which.task {
        Some(id) => Some(
            client
                .resolve(id)
                .await?
                .parse()
                .map_err(|e: String| Failure::Other(e))?,
        ),
        None => None,
    };
    let since_ms = which.since.as_deref().map(since).transpose()?;
    Ok(AuditFilter {
        task,
        since_ms,
        ..AuditFilter::default()
    })
}

/// `--since`: a duration ago, or an RFC 3339 time.
fn since(s: &str) -> Result<i64, Failure> {
    if let Ok(d) = s.parse::<HumanDuration>() {
        return Ok(skillbox::store::now_ms() - d.0.as_millis() as i64);
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp_millis())
        .map_err(|_| {
            Failure::Local(skillbox::Error::Input(format!(
                "--since {s:?}: not a duration (30m, 2h, 7d) or an RFC 3339 time \
                 (2026-12-01T03:00:00Z)"
            )))
        })
}

fn print_record(r: &AuditRecord) {
    let verdict = match (r.kind.as_str(), r.allowed) {
        ("pruned", _) => "pruned",
        (_, true) => "allowed",
        (_, false) => "DENIED",
    };
    let task = r.task.map(|t| t.to_string()).unwrap_or_else(|| "-".into());
    let by =
        r.by.as_deref()
            .map(|b| format!(" [by {b}]"))
            .unwrap_or_default();
    outln!(
        "#{:<6} {}  {}  {:<8} {:<7} {}: {} ({}){by}",
        r.seq,
        when(r.at_ms),
        task,
        r.kind.as_str(),
        verdict,
        r.capability,
        r.detail,
        r.reason
    );
}

fn report(v: &Verified, json: bool) -> u8 {
    if json {
        print_json(v);
    } else if let Some(b) = &v.broken {
        errln!(
            "error: the audit trail does not verify at record #{}: {}",
            b.seq,
            b.problem
        );
    } else {
        outln!(
            "audit trail verified: {} record(s){}; head #{} {}",
            v.records,
            match v.first {
                Some(f) if f > 1 => format!(" from #{f} (earlier ones pruned, vouched for)"),
                _ => String::new(),
            },
            v.head.seq,
            v.head.hash
        );
    }
    if v.broken.is_some() {
        exit::FAILED
    } else {
        exit::OK
    }
}

/// Verifies an export, taking its last record as the head.
fn verify_file(path: &std::path::Path) -> Result<Verified, Failure> {
    let text = std::fs::read_to_string(path).map_err(|source| {
        Failure::Local(skillbox::Error::Io {
            path: path.to_owned(),
            source,
        })
    })?;
    let records = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(n, l)| {
            serde_json::from_str::<AuditRecord>(l).map_err(|e| {
                Failure::Local(skillbox::Error::Input(format!(
                    "{} line {}: not an audit record: {e}",
                    path.display(),
                    n + 1
                )))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let head = records.last().map_or(
        AuditHead {
            seq: 0,
            hash: skillbox::store::audit::GENESIS.into(),
        },
        |r| AuditHead {
            seq: r.seq,
            hash: r.hash.clone(),
        },
    );
    let mut v = Verifier::new(head);
    records.iter().for_each(|r| v.push(r));
    Ok(v.finish())
}

/// Pages through the records and writes them; how many.
async fn export(which: &Which, output: Option<PathBuf>, at: &DaemonAddr) -> Result<u64, Failure> {
    let client = at.client()?;
    let mut f = filter(which, &client).await?;
    let io = |path: &std::path::Path, source| {
        Failure::Local(skillbox::Error::Io {
            path: path.to_owned(),
            source,
        })
    };
    let mut out: Box<dyn Write> = match &output {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).map_err(|e| io(p, e))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let target = output.clone().unwrap_or_else(|| PathBuf::from("-"));
    let mut n = 0;
    f.limit = Some(1000);
    loop {
        let page = client.audit(&f).await?;
        let Some(last) = page.last() else { break };
        f.after = last.seq;
        for r in &page {
            let line = serde_json::to_string(r).map_err(|e| Failure::Other(e.to_string()))?;
            writeln!(out, "{line}").map_err(|e| io(&target, e))?;
            n += 1;
        }
    }
    out.flush().map_err(|e| io(&target, e))?;
    Ok(n)
}
