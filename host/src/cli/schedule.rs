//! `skillbox schedule`: background work that runs itself, a task per slot
//! of a cron expression, kept by the daemon's store.

use clap::{Args, Subcommand};
use skillbox::schedule::Missed;
use skillbox::server::ScheduleBody;
use skillbox::store::schedule::{Overlap, Schedule};
use skillbox::tasks::schedules::ScheduleView;

use super::listing::when;
use super::serve::DaemonAddr;
use super::tasks::{Failure, SpawnArgs, answer, spawn_body, warn_shortfalls};

/// Run skills on a timetable: each slot of a cron expression creates one
/// ordinary task (labelled with the schedule's name), exactly once even
/// with several workers sharing the store or a host restarted mid-slot.
///
/// Schedules fire while a daemon (`skillbox serve`) or a worker runs on
/// the store. Slots that pass while none does follow --missed; a slot
/// while the previous task still runs follows --overlap.
#[derive(Args, Debug)]
pub struct ScheduleArgs {
    #[command(subcommand)]
    pub command: ScheduleCommand,
}

/// `skillbox schedule` subcommands.
#[derive(Subcommand, Debug)]
pub enum ScheduleCommand {
    /// Add a schedule: NAME, a timetable, and the task as for `spawn`
    /// (SKILL, its grant flags, --input, --notify…). The skill, its grants
    /// and its component are checked now and fixed: the schedule always
    /// runs the component it was added with.
    Add(Box<AddArgs>),
    /// List schedules.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        at: DaemonAddr,
    },
    /// Show a schedule and its latest slots.
    Show(NameArgs),
    /// Pause a schedule: no slot fires until it is resumed.
    Pause(NameArgs),
    /// Resume a paused schedule (slots it slept through follow --missed).
    Resume(NameArgs),
    /// Delete a schedule (the tasks it created stay).
    Rm(NameArgs),
    /// Create the schedule's task now, outside its timetable (paused or
    /// not, whatever its overlap rule); prints the task's id.
    RunNow(NameArgs),
}

/// `skillbox schedule add`.
#[derive(Args, Debug)]
pub struct AddArgs {
    /// The schedule's name: letters, digits, `-`, `_`, `.`; its tasks'
    /// label.
    pub name: String,
    /// When: a cron expression, five fields (minute hour day-of-month
    /// month day-of-week, e.g. '0 3 * * *' for 03:00 every day) or six
    /// with seconds first ('*/10 * * * * *').
    #[arg(long, value_name = "EXPR")]
    pub cron: String,
    /// The time zone the expression is read in (a tz database name, e.g.
    /// Europe/Paris); daylight saving time is followed: a 02:30 slot on a
    /// night that skips 02:00–03:00 fires at 03:00, once on a night that
    /// repeats it.
    #[arg(long, value_name = "ZONE", default_value = "UTC")]
    pub tz: String,
    /// Slots that passed while no daemon or worker ran (or while paused):
    /// skip them all, or run-once for the latest. Never a burst.
    #[arg(long, default_value = "skip")]
    pub missed: Missed,
    /// A slot that comes while the schedule's previous task is still
    /// queued or running: allow (run side by side), skip it, or queue it
    /// (one at most, fired when the previous task ends).
    #[arg(long, default_value = "allow")]
    pub overlap: Overlap,
    #[command(flatten)]
    pub task: SpawnArgs,
}

/// A schedule's name, and where the daemon is.
#[derive(Args, Debug)]
pub struct NameArgs {
    /// The schedule's name.
    pub name: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub at: DaemonAddr,
}

