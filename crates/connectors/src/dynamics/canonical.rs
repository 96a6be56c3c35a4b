//! Dynamics 365 records in the canonical ERP shape ([`crate::erp`]): Dataverse `salesorder` rows
//! as shipments, Business Central purchase orders awaiting approval as purchase requests.
//!
//! # Sales order → shipment
//!
//! Dataverse (Sales) has no delivery document, so the order's fulfilment state is the shipment;
//! `number` and `order` are both the order number (`ordernumber`, else `name`), and `tracking`
//! and `lines` are empty (order lines live in `salesorderdetails`, which this read does not fetch).
//! Status, from `statuscode` with `statecode` as the fallback for custom status reasons:
//!
//! | statuscode (default label) | statecode | status |
//! |---|---|---|
//! | 1 New, 2 Pending, 3 In Progress | 0 Active / 1 Submitted | `not_started` |
//! | 4 No Money | 2 Canceled | `cancelled` |
//! | 100001 Complete | 3 Fulfilled | `shipped` (Dataverse records no delivery, so never `delivered`) |
//! | 100002 Partial | 3 Fulfilled | `partially_shipped` |
//! | 100003 Invoiced | 4 Invoiced | `shipped` with `datefulfilled`, else `not_started` (invoiced before shipping) |
//!
//! `status_text` is the `statuscode` FormattedValue annotation when the row carries one, else the
//! default label above. The as-of time is `datefulfilled` once the order is (partially) shipped,
//! else `modifiedon`. Reads ([`read_sales_order`]) and the change-tracking poll both select
//! [`SALES_ORDER_SELECT`] without annotations (`DeltaCursor::poll` asks for none), so both map the
//! same input to the same record; `customer` is the customer's name when the lookup's
//! FormattedValue annotation is present, else its GUID.
//!
//! # Business Central purchase order → purchase request
//!
//! BC approvals run on purchase orders (`status` `In Review`, reference C2); `Pending Approval` is
//! accepted as the same. Both [`purchase_request_from_bc`] and [`pending_purchase_requests`] go
//! through [`crate::dynamics::bc::PurchaseOrder`], so they map identically. BC's API v2.0 names no
//! requester, so `requester` is `{"id": null, "name": null}`. Units are BC unit codes (`PCS`),
//! written as the Rec 20 code when `model::Uom` parses them and as sent otherwise. The version is
//! `lastModifiedDateTime` in ms, else the `@odata.etag`, else (the documentation sample has
//! neither) a digest of the canonical data.

use super::bc::{BcClient, PurchaseOrder};
use super::client::{DataverseClient, Prefer};
use super::VENDOR;
use crate::erp::{
    as_of_json, money_json, opt_json, rfc3339_ms, shipment_version, ErpRecord, Line, MapError, ShipmentStatus,
    PURCHASE_REQUEST, SHIPMENT,
};
use connect::DeliveryError;
use model::{Money, Uom};
use serde_json::{json, Value};
use sha2::Digest;

/// The `$select` of sales order reads and of the change-tracking poll (`DeltaCursor::new(
/// "salesorders", SALES_ORDER_SELECT, "salesorderid")`), so both map identically.
pub const SALES_ORDER_SELECT: &str = "salesorderid,name,ordernumber,statecode,statuscode,modifiedon,datefulfilled,\
_customerid_value,totalamount,_transactioncurrencyid_value";

const SALES_ORDER: &str = "salesorder";
const FORMATTED: &str = "@OData.Community.Display.V1.FormattedValue";

/// BC purchase order statuses that mean "waiting for an approver".
pub const PENDING_STATUSES: &[&str] = &["In Review", "Pending Approval"];

fn default_status_label(statuscode: i64) -> Option<&'static str> {
    match statuscode {
        1 => Some("New"),
        2 => Some("Pending"),
        3 => Some("In Progress"),
        4 => Some("No Money"),
        100001 => Some("Complete"),
        100002 => Some("Partial"),
        100003 => Some("Invoiced"),
        _ => None,
    }
}

