//! The audit trail: every capability decision a task met (allowed or
//! refused, by the host's checks or by an operator's answer), kept as a
//! chain of records that each carry the hash of the one before, so that an
//! edited, removed or reordered record is found by [`verify_store`] ([`Verifier`]).
//!
//! One chain per store, in the order records were committed: a record is
//! written in the transaction that stores its task's events (or the
//! operator's decision), under the chain's head, which that transaction
//! holds until it commits. The head (last seq and hash) lives in its own
//! row, so a record removed from the end is found too.
//!
//! Retention follows task pruning: once every record up to some seq
//! belongs to a task that was pruned, those records go, and a `pruned`
//! record appended to the chain says through which seq and with which
//! hash, so the rest still verifies from there.
//!
//! A record's hash covers its place and its content (see
//! [`AuditRecord::digest`]); the first record's `prev` is 64 zeros. The
//! content is serialized and digested before the transaction that chains
//! it, which only links it: chaining costs one short hash and one row per
//! record on the store's single writer. The export format (`skillbox
//! audit export`) is one [`AuditRecord`] per line.

use serde::{Deserialize, Serialize};
use sha2::Digest;

use super::backend::{StoreError, now_ms};
use super::machine::Transaction;
use super::model::{TaskEvent, TaskId};
use crate::units::string_enum;

/// The `prev` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

string_enum!(
    /// What a record is.
    AuditKind {
        /// A capability call the host checked (allowed or refused).
        Call = "call",
        /// An operator's answer to a request for approval.
        Decision = "decision",
        /// Records up to `through` were pruned with their tasks.
        Pruned = "pruned",
    }
);

/// One record of the chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditRecord {
    /// Position in the chain, from 1, without gaps.
    pub seq: u64,
    /// When it was recorded, Unix milliseconds.
    pub at_ms: i64,
    /// The task the decision concerns.
    pub task: Option<TaskId>,
    /// The host that ran the task (for calls).
    pub host: Option<String>,
    /// What the record is.
    pub kind: AuditKind,
    /// The capability (`fs`, `exec`, `net`, `env`, `docker`, `secrets`, …).
    pub capability: String,
    /// What was asked.
    pub detail: String,
    /// Whether it was allowed.
    pub allowed: bool,
    /// The rule that applied, or why it was refused.
    pub reason: String,
    /// Who decided, for an operator's decision.
    pub by: Option<String>,
    /// For `pruned`: the last seq removed.
    pub through: Option<u64>,
    /// For `pruned`: the hash of record `through`.
    pub through_hash: Option<String>,
    /// The hash of the record before it ([`GENESIS`] for the first).
    pub prev: String,
    /// This record's hash.
    pub hash: String,
}

/// The chain's last record, as its own row records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditHead {
    /// Its seq (0 for an empty chain).
    pub seq: u64,
    /// Its hash ([`GENESIS`] for an empty chain).
    pub hash: String,
}

/// Which records to read.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditFilter {
    /// Only records after this seq.
    #[serde(default)]
    pub after: u64,
    /// Only records of this task.
    #[serde(default)]
    pub task: Option<TaskId>,
    /// Only records at or after this time, Unix milliseconds.
    #[serde(default)]
    pub since_ms: Option<i64>,
    /// At most this many, in seq order; default 1,000.
    #[serde(default)]
    pub limit: Option<u32>,
}

/// What a record says, apart from its place in the chain: the bytes its
/// content digest is taken over are this, as compact JSON, fields in this
/// order (what the store keeps as the record's body).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Content {
    pub(super) at_ms: i64,
    pub(super) task: Option<TaskId>,
    pub(super) host: Option<String>,
    pub(super) kind: AuditKind,
    pub(super) capability: String,
    pub(super) detail: String,
    pub(super) allowed: bool,
    pub(super) reason: String,
    pub(super) by: Option<String>,
    pub(super) through: Option<u64>,
    pub(super) through_hash: Option<String>,
}

