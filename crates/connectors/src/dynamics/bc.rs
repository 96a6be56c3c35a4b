//! The Business Central API v2.0 client (reference C1, C2, C4, C5): companies, purchase orders
//! with their lines, items and posted sales shipments. Same transport as Dataverse, with the
//! Business Central token (its own resource) and BC's lower concurrency.

use super::client::{decimal_of, IfMatch, ODataTransport, Page, WriteError};
use super::errors::api_failure;
use super::{BC_API_PATH, VENDOR};
use connect::http::redact_url;
use connect::DeliveryError;
use http::Method;
use jiff::civil::Date;
use model::{Currency, Decimal, Money, ParseError, ZonedTime};
use serde_json::Value;
use url::Url;

/// dingbridge's per-tenant concurrency for Business Central (reference C7: BC allows 5).
pub const BC_CONCURRENCY: usize = 4;
/// The dingbridge approvals extension's custom API (publisher/group/version), next to `v2.0`
/// under the environment's `api/`.
pub const APPROVALS_API_PATH: &str = "dingbridge/approvals/v1.0";
/// The public BC API host.
pub const BC_HOST: &str = "https://api.businesscentral.dynamics.com";

fn text(row: &Value, field: &str) -> Option<String> {
    row.get(field).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_owned)
}

fn shown(row: &Value) -> String {
    row.to_string().chars().take(120).collect()
}

fn required(row: &Value, field: &str) -> Result<String, ParseError> {
    text(row, field).ok_or_else(|| ParseError::new(field, &shown(row), "is missing"))
}

fn number(row: &Value, field: &str) -> Result<Option<Decimal>, ParseError> {
    decimal_of(field, row.get(field).unwrap_or(&Value::Null))
}

fn date(row: &Value, field: &str) -> Result<Option<Date>, ParseError> {
    text(row, field)
        .map(|t| t.parse::<Date>().map_err(|e| ParseError::new(field, &t, format!("is not an Edm.Date ({e})"))))
        .transpose()
}

/// A BC company (`GET companies`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Company {
    pub id: String,
    pub name: Option<String>,
    pub display_name: Option<String>,
}

/// One `purchaseOrderLines` row.
#[derive(Debug, Clone, PartialEq)]
pub struct PurchaseOrderLine {
    pub id: String,
    pub sequence: Option<i64>,
    pub item_id: Option<String>,
    /// `Item`, `Account`, `Comment`, …
    pub line_type: Option<String>,
    pub line_object_number: Option<String>,
    pub description: Option<String>,
    /// BC unit code (`PCS`); map to ISO units with the per-system UoM table (reference D).
    pub unit_of_measure_code: Option<String>,
    pub quantity: Option<Decimal>,
    pub direct_unit_cost: Option<Decimal>,
    pub amount_excluding_tax: Option<Decimal>,
    pub expected_receipt_date: Option<Date>,
    pub received_quantity: Option<Decimal>,
    pub invoiced_quantity: Option<Decimal>,
}

impl PurchaseOrderLine {
    pub fn from_row(row: &Value) -> Result<Self, ParseError> {
        Ok(Self {
            id: required(row, "id")?,
            sequence: row.get("sequence").and_then(Value::as_i64),
            item_id: text(row, "itemId"),
            line_type: text(row, "lineType"),
            line_object_number: text(row, "lineObjectNumber"),
            description: text(row, "description"),
            unit_of_measure_code: text(row, "unitOfMeasureCode"),
            quantity: number(row, "quantity")?,
            direct_unit_cost: number(row, "directUnitCost")?,
            amount_excluding_tax: number(row, "amountExcludingTax")?,
            expected_receipt_date: date(row, "expectedReceiptDate")?,
            received_quantity: number(row, "receivedQuantity")?,
            invoiced_quantity: number(row, "invoicedQuantity")?,
        })
    }
}

