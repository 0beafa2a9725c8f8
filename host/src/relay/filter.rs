//! Which notifications a sink takes: an operator's filter by the state a
//! task entered and by its skill, so that a pager hears of failures of the
//! upgrade skill and nothing else.

use crate::policy::pattern::glob_match;
use crate::store::{Task, TaskState};

/// A sink's filter; an empty list takes everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SinkFilter {
    /// The states whose announcement the sink takes.
    pub states: Vec<TaskState>,
    /// The skills (names, `*` wildcards) whose tasks the sink hears of.
    pub skills: Vec<String>,
}

impl SinkFilter {
    /// Why the sink does not take the announcement of `task` entering `to`,
    /// or `None` when it does.
    pub fn refuses(&self, task: &Task, to: TaskState) -> Option<String> {
        if !self.states.is_empty() && !self.states.contains(&to) {
            return Some(format!(
                "not sent: the sink takes only the states {}",
                list(self.states.iter().map(|s| s.as_str()))
            ));
        }
        let skill = &task.spec.skill_name;
        if !self.skills.is_empty() && !self.skills.iter().any(|p| glob_match(p, skill)) {
            return Some(format!(
                "not sent: the sink takes only the skills {} (this is {skill})",
                list(self.skills.iter().map(String::as_str))
            ));
        }
        None
    }

    pub(super) fn check(&self) -> Result<(), String> {
        if self.states.contains(&TaskState::Queued) {
            return Err(
                "states: a task's creation (queued) is never announced; name the states it \
                 enters after (running, awaiting_approval, succeeded, failed, timed_out, \
                 cancelled)"
                    .into(),
            );
        }
        if let Some(p) = self.skills.iter().find(|p| p.trim().is_empty()) {
            return Err(format!("skills: {p:?} is not a skill name or pattern"));
        }
        Ok(())
    }
}

fn list<'a>(items: impl Iterator<Item = &'a str>) -> String {
    items.collect::<Vec<_>>().join(", ")
}
