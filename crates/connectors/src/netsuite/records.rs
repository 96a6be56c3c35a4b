//! Purchase orders and requisitions as dingbridge types (reference B2, B3): money through
//! `model::Money`, quantities through `model::Quantity`, times through `model::ZonedTime`.
//!
//! NetSuite sends amounts as JSON floating-point numbers; they are read from their shortest
//! decimal text and rounded to the currency's minor units (reference B3: round on our side).
//! Currency and unit references are account-specific internal ids (`currency` `{"id": "5"}`,
//! line `units` `"3"` within the item's units type), so the caller supplies [`AccountMaps`]
//! built from the account's currency and unitsType records; an unmapped id is an error, never a
//! guess (reading those records is not implemented here: UNVERIFIED record names for units
//! types under REST).

use super::VENDOR;
use connect::DeliveryError;
use model::{Currency, Decimal, Money, ParseError, Quantity, Uom, ZonedTime};
use serde_json::Value;
use std::collections::BTreeMap;
use std::str::FromStr;

/// Internal-id maps of one account.
#[derive(Debug, Clone, Default)]
pub struct AccountMaps {
    /// Currency internal id → ISO currency.
    pub currencies: BTreeMap<String, Currency>,
    /// Unit internal id → unit of measure.
    pub units: BTreeMap<String, Uom>,
}

/// `approvalStatus` (1 Pending Approval, 2 Approved, 3 Rejected).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApprovalStatus {
    Pending,
    Approved,
    Rejected,
}

impl ApprovalStatus {
    pub fn parse(id: &str) -> Option<ApprovalStatus> {
        match id {
            "1" => Some(ApprovalStatus::Pending),
            "2" => Some(ApprovalStatus::Approved),
            "3" => Some(ApprovalStatus::Rejected),
            _ => None,
        }
    }

    /// The value to PATCH (`{"approvalStatus": {"id": …}}`).
    pub fn id(self) -> &'static str {
        match self {
            ApprovalStatus::Pending => "1",
            ApprovalStatus::Approved => "2",
            ApprovalStatus::Rejected => "3",
        }
    }
}

/// A reference field `{"id", "refName"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ref {
    pub id: String,
    pub name: String,
}

/// One `item` sublist line.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub line: u64,
    pub item: Ref,
    pub quantity: Quantity,
    pub quantity_received: Decimal,
    /// Unit price in the document currency, as sent (may carry more decimals than the currency).
    pub rate: Decimal,
    pub amount: Money,
    pub expected_receipt_date: Option<String>,
}

/// A purchase order or requisition fetched with `expandSubResources=true`.
#[derive(Debug, Clone, PartialEq)]
pub struct ApprovalDocument {
    pub id: String,
    pub tran_id: String,
    pub tran_date: String,
    pub last_modified: ZonedTime,
    pub approval_status: ApprovalStatus,
    /// Vendor (PO) or requestor (PR).
    pub entity: Ref,
    pub next_approver: Option<Ref>,
    pub memo: Option<String>,
    pub total: Money,
    pub lines: Vec<Line>,
}

fn field_error(err: ParseError) -> DeliveryError {
    DeliveryError::Server { vendor: VENDOR, status: 200, detail: format!("NetSuite record unreadable: {err}") }
}

fn missing(field: &str) -> ParseError {
    ParseError::new(field, "", "is missing")
}

fn reference(record: &Value, field: &str) -> Result<Ref, ParseError> {
    let id = record[field]["id"].as_str().ok_or_else(|| missing(field))?;
    Ok(Ref { id: id.to_owned(), name: record[field]["refName"].as_str().unwrap_or_default().to_owned() })
}

/// A JSON number as an exact decimal of its shortest text (`0.85` stays 0.85).
pub fn decimal(record: &Value, field: &str) -> Result<Decimal, ParseError> {
    let number = record[field].as_number().ok_or_else(|| missing(field))?;
    let text = number.to_string();
    Decimal::from_str(&text)
        .or_else(|_| Decimal::from_scientific(&text))
        .map_err(|e| ParseError::new(field, &text, format!("is not a decimal number ({e})")))
}

/// A JSON amount rounded to the currency's minor units.
pub fn money(record: &Value, field: &str, currency: Currency) -> Result<Money, ParseError> {
    let exact = decimal(record, field)?;
    Money::new(field, exact.round_dp(currency.minor_units()), currency)
}

impl AccountMaps {
    fn currency(&self, record: &Value) -> Result<Currency, ParseError> {
        let id = record["currency"]["id"].as_str().ok_or_else(|| missing("currency"))?;
        self.currencies.get(id).copied().ok_or_else(|| {
            ParseError::new("currency", id, "is a currency internal id with no ISO code configured for this account")
        })
    }