/// A BC purchase order (with lines when read with `$expand=purchaseOrderLines`).
#[derive(Debug, Clone, PartialEq)]
pub struct PurchaseOrder {
    pub id: String,
    pub etag: Option<String>,
    pub number: Option<String>,
    pub order_date: Option<Date>,
    pub vendor_number: Option<String>,
    pub vendor_name: Option<String>,
    /// Empty in BC means the company's local currency, which this client does not know
    /// (UNVERIFIED: BC sends `""` for LCY); then the money fields are `None`.
    pub currency_code: Option<String>,
    pub total_excluding_tax: Option<Money>,
    pub total_tax: Option<Money>,
    pub total_including_tax: Option<Money>,
    pub fully_received: Option<bool>,
    /// `Draft`, `In Review` (pending approval), `Open`.
    pub status: Option<String>,
    /// `None` when BC sent only a date (the documentation sample does).
    pub last_modified: Option<ZonedTime>,
    pub lines: Vec<PurchaseOrderLine>,
}

impl PurchaseOrder {
    pub fn from_row(row: &Value) -> Result<Self, ParseError> {
        let currency_code = text(row, "currencyCode");
        let currency = currency_code.as_deref().map(|c| Currency::parse("currencyCode", c)).transpose()?;
        let money = |field: &str| -> Result<Option<Money>, ParseError> {
            match (number(row, field)?, currency) {
                (Some(amount), Some(currency)) => Money::new(field, amount, currency).map(Some),
                _ => Ok(None),
            }
        };
        let last_modified = match text(row, "lastModifiedDateTime") {
            Some(t) if t.contains('T') => Some(ZonedTime::parse("lastModifiedDateTime", &t)?),
            _ => None,
        };
        let lines = match row.get("purchaseOrderLines").and_then(Value::as_array) {
            Some(lines) => lines.iter().map(PurchaseOrderLine::from_row).collect::<Result<_, _>>()?,
            None => Vec::new(),
        };
        Ok(Self {
            id: required(row, "id")?,
            etag: text(row, "@odata.etag"),
            number: text(row, "number"),
            order_date: date(row, "orderDate")?,
            vendor_number: text(row, "vendorNumber"),
            vendor_name: text(row, "vendorName"),
            currency_code,
            total_excluding_tax: money("totalAmountExcludingTax")?,
            total_tax: money("totalTaxAmount")?,
            total_including_tax: money("totalAmountIncludingTax")?,
            fully_received: row.get("fullyReceived").and_then(Value::as_bool),
            status: text(row, "status"),
            last_modified,
            lines,
        })
    }
}

/// A BC item.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub id: String,
    pub number: Option<String>,
    pub display_name: Option<String>,
    pub base_unit_of_measure_code: Option<String>,
    /// On hand across locations, in the base unit.
    pub inventory: Option<Decimal>,
    pub unit_cost: Option<Decimal>,
    pub unit_price: Option<Decimal>,
}

impl Item {
    pub fn from_row(row: &Value) -> Result<Self, ParseError> {
        Ok(Self {
            id: required(row, "id")?,
            number: text(row, "number"),
            display_name: text(row, "displayName"),
            base_unit_of_measure_code: text(row, "baseUnitOfMeasureCode"),
            inventory: number(row, "inventory")?,
            unit_cost: number(row, "unitCost")?,
            unit_price: number(row, "unitPrice")?,
        })
    }
}

/// A posted BC sales shipment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SalesShipment {
    pub id: String,
    pub number: Option<String>,
    pub order_number: Option<String>,
    pub shipment_date: Option<Date>,
    pub customer_number: Option<String>,
}

impl SalesShipment {
    pub fn from_row(row: &Value) -> Result<Self, ParseError> {
        Ok(Self {
            id: required(row, "id")?,
            number: text(row, "number"),
            order_number: text(row, "orderNumber"),
            shipment_date: date(row, "shipmentDate")?,
            customer_number: text(row, "customerNumber"),
        })
    }
}

fn bad(what: &str, err: ParseError) -> DeliveryError {
    DeliveryError::Server { vendor: VENDOR, status: 200, detail: format!("{what}: unexpected row ({err})") }
}