/// Milliseconds of `datefulfilled`, which Dataverse sends as a full instant or, for date-only
/// behaviour, as `YYYY-MM-DD` (midnight UTC).
fn date_fulfilled_ms(id: &str, text: &str) -> Result<i64, MapError> {
    if text.len() == 10 {
        let date: jiff::civil::Date = text
            .parse()
            .map_err(|e| MapError::invalid(SALES_ORDER, id, "datefulfilled", text, format!("is not a date ({e})")))?;
        let zoned = date.to_zoned(jiff::tz::TimeZone::UTC).map_err(|e| {
            MapError::invalid(SALES_ORDER, id, "datefulfilled", text, format!("cannot be placed in UTC ({e})"))
        })?;
        return Ok(zoned.timestamp().as_millisecond());
    }
    rfc3339_ms(SALES_ORDER, id, "datefulfilled", text)
}

/// A Dataverse `salesorder` row (Web API JSON, annotations optional) as a shipment.
pub fn shipment_from_sales_order(row: &Value) -> Result<ErpRecord, MapError> {
    let id = row["salesorderid"]
        .as_str()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| MapError::missing(SALES_ORDER, "?", "salesorderid"))?;
    let text = |field: &str| row[field].as_str().filter(|s| !s.is_empty());
    let int = |field: &str| -> Result<i64, MapError> {
        match &row[field] {
            Value::Number(n) => n
                .as_i64()
                .ok_or_else(|| MapError::invalid(SALES_ORDER, id, field, &n.to_string(), "is not an option value")),
            Value::Null => Err(MapError::missing(SALES_ORDER, id, field)),
            other => Err(MapError::invalid(SALES_ORDER, id, field, &other.to_string(), "is not an option value")),
        }
    };
    let number = text("ordernumber")
        .or_else(|| text("name"))
        .ok_or_else(|| MapError::missing(SALES_ORDER, id, "ordernumber"))?;
    let statecode = int("statecode")?;
    let statuscode = int("statuscode")?;
    let fulfilled = text("datefulfilled").map(|t| date_fulfilled_ms(id, t)).transpose()?;
    let status = match (statuscode, statecode) {
        (100002, _) => ShipmentStatus::PartiallyShipped,
        (100001, _) | (_, 3) => ShipmentStatus::Shipped,
        (4, _) | (_, 2) => ShipmentStatus::Cancelled,
        (_, 4) if fulfilled.is_some() => ShipmentStatus::Shipped,
        (_, 0 | 1 | 4) => ShipmentStatus::NotStarted,
        (_, other) => {
            return Err(MapError::invalid(
                SALES_ORDER,
                id,
                "statecode",
                &other.to_string(),
                "is not a salesorder state (0-4)",
            ))
        }
    };
    let modified = rfc3339_ms(
        SALES_ORDER,
        id,
        "modifiedon",
        text("modifiedon").ok_or_else(|| MapError::missing(SALES_ORDER, id, "modifiedon"))?,
    )?;
    let as_of = match status {
        ShipmentStatus::Shipped | ShipmentStatus::PartiallyShipped => fulfilled.unwrap_or(modified),
        _ => modified,
    };
    let status_text = row[format!("statuscode{FORMATTED}")]
        .as_str()
        .map(str::to_owned)
        .or_else(|| default_status_label(statuscode).map(str::to_owned))
        .unwrap_or_else(|| statuscode.to_string());
    let customer = row[format!("_customerid_value{FORMATTED}")].as_str().or_else(|| text("_customerid_value"));
    let data = json!({
        "system": "dynamics",
        "number": number,
        "order": number,
        "customer": opt_json(customer),
        "status": status.as_str(),
        "status_text": status_text,
        "as_of": as_of_json(Some(as_of)),
        "tracking": [],
        "lines": [],
    });
    Ok(ErpRecord {
        entity: SHIPMENT,
        entity_id: id.to_owned(),
        object: SALES_ORDER.to_owned(),
        source_time_ms: Some(as_of),
        version: shipment_version(status, Some(as_of)),
        data,
    })
}

/// Dataverse ids are GUIDs; anything else would be spliced into the `$filter` unchecked.
fn is_guid(id: &str) -> bool {
    id.len() == 36 && id.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
}

/// One sales order by id with [`SALES_ORDER_SELECT`]; `None` when it no longer exists.
pub async fn read_sales_order(client: &DataverseClient, id: &str) -> Result<Option<ErpRecord>, DeliveryError> {
    if !is_guid(id) {
        return Err(DeliveryError::Rejected {
            vendor: VENDOR,
            detail: format!("`{id}` is not a salesorder id (GUID)"),
        });
    }
    // A filtered query instead of `salesorders(<id>)`: a deleted order is an empty page, not a
    // 404 error to tell apart from a wrong URL.
    let filter = format!("salesorderid eq {id}");
    let page = client
        .query("salesorders", &[("$select", SALES_ORDER_SELECT), ("$filter", filter.as_str())], &Prefer::default())
        .await?;
    match page.rows.first() {
        Some(row) => shipment_from_sales_order(row).map(Some).map_err(|e| e.into_delivery(VENDOR)),
        None => Ok(None),
    }
}

