//! Change detection by polling (reference A8): `LastChangeDateTime ge <watermark − overlap>` on
//! `A_PurchaseOrder` and `A_PurchaseRequisitionItem`, de-duplicated on (key, version) so the
//! overlap window yields no repeats and clock skew or same-millisecond commits leave no gaps.
//! IDoc push (ECC) is parsed by [`super::idoc`].

use super::client::{Query, SapClient};
use super::records::{PurchaseOrder, PurchaseRequisitionItem};
use super::wire;
use connect::DeliveryError;
use jiff::{SignedDuration, Timestamp};
use std::collections::BTreeMap;
use std::time::Duration;

/// Default look-back below the watermark (SAP commits can become visible after later ones).
pub const DEFAULT_OVERLAP: Duration = Duration::from_secs(5 * 60);

/// A polling watermark plus the versions already delivered inside the overlap window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeCursor {
    watermark: Option<Timestamp>,
    overlap: SignedDuration,
    /// (key, version) → change time, pruned to the overlap window on [`ChangeCursor::commit`].
    seen: BTreeMap<(String, String), Timestamp>,
    pending_max: Option<Timestamp>,
    /// The (change time, key) that ended the last full page of a scan still going on; `None`:
    /// the next page starts a new scan at the watermark minus the overlap.
    scan: Option<(Timestamp, String)>,
}

impl ChangeCursor {
    /// `start`: only changes at or after it are wanted (`None`: everything on the first poll).
    pub fn new(start: Option<Timestamp>, overlap: Duration) -> Self {
        let overlap = SignedDuration::try_from(overlap).unwrap_or(SignedDuration::from_secs(300));
        Self { watermark: start, overlap, seen: BTreeMap::new(), pending_max: None, scan: None }
    }

    /// A cursor stored between polls: its watermark and the scan under way, if any.
    pub fn resume(watermark: Timestamp, scan: Option<(Timestamp, String)>, overlap: Duration) -> Self {
        Self { scan, ..Self::new(Some(watermark), overlap) }
    }

    pub fn scan(&self) -> Option<&(Timestamp, String)> {
        self.scan.as_ref()
    }

    /// The `$filter` of the next page: the rows after the last page's end by keyset while a scan
    /// is under way (`literal` writes a time as `field`'s type wants), else `start`.
    pub fn page_filter(
        &self,
        field: &str,
        key_field: &str,
        literal: impl Fn(Timestamp) -> String,
        start: Option<String>,
    ) -> Option<String> {
        match &self.scan {
            Some((at, key)) => {
                let (at, key) = (literal(*at), wire::string_literal(key));
                Some(format!("{field} gt {at} or {field} eq {at} and {key_field} gt {key}"))
            }
            None => start,
        }
    }

    /// After a page was handed on: `last` is the (change time, key) of its last row. A full page
    /// that moved the scan forward means more may follow (returns true); otherwise the scan is
    /// over and the next one starts from the watermark. Commits the page either way.
    pub fn end_page(&mut self, last: Option<(Timestamp, String)>, full: bool) -> bool {
        let more = full && last.is_some() && last.as_ref() > self.scan.as_ref();
        self.scan = if more { last } else { None };
        self.commit();
        more
    }

    pub fn watermark(&self) -> Option<Timestamp> {
        self.watermark
    }

    /// The `$filter` for the next poll on `field` (`None` before any watermark exists).
    pub fn filter(&self, field: &str) -> Option<String> {
        let since = self.watermark?.checked_sub(self.overlap).ok()?;
        Some(format!("{field} ge {}", wire::datetimeoffset_literal(since)))
    }

    /// The query for the next poll: the filter, ordered by change time then `key_field`.
    pub fn query(&self, field: &str, key_field: &str) -> Query {
        let q = Query::default().orderby(format!("{field} asc,{key_field} asc"));
        match self.filter(field) {
            Some(f) => q.filter(f),
            None => q,
        }
    }

    /// True the first time a (key, version) pair is seen; `version` is the ETag (or the change
    /// time when the entity has none).
    pub fn accept(&mut self, key: &str, version: &str, changed: Timestamp) -> bool {
        self.pending_max = Some(self.pending_max.map_or(changed, |m| m.max(changed)));
        self.seen.insert((key.to_owned(), version.to_owned()), changed).is_none()
    }