/// The Business Central client of one tenant environment.
pub struct BcClient {
    transport: ODataTransport,
    base: Url,
}

impl std::fmt::Debug for BcClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BcClient").field("base", &self.base.as_str()).finish_non_exhaustive()
    }
}

impl BcClient {
    /// `host` is [`BC_HOST`] (or a simulator); `environment` is `Production`, `Sandbox`, ….
    pub fn new(
        transport: ODataTransport,
        host: &str,
        tenant_id: &str,
        environment: &str,
    ) -> Result<Self, DeliveryError> {
        let text = format!("{}/v2.0/{tenant_id}/{environment}/{BC_API_PATH}/", host.trim_end_matches('/'));
        let base = Url::parse(&text).map_err(|err| DeliveryError::Rejected {
            vendor: VENDOR,
            detail: format!(
                "the Business Central URL `{text}` is not a URL ({err}); check host, tenant and environment"
            ),
        })?;
        Ok(Self { transport, base })
    }

    pub fn transport(&self) -> &ODataTransport {
        &self.transport
    }

    fn url(&self, path: &str, query: &[(&str, &str)]) -> Result<Url, DeliveryError> {
        let mut url = self.base.join(path).map_err(|err| DeliveryError::Rejected {
            vendor: VENDOR,
            detail: format!("cannot build a URL for `{path}` ({err})"),
        })?;
        if !query.is_empty() {
            let text: Vec<String> = query
                .iter()
                .map(|(k, v)| format!("{k}={}", percent_encoding::utf8_percent_encode(v, super::client::QUERY_VALUE)))
                .collect();
            url.set_query(Some(&text.join("&")));
        }
        Ok(url)
    }

    async fn all_rows(&self, path: &str, query: &[(&str, &str)]) -> Result<Vec<Value>, DeliveryError> {
        let what = format!("GET {path}");
        let mut url = self.url(path, query)?;
        let mut rows = Vec::new();
        loop {
            let answer = self.transport.call_json(Method::GET, &url, &[], None, &what).await?;
            let json: Value = serde_json::from_slice(&answer.body).map_err(|err| DeliveryError::Server {
                vendor: VENDOR,
                status: answer.status,
                detail: format!("{what}: the answer is not JSON ({err})"),
            })?;
            let mut page = Page::from_json(&json).map_err(|e| bad(&what, e))?;
            rows.append(&mut page.rows);
            let Some(next) = page.next_link else { return Ok(rows) };
            let next =
                Url::parse(&next).map_err(|e| bad(&what, ParseError::new("@odata.nextLink", &next, e.to_string())))?;
            if next.origin() != self.base.origin() {
                return Err(DeliveryError::Rejected {
                    vendor: VENDOR,
                    detail: format!("{what}: a paging link points at `{}`, not at Business Central", redact_url(&next)),
                });
            }
            url = next;
        }
    }

    /// `GET companies` (learn company ids first, reference C2).
    pub async fn companies(&self) -> Result<Vec<Company>, DeliveryError> {
        let rows = self.all_rows("companies", &[]).await?;
        rows.iter()
            .map(|r| {
                Ok(Company { id: required(r, "id")?, name: text(r, "name"), display_name: text(r, "displayName") })
            })
            .collect::<Result<_, ParseError>>()
            .map_err(|e| bad("companies", e))
    }

    /// Purchase orders with lines, optionally only those modified after `since`.
    pub async fn purchase_orders(
        &self,
        company_id: &str,
        since: Option<ZonedTime>,
    ) -> Result<Vec<PurchaseOrder>, DeliveryError> {
        let path = format!("companies({company_id})/purchaseOrders");
        let filter = since.map(|t| format!("lastModifiedDateTime gt {}", t.timestamp()));
        let mut query = vec![("$expand", "purchaseOrderLines")];
        if let Some(filter) = &filter {
            query.push(("$filter", filter));
        }
        let rows = self.all_rows(&path, &query).await?;
        rows.iter().map(|r| PurchaseOrder::from_row(r).map_err(|e| bad(&path, e))).collect()
    }