impl Content {
    /// The record at `seq` after `prev`, with this content and its hash.
    pub(super) fn at(self, seq: u64, prev: String, hash: String) -> AuditRecord {
        AuditRecord {
            seq,
            at_ms: self.at_ms,
            task: self.task,
            host: self.host,
            kind: self.kind,
            capability: self.capability,
            detail: self.detail,
            allowed: self.allowed,
            reason: self.reason,
            by: self.by,
            through: self.through,
            through_hash: self.through_hash,
            prev,
            hash,
        }
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

/// A record's hash: its place (seq, the hash before it) and its content's
/// digest.
fn link(seq: u64, prev: &str, content: &str) -> String {
    sha256_hex(format!("{seq}\n{prev}\n{content}").as_bytes())
}

impl AuditRecord {
    /// The record's hash as computed from its content and place: the
    /// SHA-256 (hex) of `"{seq}\n{prev}\n{content}"`, where `content` is
    /// the SHA-256 (hex) of the compact JSON object of the other fields,
    /// in the order `at_ms, task, host, kind, capability, detail, allowed,
    /// reason, by, through, through_hash`.
    pub fn digest(&self) -> String {
        let content = Content {
            at_ms: self.at_ms,
            task: self.task,
            host: self.host.clone(),
            kind: self.kind,
            capability: self.capability.clone(),
            detail: self.detail.clone(),
            allowed: self.allowed,
            reason: self.reason.clone(),
            by: self.by.clone(),
            through: self.through,
            through_hash: self.through_hash.clone(),
        };
        let body = serde_json::to_string(&content).unwrap_or_default();
        link(self.seq, &self.prev, &sha256_hex(body.as_bytes()))
    }
}

/// A record ready to take its place in the chain: its content serialized
/// and digested beforehand, so that the transaction that chains it (one
/// writer at a time) only links it.
#[derive(Clone, Debug)]
pub(super) struct Entry {
    pub(super) at_ms: i64,
    pub(super) task: Option<TaskId>,
    /// The content as stored.
    pub(super) body: String,
    /// Its SHA-256, hex.
    pub(super) digest: String,
}

impl Entry {
    fn of(content: &Content) -> Entry {
        let body = serde_json::to_string(content).unwrap_or_default();
        Entry {
            at_ms: content.at_ms,
            task: content.task,
            digest: sha256_hex(body.as_bytes()),
            body,
        }
    }

    /// The entries of the capability calls among `events` of task `task`
    /// on `host`.
    pub(super) fn calls(task: TaskId, host: &str, events: &[TaskEvent]) -> Vec<Entry> {
        let at_ms = now_ms();
        events
            .iter()
            .filter_map(|e| match e {
                TaskEvent::Audit {
                    capability,
                    detail,
                    allowed,
                    reason,
                } => Some(Entry::of(&Content {
                    at_ms,
                    task: Some(task),
                    host: Some(host.to_string()),
                    kind: AuditKind::Call,
                    capability: capability.clone(),
                    detail: detail.clone(),
                    allowed: *allowed,
                    reason: reason.clone(),
                    by: None,
                    through: None,
                    through_hash: None,
                })),
                _ => None,
            })
            .collect()
    }

    /// The entry of a decided request for approval.
    pub(super) fn decision(a: &super::approval::Approval) -> Option<Entry> {
        let d = a.decision.as_ref()?;
        let mut reason = format!(
            "request #{} (rule {}) {}{}",
            a.id,
            a.request.rule,
            if d.approved { "approved" } else { "denied" },
            if d.always_for_task {
                ", always for this task"
            } else {
                ""
            }
        );
        if let Some(note) = &d.note {
            reason.push_str(&format!(": {note}"));
        }
        Some(Entry::of(&Content {
            at_ms: now_ms(),
            task: Some(a.task_id),
            host: None,
            kind: AuditKind::Decision,
            capability: a.request.capability.clone(),
            detail: a.request.detail.clone(),
            allowed: d.approved,
            reason,
            by: Some(d.by.clone()),
            through: None,
            through_hash: None,
        }))
    }
}

/// A record as the store keeps it: its place, its content as serialized,
/// and its hash.
#[derive(Clone, Debug)]
pub(super) struct Linked<'e> {
    pub(super) seq: u64,
    pub(super) entry: &'e Entry,
    pub(super) prev: String,
    pub(super) hash: String,
}

/// Appends `entries` to the chain, under its head (held until the
/// transaction ends).
pub(super) async fn chain<T: Transaction>(tx: &T, entries: &[Entry]) -> Result<(), StoreError> {
    if entries.is_empty() {
        return Ok(());
    }
    let mut head = tx.audit_head().await?;
    let mut linked = Vec::with_capacity(entries.len());
    for entry in entries {
        let seq = head.seq + 1;
        let hash = link(seq, &head.hash, &entry.digest);
        let prev = std::mem::replace(&mut head.hash, hash.clone());
        head.seq = seq;
        linked.push(Linked {
            seq,
            entry,
            prev,
            hash,
        });
    }
    tx.put_audit(&linked, &head).await
}

/// After a prune: removes the records up to the first one whose task is
/// still stored (all of them when none is), and appends a `pruned` record
/// that says through which seq, with that record's hash.
pub(super) async fn prune<T: Transaction>(tx: &T) -> Result<(), StoreError> {
    let head = tx.audit_head().await?;
    let keep_from = tx.audit_kept_from().await?.unwrap_or(head.seq + 1);
    let through = keep_from.saturating_sub(1);
    let Some(last) = tx.audit_record(through).await? else {
        // Nothing stored up to there: nothing to remove.
        return Ok(());
    };
    let removed = tx.delete_audit_through(through).await?;
    if removed == 0 {
        return Ok(());
    }
    let entry = Entry::of(&Content {
        at_ms: now_ms(),
        task: None,
        host: None,
        kind: AuditKind::Pruned,
        capability: "audit".into(),
        detail: format!("{removed} records through #{through} pruned with their tasks"),
        allowed: true,
        reason: "task retention".into(),
        by: None,
        through: Some(through),
        through_hash: Some(last.hash),
    });
    chain(tx, &[entry]).await
}

/// A stored record: its seq (the row's), body, prev and hash.
pub(super) fn stored(
    seq: i64,
    body: &str,
    prev: String,
    hash: String,
) -> Result<AuditRecord, StoreError> {
    let content: Content = serde_json::from_str(body)
        .map_err(|e| StoreError::Backend(format!("audit record #{seq}: {e}")))?;
    Ok(content.at(seq as u64, prev, hash))
}

/// What [`Verifier`] found wrong, first break only.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Break {
    /// The record where the chain breaks.
    pub seq: u64,
    /// What is wrong, in words.
    pub problem: String,
}