    /// After a poll's results were handed on: move the watermark to the newest change seen and
    /// forget versions that fell out of the overlap window.
    pub fn commit(&mut self) {
        if let Some(max) = self.pending_max.take() {
            self.watermark = Some(self.watermark.map_or(max, |w| w.max(max)));
        }
        if let Some(floor) = self.watermark.and_then(|w| w.checked_sub(self.overlap).ok()) {
            self.seen.retain(|_, at| *at >= floor);
        }
    }
}

fn version(etag: Option<&String>, changed: Timestamp) -> String {
    etag.cloned().unwrap_or_else(|| changed.as_millisecond().to_string())
}

/// Purchase orders changed since the cursor's watermark, each version once.
pub async fn poll_purchase_orders(
    client: &SapClient,
    cursor: &mut ChangeCursor,
) -> Result<Vec<PurchaseOrder>, DeliveryError> {
    let rows = client.purchase_orders(&cursor.query("LastChangeDateTime", "PurchaseOrder")).await?;
    let mut out = Vec::new();
    for po in rows {
        let Some(changed) = po.last_changed.map(|t| t.timestamp()) else { continue };
        if cursor.accept(&po.number, &version(po.etag.as_ref(), changed), changed) {
            out.push(po);
        }
    }
    cursor.commit();
    Ok(out)
}

/// Purchase requisition items changed since the cursor's watermark, each version once.
pub async fn poll_purchase_requisition_items(
    client: &SapClient,
    cursor: &mut ChangeCursor,
) -> Result<Vec<PurchaseRequisitionItem>, DeliveryError> {
    let query = cursor.query("LastChangeDateTime", "PurchaseRequisition");
    let rows = client.purchase_requisition_items(&query).await?;
    let mut out = Vec::new();
    for item in rows {
        let Some(changed) = item.last_changed.map(|t| t.timestamp()) else { continue };
        let key = format!("{}/{}", item.requisition, item.item);
        if cursor.accept(&key, &version(item.etag.as_ref(), changed), changed) {
            out.push(item);
        }
    }
    cursor.commit();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn overlap_window_gives_no_repeats_and_no_gaps() {
        let mut c = ChangeCursor::new(None, Duration::from_secs(300));
        assert_eq!(c.filter("LastChangeDateTime"), None);
        assert!(c.accept("4500000123", "e1", ts("2024-03-15T02:31:07Z")));
        assert!(c.accept("4500000124", "e1", ts("2024-03-15T02:40:00Z")));
        c.commit();
        assert_eq!(c.watermark(), Some(ts("2024-03-15T02:40:00Z")));
        assert_eq!(
            c.filter("LastChangeDateTime").unwrap(),
            "LastChangeDateTime ge datetimeoffset'2024-03-15T02:35:00Z'"
        );
        // The next poll sees 124 again (inside the overlap): not a repeat.
        assert!(!c.accept("4500000124", "e1", ts("2024-03-15T02:40:00Z")));
        // A late commit inside the window with an older timestamp is still delivered (no gap).
        assert!(c.accept("4500000125", "e1", ts("2024-03-15T02:38:00Z")));
        // A new version of an already seen order is delivered.
        assert!(c.accept("4500000124", "e2", ts("2024-03-15T02:41:00Z")));
        c.commit();
        assert_eq!(c.watermark(), Some(ts("2024-03-15T02:41:00Z")));
    }

    #[test]
    fn old_versions_are_pruned_after_the_window() {
        let mut c = ChangeCursor::new(Some(ts("2024-03-15T00:00:00Z")), Duration::from_secs(60));
        assert!(c.accept("a", "1", ts("2024-03-15T00:00:30Z")));
        c.commit();
        assert!(c.accept("b", "1", ts("2024-03-15T01:00:00Z")));
        c.commit();
        assert_eq!(c.seen.len(), 1, "entries older than watermark - overlap are dropped");
        let q = c.query("LastChangeDateTime", "PurchaseOrder");
        assert_eq!(q.orderby.as_deref(), Some("LastChangeDateTime asc,PurchaseOrder asc"));
    }
}