/// A BC unit code as a Rec 20 code when it is one, as sent otherwise.
fn unit_text(code: Option<&str>) -> Option<String> {
    code.map(|c| Uom::parse("unitOfMeasureCode", c).map_or_else(|_| c.to_owned(), |u| u.code().to_owned()))
}

fn request_status(status: Option<&str>) -> (&'static str, bool) {
    match status {
        Some(s) if PENDING_STATUSES.contains(&s) => ("pending_approval", true),
        Some("Draft") => ("draft", false),
        Some("Open") | Some("Released") => ("approved", false),
        _ => ("unknown", false),
    }
}

/// A parsed BC purchase order as a purchase request (the shared path of both public functions).
pub fn purchase_request_from_bc_order(po: &PurchaseOrder) -> Result<ErpRecord, MapError> {
    const OBJECT: &str = "purchaseOrders";
    let number = po.number.as_deref().ok_or_else(|| MapError::missing(OBJECT, &po.id, "number"))?;
    let currency = po.total_including_tax.map(|m| m.currency);
    let lines = po
        .lines
        .iter()
        .map(|l| Line {
            line: l.sequence.map_or_else(|| l.id.clone(), |s| s.to_string()),
            item: l.line_object_number.clone(),
            description: l.description.clone(),
            quantity: l.quantity.map(|q| (q, unit_text(l.unit_of_measure_code.as_deref()))),
            unit_price: currency.and_then(|c| l.direct_unit_cost.and_then(|p| Money::new("directUnitCost", p, c).ok())),
            amount: currency.and_then(|c| {
                l.amount_excluding_tax
                    .and_then(|a| Money::new("amountExcludingTax", a.round_dp(c.minor_units()), c).ok())
            }),
        })
        .collect::<Vec<_>>();
    let (status, pending) = request_status(po.status.as_deref());
    let as_of = po.last_modified.map(|t| t.as_millis());
    let mut data = json!({
        "system": "dynamics",
        "number": number,
        "status": status,
        "status_text": opt_json(po.status.as_deref()),
        "pending_approval": pending,
        "requester": {"id": null, "name": null},
        "amount": money_json(po.total_including_tax),
        "lines": lines.iter().map(Line::priced_json).collect::<Vec<_>>(),
        "as_of": as_of_json(as_of),
        "version": null,
        "approval": {"id": po.id, "etag": opt_json(po.etag.as_deref())},
    });
    let version = match (as_of, &po.etag) {
        (Some(ms), _) => ms.to_string(),
        (None, Some(etag)) => etag.clone(),
        (None, None) => format!("sha256:{}", &hex::encode(sha2::Sha256::digest(data.to_string().as_bytes()))[..16]),
    };
    data["version"] = json!(version);
    Ok(ErpRecord {
        entity: PURCHASE_REQUEST,
        entity_id: po.id.clone(),
        object: OBJECT.to_owned(),
        source_time_ms: as_of,
        version,
        data,
    })
}

/// A BC `purchaseOrders` row (lines expanded as `purchaseOrderLines`, or absent) as a purchase request.
pub fn purchase_request_from_bc(po: &Value) -> Result<ErpRecord, MapError> {
    let id = po["id"].as_str().unwrap_or("?");
    let parsed = PurchaseOrder::from_row(po).map_err(|e| MapError::parse("purchaseOrders", id, e))?;
    purchase_request_from_bc_order(&parsed)
}

/// The company's purchase orders awaiting approval. BC's v2.0 client reads all purchase orders
/// (with lines) and the status filter is applied here.
pub async fn pending_purchase_requests(bc: &BcClient, company_id: &str) -> Result<Vec<ErpRecord>, DeliveryError> {
    let orders = bc.purchase_orders(company_id, None).await?;
    orders
        .iter()
        .filter(|po| po.status.as_deref().is_some_and(|s| PENDING_STATUSES.contains(&s)))
        .map(|po| purchase_request_from_bc_order(po).map_err(|e| e.into_delivery(VENDOR)))
        .collect()
}

#[cfg(test)]
#[path = "canonical_tests.rs"]
mod tests;
