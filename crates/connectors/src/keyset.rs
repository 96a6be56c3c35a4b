//! The poll cursor of vendors whose change times have second precision and whose query language
//! can ask for "the rows after (time, id)" (NetSuite SuiteQL, Zoho COQL).
//!
//! A scan starts at the watermark minus an overlap, because a record can commit with a change
//! time older than one already seen, and goes page by page by keyset: each page asks for the rows
//! after the (time, id) that ended the page before, never by offset, so a record edited while the
//! scan runs (it moves to the end) shifts no other row past a page boundary. The (time, id) pairs
//! delivered inside the overlap are remembered, so the overlap's rows are not delivered twice.

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// What a cursor persists between pages and polls.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeysetState {
    /// Unix seconds of the greatest change time delivered.
    pub watermark_s: i64,
    /// (Unix seconds, id) delivered within the overlap window below the watermark.
    pub seen: BTreeSet<(i64, String)>,
    /// The (Unix seconds, id) that ended the last page of a scan still going on; `None`: the
    /// next page starts a new scan at the watermark minus the overlap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scan: Option<(i64, u64)>,
}

/// Where the next page starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageStart {
    /// A new scan: rows changed at or after these Unix seconds.
    From(i64),
    /// The scan goes on: rows after this (Unix seconds, id).
    After(i64, u64),
}

impl KeysetState {
    /// A cursor that reports changes from `since_s` on.
    pub fn starting_at(since_s: i64) -> Self {
        KeysetState { watermark_s: since_s, seen: BTreeSet::new(), scan: None }
    }

    fn floor(&self, overlap_s: i64) -> i64 {
        self.watermark_s.saturating_sub(overlap_s)
    }

    /// Where the next page starts.
    pub fn page_start(&self, overlap_s: i64) -> PageStart {
        match self.scan {
            Some((at, id)) => PageStart::After(at, id),
            None => PageStart::From(self.floor(overlap_s)),
        }
    }

    /// Takes one page's rows as (Unix seconds, id) in the order the vendor sent them, and
    /// whether the vendor said more rows follow. Returns which rows are new (not delivered
    /// before) and whether the scan goes on. A page that ends where the last one did has not
    /// moved the scan (a vendor that ignored the keyset): the scan ends rather than asking for
    /// the same page forever.
    pub fn accept_page(&mut self, rows: &[(i64, u64)], vendor_has_more: bool, overlap_s: i64) -> (Vec<bool>, bool) {
        let floor = self.floor(overlap_s);
        let fresh: Vec<bool> =
            rows.iter().map(|&(at, id)| at >= floor && self.seen.insert((at, id.to_string()))).collect();
        if let Some(max) = rows.iter().zip(&fresh).filter(|(_, new)| **new).map(|(row, _)| row.0).max() {
            self.watermark_s = self.watermark_s.max(max);
        }
        let end = rows.last().copied();
        let more = vendor_has_more && end.is_some() && end > self.scan;
        self.scan = if more { end } else { None };
        let floor = self.floor(overlap_s);
        self.seen.retain(|(at, _)| *at >= floor);
        (fresh, more)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scan_pages_by_keyset_and_the_overlap_is_not_delivered_twice() {
        let mut c = KeysetState::starting_at(1_000);
        assert_eq!(c.page_start(120), PageStart::From(880));
        // A full page of a tie at 1,000 s: the scan goes on after its last row.
        let (fresh, more) = c.accept_page(&[(1_000, 7), (1_000, 9)], true, 120);
        assert_eq!((fresh, more), (vec![true, true], true));
        assert_eq!(c.page_start(120), PageStart::After(1_000, 9));
        // The last page: the scan ends, the next one starts at the watermark minus the overlap.
        let (fresh, more) = c.accept_page(&[(1_000, 12), (1_060, 3)], false, 120);
        assert_eq!((fresh, more), (vec![true, true], false));
        assert_eq!(c.page_start(120), PageStart::From(940));
        // The next scan re-reads the overlap: only the late commit (older time) is new.
        let (fresh, _) = c.accept_page(&[(990, 2), (1_000, 7), (1_000, 9), (1_060, 3)], false, 120);
        assert_eq!(fresh, vec![true, false, false, false]);
        // A page that does not move the scan ends it.
        c.scan = Some((1_060, 3));
        let (_, more) = c.accept_page(&[(1_000, 7), (1_060, 3)], true, 120);
        assert!(!more);
        assert_eq!(c.scan, None);
        // Pairs older than the overlap are forgotten.
        c.accept_page(&[(2_000, 1)], false, 120);
        assert!(c.seen.iter().all(|(at, _)| *at >= 1_880));
    }
}