/// `skillbox schedule`.
pub async fn schedule(args: ScheduleArgs) -> u8 {
    match args.command {
        ScheduleCommand::Add(a) => add(*a).await,
        ScheduleCommand::List { json, at } => {
            let result = async { Ok::<_, Failure>(at.client()?.schedules().await?) }.await;
            answer(result, json, |all| print_list(all))
        }
        ScheduleCommand::Show(a) => {
            let result = async { Ok::<_, Failure>(a.at.client()?.schedule(&a.name).await?) }.await;
            answer(result, a.json, print_view)
        }
        ScheduleCommand::Pause(a) => act(a, "pause").await,
        ScheduleCommand::Resume(a) => act(a, "resume").await,
        ScheduleCommand::Rm(a) => {
            let result = async {
                a.at.client()?.remove_schedule(&a.name).await?;
                Ok::<_, Failure>(serde_json::json!({ "removed": a.name }))
            }
            .await;
            answer(result, a.json, |_| outln!("removed schedule {}", a.name))
        }
        ScheduleCommand::RunNow(a) => {
            let result =
                async { Ok::<_, Failure>(a.at.client()?.run_schedule(&a.name).await?) }.await;
            answer(result, a.json, |t| outln!("{}", t.id))
        }
    }
}

async fn add(args: AddArgs) -> u8 {
    let result = async {
        if args.task.label.is_some() {
            return Err(Failure::Local(skillbox::Error::Input(
                "a scheduled task's label is its schedule's name; drop --label".into(),
            )));
        }
        let task = spawn_body(&args.task).await?;
        let body = ScheduleBody {
            name: args.name.clone(),
            cron: args.cron.clone(),
            tz: Some(args.tz.clone()),
            missed: Some(args.missed),
            overlap: Some(args.overlap),
            task,
        };
        let s = args.task.at.client()?.add_schedule(&body).await?;
        warn_shortfalls(&body.task);
        Ok::<_, Failure>(s)
    }
    .await;
    answer(result, args.task.json, |s| {
        outln!(
            "added schedule {} ({} in {}); next slot: {}",
            s.spec.name,
            s.spec.cron,
            s.spec.tz,
            s.next_ms.map_or("none".into(), when)
        )
    })
}

async fn act(a: NameArgs, action: &str) -> u8 {
    let result =
        async { Ok::<_, Failure>(a.at.client()?.schedule_action(&a.name, action).await?) }.await;
    answer(result, a.json, |s| {
        outln!(
            "schedule {} is {}; next slot: {}",
            s.spec.name,
            if s.paused { "paused" } else { "active" },
            if s.paused {
                "none while paused".into()
            } else {
                s.next_ms.map_or("none".into(), when)
            }
        )
    })
}

fn print_list(all: &[Schedule]) {
    if all.is_empty() {
        outln!("no schedules (add one with `skillbox schedule add`)");
        return;
    }
    outln!(
        "{:<20} {:<18} {:<16} {:<7} {:<19} {:>6} {:>7}",
        "NAME",
        "CRON",
        "TZ",
        "STATE",
        "NEXT",
        "FIRED",
        "SKIPPED"
    );
    for s in all {
        outln!(
            "{:<20} {:<18} {:<16} {:<7} {:<19} {:>6} {:>7}",
            s.spec.name,
            s.spec.cron,
            s.spec.tz,
            if s.paused { "paused" } else { "active" },
            if s.paused {
                "-".into()
            } else {
                s.next_ms.map_or("-".into(), when)
            },
            s.fired,
            s.skipped
        );
    }
}

fn print_view(v: &ScheduleView) {
    let s = &v.schedule;
    outln!("schedule  {}", s.spec.name);
    outln!("when      {} ({})", s.spec.cron, s.spec.tz);
    outln!(
        "skill     {} ({})",
        s.spec.task.skill_name,
        s.spec.task.skill
    );
    outln!("state     {}", if s.paused { "paused" } else { "active" });
    outln!("next      {}", s.next_ms.map_or("-".into(), when));
    outln!(
        "policy    missed: {}, overlap: {}",
        s.spec.missed,
        s.spec.overlap
    );
    outln!(
        "fired     {} task(s), {} slot(s) skipped",
        s.fired,
        s.skipped
    );
    if let Some(t) = s.last_task {
        outln!("last task {t}");
    }
    if let Some(h) = s.held_slot_ms {
        outln!("held      slot {} (waits for the last task)", when(h));
    }
    if !v.slots.is_empty() {
        outln!("slots (newest first):");
        for slot in &v.slots {
            outln!(
                "  {}  {:<7} {}",
                when(slot.slot_ms),
                slot.outcome.as_str(),
                slot.task.map(|t| t.to_string()).unwrap_or_default()
            );
        }
    }
}
