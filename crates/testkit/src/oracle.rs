//! The delivery oracle (RELIABILITY.md §0, Vector's model): a producer takes ids from the oracle,
//! sends a payload that is a pure function of the id, and tells the oracle when the gateway
//! answered 2xx (the id becomes an obligation). Simulators report every observed effect. The report
//! counts what the reliability bar forbids: lost obligations, duplicate effects, corrupted payloads
//! and per-conversation order inversions.

use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Mutex, MutexGuard, PoisonError};

/// At most this many ids are listed per problem in a report, to keep failure output readable.
const SAMPLE: usize = 20;

/// The payload issued for `id` with `conversations` conversation keys: deterministic, so a
/// delivered copy can be checked without storing what was sent.
///
/// `seq` is the id itself (ids are issued in increasing order, so it orders events within a
/// conversation); `conversation` is `c<id % conversations>`.
pub fn payload_for(id: u64, conversations: u64) -> Value {
    let conversations = conversations.max(1);
    json!({
        "id": id.to_string(),
        "seq": id,
        "conversation": format!("c{}", id % conversations),
        // Values that a careless mapping would mangle: a decimal amount and non-ASCII text.
        "amount": format!("{}.{:02}", id.wrapping_mul(7919) % 100_000, id % 100),
        "currency": "HKD",
        "note": format!("訂單 {id} / order {id}"),
    })
}

/// What the oracle saw, with the counts the reliability bar checks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OracleReport {
    pub issued: u64,
    /// Obligations: ids the gateway answered 2xx for.
    pub acked: u64,
    /// Distinct issued ids delivered at least once.
    pub delivered_unique: u64,
    /// Obligations never delivered; must be 0.
    pub lost: u64,
    /// Deliveries beyond the first per key; must be 0 for sinks that honour idempotency keys.
    pub duplicates: u64,
    /// Deliveries whose body differs from the payload issued for the id; must be 0.
    pub corrupted: u64,
    /// First deliveries that arrived after a higher `seq` of the same conversation; must be 0.
    pub order_inversions: u64,
    /// Deliveries whose key is not an issued id (counted separately from `corrupted`).
    pub unexpected: u64,
    /// Up to 20 lost ids, smallest first, for the failure message.
    pub lost_sample: Vec<u64>,
    /// Up to 20 keys delivered more than once.
    pub duplicate_sample: Vec<String>,
}

impl OracleReport {
    /// No loss, no duplicate, no corruption, no inversion, nothing unexpected.
    pub fn is_clean(&self) -> bool {
        self.lost == 0
            && self.duplicates == 0
            && self.corrupted == 0
            && self.order_inversions == 0
            && self.unexpected == 0
    }
}

impl fmt::Display for OracleReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "issued {} acked {} delivered {} | lost {} duplicates {} corrupted {} inversions {} unexpected {}",
            self.issued,
            self.acked,
            self.delivered_unique,
            self.lost,
            self.duplicates,
            self.corrupted,
            self.order_inversions,
            self.unexpected
        )?;
        if !self.lost_sample.is_empty() {
            write!(f, " | lost ids {:?}", self.lost_sample)?;
        }
        if !self.duplicate_sample.is_empty() {
            write!(f, " | duplicated keys {:?}", self.duplicate_sample)?;
        }
        Ok(())
    }
}

#[derive(Debug, Default)]
struct State {
    issued: HashSet<u64>,
    acked: HashSet<u64>,
    /// Deliveries per key as reported (the key string, so malformed keys are still counted).
    deliveries: HashMap<String, u64>,
    delivered_ids: HashSet<u64>,
    corrupted: u64,
    unexpected: u64,
    /// Highest `seq` first-delivered so far, per conversation.
    high_water: HashMap<u64, u64>,
    order_inversions: u64,
}

/// Thread-safe oracle; share it with `Arc`.
#[derive(Debug)]
pub struct Oracle {
    conversations: u64,
    state: Mutex<State>,
}

impl Oracle {
    /// `conversations` is K in `conversation = id % K` (0 is treated as 1).
    pub fn new(conversations: u64) -> Self {
        Self { conversations: conversations.max(1), state: Mutex::new(State::default()) }
    }

    pub fn conversations(&self) -> u64 {
        self.conversations
    }

    /// The conversation key number of `id`.
    pub fn conversation_of(&self, id: u64) -> u64 {
        id % self.conversations
    }

    /// The payload for `id` under this oracle's K; see [`payload_for`].
    pub fn payload_for(&self, id: u64) -> Value {
        payload_for(id, self.conversations)
    }

    /// Records that `id` is about to be sent and returns its payload.
    pub fn issue(&self, id: u64) -> Value {
        self.lock().issued.insert(id);
        self.payload_for(id)
    }

    /// Records that the gateway answered 2xx for `id`: from now on it must be delivered.
    pub fn ack(&self, id: u64) {
        self.lock().acked.insert(id);
    }

    /// Records one observed effect. `key` is the id string extracted from the delivered message;
    /// `body` is the part of it that must equal [`Oracle::payload_for`] (the caller extracts it,
    /// since each sink wraps the payload differently).
    pub fn delivered(&self, key: &str, body: &Value) {
        let mut st = self.lock();
        let count = st.deliveries.entry(key.to_owned()).or_insert(0);
        *count += 1;
        let first = *count == 1;
        let id = match key.trim().parse::<u64>() {
            Ok(id) if st.issued.contains(&id) => id,
            _ => {
                st.unexpected += 1;
                return;
            }
        };
        if *body != self.payload_for(id) {
            st.corrupted += 1;
        }
        if first {
            st.delivered_ids.insert(id);
            // Conversation and order come from the id, not the body, so a corrupted body cannot
            // hide an inversion.
            let conv = self.conversation_of(id);
            match st.high_water.get(&conv) {
                Some(&high) if id < high => st.order_inversions += 1,
                _ => {
                    st.high_water.insert(conv, id);
                }
            }
        }
    }

