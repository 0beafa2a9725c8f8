//! When a schedule fires: its cron expression in its time zone, as slots
//! (instants, Unix milliseconds), and which slot is due now given the last
//! one fired, by the schedule's policy for slots missed while nothing ran.
//!
//! Pure computation: the clock is an argument, so a clock that jumps
//! (forwards or back) is a case of the tests, not of the machine.

use std::str::FromStr;

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use serde::{Deserialize, Serialize};

crate::units::string_enum!(
    /// What happens to the slots that passed while no host ran the
    /// schedule (all down, or the schedule paused): never a burst.
    Missed {
        /// Fire none of them; wait for the next slot.
        Skip = "skip",
        /// Fire once, for the latest of them.
        RunOnce = "run-once",
    }
);

/// A schedule's cron expression in its time zone.
#[derive(Clone, Debug)]
pub struct Timetable {
    cron: Cron,
    tz: Tz,
    expression: String,
}

/// What is due at one moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Due {
    /// The slot to fire now, if any.
    pub fire: Option<i64>,
    /// Slots that passed and will never fire (missed, by the policy); at
    /// least this many when there were over 100,000.
    pub skipped: u64,
    /// The slot to remember as the last one dealt with (fired or skipped).
    pub last: Option<i64>,
    /// The next slot after now.
    pub next: Option<i64>,
}

/// Most missed slots counted one by one before the count is given up (a
/// schedule every second, down for a year).
const MAX_COUNTED: u64 = 100_000;

impl Timetable {
    /// Parses `expression` (five fields, or six with seconds first) in the
    /// time zone `tz` (a tz database name, e.g. `Europe/Paris`, or `UTC`).
    pub fn parse(expression: &str, tz: &str) -> Result<Timetable, String> {
        let cron = Cron::from_str(expression).map_err(|e| {
            format!(
                "cron expression {expression:?}: {e}; five fields (minute hour day-of-month \
                 month day-of-week, e.g. \"0 3 * * *\" for 03:00 every day) or six with \
                 seconds first"
            )
        })?;
        let tz = Tz::from_str(tz).map_err(|_| {
            format!("time zone {tz:?} is not in the tz database; e.g. \"Europe/Paris\" or \"UTC\"")
        })?;
        Ok(Timetable {
            cron,
            tz,
            expression: expression.to_string(),
        })
    }

    /// The expression as given.
    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// The time zone's name.
    pub fn zone(&self) -> &str {
        self.tz.name()
    }

    /// The first slot strictly after `after_ms`.
    pub fn next_after(&self, after_ms: i64) -> Option<i64> {
        let at = self.local(after_ms)?;
        self.cron
            .find_next_occurrence(&at, false)
            .ok()
            .map(|t| t.timestamp_millis())
    }

    /// What is due at `now_ms` when the last slot dealt with is `last_ms`
    /// (`None`: the schedule is new, and counts from `created_ms`). A slot
    /// is on time when it passed less than `grace_ms` ago; older ones were
    /// missed and follow `missed`. A clock that went back fires nothing.
    pub fn due(
        &self,
        last_ms: Option<i64>,
        created_ms: i64,
        now_ms: i64,
        grace_ms: i64,
        missed: Missed,
    ) -> Due {
        let from = last_ms.unwrap_or(created_ms);
        let mut passed = Vec::new();
        let mut counted = 0u64;
        let mut cursor = from;
        while let Some(slot) = self.next_after(cursor).filter(|s| *s <= now_ms) {
            counted += 1;
            // Only the last two matter: the latest, and whether there were
            // others before it.
            passed.push(slot);
            if passed.len() > 2 {
                passed.remove(0);
            }
            cursor = slot;
            if counted >= MAX_COUNTED {
                // Jump to the last slot before now without counting them.
                if let Some(latest) = self.last_at_or_before(now_ms) {
                    passed = vec![latest];
                }
                break;
            }
        }
        let next = self.next_after(now_ms.max(from));
        let Some(&latest) = passed.last() else {
            return Due {
                fire: None,
                skipped: 0,
                last: last_ms,
                next,
            };
        };
        let on_time = counted == 1 && now_ms - latest < grace_ms;
        let fire = (on_time || missed == Missed::RunOnce).then_some(latest);
        Due {
            fire,
            skipped: counted - u64::from(fire.is_some()),
            last: Some(latest),
            next,
        }
    }

    /// The latest slot at or before `ms`.
    fn last_at_or_before(&self, ms: i64) -> Option<i64> {
        let at = self.local(ms)?;
        self.cron
            .find_previous_occurrence(&at, true)
            .ok()
            .map(|t| t.timestamp_millis())
    }

