//! `skillbox spawn` and `skillbox tasks`: clients of the daemon's API,
//! with its typed requests and answers.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde::Serialize;
use skillbox::relay::{Delivery, Notification};
use skillbox::server::client::{Client, ClientError};
use skillbox::server::{SpawnBody, Verdict};
use skillbox::store::{
    CleanupMode, EventRecord, NotifyMode, ParentRoute, Task, TaskFilter, TaskState,
};
use skillbox::units::HumanDuration;

use super::exit;
use super::grants::GrantArgs;
use super::serve::DaemonAddr;
use super::show::{LiveProgress, describe_event, print_task};

/// Start a skill as a background task and print its id at once.
///
/// Takes the same grant flags as `run`. The daemon (`skillbox serve`) must be
/// running on the same --data-dir; follow the task with `skillbox tasks`.
#[derive(Args, Debug)]
pub struct SpawnArgs {
    /// Skill directory, skill.toml, .wasm component, an oci://… reference
    /// (as for `run`), or the NAME of an
    /// installed skill ([skills.NAME] of --config), with the grants
    /// configured there and the grant flags given here.
    pub skill: PathBuf,
    /// The host configuration whose [skills.NAME] a bare NAME means
    /// [default: the client configuration's `config`, else
    /// DATA-DIR/config.toml].
    #[arg(long, value_name = "FILE", env = "SKILLBOX_CONFIG")]
    pub config: Option<PathBuf>,
    /// Input as JSON text, @FILE, or - for stdin.
    #[arg(long, short, value_name = "JSON|@FILE|-", default_value = "{}")]
    pub input: String,
    #[command(flatten)]
    pub grants: GrantArgs,
    /// A label, to find the task again.
    #[arg(long)]
    pub label: Option<String>,
    /// The agent session the result belongs to.
    #[arg(long, value_name = "KEY")]
    pub parent_session: Option<String>,
    /// The parent session's messaging channel (e.g. telegram): the OpenClaw
    /// sink has the gateway deliver its reply there, to --parent-to.
    #[arg(long, value_name = "CHANNEL", requires = "parent_to")]
    pub parent_channel: Option<String>,
    /// The recipient on --parent-channel (a chat, a user, a room).
    #[arg(long, value_name = "TO", requires = "parent_channel")]
    pub parent_to: Option<String>,
    /// Which of the channel's accounts sends the reply.
    #[arg(long, value_name = "ID", requires = "parent_channel")]
    pub parent_account: Option<String>,
    /// Which state changes to announce: done-only (the final summary),
    /// failures-only (the final summary of a task that failed, timed out or
    /// was cancelled), state-changes (every one), silent. Requests for
    /// approval are announced in all but silent.
    #[arg(long, default_value = "done-only")]
    pub notify: NotifyMode,
    /// Where to announce them: relay sinks of the daemon's configuration,
    /// by name (repeat, or separate with commas) [default: the configured
    /// relay.default].
    #[arg(long, value_name = "SINK", value_delimiter = ',')]
    pub notify_to: Vec<String>,
    /// What to do with the task's scratch directory (read-write at
    /// /scratch in the guest; DATA_DIR/scratch/ID on the host) when the
    /// task ends: keep it (until the task is pruned) or delete it.
    #[arg(long, default_value = "keep")]
    pub cleanup: CleanupMode,
    /// Accept the skill even if some requested capabilities were not granted.
    #[arg(long)]
    pub partial: bool,
    /// Accept a manifest that pins no sha256.
    #[arg(long)]
    pub allow_unpinned: bool,
    /// Print the stored task as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub at: DaemonAddr,
}

/// An error of a daemon call, with the exit code `run` would give it.
pub(super) enum Failure {
    /// From the client or the API.
    Client(ClientError),
    /// From checking the request locally.
    Local(skillbox::Error),
    /// Anything else.
    Other(String),
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        Failure::Client(e)
    }
}

impl From<skillbox::Error> for Failure {
    fn from(e: skillbox::Error) -> Self {
        Failure::Local(e)
    }
}

