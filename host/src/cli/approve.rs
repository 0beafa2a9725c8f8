//! `skillbox tasks approve / deny / approvals`: the operator's decisions
//! on a task's requests for approval, through the daemon.

use clap::Args;
use skillbox::server::client::Client;
use skillbox::server::{DecideBody, Verdict};
use skillbox::store::Approval;

use super::exit;
use super::tasks::{fail, print_json};

/// What `approve` and `deny` take besides the task.
#[derive(Args, Debug)]
pub struct DecideArgs {
    /// Task id (or a unique start of it).
    pub id: String,
    /// The request's number (`skillbox tasks approvals ID` lists them);
    /// the task's only pending request when left out.
    pub request: Option<u32>,
    /// Decide the same way every later request of the same rule in this
    /// task, without asking again.
    #[arg(long)]
    pub always_for_task: bool,
    /// A note recorded with the decision and shown to the skill.
    #[arg(long, value_name = "TEXT")]
    pub note: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Who decides, as the record names them: the local user.
fn operator() -> String {
    // SAFETY: getuid cannot fail.
    let uid = unsafe { libc::getuid() };
    match std::env::var("USER").ok().filter(|u| !u.is_empty()) {
        Some(user) => format!("cli:{user} (uid {uid})"),
        None => format!("cli:uid {uid}"),
    }
}

/// `tasks approve` / `tasks deny`: `id` is already resolved.
pub async fn decide(client: &Client, id: &str, args: DecideArgs, verdict: Verdict) -> u8 {
    let body = DecideBody {
        decision: verdict,
        request: args.request,
        always_for_task: args.always_for_task,
        note: args.note,
        by: Some(operator()),
    };
    match client.decide(id, &body).await {
        Ok(a) if args.json => {
            print_json(&a);
            exit::OK
        }
        Ok(a) => {
            let verb = if verdict == Verdict::Approve {
                "approved"
            } else {
                "denied"
            };
            outln!(
                "{id}: request #{} {verb}{}: {} {}",
                a.id,
                if args.always_for_task {
                    " (and every later one of its rule)"
                } else {
                    ""
                },
                a.request.capability,
                a.request.detail
            );
            exit::OK
        }
        Err(e) => fail(e, args.json),
    }
}

/// `tasks approvals`: the task's requests, pending ones first.
pub async fn list(client: &Client, id: &str, json: bool) -> u8 {
    match client.approvals(id).await {
        Ok(all) if json => {
            print_json(&all);
            exit::OK
        }
        Ok(all) => {
            if all.is_empty() {
                outln!("{id} has made no request for approval");
            }
            for a in &all {
                outln!("{}", describe(id, a));
            }
            exit::OK
        }
        Err(e) => fail(e, json),
    }
}

/// One request in a line or two.
pub(super) fn describe(task: &str, a: &Approval) -> String {
    let r = &a.request;
    let mut line = format!("#{} {} {}  (rule {})", a.id, r.capability, r.detail, r.rule);
    if let Some(why) = &r.reason {
        line.push_str(&format!("\n     because: {why}"));
    }
    match &a.decision {
        None => line.push_str(&format!(
            "\n     PENDING: skillbox tasks approve {task} {n}  |  skillbox tasks deny {task} {n}",
            n = a.id
        )),
        Some(d) => line.push_str(&format!(
            "\n     {} by {} at {}{}",
            if d.approved { "approved" } else { "denied" },
            d.by,
            super::listing::when(d.at_ms),
            d.note
                .as_deref()
                .map(|n| format!(": {n}"))
                .unwrap_or_default()
        )),
    }
    line
}
