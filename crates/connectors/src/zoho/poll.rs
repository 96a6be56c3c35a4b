//! Polling a module's changes by `Modified_Time` with COQL (reference B4 "Polling"): times have
//! second precision and many records share one, so the cursor is a keyset over (time, id) with a
//! one-minute overlap for late commits ([`crate::keyset`]). Each page asks for the rows after the
//! last page's end, in (Modified_Time, id) order.

use super::client::{format_datetime, ZohoClient};
use crate::keyset::{KeysetState, PageStart};
use crate::reader::{ChangedRecord, Found, Polled, ReadError};
use jiff::Timestamp;
use model::ZonedTime;
use serde_json::{json, Value};

/// How far behind the watermark each scan starts (reference B4: overlap by a minute).
pub const POLL_OVERLAP_S: i64 = 60;
/// Rows per COQL page (one API credit up to 200).
pub const POLL_PAGE_SIZE: usize = 200;

const SYSTEM: &str = "zoho";

/// The COQL of the next page of `module` from `state`.
pub fn page_query(module: &str, state: &KeysetState) -> String {
    let at = |second: i64| {
        let time = Timestamp::from_second(second).unwrap_or(Timestamp::UNIX_EPOCH);
        format!("'{}'", format_datetime(ZonedTime(time)))
    };
    let filter = match state.page_start(POLL_OVERLAP_S) {
        PageStart::From(second) => format!("Modified_Time >= {}", at(second)),
        PageStart::After(second, id) => {
            let t = at(second);
            format!("(Modified_Time > {t} or (Modified_Time = {t} and id > {id}))")
        }
    };
    format!(
        "select id, Modified_Time from {module} where {filter} order by Modified_Time asc, id asc limit {POLL_PAGE_SIZE}"
    )
}

/// One page of a poll of `module` from the stored cursor (`None`: the first poll, which only
/// says where to start).
pub async fn poll(
    client: &ZohoClient,
    module: &str,
    cursor: Option<&str>,
    now: Timestamp,
) -> Result<Polled, ReadError> {
    let encode = |state: &KeysetState| serde_json::to_string(state).unwrap_or_default();
    let Some(text) = cursor else {
        return Ok(Polled::last(Found::Nothing, Some(encode(&KeysetState::starting_at(now.as_second())))));
    };
    let mut state: KeysetState = serde_json::from_str(text).map_err(|e| ReadError::BadCursor {
        system: SYSTEM,
        object: module.to_owned(),
        reason: e.to_string(),
    })?;
    let (rows, vendor_has_more) = client.coql(&page_query(module, &state)).await?;
    let mut parsed = Vec::with_capacity(rows.len());
    for row in &rows {
        parsed.push(row_key(row).map_err(|reason| ReadError::Map { system: SYSTEM, reason })?);
    }
    let keys: Vec<(i64, u64)> = parsed.iter().map(|(at, id)| (at.as_second(), *id)).collect();
    let (fresh, more) = state.accept_page(&keys, vendor_has_more, POLL_OVERLAP_S);
    let changed = parsed
        .into_iter()
        .zip(fresh)
        .filter(|(_, new)| *new)
        .map(|((at, id), _)| {
            let stamp = at.to_string();
            ChangedRecord { id: id.to_string(), detail: json!({ "Modified_Time": stamp }), stamp }
        })
        .collect();
    Ok(Polled::page(Found::Changed(changed), encode(&state), more))
}

/// A COQL row's `Modified_Time` and id (Zoho ids are digit strings).
fn row_key(row: &Value) -> Result<(Timestamp, u64), String> {
    let id = row.get("id").and_then(Value::as_str).and_then(|id| id.parse::<u64>().ok());
    let at = row.get("Modified_Time").and_then(Value::as_str).and_then(|t| t.parse::<Timestamp>().ok());
    match (at, id) {
        (Some(at), Some(id)) => Ok((at, id)),
        _ => Err(format!("a COQL poll row without a readable id and Modified_Time: {row}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_ask_for_the_rows_after_the_last_one_in_hong_kong_time() {
        let mut state = KeysetState::starting_at("2025-08-14T06:30:05Z".parse::<Timestamp>().unwrap().as_second());
        assert_eq!(
            page_query("Deals", &state),
            "select id, Modified_Time from Deals where Modified_Time >= '2025-08-14T14:29:05+08:00' \
             order by Modified_Time asc, id asc limit 200"
        );
        state.scan = Some((state.watermark_s, 5843104000001234003));
        assert!(page_query("Deals", &state).contains(
            "where (Modified_Time > '2025-08-14T14:30:05+08:00' or (Modified_Time = '2025-08-14T14:30:05+08:00' \
             and id > 5843104000001234003))"
        ));
    }
}
