//! NetSuite records in the canonical ERP shape ([`crate::erp`]): item fulfillments as shipments,
//! purchase requisitions as purchase requests, purchase orders as purchase orders, read from the
//! REST record API with sublists expanded.
//!
//! Mapping notes:
//! - Times: `lastModifiedDate` (UTC, minute precision) is the "as of" of every record and, in ms,
//!   the version of requisitions and orders; a webhook-triggered read and a SuiteQL poll read the
//!   same record, so they agree.
//! - Units: a line's `units` is the internal id of a unit within the item's units type (reference
//!   B2), not a code. Without the account's unitsType map it is passed through as sent (`"1"`),
//!   unless it already is a Rec 20 / SAP code that `model::Uom` parses, which is written as the
//!   Rec 20 code.
//! - Currency: records name it only by reference (`{"id":"5","refName":"Hong Kong Dollar"}`).
//!   The ISO code is taken from the refName when it is one, otherwise from NetSuite's standard
//!   English currency names in [`CURRENCY_NAMES`]; any other name is a [`MapError`], never a guess.
//! - Amounts are JSON floats on the wire and are rounded to the currency's minor units
//!   (reference B3). A unit price (`rate`) finer than the currency's minor unit is written as
//!   `null` rather than rounded, since a rounded price times the quantity no longer gives the amount.

use super::client::{NetSuiteClient, RecordType};
use super::records::{decimal, money, ApprovalStatus};
use super::VENDOR;
use crate::erp::{
    as_of_json, money_json, opt_json, rfc3339_ms, shipment_version, ErpRecord, Line, MapError, ShipmentStatus,
    PURCHASE_ORDER, PURCHASE_REQUEST, SHIPMENT,
};
use connect::DeliveryError;
use model::{Currency, Money, Uom};
use serde_json::{json, Value};

/// The query behind [`pending_purchase_requests`]; the simulator's SuiteQL subset answers it.
pub const PENDING_REQUISITIONS_QUERY: &str =
    "SELECT id FROM transaction WHERE type = 'PurchReq' AND approvalstatus = 1 ORDER BY id";

/// NetSuite's standard English names of currency records → ISO 4217 codes (compared ignoring
/// case). Accounts that rename their currency records should name them by ISO code.
pub const CURRENCY_NAMES: &[(&str, &str)] = &[
    ("Hong Kong Dollar", "HKD"),
    ("US Dollar", "USD"),
    ("USA", "USD"),
    ("Euro", "EUR"),
    ("British pound", "GBP"),
    ("Canadian Dollar", "CAD"),
    ("Australian Dollar", "AUD"),
    ("Singapore Dollar", "SGD"),
    ("Japanese Yen", "JPY"),
    ("Chinese Yuan", "CNY"),
    ("Yuan Renminbi", "CNY"),
    ("Renminbi", "CNY"),
    ("New Taiwan Dollar", "TWD"),
    ("Macanese Pataca", "MOP"),
];

/// The record being mapped, for error messages.
struct Doc<'a> {
    object: &'static str,
    id: String,
    value: &'a Value,
}

impl<'a> Doc<'a> {
    fn new(object: &'static str, value: &'a Value) -> Result<Self, MapError> {
        let id = value["id"].as_str().filter(|s| !s.is_empty()).ok_or_else(|| MapError::missing(object, "?", "id"))?;
        Ok(Doc { object, id: id.to_owned(), value })
    }

    fn missing(&self, field: &str) -> MapError {
        MapError::missing(self.object, &self.id, field)
    }

