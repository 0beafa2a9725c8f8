//! `progress`: progress reports and leveled log lines, forwarded as events.
//! Log text counts against the run's output cap; past it, lines are dropped
//! and one [`Event::Truncated`] says so.

use crate::bindings::skillbox::skill::progress::{Host, Level as WitLevel};
use std::sync::Arc;

use crate::events::{Event, EventObserver, Level};

/// Longest progress message kept; longer ones are cut.
const MAX_MESSAGE: usize = 4096;

/// Bytes of log text a run may still emit.
#[derive(Debug)]
pub struct LogBudget {
    used: usize,
    cap: usize,
    truncated: bool,
}

impl LogBudget {
    /// A budget of `cap` bytes.
    pub fn new(cap: usize) -> Self {
        LogBudget {
            used: 0,
            cap,
            truncated: false,
        }
    }

    /// Whether `n` more bytes fit; `Err(true)` the first time they do not.
    pub fn admit(&mut self, n: usize) -> Result<(), bool> {
        if self.used.saturating_add(n) <= self.cap {
            self.used += n;
            Ok(())
        } else {
            let first = !self.truncated;
            self.truncated = true;
            Err(first)
        }
    }
}

fn cut(s: String) -> String {
    crate::units::truncate_with_marker(s, MAX_MESSAGE, "…")
}

/// The `progress` capability's part of one run.
pub struct ProgressCtx {
    /// Where reports and log lines go.
    pub events: Arc<dyn EventObserver>,
    /// What is left of the run's output cap for log text.
    pub log: LogBudget,
}

impl ProgressCtx {
    fn emit_counted(&mut self, event: Event, bytes: usize) {
        match self.log.admit(bytes) {
            Ok(()) => self.events.event(event),
            Err(true) => self.events.event(Event::Truncated {
                stream: "log",
                cap: self.log.cap,
            }),
            Err(false) => {}
        }
    }
}

impl Host for ProgressCtx {
    async fn report(&mut self, fraction: Option<f32>, message: String) {
        let fraction = fraction
            .filter(|f| f.is_finite())
            .map(|f| f.clamp(0.0, 1.0));
        let message = cut(message);
        let n = message.len();
        self.emit_counted(Event::Progress { fraction, message }, n);
    }

    async fn log(&mut self, level: WitLevel, message: String) {
        let level = match level {
            WitLevel::Trace => Level::Trace,
            WitLevel::Debug => Level::Debug,
            WitLevel::Info => Level::Info,
            WitLevel::Warn => Level::Warn,
            WitLevel::Error => Level::Error,
        };
        let n = message.len();
        self.emit_counted(Event::Log { level, message }, n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_reports_the_first_overflow_only() {
        let mut b = LogBudget::new(10);
        assert_eq!(b.admit(6), Ok(()));
        assert_eq!(b.admit(6), Err(true));
        assert_eq!(b.admit(1), Ok(()));
        assert_eq!(b.admit(6), Err(false));
        assert_eq!(cut("é".repeat(5000)).len(), 4096 + '…'.len_utf8());
    }
}
