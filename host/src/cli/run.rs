//! `skillbox run`: run one skill in the foreground.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use skillbox::prelude::*;

use super::grants::GrantArgs;
use super::output::{Console, report_error};
use super::{EXIT_CODES, exit};

/// Run a skill and print its summary.
///
/// SKILL is a skill directory (holding skill.toml), a skill.toml, or a bare
/// .wasm component (a skill or any WASI command), which then gets exactly the
/// granted capabilities. Progress and logs go to stderr; stdout gets the
/// message a parent session would (outcome, duration, the skill's summary),
/// or with --json the whole run report as JSON.
#[derive(Args, Debug)]
#[command(after_help = EXIT_CODES)]
pub struct RunArgs {
    /// Skill directory, skill.toml, .wasm component, an
    /// oci://HOST:PORT/REPO[:TAG][@sha256:…] reference (the locked
    /// artifact, pulled and locked first if its repository is not), or
    /// the NAME of an installed skill ([skills.NAME] of --config), which
    /// runs with the grants configured there and the grant flags given
    /// here.
    pub skill: PathBuf,
    /// The host configuration whose [skills.NAME] a bare NAME means
    /// [default: the client configuration's `config`, else
    /// DATA-DIR/config.toml].
    #[arg(long, value_name = "FILE", env = "SKILLBOX_CONFIG")]
    pub config: Option<PathBuf>,
    /// Input as JSON text, @FILE to read it from a file, or - for stdin.
    /// For a WASI command: {"args": [...], "stdin": "..."}.
    #[arg(long, short, value_name = "JSON|@FILE|-", default_value = "{}")]
    pub input: String,
    #[command(flatten)]
    pub grants: GrantArgs,
    /// Define a secret a grant (--allow-exec-secret) may hand a program:
    /// NAME=env:VAR (this process's environment), NAME=file:PATH or
    /// NAME=cmd:PROGRAM ARGS… (its output; no shell). Read when the run
    /// starts; besides the [secrets] of --config. Repeatable.
    #[arg(long = "secret", value_name = "NAME=SOURCE", help_heading = "Grants")]
    pub secrets: Vec<String>,
    /// Show what the skill requests and what it would get, then stop.
    #[arg(long)]
    pub dry_run: bool,
    /// Run even when some requested capabilities were not granted (the skill
    /// then gets only the intersection and its calls outside it are refused).
    #[arg(long)]
    pub partial: bool,
    /// Run a skill whose manifest does not pin a sha256 yet.
    #[arg(long)]
    pub allow_unpinned: bool,
    /// Print a machine-readable JSON report on stdout.
    #[arg(long)]
    pub json: bool,
    /// Also show debug logs and allowed capability calls.
    #[arg(long, short)]
    pub verbose: bool,
    /// Show no progress or logs.
    #[arg(long, short)]
    pub quiet: bool,
    /// Directory of the compiled-component cache.
    #[arg(long, value_name = "DIR", env = "SKILLBOX_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Do not use the compiled-component cache.
    #[arg(long)]
    pub no_cache: bool,
    /// The key store whose trusted keys and trust.toml decide whether the
    /// skill may run (see `skillbox keys`).
    #[arg(long, value_name = "DIR", env = "SKILLBOX_KEYS")]
    pub keys_dir: Option<PathBuf>,
}

pub(super) fn read_input(spec: &str) -> Result<String, skillbox::Error> {
    let text = if spec == "-" {
        std::io::read_to_string(skillbox::caller::stdin())
            .map_err(|e| skillbox::Error::Input(format!("stdin: {e}")))?
    } else if let Some(path) = spec.strip_prefix('@') {
        std::fs::read_to_string(path).map_err(|e| skillbox::Error::Input(format!("{path}: {e}")))?
    } else {
        spec.to_string()
    };
    serde_json::from_str::<serde_json::Value>(&text)
        .map_err(|e| skillbox::Error::Input(format!("--input is not valid JSON: {e}")))?;
    Ok(text)
}

/// The secrets `run` may hand programs: the [secrets] of --config, then
/// --secret.
fn secret_book(args: &RunArgs) -> Result<skillbox::secrets::SecretBook, skillbox::Error> {
    let mut book = skillbox::secrets::SecretBook::new();
    if let Some(path) = &args.config {
        book.merge(&skillbox::config::HostConfig::load(path)?.secrets);
    }
    for s in &args.secrets {
        book.define_cli(s).map_err(skillbox::Error::Grant)?;
    }
    Ok(book)
}

/// The host a run runs on: its own in a process of its own; in a run
/// server, one kept for every run with the same cache and fuel setting,
/// with a slot for each run the server takes at once, so that a
/// component prepared once is instantiated by the runs after.
fn host_for(options: EngineOptions) -> Result<Arc<Host>, skillbox::Error> {
    type Shared = Vec<((Option<PathBuf>, bool), Arc<Host>)>;
    static SHARED: std::sync::Mutex<Shared> = std::sync::Mutex::new(Vec::new());
    if skillbox::caller::current().is_none() {
        return Ok(Arc::new(Host::new(options)?));
    }
    let key = (options.cache_dir.clone(), options.fuel);
    let mut shared = SHARED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, host)) = shared.iter().find(|(k, _)| *k == key) {
        return Ok(host.clone());
    }
    let host = Arc::new(Host::new(server_engine(options.fuel, options.cache_dir))?);
    shared.push((key, host.clone()));
    Ok(host)
}