    fn text(&self, field: &str) -> Option<&'a str> {
        self.value[field].as_str().filter(|s| !s.is_empty())
    }

    fn required(&self, field: &str) -> Result<&'a str, MapError> {
        self.text(field).ok_or_else(|| self.missing(field))
    }

    /// `lastModifiedDate` in ms.
    fn modified_ms(&self) -> Result<i64, MapError> {
        rfc3339_ms(self.object, &self.id, "lastModifiedDate", self.required("lastModifiedDate")?)
    }

    fn parse_error(&self, err: model::ParseError) -> MapError {
        MapError::parse(self.object, &self.id, err)
    }

    /// The ISO currency of the record (see the module notes).
    fn currency(&self) -> Result<Currency, MapError> {
        let reference = &self.value["currency"];
        let name = reference["refName"].as_str().unwrap_or_default();
        let id = reference["id"].as_str().unwrap_or_default();
        if name.is_empty() && id.is_empty() {
            return Err(self.missing("currency"));
        }
        if let Ok(currency) = Currency::parse("currency", name) {
            return Ok(currency);
        }
        let code = CURRENCY_NAMES.iter().find(|(n, _)| n.eq_ignore_ascii_case(name.trim())).map(|(_, code)| *code);
        let shown = if name.is_empty() { id } else { name };
        let code = code.ok_or_else(|| {
            MapError::invalid(
                self.object,
                &self.id,
                "currency",
                shown,
                "is a currency record name with no known ISO 4217 code; name the currency record by its ISO code",
            )
        })?;
        Currency::parse("currency", code).map_err(|e| self.parse_error(e))
    }

    fn sublist(&self, name: &str) -> Result<&'a [Value], MapError> {
        match &self.value[name] {
            Value::Null => Ok(&[]),
            sub => sub["items"].as_array().map(Vec::as_slice).ok_or_else(|| {
                MapError::invalid(
                    self.object,
                    &self.id,
                    name,
                    "links only",
                    "is collapsed; read the record with expandSubResources=true",
                )
            }),
        }
    }
}

/// `{"id","name"}` of a reference field, both `null` when absent.
fn party(reference: &Value) -> Value {
    json!({"id": opt_json(reference["id"].as_str()), "name": opt_json(reference["refName"].as_str())})
}

/// A line's unit as a Rec 20 code when it is one, otherwise the internal id as sent.
fn unit_text(line: &Value) -> Option<String> {
    let units = line["units"].as_str().filter(|s| !s.is_empty())?;
    Some(Uom::parse("units", units).map_or_else(|_| units.to_owned(), |u| u.code().to_owned()))
}

/// The `item` sublist as canonical lines; `currency` `None` for unpriced (fulfillment) lines.
fn lines(doc: &Doc<'_>, currency: Option<Currency>) -> Result<Vec<Line>, MapError> {
    doc.sublist("item")?
        .iter()
        .map(|line| {
            let number = line["line"].as_u64().ok_or_else(|| doc.missing("item.line"))?.to_string();
            let quantity = match &line["quantity"] {
                Value::Null => None,
                _ => Some((decimal(line, "quantity").map_err(|e| doc.parse_error(e))?, unit_text(line))),
            };
            let (unit_price, amount) = match currency {
                Some(currency) => {
                    let price = match &line["rate"] {
                        Value::Null => None,
                        _ => {
                            let rate = decimal(line, "rate").map_err(|e| doc.parse_error(e))?;
                            Money::new("rate", rate, currency).ok()
                        }
                    };
                    let amount = match &line["amount"] {
                        Value::Null => None,
                        _ => Some(money(line, "amount", currency).map_err(|e| doc.parse_error(e))?),
                    };
                    (price, amount)
                }
                None => (None, None),
            };
            let item_name = line["item"]["refName"].as_str().or_else(|| line["item"]["id"].as_str());
            Ok(Line {
                line: number,
                item: item_name.map(str::to_owned),
                description: line["description"].as_str().or(item_name).map(str::to_owned),
                quantity,
                unit_price,
                amount,
            })
        })
        .collect()
}

fn total(doc: &Doc<'_>, currency: Currency) -> Result<Option<Money>, MapError> {
    match &doc.value["total"] {
        Value::Null => Ok(None),
        _ => money(doc.value, "total", currency).map(Some).map_err(|e| doc.parse_error(e)),
    }
}

