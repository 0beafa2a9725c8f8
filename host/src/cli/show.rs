//! How the CLI shows tasks, their notifications and events to people.

use std::io::IsTerminal;
use std::time::Duration;

use skillbox::relay::{Delivery, DeliveryState};
use skillbox::store::{EventRecord, Task, TaskEvent, now_ms};

use super::listing::{age, duration, when};

/// The notify lines of `tasks show`.
pub(super) fn print_deliveries(t: &Task, deliveries: &[Delivery]) {
    let sinks = &t.spec.notify_to;
    outln!(
        "notify     {}{}",
        t.spec.notify,
        if sinks.is_empty() {
            " (no sinks)".to_string()
        } else {
            format!(" → {}", sinks.join(", "))
        }
    );
    for d in deliveries {
        if d.state == DeliveryState::Skipped {
            outln!(
                "delivery   {} {}: skipped ({})",
                d.sink,
                d.to,
                d.last_error
                    .as_deref()
                    .and_then(|e| e.strip_prefix("not sent: "))
                    .unwrap_or("the sink's filter")
            );
            continue;
        }
        let attempts = d.attempts;
        let mut line = format!(
            "delivery   {} {}: {}, {attempts} attempt{}",
            d.sink,
            d.to,
            d.state,
            if attempts == 1 { "" } else { "s" }
        );
        if d.state == DeliveryState::Pending && attempts > 0 {
            line.push_str(&format!(", next {}", until(d.next_ms)));
        }
        if d.state != DeliveryState::Delivered
            && let Some(e) = &d.last_error
        {
            line.push_str(&format!("; last error: {e}"));
        }
        outln!("{line}");
    }
}

/// `tasks show` for people.
pub(super) fn print_task(t: &Task, deliveries: &[Delivery], flags: &str) {
    outln!("task       {}", t.id);
    outln!("skill      {} ({})", t.spec.skill_name, t.spec.skill);
    outln!("state      {} (attempt {})", t.state, t.attempt);
    outln!("label      {}", t.spec.label.as_deref().unwrap_or("-"));
    outln!(
        "parent     {}",
        t.spec.parent_session.as_deref().unwrap_or("-")
    );
    outln!("created    {} ({})", when(t.created_ms), age(t.created_ms));
    if let Some(ended) = t.ended_ms {
        outln!(
            "ended      {} ({}, after {})",
            when(ended),
            age(ended),
            duration(t)
        );
    }
    if let Some(m) = &t.progress_message {
        outln!("progress   {m}");
    }
    if let Some(o) = &t.outcome {
        outln!("outcome    {}", o["outcome"].as_str().unwrap_or(""));
        if let Some(text) = o["text"].as_str() {
            outln!("\n{}", text.trim_end());
        }
        if let Some(m) = o["message"].as_str() {
            outln!("message    {m}");
        }
    }
    print_deliveries(t, deliveries);
    outln!("\nlogs: skillbox tasks logs {}{flags}", t.id);
}

/// "in 3s" for a future Unix-ms time.
fn until(ms: Option<i64>) -> String {
    match ms {
        Some(ms) => {
            let d = (ms - now_ms()).max(0) as u64;
            format!(
                "in {}",
                skillbox::units::HumanDuration(Duration::from_secs(d.div_ceil(1000)))
            )
        }
        None => "-".into(),
    }
}

/// One event as a line.
pub(super) fn describe_event(e: &EventRecord) -> String {
    let kind = e.event.kind();
    let body = match &e.event {
        TaskEvent::State { from, to, reason } => format!(
            "{} -> {to}: {reason}",
            from.map_or("-".to_string(), |f| f.to_string())
        ),
        TaskEvent::Progress { fraction, message } => match fraction {
            Some(f) => format!("[{:>3.0}%] {message}", f64::from(*f) * 100.0),
            None => format!("[ ... ] {message}"),
        },
        TaskEvent::Log { level, message } => format!("{}: {message}", level.as_str()),
        TaskEvent::Output { stream, text } => format!("{stream}: {}", text.trim_end()),
        TaskEvent::Audit {
            capability,
            detail,
            allowed,
            reason,
        } => format!(
            "{} [{capability}] {detail}: {reason}",
            if *allowed { "allow" } else { "deny" }
        ),
        TaskEvent::Checkpoint { key, bytes } => format!("saved {key:?} ({bytes} bytes)"),
        TaskEvent::Truncated { what } => what.clone(),
    };
    format!("{:>5} {kind:<10} {body}", e.seq)
}

/// A progress bar on stderr while a task runs, when stderr is a terminal.
pub(super) struct LiveProgress(Option<indicatif::ProgressBar>);

impl LiveProgress {
    pub(super) fn on_terminal(wanted: bool) -> LiveProgress {
        LiveProgress((wanted && std::io::stderr().is_terminal()).then(|| {
            let b = indicatif::ProgressBar::new(1000);
            if let Ok(style) =
                indicatif::ProgressStyle::with_template("{spinner} [{bar:30}] {percent:>3}% {msg}")
            {
                b.set_style(style.progress_chars("=> "));
            }
            b.enable_steady_tick(Duration::from_millis(120));
            b
        }))
    }

    /// Moves the bar to `fraction` (0..1, when known) with `message`.
    pub(super) fn set(&self, fraction: Option<f64>, message: Option<&str>) {
        if let Some(b) = &self.0 {
            if let Some(f) = fraction {
                b.set_position((f.clamp(0.0, 1.0) * 1000.0) as u64);
            }
            if let Some(m) = message {
                b.set_message(m.to_string());
            }
        }
    }

    /// Prints with the bar out of the way.
    pub(super) fn above(&self, print: impl FnOnce()) {
        match &self.0 {
            Some(b) => b.suspend(print),
            None => print(),
        }
    }

    pub(super) fn finish(&self) {
        if let Some(b) = &self.0 {
            b.finish_and_clear();
        }
    }
}