/// The outcome of a verification.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verified {
    /// Records checked.
    pub records: u64,
    /// The first seq still stored (records before it were pruned).
    pub first: Option<u64>,
    /// The chain's head.
    pub head: AuditHead,
    /// The first break, if any.
    pub broken: Option<Break>,
}

/// Checks a chain record by record, in stored order: every record's hash
/// is its content's, each follows the one before (seq + 1, `prev` its
/// hash), the first is the chain's first or follows a `pruned` record's
/// checkpoint, and the last is the head.
#[derive(Debug)]
pub struct Verifier {
    head: AuditHead,
    /// The first record seen: its seq and prev.
    start: Option<(u64, String)>,
    /// The last record seen: its seq and hash.
    last: Option<(u64, String)>,
    /// The checkpoints `pruned` records left: (through, hash).
    checkpoints: Vec<(u64, String)>,
    records: u64,
    broken: Option<Break>,
}

impl Verifier {
    /// A verifier of the chain whose head is `head` (read before the
    /// records, so that records appended meanwhile are not checked).
    pub fn new(head: AuditHead) -> Verifier {
        Verifier {
            head,
            start: None,
            last: None,
            checkpoints: Vec::new(),
            records: 0,
            broken: None,
        }
    }

    /// Whether more records are of interest (no break yet, head not
    /// reached).
    pub fn wants_more(&self) -> bool {
        self.broken.is_none() && self.last.as_ref().is_none_or(|(s, _)| *s < self.head.seq)
    }