    pub fn report(&self) -> OracleReport {
        let st = self.lock();
        let mut lost: Vec<u64> = st.acked.iter().filter(|id| !st.delivered_ids.contains(id)).copied().collect();
        lost.sort_unstable();
        let mut dup: Vec<(&String, &u64)> = st.deliveries.iter().filter(|(_, n)| **n > 1).collect();
        dup.sort();
        OracleReport {
            issued: len_u64(st.issued.len()),
            acked: len_u64(st.acked.len()),
            delivered_unique: len_u64(st.delivered_ids.len()),
            lost: len_u64(lost.len()),
            duplicates: st.deliveries.values().map(|n| n.saturating_sub(1)).sum(),
            corrupted: st.corrupted,
            order_inversions: st.order_inversions,
            unexpected: st.unexpected,
            lost_sample: lost.into_iter().take(SAMPLE).collect(),
            duplicate_sample: dup.into_iter().take(SAMPLE).map(|(k, _)| k.clone()).collect(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking test thread must not hide the accounting from the others.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn len_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn deliver(o: &Oracle, id: u64) {
        o.delivered(&id.to_string(), &o.payload_for(id));
    }

    #[test]
    fn payload_is_a_pure_function_of_the_id() {
        assert_eq!(payload_for(7, 3), payload_for(7, 3));
        assert_ne!(payload_for(7, 3), payload_for(8, 3));
        let p = payload_for(7, 3);
        assert_eq!(p["seq"], 7);
        assert_eq!(p["conversation"], "c1");
        assert_eq!(p["id"], "7");
        assert_eq!(payload_for(7, 0)["conversation"], "c0");
    }

    #[test]
    fn clean_run_reports_nothing_wrong() {
        let o = Oracle::new(4);
        for id in 0..100 {
            o.issue(id);
            o.ack(id);
        }
        for id in 0..100 {
            deliver(&o, id);
        }
        let r = o.report();
        assert!(r.is_clean(), "{r}");
        assert_eq!((r.issued, r.acked, r.delivered_unique), (100, 100, 100));
    }

    #[test]
    fn acked_but_never_delivered_is_lost_unacked_is_not() {
        let o = Oracle::new(2);
        for id in 0..10 {
            o.issue(id);
        }
        for id in 0..8 {
            o.ack(id);
        }
        for id in [0, 1, 2, 3, 4, 5, 9] {
            deliver(&o, id);
        }
        let r = o.report();
        assert_eq!(r.lost, 2);
        assert_eq!(r.lost_sample, vec![6, 7]);
        assert_eq!(r.delivered_unique, 7);
        assert!(!r.is_clean());
        assert!(r.to_string().contains("lost ids [6, 7]"));
    }

    #[test]
    fn extra_deliveries_are_duplicates() {
        let o = Oracle::new(2);
        for id in 0..3 {
            o.issue(id);
            o.ack(id);
        }
        for id in [0, 1, 1, 2, 2, 2] {
            deliver(&o, id);
        }
        let r = o.report();
        assert_eq!(r.duplicates, 3);
        assert_eq!(r.duplicate_sample, vec!["1".to_owned(), "2".to_owned()]);
        assert_eq!(r.delivered_unique, 3);
        assert_eq!(r.lost, 0);
        assert_eq!(r.order_inversions, 0, "re-deliveries do not count as inversions");
    }

    #[test]
    fn different_body_is_corrupted() {
        let o = Oracle::new(2);
        o.issue(1);
        o.ack(1);
        let mut body = o.payload_for(1);
        body["amount"] = json!("0.00");
        o.delivered("1", &body);
        let r = o.report();
        assert_eq!(r.corrupted, 1);
        assert_eq!(r.lost, 0, "a corrupted delivery is still a delivery");
    }

    #[test]
    fn unknown_keys_are_unexpected() {
        let o = Oracle::new(2);
        o.issue(1);
        o.delivered("999", &payload_for(999, 2));
        o.delivered("not-a-number", &json!({}));
        let r = o.report();
        assert_eq!(r.unexpected, 2);
        assert!(!r.is_clean());
    }

    #[test]
    fn inversions_are_counted_per_conversation_on_first_delivery() {
        let o = Oracle::new(2);
        for id in 0..10 {
            o.issue(id);
            o.ack(id);
        }
        // Conversation c0 = 0,2,4,6,8; c1 = 1,3,5,7,9. Interleaving across conversations is fine.
        for id in [1, 0, 3, 2, 5, 4] {
            deliver(&o, id);
        }
        assert_eq!(o.report().order_inversions, 0);
        // 8 before 6 in c0: one inversion; redelivering 4 afterwards is a duplicate, not an inversion.
        for id in [8, 6, 4, 7, 9] {
            deliver(&o, id);
        }
        let r = o.report();
        assert_eq!(r.order_inversions, 1);
        assert_eq!(r.duplicates, 1);
        assert_eq!(r.lost, 0);
    }

    #[test]
    fn concurrent_use_from_threads() {
        // Each thread owns one conversation (ids t, t+4, ...), as a per-key ordered sink would.
        let o = Arc::new(Oracle::new(4));
        let handles: Vec<_> = (0..4u64)
            .map(|t| {
                let o = o.clone();
                std::thread::spawn(move || {
                    for id in (t..4000).step_by(4) {
                        o.issue(id);
                        o.ack(id);
                        deliver(&o, id);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let r = o.report();
        assert_eq!((r.issued, r.delivered_unique), (4000, 4000));
        assert!(r.is_clean(), "{r}");
    }
}