pub(super) fn fail(e: impl Into<Failure>, json: bool) -> u8 {
    let (message, code) = match e.into() {
        Failure::Client(e) => {
            let code = match &e {
                ClientError::Api { status: 403, .. } => exit::DENIED,
                ClientError::Api { status: 404, .. } => exit::NOT_FOUND,
                ClientError::Api {
                    status: 400 | 413 | 422,
                    ..
                } => exit::INVALID,
                e if e.is_unreachable() => exit::UNREACHABLE,
                _ => exit::FAILED,
            };
            (e.to_string(), code)
        }
        Failure::Local(e) => (e.to_string(), super::output::code_of(&e)),
        Failure::Other(m) => (m, exit::FAILED),
    };
    super::output::print_error(&message, code, json)
}

/// Ends a command: with `--json` the value as one JSON line, else as
/// `show` prints it; an error as [`fail`] reports it. The exit code.
pub(super) fn answer<T: Serialize>(
    result: Result<T, Failure>,
    json: bool,
    show: impl FnOnce(&T),
) -> u8 {
    match result {
        Ok(v) if json => {
            print_json(&v);
            exit::OK
        }
        Ok(v) => {
            show(&v);
            exit::OK
        }
        Err(e) => fail(e, json),
    }
}

/// Prints `value` as one JSON line.
pub(super) fn print_json(value: &impl Serialize) {
    outln!("{}", serde_json::to_string(value).unwrap_or_default());
}

/// The API body that `args` stand for: the skill located (and pulled,
/// as `run` does), an installed skill's grants merged with the flags', the
/// input read.
pub(super) async fn spawn_body(args: &SpawnArgs) -> Result<SpawnBody, Failure> {
    // The client pulls (as `run` does); the daemon checks the artifact
    // against its own trust policy.
    let located = super::distribute::locate(&args.skill, None).await?;
    let chosen = super::installed::choose(
        &located,
        args.config.as_deref(),
        &args.at.data_dir(),
        args.grants.to_grants()?,
    )?;
    let grants = chosen.grants;
    let input = super::run::read_input(&args.input)?;
    let skill = chosen
        .skill
        .canonicalize()
        .map_err(|source| skillbox::Error::Io {
            path: args.skill.clone(),
            source,
        })?;
    let body = SpawnBody {
        skill,
        input: Some(
            serde_json::from_str(&input).map_err(|e| skillbox::Error::Input(e.to_string()))?,
        ),
        grants,
        label: args.label.clone(),
        parent_session: args.parent_session.clone(),
        parent_route: args.parent_channel.clone().map(|channel| ParentRoute {
            channel,
            to: args.parent_to.clone().unwrap_or_default(),
            account_id: args.parent_account.clone(),
        }),
        cleanup: Some(args.cleanup),
        notify: Some(args.notify),
        notify_to: args.notify_to.clone(),
        partial: args.partial || chosen.partial,
        allow_unpinned: args.allow_unpinned,
    };
    Ok(body)
}

/// `skillbox spawn`.
pub async fn spawn(args: SpawnArgs) -> u8 {
    let result = async {
        let body = spawn_body(&args).await?;
        let task = args.at.client()?.spawn(&body).await?;
        warn_shortfalls(&body);
        Ok::<_, Failure>(task)
    }
    .await;
    match result {
        Ok(task) if args.json => {
            print_json(&task);
            exit::OK
        }
        Ok(task) => {
            outln!("{}", task.id);
            exit::OK
        }
        Err(e) => fail(e, args.json),
    }
}

/// Says, as `run` does, what the task gets less of than its skill asked
/// for, naming the flag that grants the rest. The daemon decided with the
/// same rules; the skill is on this machine, so it is read again here.
pub(super) fn warn_shortfalls(body: &SpawnBody) {
    let Ok(source) = skillbox::skill::SkillSource::open(&body.skill, body.allow_unpinned) else {
        return;
    };
    let (_, report) =
        skillbox::policy::EffectivePolicy::compute(source.manifest.as_ref(), &body.grants);
    for line in report.shortfalls() {
        errln!("warning: {line}");
    }
}

/// Inspect and control background tasks.
#[derive(Args, Debug)]
pub struct TasksArgs {
    #[command(subcommand)]
    pub command: TasksCommand,
    #[command(flatten)]
    pub at: DaemonAddr,
}