    fn fail(&mut self, seq: u64, problem: String) {
        if self.broken.is_none() {
            self.broken = Some(Break { seq, problem });
        }
    }

    /// Checks the next record in stored order.
    pub fn push(&mut self, r: &AuditRecord) {
        if self.broken.is_some() || r.seq > self.head.seq {
            return;
        }
        self.records += 1;
        if r.hash != r.digest() {
            return self.fail(
                r.seq,
                format!(
                    "record #{} does not match its hash: it was edited, or moved from another position",
                    r.seq
                ),
            );
        }
        match self.last.clone() {
            Some((seq, _)) if r.seq <= seq => {
                return self.fail(
                    r.seq,
                    format!(
                        "record #{} comes after #{seq}: the records were reordered",
                        r.seq
                    ),
                );
            }
            Some((seq, _)) if r.seq > seq + 1 => {
                return self.fail(
                    seq + 1,
                    format!(
                        "{} (record #{} is in its place: or the records were reordered)",
                        missing(seq + 1, r.seq - 1),
                        r.seq
                    ),
                );
            }
            Some((seq, hash)) if r.prev != hash => {
                return self.fail(
                    r.seq,
                    format!(
                        "record #{} does not follow #{seq} (its prev is not #{seq}'s hash): a record was replaced",
                        r.seq
                    ),
                );
            }
            Some(_) => {}
            None => {
                if r.seq == 1 && r.prev != GENESIS {
                    return self.fail(1, "record #1 does not start a chain".into());
                }
                self.start = Some((r.seq, r.prev.clone()));
            }
        }
        if let (Some(t), Some(h)) = (r.through, &r.through_hash) {
            self.checkpoints.push((t, h.clone()));
        }
        self.last = Some((r.seq, r.hash.clone()));
    }

    /// The outcome, once every record was pushed.
    pub fn finish(mut self) -> Verified {
        match (self.start.clone(), self.last.clone()) {
            _ if self.broken.is_some() => {}
            (None, _) if self.head.seq > 0 => self.fail(1, missing(1, self.head.seq)),
            (Some((first, prev)), Some((last, hash))) => {
                let vouched = first == 1
                    || self
                        .checkpoints
                        .iter()
                        .any(|(t, h)| *t + 1 == first && *h == prev);
                if !vouched {
                    self.fail(
                        1,
                        format!(
                            "{}, and no pruned record vouches for them",
                            missing(1, first - 1)
                        ),
                    );
                } else if last < self.head.seq {
                    self.fail(last + 1, missing(last + 1, self.head.seq));
                } else if hash != self.head.hash {
                    self.fail(
                        last,
                        format!("record #{last} is not the one the chain's head records: it was replaced"),
                    );
                }
            }
            _ => {}
        }
        Verified {
            records: self.records,
            first: self.start.map(|(s, _)| s),
            head: self.head,
            broken: self.broken,
        }
    }
}

/// Verifies the store's whole chain, a page at a time, from its head as it
/// stands now.
pub fn verify_store(store: &dyn super::TaskStore) -> Result<Verified, StoreError> {
    let mut v = Verifier::new(store.audit_head()?);
    let mut after = 0;
    while v.wants_more() {
        let page = store.audit(&AuditFilter {
            after,
            limit: Some(PAGE),
            ..AuditFilter::default()
        })?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        page.iter().for_each(|r| v.push(r));
    }
    Ok(v.finish())
}

/// Records read at once.
const PAGE: u32 = 1000;