    fn local(&self, ms: i64) -> Option<DateTime<Tz>> {
        Utc.timestamp_millis_opt(ms)
            .single()
            .map(|t| t.with_timezone(&self.tz))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unix ms of a local time in `tz`.
    fn at(tz: &str, s: &str) -> i64 {
        let tz = Tz::from_str(tz).unwrap();
        let naive = chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").unwrap();
        tz.from_local_datetime(&naive)
            .earliest()
            .unwrap()
            .timestamp_millis()
    }

    fn utc(ms: i64) -> String {
        DateTime::from_timestamp_millis(ms)
            .unwrap()
            .format("%Y-%m-%d %H:%M:%S")
            .to_string()
    }

    #[test]
    fn slots_follow_the_zone_across_daylight_saving_time() {
        let t = Timetable::parse("30 2 * * *", "Europe/Paris").unwrap();
        // 2026-03-29: 02:00 → 03:00 in Paris, so 02:30 does not exist; the
        // slot is the first instant after the gap.
        let slot = t
            .next_after(at("Europe/Paris", "2026-03-28 12:00:00"))
            .unwrap();
        assert_eq!(utc(slot), "2026-03-29 01:00:00", "03:00 CEST");
        // 2026-10-25: 03:00 → 02:00, so 02:30 happens twice; it fires once.
        let first = t
            .next_after(at("Europe/Paris", "2026-10-24 12:00:00"))
            .unwrap();
        assert_eq!(utc(first), "2026-10-25 00:30:00", "02:30 CEST");
        let after = t.next_after(first).unwrap();
        assert_eq!(utc(after), "2026-10-26 01:30:00", "02:30 CET, the next day");
        // UTC has no such days.
        let u = Timetable::parse("30 2 * * *", "UTC").unwrap();
        assert_eq!(
            utc(u.next_after(at("UTC", "2026-03-28 12:00:00")).unwrap()),
            "2026-03-29 02:30:00"
        );
        // Six fields: seconds first.
        let s = Timetable::parse("*/5 * * * * *", "UTC").unwrap();
        let base = at("UTC", "2026-01-01 00:00:01");
        assert_eq!(s.next_after(base).unwrap() - base, 4000);
    }

    #[test]
    fn bad_expressions_and_zones_say_what_to_write() {
        for bad in ["", "* * *", "61 * * * *", "0 3 * * FOO", "every night"] {
            let e = Timetable::parse(bad, "UTC").unwrap_err();
            assert!(
                e.contains("cron expression") && e.contains("\"0 3 * * *\""),
                "{bad}: {e}"
            );
        }
        let e = Timetable::parse("0 3 * * *", "Mars/Olympus").unwrap_err();
        assert!(e.contains("not in the tz database"), "{e}");
        let t = Timetable::parse("0 3 * * *", "America/New_York").unwrap();
        assert_eq!(
            (t.expression(), t.zone()),
            ("0 3 * * *", "America/New_York")
        );
    }

    #[test]
    fn a_slot_fires_once_on_time_and_missed_ones_follow_the_policy() {
        let t = Timetable::parse("0 * * * *", "UTC").unwrap();
        let created = at("UTC", "2026-01-01 00:10:00");
        let grace = 60_000;
        // Before the first slot: nothing, and when it comes.
        let d = t.due(
            None,
            created,
            at("UTC", "2026-01-01 00:50:00"),
            grace,
            Missed::Skip,
        );
        assert_eq!(d.fire, None);
        assert_eq!(utc(d.next.unwrap()), "2026-01-01 01:00:00");
        // On time: it fires; asked again, it does not fire twice.
        let now = at("UTC", "2026-01-01 01:00:02");
        let d = t.due(None, created, now, grace, Missed::Skip);
        assert_eq!(d.fire.map(utc).as_deref(), Some("2026-01-01 01:00:00"));
        assert_eq!(d.skipped, 0);
        let again = t.due(d.last, created, now + 500, grace, Missed::Skip);
        assert_eq!((again.fire, again.last), (None, d.last));
        // Down from 01:30 to 05:10: slots 02:00..05:00 missed.
        let now = at("UTC", "2026-01-01 05:10:00");
        let skip = t.due(d.last, created, now, grace, Missed::Skip);
        assert_eq!((skip.fire, skip.skipped), (None, 4));
        assert_eq!(skip.last.map(utc).as_deref(), Some("2026-01-01 05:00:00"));
        assert_eq!(utc(skip.next.unwrap()), "2026-01-01 06:00:00");
        let once = t.due(d.last, created, now, grace, Missed::RunOnce);
        assert_eq!(once.fire.map(utc).as_deref(), Some("2026-01-01 05:00:00"));
        assert_eq!(once.skipped, 3, "one burst of one, never four");
        // A single slot found late is missed too (skip), or run (run-once).
        let late = at("UTC", "2026-01-01 06:20:00");
        assert_eq!(
            t.due(skip.last, created, late, grace, Missed::Skip).fire,
            None
        );
        assert!(
            t.due(skip.last, created, late, grace, Missed::RunOnce)
                .fire
                .is_some()
        );
        // A clock that went back fires nothing and keeps the last slot.
        let back = t.due(
            skip.last,
            created,
            at("UTC", "2026-01-01 03:00:00"),
            grace,
            Missed::RunOnce,
        );
        assert_eq!((back.fire, back.skipped, back.last), (None, 0, skip.last));
        // A clock that jumped a year ahead on a schedule every second: one
        // slot at most, without walking the year.
        let s = Timetable::parse("* * * * * *", "UTC").unwrap();
        let year = at("UTC", "2027-01-01 00:00:00");
        let d = s.due(Some(created), created, year, grace, Missed::RunOnce);
        assert_eq!(d.fire, Some(year));
        assert!(d.skipped >= MAX_COUNTED - 1, "{}", d.skipped);
    }
}