fn approval<'a>(doc: &Doc<'a>) -> Result<(ApprovalStatus, &'a str), MapError> {
    let status = &doc.value["approvalStatus"];
    let id = status["id"].as_str().ok_or_else(|| doc.missing("approvalStatus"))?;
    let parsed = ApprovalStatus::parse(id).ok_or_else(|| {
        MapError::invalid(doc.object, &doc.id, "approvalStatus", id, "is not 1 (Pending), 2 (Approved) or 3 (Rejected)")
    })?;
    let label = match parsed {
        ApprovalStatus::Pending => "Pending Approval",
        ApprovalStatus::Approved => "Approved",
        ApprovalStatus::Rejected => "Rejected",
    };
    Ok((parsed, status["refName"].as_str().unwrap_or(label)))
}

fn approval_word(status: ApprovalStatus) -> &'static str {
    match status {
        ApprovalStatus::Pending => "pending_approval",
        ApprovalStatus::Approved => "approved",
        ApprovalStatus::Rejected => "rejected",
    }
}

/// The sales order number a fulfillment was created from: the refName reads
/// `Sales Order #SO-001205`; without a `#` the refName, without a refName the internal id.
fn order_number(created_from: &Value) -> Option<String> {
    let name = created_from["refName"].as_str().filter(|s| !s.is_empty());
    match name {
        Some(name) => Some(name.rsplit_once('#').map_or(name, |(_, number)| number).trim().to_owned()),
        None => created_from["id"].as_str().map(str::to_owned),
    }
}

/// An expanded `itemFulfillment` as a shipment. `shipStatus` A Picked, B Packed, C Shipped
/// (reference B2); the as-of time is `lastModifiedDate`, the change that set the status.
pub fn shipment(fulfillment: &Value) -> Result<ErpRecord, MapError> {
    let doc = Doc::new("itemFulfillment", fulfillment)?;
    let number = doc.required("tranId")?;
    let ship = &fulfillment["shipStatus"];
    let code = ship["id"].as_str().ok_or_else(|| doc.missing("shipStatus"))?;
    let (status, label) = match code {
        "A" => (ShipmentStatus::Picked, "Picked"),
        "B" => (ShipmentStatus::Packed, "Packed"),
        "C" => (ShipmentStatus::Shipped, "Shipped"),
        other => {
            return Err(MapError::invalid(doc.object, &doc.id, "shipStatus", other, "is not A, B or C"));
        }
    };
    let as_of = doc.modified_ms()?;
    let tracking: Vec<&str> = doc
        .sublist("package")?
        .iter()
        .filter_map(|p| p["packageTrackingNumber"].as_str().filter(|s| !s.is_empty()))
        .collect();
    let lines = lines(&doc, None)?;
    let customer = fulfillment["entity"]["refName"].as_str().or_else(|| fulfillment["entity"]["id"].as_str());
    let data = json!({
        "system": "netsuite",
        "number": number,
        "order": opt_json(order_number(&fulfillment["createdFrom"]).as_deref()),
        "customer": opt_json(customer),
        "status": status.as_str(),
        "status_text": ship["refName"].as_str().unwrap_or(label),
        "as_of": as_of_json(Some(as_of)),
        "tracking": tracking,
        "lines": lines.iter().map(Line::shipment_json).collect::<Vec<_>>(),
    });
    Ok(ErpRecord {
        entity: SHIPMENT,
        entity_id: doc.id.clone(),
        object: doc.object.to_owned(),
        source_time_ms: Some(as_of),
        version: shipment_version(status, Some(as_of)),
        data,
    })
}

/// An expanded `purchaseRequisition` as a purchase request. The requester is `requester` when
/// the form has it, else `entity` (the requesting employee).
pub fn purchase_request(pr: &Value) -> Result<ErpRecord, MapError> {
    let doc = Doc::new("purchaseRequisition", pr)?;
    let number = doc.required("tranId")?;
    let (status, label) = approval(&doc)?;
    let currency = doc.currency()?;
    let as_of = doc.modified_ms()?;
    let lines = lines(&doc, Some(currency))?;
    let requester = if pr["requester"].is_object() { &pr["requester"] } else { &pr["entity"] };
    let next_approver = if pr["nextApprover"].is_object() { party(&pr["nextApprover"]) } else { Value::Null };
    let data = json!({
        "system": "netsuite",
        "number": number,
        "status": approval_word(status),
        "status_text": label,
        "pending_approval": status == ApprovalStatus::Pending,
        "requester": party(requester),
        "amount": money_json(total(&doc, currency)?),
        "lines": lines.iter().map(Line::priced_json).collect::<Vec<_>>(),
        "as_of": as_of_json(Some(as_of)),
        "version": as_of.to_string(),
        "approval": {
            "record_type": RecordType::PurchaseRequisition.as_str(),
            "id": doc.id,
            "approval_status": status.id(),
            "next_approver": next_approver,
        },
    });
    Ok(ErpRecord {
        entity: PURCHASE_REQUEST,
        entity_id: doc.id.clone(),
        object: doc.object.to_owned(),
        source_time_ms: Some(as_of),
        version: as_of.to_string(),
        data,
    })
}

