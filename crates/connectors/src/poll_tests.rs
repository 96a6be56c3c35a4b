//! R27 (polling cursors): a poll that runs page by page while the vendor's records change under
//! it, with ties on the modification time, more than one page between polls, and pages lost
//! between the vendor's answer and their commit (a SIGKILL there). Each vendor's tests drive its
//! reader through [`poll_while_changing`]; what they assert is the same for all: every record's
//! last change is delivered, no change is delivered twice in effect, and a record's changes come
//! in order.

use crate::reader::{Found, Polled, ReadError};
use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use tokio::task::JoinHandle;

/// What the poller delivered, and how.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    /// Pages committed.
    pub pages: usize,
    /// Committed pages after which the scan went on (`more`).
    pub pages_with_more: usize,
    /// Pages answered by the vendor and lost before their commit.
    pub lost: usize,
    /// Per record, the stamps (change time or version) delivered, in commit order.
    pub delivered: BTreeMap<String, Vec<String>>,
    /// Changes delivered again after a commit (the inbox dedup drops them).
    pub repeats: usize,
}

impl Outcome {
    /// Records whose last change (as `expected` has it) was never delivered.
    pub fn missed(&self, expected: &BTreeMap<String, String>) -> Vec<String> {
        expected
            .iter()
            .filter(|(id, stamp)| !self.delivered.get(*id).is_some_and(|got| got.contains(stamp)))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Records one of whose changes was delivered more than once after deduplication, or whose
    /// changes came out of order (stamps that order as times only; versions are not compared).
    pub fn out_of_order(&self) -> Vec<String> {
        self.delivered
            .iter()
            .filter(|(_, stamps)| stamps.windows(2).any(|w| w[0] >= w[1]))
            .map(|(id, _)| id.clone())
            .collect()
    }
}

fn changes(found: &Found) -> Vec<(String, String)> {
    match found {
        Found::Nothing => Vec::new(),
        Found::Changed(rows) => rows.iter().map(|r| (r.id.clone(), r.stamp.clone())).collect(),
        Found::Records(records) => records.iter().map(|r| (r.entity_id.clone(), r.version.clone())).collect(),
    }
}

/// Polls from `cursor` through `poll` while `writer` runs, then until a whole scan finds
/// nothing new. Every `lose_every`-th page answered is lost before its commit: the next poll
/// starts again from the last committed cursor, as a restarted gateway would.
pub(crate) async fn poll_while_changing<P, F>(
    mut cursor: Option<String>,
    poll: P,
    writer: JoinHandle<()>,
    lose_every: usize,
) -> Outcome
where
    P: Fn(Option<String>) -> F,
    F: Future<Output = Result<Polled, ReadError>>,
{
    let mut outcome = Outcome::default();
    let mut committed: HashSet<(String, String)> = HashSet::new();
    let mut answered = 0usize;
    // Scans completed since the writer stopped, and whether the last one found anything new.
    let (mut quiet_scans, mut scan_found_new) = (0, false);
    while quiet_scans < 2 {
        let writing = !writer.is_finished();
        let polled = poll(cursor.clone()).await.expect("a poll failed");
        answered += 1;
        if answered.is_multiple_of(lose_every) {
            outcome.lost += 1;
            continue;
        }
        for (id, stamp) in changes(&polled.found) {
            if committed.insert((id.clone(), stamp.clone())) {
                outcome.delivered.entry(id).or_default().push(stamp);
                scan_found_new = true;
            } else {
                outcome.repeats += 1;
            }
        }
        outcome.pages += 1;
        outcome.pages_with_more += usize::from(polled.more);
        cursor = polled.cursor;
        if !polled.more {
            if writing {
                // Let the writer move on between scans, as a poll interval would.
                tokio::task::yield_now().await;
            } else if scan_found_new {
                quiet_scans = 0;
            } else {
                quiet_scans += 1;
            }
            scan_found_new = false;
        }
    }
    writer.await.expect("the writer failed");
    outcome
}

/// The last stamp of every record a quiet scan from `cursor` finds, with nothing lost.
pub(crate) async fn last_changes<P, F>(mut cursor: Option<String>, poll: P) -> BTreeMap<String, String>
where
    P: Fn(Option<String>) -> F,
    F: Future<Output = Result<Polled, ReadError>>,
{
    let mut last = BTreeMap::new();
    loop {
        let polled = poll(cursor.clone()).await.expect("a poll failed");
        for (id, stamp) in changes(&polled.found) {
            last.insert(id, stamp);
        }
        cursor = polled.cursor;
        if !polled.more {
            return last;
        }
    }
}

/// Prints what a vendor's R27 run measured and asserts the contract: all `records` found by the
/// quiet scan, none of their last changes missed, more than one page between polls, pages lost
/// and recovered, and (where stamps are times, `ordered`) each record's changes in order.
pub(crate) fn check(vendor: &str, outcome: &Outcome, last: &BTreeMap<String, String>, records: usize, ordered: bool) {
    eprintln!(
        "R27 {vendor}: {} pages ({} with more after them), {} lost, {} changes delivered for {} records, {} repeats",
        outcome.pages,
        outcome.pages_with_more,
        outcome.lost,
        outcome.delivered.values().map(Vec::len).sum::<usize>(),
        outcome.delivered.len(),
        outcome.repeats
    );
    assert_eq!(last.len(), records, "every record changed is found");
    assert_eq!(outcome.missed(last), Vec::<String>::new(), "records whose last change was never delivered");
    if ordered {
        assert_eq!(outcome.out_of_order(), Vec::<String>::new(), "records with a change delivered late");
    }
    assert!(outcome.pages_with_more > 0, "no scan needed more than one page");
    assert!(outcome.lost > 0, "no page was lost");
}