/// `skillbox tasks` subcommands.
#[derive(Subcommand, Debug)]
pub enum TasksCommand {
    /// List tasks, newest first.
    List {
        /// Only tasks in this state (queued, running, awaiting_approval,
        /// succeeded, failed, timed_out, cancelled, interrupted).
        #[arg(long)]
        state: Option<TaskState>,
        /// Only tasks with this label.
        #[arg(long)]
        label: Option<String>,
        /// Only tasks of this parent session.
        #[arg(long)]
        parent_session: Option<String>,
        /// Only tasks whose id starts with this.
        #[arg(long, value_name = "PREFIX")]
        id: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Print the ids only, one per line.
        #[arg(long, short, conflicts_with_all = ["json", "format"])]
        quiet: bool,
        /// Print a line per task from a template of fields: {id}, {state},
        /// {skill}, {label}, {parent}, {attempt}, {progress}, {created},
        /// {ended}, {duration}; `\t` is a tab. E.g. '{id}\t{state}'.
        #[arg(long, value_name = "TEMPLATE", conflicts_with = "json")]
        format: Option<super::listing::Template>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one task.
    Show {
        /// Task id.
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print a task's events (progress, logs, output, audit, state changes).
    Logs {
        /// Task id.
        id: String,
        /// Keep following until the task ends.
        #[arg(long, short)]
        follow: bool,
        /// Only the last N events (before following).
        #[arg(long, value_name = "N")]
        tail: Option<usize>,
        /// Only events of the last DURATION, e.g. 10m (before following).
        #[arg(long, value_name = "DURATION")]
        since: Option<HumanDuration>,
        #[command(flatten)]
        reconnect: Reconnect,
        /// Print one JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Wait for a task to end; print the message its parent session gets;
    /// exit like `run` would.
    Wait {
        /// Task id.
        id: String,
        #[command(flatten)]
        reconnect: Reconnect,
        /// Print the task as JSON (with its final `notification`).
        #[arg(long)]
        json: bool,
    },
    /// Delete ended tasks, with their events, checkpoints, notifications
    /// and scratch directories (a queued or running one is refused: cancel
    /// it first).
    Rm {
        /// Task ids (or unique starts of them).
        #[arg(required = true)]
        ids: Vec<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete every task that ended at least --older-than ago (as
    /// `serve --retain` does hourly).
    Prune {
        /// How long ago they must have ended [default: 0s, every ended task].
        #[arg(long, value_name = "DURATION", default_value = "0s")]
        older_than: HumanDuration,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Approve a task's request: the call that waits for it goes ahead.
    #[command(
        after_help = "A task asks when a call matches an ask rule the operator set \
    (--ask-exec, --ask-docker, --ask-write, --ask-net) or when the skill asks itself; \
    it waits in state awaiting_approval until a decision or its approval timeout \
    (then it is denied). `skillbox tasks approvals ID` lists the requests."
    )]
    Approve(super::approve::DecideArgs),
    /// Deny a task's request: the call that waits for it is refused, as a
    /// call outside the grants is; the skill may go on or fail.
    Deny(super::approve::DecideArgs),
    /// List a task's requests for approval and their decisions.
    Approvals {
        /// Task id.
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Cancel a task.
    Cancel {
        /// Task id.
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Send a task's failed notifications again (now, with a fresh retry
    /// deadline).
    Redeliver {
        /// Task id.
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// A task with its notifications, as `tasks show --json` prints it.
#[derive(Serialize)]
struct Shown {
    #[serde(flatten)]
    task: Task,
    deliveries: Vec<Delivery>,
}

/// A task with its final notification, as `tasks wait --json` prints it.
#[derive(Serialize)]
struct Waited {
    #[serde(flatten)]
    task: Task,
    notification: Notification,
}

/// The exit code `run` gives a run that ended like the task.
fn exit_for_state(state: TaskState) -> u8 {
    match state {
        TaskState::Succeeded => exit::OK,
        TaskState::TimedOut => exit::TIMED_OUT,
        _ => exit::FAILED,
    }
}

impl TasksCommand {
    /// The task a command is about, as given, and whether it prints JSON.
    fn task(&self) -> Option<(&str, bool)> {
        match self {
            TasksCommand::Show { id, json }
            | TasksCommand::Logs { id, json, .. }
            | TasksCommand::Wait { id, json, .. }
            | TasksCommand::Redeliver { id, json }
            | TasksCommand::Approvals { id, json }
            | TasksCommand::Cancel { id, json } => Some((id, *json)),
            TasksCommand::Approve(a) | TasksCommand::Deny(a) => Some((&a.id, a.json)),
            TasksCommand::List { .. } | TasksCommand::Rm { .. } | TasksCommand::Prune { .. } => {
                None
            }
        }
    }
}

impl TasksCommand {
    /// Whether it prints JSON.
    fn json(&self) -> bool {
        match self {
            TasksCommand::List { json, .. }
            | TasksCommand::Rm { json, .. }
            | TasksCommand::Prune { json, .. } => *json,
            other => other.task().is_some_and(|(_, json)| json),
        }
    }
}

/// `skillbox tasks …`.
pub async fn tasks(args: TasksArgs) -> u8 {
    let client = match args.at.client() {
        Ok(c) => c,
        Err(e) => return fail(e, args.command.json()),
    };
    // A command about one task names it by its id or a unique start of it.
    let id = match args.command.task() {
        Some((given, json)) => match client.resolve(given).await {
            Ok(id) => id,
            Err(e) => return fail(e, json),
        },
        None => String::new(),
    };
    match args.command {
        TasksCommand::List {
            state,
            label,
            parent_session,
            id,
            limit,
            quiet,
            format,
            json,
        } => {
            let filter = TaskFilter {
                state,
                label,
                parent_session,
                id_prefix: id,
                limit: Some(limit),
            };
            let how = match (quiet, format, json) {
                (true, ..) => Listing::Ids,
                (_, Some(t), _) => Listing::Template(t),
                (_, _, true) => Listing::Json,
                _ => Listing::Table,
            };
            list(&client, &filter, how).await
        }
        TasksCommand::Prune { older_than, json } => prune(&client, older_than, json).await,
        TasksCommand::Rm { ids, json } => remove(&client, &ids, json).await,
        TasksCommand::Show { json, .. } => show(&client, &id, json, &args.at.flags()).await,
        TasksCommand::Logs {
            follow,
            tail,
            since,
            reconnect,
            json,
            ..
        } => {
            let window = Window { tail, since };
            if follow {
                follow_logs(&client, &id, window, reconnect.patience(json), json).await
            } else {
                logs(&client, &id, window, json).await
            }
        }
        TasksCommand::Wait {
            reconnect, json, ..
        } => wait(&client, &id, reconnect.patience(json), json).await,
        TasksCommand::Redeliver { json, .. } => redeliver(&client, &id, json).await,
        TasksCommand::Cancel { json, .. } => cancel(&client, &id, json).await,
        TasksCommand::Approve(a) => super::approve::decide(&client, &id, a, Verdict::Approve).await,
        TasksCommand::Deny(a) => super::approve::decide(&client, &id, a, Verdict::Deny).await,
        TasksCommand::Approvals { json, .. } => super::approve::list(&client, &id, json).await,
    }
}

/// How `tasks list` prints.
enum Listing {
    Table,
    Ids,
    Template(super::listing::Template),
    Json,
}

async fn list(client: &Client, filter: &TaskFilter, how: Listing) -> u8 {
    let tasks = match client.list(filter).await {
        Ok(t) => t,
        Err(e) => return fail(e, matches!(how, Listing::Json)),
    };
    match how {
        Listing::Json => print_json(&tasks),
        Listing::Ids => tasks.iter().for_each(|t| outln!("{}", t.id)),
        Listing::Template(t) => tasks.iter().for_each(|task| outln!("{}", t.render(task))),
        Listing::Table if tasks.is_empty() => errln!("no tasks"),
        Listing::Table => super::listing::print_table(&tasks),
    }
    exit::OK
}

/// `tasks rm`: each task in turn; the first failure's code.
async fn remove(client: &Client, ids: &[String], json: bool) -> u8 {
    let mut code = exit::OK;
    for id in ids {
        let removed = async {
            let id = client.resolve(id).await?;
            client.remove(&id).await.map(|()| id)
        };
        match removed.await {
            Ok(id) if json => print_json(&serde_json::json!({ "removed": id })),
            Ok(id) => outln!("{id}"),
            Err(e) => {
                let c = fail(e, json);
                if code == exit::OK {
                    code = c;
                }
            }
        }
    }
    code
}

async fn prune(client: &Client, older_than: HumanDuration, json: bool) -> u8 {
    match client.prune(older_than.get()).await {
        Ok(n) if json => {
            print_json(&serde_json::json!({ "pruned": n }));
            exit::OK
        }
        Ok(n) => {
            outln!("removed {n} ended task(s)");
            exit::OK
        }
        Err(e) => fail(e, json),
    }
}

async fn show(client: &Client, id: &str, json: bool, flags: &str) -> u8 {
    let shown = async {
        let task = client.task(id).await?;
        let deliveries = client.deliveries(id).await?;
        Ok::<_, ClientError>(Shown { task, deliveries })
    };
    match shown.await {
        Ok(s) if json => {
            print_json(&s);
            exit::OK
        }
        Ok(s) => {
            print_task(&s.task, &s.deliveries, flags);
            exit::OK
        }
        Err(e) => fail(e, json),
    }
}

/// `logs --tail` and `--since`: which of the events so far to print.
#[derive(Clone, Copy)]
struct Window {
    tail: Option<usize>,
    since: Option<HumanDuration>,
}

impl Window {
    /// The events of the window, in order.
    fn select(self, mut events: Vec<EventRecord>) -> Vec<EventRecord> {
        if let Some(d) = self.since {
            let from = skillbox::store::now_ms() - d.get().as_millis() as i64;
            events.retain(|e| e.at_ms >= from);
        }
        if let Some(n) = self.tail {
            let skip = events.len().saturating_sub(n);
            events.drain(..skip);
        }
        events
    }
}

async fn logs(client: &Client, id: &str, window: Window, json: bool) -> u8 {
    match client.event_page(id).await {
        Ok(events) => {
            let no_bar = LiveProgress::on_terminal(false);
            for e in window.select(events) {
                print_event(&e, &no_bar, json);
            }
            exit::OK
        }
        Err(e) => fail(e, json),
    }
}

/// `tasks logs --follow`: the events as they come, until the task ends;
/// across a restart of the daemon, from the last event seen.
async fn follow_logs(
    client: &Client,
    id: &str,
    window: Window,
    mut patience: Patience,
    json: bool,
) -> u8 {
    // On a terminal, the latest progress stays in a bar below the lines.
    let bar = LiveProgress::on_terminal(!json);
    // The window applies to the events so far; following starts after them.
    let mut after = 0;
    if window.tail.is_some() || window.since.is_some() {
        match client.event_page(id).await {
            Ok(events) => {
                after = events.last().map_or(0, |e| e.seq);
                window
                    .select(events)
                    .iter()
                    .for_each(|e| print_event(e, &bar, json));
            }
            Err(e) => return fail(e, json),
        }
    }
    let code = 'open: loop {
        let mut stream = match client.events(id, after).await {
            Ok(s) => s,
            Err(e) if patience.waits_for(&e).await => continue,
            Err(e) => break fail(e, json),
        };
        patience.reached(client);
        loop {
            match stream.next_event().await {
                Ok(Some((_, kind, data))) if kind == "error" => {
                    break 'open fail(Failure::Other(data), json);
                }
                Ok(Some((_, _, data))) => {
                    let e: skillbox::store::EventRecord = match serde_json::from_str(&data) {
                        Ok(e) => e,
                        Err(e) => {
                            let m = format!("unexpected event: {e}");
                            break 'open fail(Failure::Other(m), json);
                        }
                    };
                    after = e.seq;
                    print_event(&e, &bar, json);
                }
                // The stream ends with the task, or with the daemon's
                // shutdown: only the task says which.
                Ok(None) => match client.task(id).await {
                    Ok(t) if t.state.is_terminal() => break 'open exit::OK,
                    Ok(_) => continue 'open,
                    Err(e) if patience.waits_for(&e).await => continue 'open,
                    Err(e) => break 'open fail(e, json),
                },
                Err(e) if patience.waits_for(&e).await => continue 'open,
                Err(e) => break 'open fail(e, json),
            }
        }
    };
    bar.finish();
    code
}

/// One event of `logs --follow`: a JSON line, or a text line above the
/// progress bar.
fn print_event(e: &skillbox::store::EventRecord, bar: &LiveProgress, json: bool) {
    if json {
        print_json(e);
        return;
    }
    match &e.event {
        skillbox::store::TaskEvent::Progress { fraction, message } => {
            bar.set(fraction.map(f64::from), Some(message))
        }
        skillbox::store::TaskEvent::State { to, .. } => bar.set(None, Some(to.as_str())),
        _ => {}
    }
    bar.above(|| outln!("{}", describe_event(e)));
}

/// `tasks wait`: polls until the task ends, then prints the message its
/// parent session gets.
async fn wait(client: &Client, id: &str, mut patience: Patience, json: bool) -> u8 {
    let bar = LiveProgress::on_terminal(!json);
    let task = loop {
        match client.wait(id, Duration::from_secs(1)).await {
            Ok(t) => {
                patience.reached(client);
                if t.state.is_terminal() {
                    break t;
                }
                bar.set(
                    t.progress.map(f64::from),
                    Some(t.progress_message.as_deref().unwrap_or(t.state.as_str())),
                )
            }
            Err(e) if patience.waits_for(&e).await => continue,
            Err(e) => return fail(e, json),
        }
    };
    bar.finish();
    let state = task.state;
    let notification = match client.notification(id).await {
        Ok(n) => n,
        Err(e) => return fail(e, json),
    };
    if json {
        print_json(&Waited { task, notification });
    } else {
        outln!("{}", notification.message);
    }
    exit_for_state(state)
}

/// `--reconnect`: how long `wait` and `logs -f` wait for a daemon that
/// went away.
#[derive(Args, Debug, Clone, Copy)]
pub struct Reconnect {
    /// How long to wait for the daemon to come back when it stops or
    /// restarts meanwhile (0: give up at once, exit code 8).
    #[arg(long, value_name = "DURATION", default_value = "60s")]
    reconnect: HumanDuration,
}

impl Reconnect {
    fn patience(self, json: bool) -> Patience {
        Patience {
            limit: self.reconnect.0,
            since: None,
            json,
        }
    }
}

/// Waiting for a daemon that went away: said once on stderr, bounded, and
/// said again when it is back.
struct Patience {
    limit: Duration,
    /// When it was first missed, while it is.
    since: Option<std::time::Instant>,
    json: bool,
}

impl Patience {
    /// On an unreachable daemon, within the limit: waits a moment and
    /// says to try again. Anything else, or past the limit: false.
    async fn waits_for(&mut self, e: &ClientError) -> bool {
        if !e.is_unreachable() {
            return false;
        }
        let since = *self.since.get_or_insert_with(|| {
            if !self.json && !self.limit.is_zero() {
                errln!(
                    "{e}; waiting up to {} for it to come back",
                    HumanDuration(self.limit)
                );
            }
            std::time::Instant::now()
        });
        if since.elapsed() >= self.limit {
            if !self.json && !self.limit.is_zero() {
                errln!(
                    "gave up: the daemon did not come back within {} (--reconnect)",
                    HumanDuration(self.limit)
                );
            }
            return false;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        true
    }

    /// A call reached the daemon.
    fn reached(&mut self, client: &Client) {
        if self.since.take().is_some() && !self.json {
            errln!("the skillbox daemon at {} is back", client.address());
        }
    }
}

async fn redeliver(client: &Client, id: &str, json: bool) -> u8 {
    match client.redeliver(id).await {
        Ok(r) if json => {
            print_json(&r);
            exit::OK
        }
        Ok(r) => {
            match r.requeued {
                0 => outln!("{id}: no failed notifications to send again"),
                n => outln!("{id}: {n} notification(s) queued again"),
            }
            exit::OK
        }
        Err(e) => fail(e, json),
    }
}

async fn cancel(client: &Client, id: &str, json: bool) -> u8 {
    match client.cancel(id).await {
        Ok(t) if json => {
            print_json(&t);
            exit::OK
        }
        // A task that had already ended keeps its state: say so.
        Ok(t) if t.state.is_terminal() && t.state != TaskState::Cancelled => {
            outln!(
                "{} had already ended ({}); nothing to cancel",
                t.id,
                t.state
            );
            exit::OK
        }
        Ok(t) => {
            let word = if t.state == TaskState::Cancelled {
                "cancelled"
            } else {
                "cancelling (its host stops it at its next heartbeat)"
            };
            outln!("{} {word}", t.id);
            exit::OK
        }
        Err(e) => fail(e, json),
    }
}
