//! The `approval` interface: a skill's own requests for the operator's
//! "go". It spans capabilities (whether a listed exec or docker call would
//! wait depends on those calls' own rules), so it is wired on the whole run
//! state rather than on one capability's context.

use super::RunState;
use crate::bindings::skillbox::skill::approval::{
    Action as WitAction, ApprovalError, Host, Request,
};
use crate::caps::approval::{Action, RequestError};

fn action(a: WitAction) -> Action {
    match a {
        WitAction::Exec(argv) => Action::Exec(argv),
        WitAction::DockerRun(image) => Action::DockerRun(image),
        WitAction::DockerStop(c) => Action::DockerStop(c),
        WitAction::DockerRemove(c) => Action::DockerRemove(c),
        WitAction::Other(words) => Action::Other(words),
    }
}

impl Host for RunState {
    async fn needs_approval(&mut self, actions: Vec<WitAction>) -> bool {
        for a in actions.into_iter().map(action) {
            let asks = match &a {
                Action::Exec(argv) => self.exec.would_ask(argv),
                Action::DockerRun(image) => self.docker.would_ask("run", image).await,
                Action::DockerStop(c) => self.docker.would_ask("stop", c).await,
                Action::DockerRemove(c) => self.docker.would_ask("remove", c).await,
                Action::Other(_) => false,
            };
            if asks {
                return true;
            }
        }
        false
    }

    async fn ask(&mut self, req: Request) -> Result<Option<String>, ApprovalError> {
        let actions: Vec<Action> = req.actions.into_iter().map(action).collect();
        let asker = self.asker.clone();
        asker
            .request(&req.reason, &actions)
            .await
            .map_err(|e| match e {
                RequestError::Denied(m) => ApprovalError::Denied(m),
                RequestError::Unavailable(m) => ApprovalError::Unavailable(m),
                RequestError::Invalid(m) => ApprovalError::Invalid(m),
            })
    }
}