/// The engine options of a run server's hosts.
pub(super) fn server_engine(fuel: bool, cache_dir: Option<PathBuf>) -> EngineOptions {
    EngineOptions {
        cache_dir,
        fuel,
        max_instances: skillbox::handoff::MAX_RUNS as u32,
        ..EngineOptions::default()
    }
}

/// `skillbox run`.
pub async fn run(args: RunArgs) -> u8 {
    match run_inner(&args).await {
        Ok(code) => code,
        Err(e) => report_error(&e, args.json),
    }
}

async fn run_inner(args: &RunArgs) -> Result<u8, skillbox::Error> {
    let skill = super::distribute::locate(&args.skill, args.keys_dir.clone()).await?;
    let chosen = super::installed::choose(
        &skill,
        args.config.as_deref(),
        &super::serve::data_dir_or_default(None),
        args.grants.to_grants()?,
    )?;
    let source = SkillSource::open(&chosen.skill, args.allow_unpinned)?;
    let trust = super::keys::trust_policy(args.keys_dir.clone())?;
    let grants = chosen.grants;
    let partial = args.partial || chosen.partial;
    let (policy, report) = EffectivePolicy::compute(source.manifest.as_ref(), &grants);
    let missing = report.not_granted().count();
    if args.dry_run {
        let kind = super::inspect::prepare_kind(&source, args.cache_dir.clone())?;
        let admitted =
            super::inspect::print_plan(&source, kind, &policy, &report, &trust, args.json);
        return Ok(if missing > 0 || !admitted {
            exit::DENIED
        } else {
            exit::OK
        });
    }
    trust.admit(&source)?;
    if missing > 0 && !partial {
        return Err(skillbox::Error::NotGranted(format!(
            "{report}(grant them, or pass --partial to run with only what was granted)"
        )));
    }
    let input = read_input(&args.input)?;
    // Said before the run: a request granted less than asked for fails
    // later with the guest's own words, which do not name the flag.
    if !args.quiet {
        for line in report.shortfalls() {
            errln!("warning: {line}");
        }
    }
    let host = host_for(EngineOptions {
        cache_dir: if args.no_cache {
            None
        } else {
            args.cache_dir
                .clone()
                .or_else(skillbox::engine::default_cache_dir)
        },
        fuel: policy.limits.fuel.is_some(),
        max_instances: 4,
        ..EngineOptions::default()
    })?;
    let prepared = host.prepare(&source)?;
    let secrets = secret_book(args)?.resolve(policy.secrets.names())?;
    let console = Arc::new(Console::new(args.verbose, args.quiet || args.json));
    let run = host
        .run(
            &prepared,
            RunRequest {
                input,
                policy,
                events: console.clone(),
                secrets,
                docker: Some(Arc::new(skillbox::caps::docker::DockerEngine::from_env())),
                ..Default::default()
            },
        )
        .await?;
    console.finish();
    let code = match &run.outcome {
        Outcome::Succeeded { .. } => exit::OK,
        Outcome::Failed {
            kind: FailureKind::Denied,
            ..
        } => exit::DENIED,
        Outcome::Failed {
            kind: FailureKind::InvalidInput,
            ..
        } => exit::INVALID,
        Outcome::Failed { .. } | Outcome::Crashed { .. } | Outcome::Cancelled => exit::FAILED,
        Outcome::TimedOut { .. } => exit::TIMED_OUT,
        Outcome::LimitExceeded { .. } => exit::LIMIT,
    };
    if args.json {
        let mut v =
            serde_json::to_value(&run).map_err(|e| skillbox::Error::Engine(e.to_string()))?;
        v["exit_code"] = code.into();
        v["message"] = skillbox::relay::run_message(&run).into();
        outln!("{v}");
        return Ok(code);
    }
    // The message a parent session would get, on stdout; the error, with
    // what to do about it, on stderr.
    outln!("{}", skillbox::relay::run_message(&run));
    match &run.outcome {
        Outcome::Succeeded { .. } => {}
        Outcome::Failed { kind, message, .. } => {
            let what = match kind {
                FailureKind::Failed => "failed",
                FailureKind::Denied => "was denied",
                FailureKind::InvalidInput => "rejected its input",
            };
            errln!("error: skill {} {what}: {message}", run.skill);
        }
        Outcome::TimedOut { limit_ms } => {
            errln!(
                "error: skill {} timed out after {} and was stopped (raise the limit with --timeout)",
                run.skill,
                skillbox::units::HumanDuration(std::time::Duration::from_millis(*limit_ms))
            );
        }
        Outcome::LimitExceeded { message, .. } => {
            errln!("error: skill {}: {message}", run.skill)
        }
        Outcome::Crashed { message } => errln!("error: skill {} crashed: {message}", run.skill),
        Outcome::Cancelled => errln!("error: skill {} was cancelled", run.skill),
    }
    Ok(code)
}