    fn unit(&self, line: &Value) -> Result<Uom, ParseError> {
        let id = line["units"].as_str().ok_or_else(|| missing("units"))?;
        self.units.get(id).copied().ok_or_else(|| {
            ParseError::new("units", id, "is a unit internal id with no unit of measure configured for this account")
        })
    }

    /// Reads an expanded purchase order / requisition.
    pub fn approval_document(&self, record: &Value) -> Result<ApprovalDocument, DeliveryError> {
        self.read(record).map_err(field_error)
    }

    fn read(&self, record: &Value) -> Result<ApprovalDocument, ParseError> {
        let currency = self.currency(record)?;
        let status_id = record["approvalStatus"]["id"].as_str().ok_or_else(|| missing("approvalStatus"))?;
        let approval_status = ApprovalStatus::parse(status_id)
            .ok_or_else(|| ParseError::new("approvalStatus", status_id, "is not 1, 2 or 3"))?;
        let modified = record["lastModifiedDate"].as_str().ok_or_else(|| missing("lastModifiedDate"))?;
        let items = record["item"]["items"].as_array().ok_or_else(|| {
            ParseError::new("item", "", "has no items; fetch the record with expandSubResources=true")
        })?;
        let lines = items
            .iter()
            .map(|line| {
                Ok(Line {
                    line: line["line"].as_u64().ok_or_else(|| missing("line"))?,
                    item: reference(line, "item")?,
                    quantity: Quantity::new(decimal(line, "quantity")?, self.unit(line)?),
                    quantity_received: decimal(line, "quantityReceived").unwrap_or_default(),
                    rate: decimal(line, "rate")?,
                    amount: money(line, "amount", currency)?,
                    expected_receipt_date: line["expectedReceiptDate"].as_str().map(str::to_owned),
                })
            })
            .collect::<Result<Vec<_>, ParseError>>()?;
        Ok(ApprovalDocument {
            id: record["id"].as_str().ok_or_else(|| missing("id"))?.to_owned(),
            tran_id: record["tranId"].as_str().ok_or_else(|| missing("tranId"))?.to_owned(),
            tran_date: record["tranDate"].as_str().ok_or_else(|| missing("tranDate"))?.to_owned(),
            last_modified: ZonedTime::parse("lastModifiedDate", modified)?,
            approval_status,
            entity: reference(record, "entity")?,
            next_approver: reference(record, "nextApprover").ok(),
            memo: record["memo"].as_str().map(str::to_owned),
            total: money(record, "total", currency)?,
            lines,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn maps() -> AccountMaps {
        AccountMaps {
            currencies: [("5".to_owned(), Currency::parse("currency", "HKD").unwrap())].into(),
            units: [("1".to_owned(), Uom::EA), ("3".to_owned(), Uom::KGM)].into(),
        }
    }

    #[test]
    fn the_expanded_fixture_reads_into_model_types() {
        let doc = maps().approval_document(&fixtures::read_json("netsuite/purchaseOrder_get_expanded.json")).unwrap();
        assert_eq!((doc.id.as_str(), doc.tran_id.as_str()), ("4711", "PO000812"));
        assert_eq!(doc.approval_status, ApprovalStatus::Pending);
        assert_eq!(doc.total.to_string(), "HKD 1,710.00");
        assert_eq!(doc.last_modified.0.to_string(), "2024-03-15T02:31:00Z");
        assert_eq!(doc.entity.name, "Kowloon Bay Trading Ltd");
        assert_eq!(doc.next_approver.unwrap().id, "201");
        assert_eq!(doc.lines.len(), 2);
        assert_eq!(doc.lines[0].quantity.to_string(), "1200 EA");
        assert_eq!(doc.lines[1].quantity.to_string(), "37.5 KGM");
        assert_eq!(doc.lines[1].rate.to_string(), "18.4");
        assert_eq!(doc.lines[0].amount.amount_string(), "1020.00");
    }

    #[test]
    fn collapsed_records_and_unmapped_ids_are_refused() {
        let collapsed = maps().approval_document(&fixtures::read_json("netsuite/purchaseOrder_get_default.json"));
        assert!(collapsed.unwrap_err().to_string().contains("expandSubResources"));
        let mut no_units = maps();
        no_units.units.remove("3");
        let err =
            no_units.approval_document(&fixtures::read_json("netsuite/purchaseOrder_get_expanded.json")).unwrap_err();
        assert!(err.to_string().contains("unit internal id"), "{err}");
    }

    #[test]
    fn float_amounts_round_to_the_currency() {
        let hkd = Currency::parse("c", "HKD").unwrap();
        assert_eq!(money(&json!({"t": 0.1 + 0.2}), "t", hkd).unwrap().amount_string(), "0.30");
        assert_eq!(ApprovalStatus::parse("2").unwrap().id(), "2");
        assert_eq!(ApprovalStatus::parse("9"), None);
    }
}