    /// One purchase order with its lines.
    pub async fn purchase_order(&self, company_id: &str, id: &str) -> Result<PurchaseOrder, DeliveryError> {
        let path = format!("companies({company_id})/purchaseOrders({id})");
        let url = self.url(&path, &[("$expand", "purchaseOrderLines")])?;
        let answer = self.transport.call_json(Method::GET, &url, &[], None, &format!("GET {path}")).await?;
        let row: Value =
            serde_json::from_slice(&answer.body).map_err(|e| bad(&path, ParseError::new("body", "", e.to_string())))?;
        PurchaseOrder::from_row(&row).map_err(|e| bad(&path, e))
    }

    /// Updates a purchase order; BC requires `If-Match` on every PATCH (reference C5).
    pub async fn update_purchase_order(
        &self,
        company_id: &str,
        id: &str,
        body: &Value,
        if_match: &IfMatch,
    ) -> Result<(), WriteError> {
        let path = format!("companies({company_id})/purchaseOrders({id})");
        let url = self.url(&path, &[])?;
        let what = format!("PATCH {path}");
        let tag = match if_match {
            IfMatch::Etag(tag) => tag.clone(),
            IfMatch::Exists => "*".to_owned(),
        };
        let body = Some(("application/json".to_owned(), body.to_string().into_bytes()));
        let answer = self.transport.send(Method::PATCH, &url, &[("If-Match", tag)], body).await?;
        if answer.status == 412 {
            let error = super::errors::parse_error(&answer.body);
            return Err(WriteError::Conflict { what, code: error.code, message: error.message });
        }
        if !(200..300).contains(&answer.status) {
            return Err(api_failure(answer.status, self.transport.retry_after(&answer), &answer.body, &what).into());
        }
        Ok(())
    }

    /// Like [`BcClient::purchase_order`], `None` when the purchase order does not exist
    /// (404 `Internal_RecordNotFound`).
    pub async fn find_purchase_order(
        &self,
        company_id: &str,
        id: &str,
    ) -> Result<Option<PurchaseOrder>, DeliveryError> {
        let path = format!("companies({company_id})/purchaseOrders({id})");
        let url = self.url(&path, &[("$expand", "purchaseOrderLines")])?;
        self.find_row(&url, &path)
            .await?
            .map(|row| PurchaseOrder::from_row(&row).map_err(|e| bad(&path, e)))
            .transpose()
    }

    /// GET of one row; `None` on 404 `Internal_RecordNotFound` (any other 404, e.g. an API that is
    /// not installed, is an error).
    async fn find_row(&self, url: &Url, path: &str) -> Result<Option<Value>, DeliveryError> {
        let what = format!("GET {path}");
        let answer = self.transport.send(Method::GET, url, &[], None).await?;
        if answer.status == 404 && super::errors::parse_error(&answer.body).code == "Internal_RecordNotFound" {
            return Ok(None);
        }
        if !(200..300).contains(&answer.status) {
            return Err(api_failure(answer.status, self.transport.retry_after(&answer), &answer.body, &what));
        }
        serde_json::from_slice(&answer.body)
            .map(Some)
            .map_err(|e| bad(&what, ParseError::new("body", "", e.to_string())))
    }

    /// The approvals extension's view of a purchase order (`purchaseOrderApprovals({id})`:
    /// `@odata.etag`, `status`, `lastDecisionKey`, `lastDecisionComment`, …); `None` when the
    /// purchase order does not exist.
    pub async fn purchase_order_approval(&self, company_id: &str, id: &str) -> Result<Option<Value>, DeliveryError> {
        let path = format!("../{APPROVALS_API_PATH}/companies({company_id})/purchaseOrderApprovals({id})");
        let url = self.url(&path, &[])?;
        self.find_row(&url, &path).await
    }