/// An expanded `purchaseOrder` (fixture `purchaseOrder_get_expanded.json`). `status` is the
/// approval state (`pending_approval`, `approved`, `rejected`); `status_text` NetSuite's order
/// status label (`Pending Supervisor Approval`, `Pending Receipt`, …).
pub fn purchase_order(po: &Value) -> Result<ErpRecord, MapError> {
    let doc = Doc::new("purchaseOrder", po)?;
    let number = doc.required("tranId")?;
    let (status, label) = approval(&doc)?;
    let currency = doc.currency()?;
    let as_of = doc.modified_ms()?;
    let lines = lines(&doc, Some(currency))?;
    let status_text = po["status"]["refName"].as_str().unwrap_or(label);
    let data = json!({
        "system": "netsuite",
        "number": number,
        "status": approval_word(status),
        "status_text": status_text,
        "supplier": party(&po["entity"]),
        "order_date": opt_json(doc.text("tranDate")),
        "amount": money_json(total(&doc, currency)?),
        "lines": lines.iter().map(Line::priced_json).collect::<Vec<_>>(),
        "as_of": as_of_json(Some(as_of)),
    });
    Ok(ErpRecord {
        entity: PURCHASE_ORDER,
        entity_id: doc.id.clone(),
        object: doc.object.to_owned(),
        source_time_ms: Some(as_of),
        version: as_of.to_string(),
        data,
    })
}

/// Maps a record of `record` type; types without a canonical shape are a [`MapError`].
pub fn from_record(record: RecordType, value: &Value) -> Result<ErpRecord, MapError> {
    match record {
        RecordType::ItemFulfillment => shipment(value),
        RecordType::PurchaseRequisition => purchase_request(value),
        RecordType::PurchaseOrder => purchase_order(value),
        RecordType::SalesOrder | RecordType::InventoryItem => Err(MapError::Unsupported {
            object: record.as_str().to_owned(),
            id: value["id"].as_str().unwrap_or("?").to_owned(),
            reason: "only itemFulfillment, purchaseRequisition and purchaseOrder are mapped".to_owned(),
        }),
    }
}

/// One GET with sublists expanded; `None` when the record no longer exists.
pub async fn read(client: &NetSuiteClient, record: RecordType, id: &str) -> Result<Option<ErpRecord>, DeliveryError> {
    let Some(value) = client.find_record(record, id, true).await? else { return Ok(None) };
    from_record(record, &value).map(Some).map_err(|e| e.into_delivery(VENDOR))
}

/// Every purchase requisition pending approval: their ids by SuiteQL, then one read each. A
/// requisition deleted between the query and its read is skipped.
pub async fn pending_purchase_requests(client: &NetSuiteClient) -> Result<Vec<ErpRecord>, DeliveryError> {
    let rows = client.suiteql(PENDING_REQUISITIONS_QUERY, super::client::SUITEQL_PAGE_MAX).await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let id = match &row["id"] {
            Value::String(id) => id.clone(),
            Value::Number(n) => n.to_string(),
            _ => {
                return Err(DeliveryError::Server {
                    vendor: VENDOR,
                    status: 200,
                    detail: format!("SuiteQL pending requisitions: a row has no id ({row})"),
                })
            }
        };
        if let Some(record) = read(client, RecordType::PurchaseRequisition, &id).await? {
            out.push(record);
        }
    }
    Ok(out)
}

#[cfg(test)]
#[path = "canonical_tests.rs"]
mod tests;