fn missing(from: u64, to: u64) -> String {
    if from == to {
        format!("record #{from} is missing: it was deleted")
    } else {
        format!("records #{from}–#{to} are missing: they were deleted")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain_of(n: u64) -> Vec<AuditRecord> {
        let mut prev = GENESIS.to_string();
        (1..=n)
            .map(|seq| {
                let mut r = AuditRecord {
                    seq,
                    at_ms: 1_000 + seq as i64,
                    task: None,
                    host: Some("h".into()),
                    kind: AuditKind::Call,
                    capability: "exec".into(),
                    detail: format!("call {seq}"),
                    allowed: seq % 2 == 0,
                    reason: "r".into(),
                    by: None,
                    through: None,
                    through_hash: None,
                    prev: prev.clone(),
                    hash: String::new(),
                };
                r.hash = r.digest();
                prev = r.hash.clone();
                r
            })
            .collect()
    }

    fn head_of(records: &[AuditRecord]) -> AuditHead {
        let last = records.last().unwrap();
        AuditHead {
            seq: last.seq,
            hash: last.hash.clone(),
        }
    }

    fn check(records: &[AuditRecord], head: AuditHead) -> Option<Break> {
        let mut v = Verifier::new(head);
        for r in records {
            v.push(r);
        }
        v.finish().broken
    }

    #[test]
    fn an_untouched_chain_verifies() {
        let c = chain_of(5);
        assert_eq!(check(&c, head_of(&c)), None);
        let mut v = Verifier::new(head_of(&c));
        c.iter().for_each(|r| v.push(r));
        let done = v.finish();
        assert_eq!((done.records, done.first), (5, Some(1)));
    }

    #[test]
    fn edits_removals_and_reorders_are_found_where_they_are() {
        let c = chain_of(6);
        let head = head_of(&c);
        let mut edited = c.clone();
        edited[2].allowed = !edited[2].allowed;
        let b = check(&edited, head.clone()).unwrap();
        assert_eq!(b.seq, 3);
        assert!(b.problem.contains("edited"), "{}", b.problem);

        let mut removed = c.clone();
        removed.remove(3);
        let b = check(&removed, head.clone()).unwrap();
        assert_eq!(b.seq, 4);
        assert!(b.problem.contains("#4 is missing"), "{}", b.problem);

        let mut swapped = c.clone();
        swapped.swap(1, 2);
        let b = check(&swapped, head.clone()).unwrap();
        assert_eq!(b.seq, 2);
        assert!(b.problem.contains("reordered"), "{}", b.problem);
        // Bodies swapped under their positions' seqs: not their hashes.
        let mut moved = c.clone();
        let (a, b2) = (moved[1].clone(), moved[2].clone());
        moved[1] = AuditRecord { seq: 2, ..b2 };
        moved[2] = AuditRecord { seq: 3, ..a };
        let b = check(&moved, head.clone()).unwrap();
        assert_eq!(b.seq, 2);
        assert!(b.problem.contains("moved"), "{}", b.problem);

        let b = check(&c[..5], head.clone()).unwrap();
        assert_eq!(b.seq, 6, "a record removed from the end");
        let b = check(&c[2..], head.clone()).unwrap();
        assert_eq!(b.seq, 1, "records removed from the start");
        assert!(b.problem.contains("no pruned record"), "{}", b.problem);
        assert_eq!(check(&[], head.clone()).unwrap().seq, 1);

        // A record rewritten with a hash that matches its new content no
        // longer links to the next one.
        let mut forged = c.clone();
        forged[1].detail = "something else".into();
        forged[1].hash = forged[1].digest();
        let b = check(&forged, head).unwrap();
        assert_eq!(b.seq, 3);
        assert!(b.problem.contains("replaced"), "{}", b.problem);
    }

    #[test]
    fn a_pruned_start_verifies_only_with_its_checkpoint() {
        let mut c = chain_of(4);
        let mut p = AuditRecord {
            seq: 5,
            at_ms: 2_000,
            task: None,
            host: None,
            kind: AuditKind::Pruned,
            capability: "audit".into(),
            detail: "2 records through #2 pruned".into(),
            allowed: true,
            reason: "task retention".into(),
            by: None,
            through: Some(2),
            through_hash: Some(c[1].hash.clone()),
            prev: c[3].hash.clone(),
            hash: String::new(),
        };
        p.hash = p.digest();
        c.push(p.clone());
        let head = head_of(&c);
        assert_eq!(check(&c[2..], head.clone()), None);
        // A checkpoint that names another hash vouches for nothing.
        let mut wrong = c.clone();
        wrong[4].through_hash = Some(c[0].hash.clone());
        wrong[4].hash = wrong[4].digest();
        let head = head_of(&wrong);
        assert!(check(&wrong[2..], head).is_some());
    }
}