    /// Approves (`Microsoft.NAV.approve`) or rejects (`Microsoft.NAV.reject`) a purchase order in
    /// review through the approvals extension, only at `etag`, recording `decision_key` and
    /// `comment`. BC refusing the decision itself (412: changed since `etag`; 400 `Application_…`:
    /// e.g. no longer pending approval) comes back as `Ok(Err(refusal))` with BC's text.
    pub async fn decide_purchase_order(
        &self,
        company_id: &str,
        id: &str,
        approve: bool,
        comment: &str,
        decision_key: &str,
        etag: &str,
    ) -> Result<Result<(), crate::approval::ErpRefusal>, DeliveryError> {
        let action = if approve { "Microsoft.NAV.approve" } else { "Microsoft.NAV.reject" };
        let path = format!("../{APPROVALS_API_PATH}/companies({company_id})/purchaseOrderApprovals({id})/{action}");
        let url = self.url(&path, &[])?;
        let body = serde_json::json!({"comment": comment, "decisionKey": decision_key});
        let body = Some(("application/json".to_owned(), body.to_string().into_bytes()));
        let answer = self.transport.send(Method::POST, &url, &[("If-Match", etag.to_owned())], body).await?;
        let error = super::errors::parse_error(&answer.body);
        if answer.status == 412 || (answer.status == 400 && error.code.starts_with("Application_")) {
            return Ok(Err(crate::approval::ErpRefusal { message: error.message }));
        }
        if !(200..300).contains(&answer.status) {
            return Err(api_failure(
                answer.status,
                self.transport.retry_after(&answer),
                &answer.body,
                &format!("POST {path}"),
            ));
        }
        Ok(Ok(()))
    }

    /// `GET companies({id})/employees` rows (`number`, `displayName`, `givenName`, `surname`,
    /// `email`, `mobilePhone`, `status`, …).
    pub async fn employees(&self, company_id: &str) -> Result<Vec<Value>, DeliveryError> {
        self.all_rows(&format!("companies({company_id})/employees"), &[]).await
    }

    pub async fn items(&self, company_id: &str) -> Result<Vec<Item>, DeliveryError> {
        let path = format!("companies({company_id})/items");
        let rows = self.all_rows(&path, &[]).await?;
        rows.iter().map(|r| Item::from_row(r).map_err(|e| bad(&path, e))).collect()
    }

    pub async fn sales_shipments(&self, company_id: &str) -> Result<Vec<SalesShipment>, DeliveryError> {
        let path = format!("companies({company_id})/salesShipments");
        let rows = self.all_rows(&path, &[]).await?;
        rows.iter().map(|r| SalesShipment::from_row(r).map_err(|e| bad(&path, e))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purchase_order_page_fixture_reads_with_lines_and_money() {
        let json = fixtures::read_json("dynamics/bc_purchaseOrders_page_expand_lines.json");
        let page = Page::from_json(&json).unwrap();
        assert!(page.next_link.unwrap().ends_with("$skiptoken=106021"));
        let po = PurchaseOrder::from_row(&page.rows[0]).unwrap();
        assert_eq!(po.number.as_deref(), Some("106021"));
        assert_eq!(po.status.as_deref(), Some("In Review"));
        assert_eq!(po.total_including_tax.unwrap().amount_string(), "1710.00");
        assert_eq!(po.order_date, Some(jiff::civil::date(2024, 3, 15)));
        assert_eq!(po.last_modified.unwrap().timestamp().to_string(), "2024-03-15T02:31:07.433Z");
        let line = &po.lines[0];
        assert_eq!(line.quantity, Some(Decimal::from(1200)));
        assert_eq!(line.direct_unit_cost, Some("0.85".parse().unwrap()));
        assert_eq!(line.unit_of_measure_code.as_deref(), Some("PCS"));
    }

    #[test]
    fn single_purchase_order_fixture_reads_with_date_only_modified() {
        let po = PurchaseOrder::from_row(&fixtures::read_json("dynamics/bc_purchaseOrder_get.json")).unwrap();
        assert_eq!(po.total_tax.unwrap().amount_string(), "187.37");
        assert_eq!(po.currency_code.as_deref(), Some("USD"));
        assert_eq!(po.last_modified, None);
        assert!(po.lines.is_empty());
    }
}
