//! SAP documents in the canonical ERP shape ([`crate::erp`]): outbound deliveries as shipments
//! (OData `A_OutbDeliveryHeader` or DESADV IDoc), purchase orders (OData `A_PurchaseOrder` or
//! ORDERS05 IDoc) and purchase requisitions (OData `A_PurchaseRequisitionItem` rows grouped per
//! requisition).
//!
//! # One document, one shape, whichever path (S8)
//!
//! The OData and IDoc mappings write the same values: numeric keys without the IDoc's leading
//! zeros (reference A9), quantities in ISO units through the [`UomTable`] with decimals
//! normalised (`1200.000` = `1200`), dates as `YYYY-MM-DD`. What an IDoc does not carry cannot
//! be equal; the gaps (listed in the tests) are:
//! - DESADV has no picking / proof-of-delivery status: an IDoc delivery is `shipped` once E1EDT13
//!   `006` carries the actual goods issue (ISDD/ISDZ), else `not_started`; OData also knows
//!   `picked`, `partially_shipped` and `delivered`.
//! - DESADV names the ship-to (`WE`) but, as the simulator and the real fixture send it, no
//!   sold-to (`AG`): the IDoc `customer` is the `AG` partner when present, else the `WE` one.
//! - ORDERS05 has no change time and no supplier name: an IDoc purchase order has `as_of` null and
//!   `supplier.name` null, and its version is the IDoc's DOCNUM/sender (one IDoc = one state).
//!
//! # Statuses
//!
//! Delivery status letters (blank not relevant, A not yet, B partially, C completely):
//! proof of delivery C → `delivered`; goods movement C → `shipped`, B → `partially_shipped`;
//! else picking C → `picked`; else `not_started`. `status_text` is the SAP label of the deciding
//! status field ("Goods issue completed", "Picking completed", …). Purchase orders and
//! requisitions: `ReleaseIsNotCompleted` true → `pending_approval` ("Release not completed"),
//! processing status `08` → `rejected` (UNVERIFIED code, reference A2), else `approved`
//! ("Released"); an ORDERS05 IDoc is output only for a released order, so it reads `approved`.
//!
//! # Times
//!
//! A shipment's as-of time is the actual goods movement (ActualGoodsMovementDate + Time, a local
//! date and time of the SAP system, the same instant DESADV carries in E1EDT13 `006` ISDD/ISDZ)
//! once goods movement has started; before that SAP records only a change *date* on the header,
//! so `as_of` is null and the version is `"{status}@0"` (a status change still changes it).
//! [`shipment_from_delivery`] reads SAP local times in [`default_system_zone`] (Hong Kong, as
//! the simulator); the `IdocParser` must use the same zone, or call
//! [`shipment_from_delivery_in`] with the parser's zone. Purchase orders and requisitions are as
//! of `LastChangeDateTime`, which is also their version in ms (the ETag when there is no time).

use super::client::{
    service_root, Query, SapClient, OUTBOUND_DELIVERY_SERVICE, PURCHASE_ORDER_SERVICE, PURCHASE_REQUISITION_SERVICE,
};
use super::idoc::{DeliveryIdoc, OrderIdoc};
use super::records::PurchaseRequisitionItem;
use super::source::ChangeCursor;
use super::uom::UomTable;
use super::{wire, VENDOR};
use crate::erp::{
    as_of_json, money_json, opt_json, shipment_version, trim_numeric, ErpRecord, Line, MapError, ShipmentStatus,
    PURCHASE_ORDER, PURCHASE_REQUEST, SHIPMENT,
};
use connect::DeliveryError;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use model::{Currency, Decimal, Money, ParseError, Quantity, ZonedTime};
use serde_json::{json, Value};

/// Navigation expanded with delivery headers.
pub const DELIVERY_EXPAND: &str = "to_DeliveryDocumentItem";
/// Navigation expanded with purchase orders.
pub const PURCHASE_ORDER_EXPAND: &str = "to_PurchaseOrderItem";
/// Delivery header entity set.
pub const DELIVERY_SET: &str = "A_OutbDeliveryHeader";
/// Purchase order entity set.
pub const PURCHASE_ORDER_SET: &str = "A_PurchaseOrder";
/// Purchase requisition item entity set.
pub const REQUISITION_ITEM_SET: &str = "A_PurchaseRequisitionItem";

/// The zone SAP local dates and times (DATS/TIMS) are read in by default: Hong Kong, which has
/// had no daylight saving time since 1979, so a fixed +08:00 is exact.
pub fn default_system_zone() -> TimeZone {
    TimeZone::fixed(jiff::tz::offset(8))
}

/// The mapped facts of one delivery, whichever path they came from.
struct Delivery {
    object: &'static str,
    number: String,
    order: Option<String>,
    customer: Option<String>,
    status: ShipmentStatus,
    status_text: &'static str,
    as_of: Option<i64>,
    tracking: Vec<String>,
    lines: Vec<Line>,
}

impl Delivery {
    fn record(self) -> ErpRecord {
        let data = json!({
            "system": "sap",
            "number": self.number,
            "order": opt_json(self.order.as_deref()),
            "customer": opt_json(self.customer.as_deref()),
            "status": self.status.as_str(),
            "status_text": self.status_text,
            "as_of": as_of_json(self.as_of),
            "tracking": self.tracking,
            "lines": self.lines.iter().map(Line::shipment_json).collect::<Vec<_>>(),
        });
        ErpRecord {
            entity: SHIPMENT,
            entity_id: self.number,
            object: self.object.to_owned(),
            source_time_ms: self.as_of,
            version: shipment_version(self.status, self.as_of),
            data,
        }
    }
}

fn delivery_status(picking: &str, goods_movement: &str, proof_of_delivery: &str) -> (ShipmentStatus, &'static str) {
    match (proof_of_delivery, goods_movement, picking) {
        ("C", _, _) => (ShipmentStatus::Delivered, "Proof of delivery completed"),
        (_, "C", _) => (ShipmentStatus::Shipped, "Goods issue completed"),
        (_, "B", _) => (ShipmentStatus::PartiallyShipped, "Goods issue partially completed"),
        (_, _, "C") => (ShipmentStatus::Picked, "Picking completed"),
        (_, _, "B") => (ShipmentStatus::NotStarted, "Picking partially completed"),
        _ => (ShipmentStatus::NotStarted, "Not yet processed"),
    }
}

/// A quantity in the delivery (sales) unit when the unit table knows it, else in the base unit:
/// sales units such as `BAG` are item-specific packaging with no ISO code.
fn delivery_quantity(
    uoms: &UomTable,
    sales: (Decimal, &str),
    base: Result<Quantity, ParseError>,
) -> Result<(Decimal, Option<String>), ParseError> {
    if let Ok(unit) = uoms.sap_unit("DeliveryQuantityUnit", sales.1) {
        return Ok((sales.0, Some(unit.code().to_owned())));
    }
    let base = base?;
    Ok((base.value, Some(base.unit.code().to_owned())))
}

/// The actual goods movement instant of an OData header, in `zone`.
fn goods_movement_ms(header: &Value, zone: &TimeZone) -> Result<Option<i64>, ParseError> {
    let Some(date) = wire::date(header, "ActualGoodsMovementDate")? else { return Ok(None) };
    let time = wire::edm_time(header, "ActualGoodsMovementTime")?.unwrap_or(jiff::civil::Time::midnight());
    let at = ZonedTime::from_sap(
        "ActualGoodsMovementDate",
        &date.strftime("%Y%m%d").to_string(),
        &time.strftime("%H%M%S").to_string(),
        zone.clone(),
    )?;
    Ok(Some(at.as_millis()))
}

/// An `A_OutbDeliveryHeader` entity (the object inside `d`) with `to_DeliveryDocumentItem`
/// expanded (deferred or absent: no lines), SAP local times in [`default_system_zone`].
pub fn shipment_from_delivery(header: &Value, uoms: &UomTable) -> Result<ErpRecord, MapError> {
    shipment_from_delivery_in(header, uoms, &default_system_zone())
}

/// [`shipment_from_delivery`] for an SAP system in `zone`.
pub fn shipment_from_delivery_in(header: &Value, uoms: &UomTable, zone: &TimeZone) -> Result<ErpRecord, MapError> {
    let raw = wire::opt_string(header, "DeliveryDocument")
        .ok_or_else(|| MapError::missing(DELIVERY_SET, "?", "DeliveryDocument"))?;
    let number = trim_numeric(&raw);
    let err = |e: ParseError| MapError::parse(DELIVERY_SET, &number, e);
    let text = |field: &str| wire::opt_string(header, field).unwrap_or_default();
    let goods_movement = text("OverallGoodsMovementStatus");
    let (status, status_text) =
        delivery_status(&text("OverallPickingStatus"), &goods_movement, &text("OverallProofOfDeliveryStatus"));
    let as_of = match goods_movement.as_str() {
        "B" | "C" => goods_movement_ms(header, zone).map_err(err)?,
        _ => None,
    };
    let items = wire::expanded(header, DELIVERY_EXPAND).map(Vec::as_slice).unwrap_or_default();
    let lines = items
        .iter()
        .map(|item| {
            let line = wire::string(item, "DeliveryDocumentItem").map_err(err)?;
            let sales = (
                wire::decimal(item, "ActualDeliveryQuantity").map_err(err)?,
                wire::string(item, "DeliveryQuantityUnit").map_err(err)?,
            );
            let base = wire::string(item, "ActualDeliveredQtyInBaseUnit")
                .and_then(|v| uoms.sap_quantity("ActualDeliveredQtyInBaseUnit", &v, &wire::string(item, "BaseUnit")?));
            Ok(Line {
                line: trim_numeric(&line),
                item: wire::opt_string(item, "Material").map(|m| trim_numeric(&m)),
                description: wire::opt_string(item, "DeliveryDocumentItemText"),
                quantity: Some(delivery_quantity(uoms, (sales.0, &sales.1), base).map_err(err)?),
                unit_price: None,
                amount: None,
            })
        })
        .collect::<Result<Vec<_>, MapError>>()?;
    let order = items.first().and_then(|i| wire::opt_string(i, "ReferenceSDDocument")).map(|o| trim_numeric(&o));
    Ok(Delivery {
        object: DELIVERY_SET,
        order,
        customer: wire::opt_string(header, "SoldToParty").map(|c| trim_numeric(&c)),
        status,
        status_text,
        as_of,
        tracking: wire::opt_string(header, "BillOfLading").into_iter().collect(),
        lines,
        number,
    }
    .record())
}

/// A DESADV IDoc as a shipment (same id and data as the OData path, see the module notes).
pub fn shipment_from_idoc(idoc: &DeliveryIdoc, uoms: &UomTable) -> Result<ErpRecord, MapError> {
    let number = trim_numeric(&idoc.delivery);
    let goods_issue = idoc.dates.iter().find(|d| d.qualifier == "006").and_then(|d| d.actual);
    let (status, status_text) = match goods_issue {
        Some(_) => delivery_status("", "C", ""),
        None => delivery_status("", "", ""),
    };
    let partner = |role: &str| idoc.partners.iter().find(|p| p.role == role).map(|p| trim_numeric(&p.id));
    let lines = idoc
        .items
        .iter()
        .map(|item| {
            let quantity = delivery_quantity(uoms, (item.sales_quantity, &item.sales_unit), Ok(item.base_quantity))
                .map_err(|e| MapError::parse("DESADV", &number, e))?;
            Ok(Line {
                line: trim_numeric(&item.item),
                item: item.material.as_deref().map(trim_numeric),
                description: item.description.clone(),
                quantity: Some(quantity),
                unit_price: None,
                amount: None,
            })
        })
        .collect::<Result<Vec<_>, MapError>>()?;
    Ok(Delivery {
        object: "DESADV",
        order: idoc.items.first().and_then(|i| i.reference_document.as_deref()).map(trim_numeric),
        customer: partner("AG").or_else(|| partner("WE")),
        status,
        status_text,
        as_of: goods_issue.map(|t| t.as_millis()),
        tracking: idoc.bill_of_lading.iter().cloned().collect(),
        lines,
        number,
    }
    .record())
}

/// `price` per `per` units as a unit price, `None` when it does not fit the currency's minor
/// units (a rounded unit price times the quantity would no longer give the line amount).
fn unit_price(price: Money, per: Decimal) -> Option<Money> {
    if per.is_zero() {
        return None;
    }
    Money::new("unit_price", price.amount / per, price.currency).ok()
}

/// Net value of a line as SAP prints it on the PO (and ORDERS05 NETWR): quantity × price ÷ price
/// quantity, rounded to the currency.
fn net_value(quantity: Decimal, price: Money, per: Decimal) -> Option<Money> {
    if per.is_zero() {
        return None;
    }
    let net = (quantity * price.amount / per).round_dp(price.currency.minor_units());
    Money::new("net", net, price.currency).ok()
}

fn sum(amounts: impl Iterator<Item = Option<Money>>, currency: Currency) -> Option<Money> {
    let mut total = Decimal::ZERO;
    for amount in amounts {
        let amount = amount?;
        if amount.currency != currency {
            return None;
        }
        total += amount.amount;
    }
    Money::new("amount", total, currency).ok()
}

/// The release state of a purchase order or requisition.
fn release_status(not_completed: bool, processing: Option<&str>) -> (&'static str, &'static str) {
    match (processing, not_completed) {
        (Some("08"), _) => ("rejected", "Rejected"),
        (_, true) => ("pending_approval", "Release not completed"),
        _ => ("approved", "Released"),
    }
}

/// The mapped facts of one purchase order.
struct Order {
    object: &'static str,
    number: String,
    status: (&'static str, &'static str),
    supplier: (Option<String>, Option<String>),
    order_date: Option<String>,
    amount: Option<Money>,
    lines: Vec<Line>,
    as_of: Option<i64>,
    version: String,
}

impl Order {
    fn record(self) -> ErpRecord {
        let data = json!({
            "system": "sap",
            "number": self.number,
            "status": self.status.0,
            "status_text": self.status.1,
            "supplier": {"id": opt_json(self.supplier.0.as_deref()), "name": opt_json(self.supplier.1.as_deref())},
            "order_date": opt_json(self.order_date.as_deref()),
            "amount": money_json(self.amount),
            "lines": self.lines.iter().map(Line::priced_json).collect::<Vec<_>>(),
            "as_of": as_of_json(self.as_of),
        });
        ErpRecord {
            entity: PURCHASE_ORDER,
            entity_id: self.number,
            object: self.object.to_owned(),
            source_time_ms: self.as_of,
            version: self.version,
            data,
        }
    }
}

/// An `A_PurchaseOrder` entity with `to_PurchaseOrderItem` expanded (deferred or absent: no lines).
pub fn purchase_order_from_odata(po: &Value, uoms: &UomTable) -> Result<ErpRecord, MapError> {
    let raw = wire::opt_string(po, "PurchaseOrder")
        .ok_or_else(|| MapError::missing(PURCHASE_ORDER_SET, "?", "PurchaseOrder"))?;
    let number = trim_numeric(&raw);
    let err = |e: ParseError| MapError::parse(PURCHASE_ORDER_SET, &number, e);
    let currency_code = wire::opt_string(po, "DocumentCurrency")
        .ok_or_else(|| MapError::missing(PURCHASE_ORDER_SET, &number, "DocumentCurrency"))?;
    let currency = Currency::parse("DocumentCurrency", &currency_code).map_err(err)?;
    let items = wire::expanded(po, PURCHASE_ORDER_EXPAND).map(Vec::as_slice).unwrap_or_default();
    let lines = items
        .iter()
        .map(|item| {
            let quantity = uoms
                .sap_quantity(
                    "OrderQuantity",
                    &wire::string(item, "OrderQuantity").map_err(err)?,
                    &wire::string(item, "PurchaseOrderQuantityUnit").map_err(err)?,
                )
                .map_err(err)?;
            let price =
                Money::parse("NetPriceAmount", &wire::string(item, "NetPriceAmount").map_err(err)?, currency.code())
                    .map_err(err)?;
            let per = wire::decimal(item, "NetPriceQuantity").map_err(err)?;
            Ok(Line {
                line: trim_numeric(&wire::string(item, "PurchaseOrderItem").map_err(err)?),
                item: wire::opt_string(item, "Material").map(|m| trim_numeric(&m)),
                description: wire::opt_string(item, "PurchaseOrderItemText"),
                quantity: Some((quantity.value, Some(quantity.unit.code().to_owned()))),
                unit_price: unit_price(price, per),
                amount: net_value(quantity.value, price, per),
            })
        })
        .collect::<Result<Vec<_>, MapError>>()?;
    let as_of = wire::instant(po, "LastChangeDateTime").map_err(err)?.map(|t| t.as_millis());
    let version = match (as_of, wire::etag(po)) {
        (Some(ms), _) => ms.to_string(),
        (None, Some(etag)) => etag,
        (None, None) => return Err(MapError::missing(PURCHASE_ORDER_SET, &number, "LastChangeDateTime")),
    };
    let release_not_completed = po["ReleaseIsNotCompleted"].as_bool().unwrap_or(false);
    let processing = wire::opt_string(po, "PurchasingProcessingStatus");
    Ok(Order {
        object: PURCHASE_ORDER_SET,
        status: release_status(release_not_completed, processing.as_deref()),
        supplier: (wire::opt_string(po, "Supplier").map(|s| trim_numeric(&s)), wire::opt_string(po, "AddressName")),
        order_date: wire::date(po, "PurchaseOrderDate").map_err(err)?.map(|d| d.to_string()),
        amount: if lines.is_empty() { None } else { sum(lines.iter().map(|l| l.amount), currency) },
        lines,
        as_of,
        version,
        number,
    }
    .record())
}

/// An ORDERS05 IDoc as a purchase order. Its units are ISO codes already, parsed by the
/// `IdocParser`; `_uoms` keeps the signature of the OData path.
pub fn purchase_order_from_idoc(idoc: &OrderIdoc, _uoms: &UomTable) -> Result<ErpRecord, MapError> {
    let number = trim_numeric(&idoc.document);
    let lines = idoc
        .items
        .iter()
        .map(|item| Line {
            line: trim_numeric(&item.item),
            item: item.material.as_deref().map(trim_numeric),
            description: item.description.clone(),
            quantity: Some((item.quantity.value, Some(item.quantity.unit.code().to_owned()))),
            unit_price: item.price.and_then(|p| unit_price(p, item.price_unit)),
            amount: item.net_value,
        })
        .collect::<Vec<_>>();
    let currency = Currency::parse("CURCY", &idoc.currency).map_err(|e| MapError::parse("ORDERS05", &number, e))?;
    let amount = match idoc.total {
        Some(total) => Some(total),
        None if lines.is_empty() => None,
        None => sum(lines.iter().map(|l| l.amount), currency),
    };
    Ok(Order {
        object: "ORDERS05",
        status: release_status(false, None),
        supplier: (idoc.vendor().map(trim_numeric), None),
        order_date: idoc.document_date.map(|d| d.to_string()),
        amount,
        lines,
        as_of: None,
        version: format!("idoc:{}", idoc.control.idempotency_key()),
        number,
    }
    .record())
}

/// `A_PurchaseRequisitionItem` rows grouped per requisition, in the order requisitions first
/// appear. A requisition is pending approval while any of its items' release is not completed.
pub fn purchase_requests_from_items(items: &[Value], uoms: &UomTable) -> Result<Vec<ErpRecord>, MapError> {
    let mut groups: Vec<(String, Vec<(&Value, PurchaseRequisitionItem)>)> = Vec::new();
    for raw in items {
        let number = wire::opt_string(raw, "PurchaseRequisition")
            .ok_or_else(|| MapError::missing(REQUISITION_ITEM_SET, "?", "PurchaseRequisition"))?;
        let parsed = PurchaseRequisitionItem::from_entity(raw, uoms)
            .map_err(|e| MapError::parse(REQUISITION_ITEM_SET, &number, e))?;
        match groups.iter_mut().find(|(n, _)| *n == number) {
            Some((_, list)) => list.push((raw, parsed)),
            None => groups.push((number, vec![(raw, parsed)])),
        }
    }
    groups.into_iter().map(|(number, list)| purchase_request(&number, &list)).collect()
}

fn purchase_request(number: &str, items: &[(&Value, PurchaseRequisitionItem)]) -> Result<ErpRecord, MapError> {
    // Release status 08 (rejected) on an item rejects the requisition, as on purchase orders.
    let rejected = items.iter().any(|(raw, _)| wire::opt_string(raw, "PurReqnReleaseStatus").as_deref() == Some("08"));
    let pending = !rejected && items.iter().any(|(_, i)| i.release_not_completed);
    let (status, status_text) = release_status(pending, rejected.then_some("08"));
    let lines = items
        .iter()
        .map(|(_, i)| Line {
            line: trim_numeric(&i.item),
            item: i.material.as_deref().map(trim_numeric),
            description: Some(i.text.clone()).filter(|t| !t.is_empty()),
            quantity: Some((i.quantity.value, Some(i.quantity.unit.code().to_owned()))),
            unit_price: i.price.and_then(|p| unit_price(p, i.price_quantity)),
            amount: i.net_amount,
        })
        .collect::<Vec<_>>();
    let amount =
        lines.first().and_then(|l| l.amount).and_then(|first| sum(lines.iter().map(|l| l.amount), first.currency));
    let as_of = items.iter().filter_map(|(_, i)| i.last_changed.map(|t| t.as_millis())).max();
    let version = match as_of {
        Some(ms) => ms.to_string(),
        None => {
            let etags: Vec<&str> = items.iter().filter_map(|(_, i)| i.etag.as_deref()).collect();
            if etags.is_empty() {
                return Err(MapError::missing(REQUISITION_ITEM_SET, number, "LastChangeDateTime"));
            }
            etags.join(",")
        }
    };
    let (first_raw, first) = &items[0];
    let data = json!({
        "system": "sap",
        "number": trim_numeric(number),
        "status": status,
        "status_text": status_text,
        "pending_approval": pending,
        "requester": {
            "id": opt_json(wire::opt_string(first_raw, "CreatedByUser").as_deref()),
            "name": opt_json(first.requisitioner.as_deref()),
        },
        "amount": money_json(amount),
        "lines": lines.iter().map(Line::priced_json).collect::<Vec<_>>(),
        "as_of": as_of_json(as_of),
        "version": version,
        // What a release decision needs: the requisition, its strategy and code. The workflow
        // task id is not on the requisition; it comes from TASKPROCESSING when deciding.
        "approval": {
            "purchase_requisition": number,
            "items": items.iter().map(|(_, i)| i.item.clone()).collect::<Vec<_>>(),
            "release_strategy": opt_json(first.release_strategy.as_deref()),
            "release_code": opt_json(first.release_code.as_deref()),
            "workflow_task_id": null,
        },
    });
    Ok(ErpRecord {
        entity: PURCHASE_REQUEST,
        entity_id: trim_numeric(number),
        object: REQUISITION_ITEM_SET.to_owned(),
        source_time_ms: as_of,
        version,
        data,
    })
}

/// GET of one entity with `expand`; `None` on 404 (the document does not exist, or no longer).
async fn find_entity(
    client: &SapClient,
    service: &str,
    path: &str,
    expand: &str,
) -> Result<Option<Value>, DeliveryError> {
    let root = service_root(service);
    let url = client.url(&root, path, &[("$expand".to_owned(), expand.to_owned())])?;
    let answer = client.send(http::Method::GET, &url, &[], None).await?;
    let what = format!("GET {path}");
    if answer.status == 404 {
        return Ok(None);
    }
    if !(200..300).contains(&answer.status) {
        // The client's clock is private; "now" only turns a Retry-After date into a delay.
        return Err(super::errors::api_failure(answer.status, &answer.headers, &answer.body, &what, Timestamp::now()));
    }
    let body: Value = serde_json::from_slice(&answer.body).map_err(|e| DeliveryError::Rejected {
        vendor: VENDOR,
        detail: format!("{what}: the answer is not JSON ({e})"),
    })?;
    wire::entity(&body)
        .cloned()
        .map(Some)
        .map_err(|e| DeliveryError::Rejected { vendor: VENDOR, detail: format!("{what}: {e}") })
}

/// One delivery with its items; `None` when it does not exist.
pub async fn read_delivery(client: &SapClient, number: &str) -> Result<Option<ErpRecord>, DeliveryError> {
    let path = wire::key_path(DELIVERY_SET, &[("DeliveryDocument", number)]);
    let Some(entity) = find_entity(client, OUTBOUND_DELIVERY_SERVICE, &path, DELIVERY_EXPAND).await? else {
        return Ok(None);
    };
    shipment_from_delivery(&entity, client.uoms()).map(Some).map_err(|e| e.into_delivery(VENDOR))
}

/// One purchase order with its items; `None` when it does not exist.
pub async fn read_purchase_order(client: &SapClient, number: &str) -> Result<Option<ErpRecord>, DeliveryError> {
    let path = wire::key_path(PURCHASE_ORDER_SET, &[("PurchaseOrder", number)]);
    let Some(entity) = find_entity(client, PURCHASE_ORDER_SERVICE, &path, PURCHASE_ORDER_EXPAND).await? else {
        return Ok(None);
    };
    purchase_order_from_odata(&entity, client.uoms()).map(Some).map_err(|e| e.into_delivery(VENDOR))
}

/// One purchase requisition (all its items, mapped like [`pending_purchase_requests`]); `None`
/// when it has no items (it does not exist, or no longer).
pub async fn read_purchase_request(client: &SapClient, number: &str) -> Result<Option<ErpRecord>, DeliveryError> {
    let root = service_root(PURCHASE_REQUISITION_SERVICE);
    let query = Query::default()
        .filter(format!("PurchaseRequisition eq {}", wire::string_literal(number)))
        .orderby("PurchaseRequisitionItem asc");
    let items = client.get_all(&root, REQUISITION_ITEM_SET, &query).await?;
    let records = purchase_requests_from_items(&items, client.uoms()).map_err(|e| e.into_delivery(VENDOR))?;
    Ok(records.into_iter().next())
}

/// Requisitions with an item awaiting release: the pending items name the requisitions, then all
/// items of those requisitions are read so released items of the same requisition are not lost.
pub async fn pending_purchase_requests(client: &SapClient) -> Result<Vec<ErpRecord>, DeliveryError> {
    let root = service_root(PURCHASE_REQUISITION_SERVICE);
    let pending_query = Query::default()
        .filter("ReleaseIsNotCompleted eq true")
        .select(&["PurchaseRequisition"])
        .orderby("PurchaseRequisition asc");
    let mut numbers: Vec<String> = Vec::new();
    for row in client.get_all(&root, REQUISITION_ITEM_SET, &pending_query).await? {
        if let Some(number) = wire::opt_string(&row, "PurchaseRequisition") {
            if !numbers.contains(&number) {
                numbers.push(number);
            }
        }
    }
    if numbers.is_empty() {
        return Ok(Vec::new());
    }
    let filter = numbers
        .iter()
        .map(|n| format!("PurchaseRequisition eq {}", wire::string_literal(n)))
        .collect::<Vec<_>>()
        .join(" or ");
    let query = Query::default().filter(filter).orderby("PurchaseRequisition asc,PurchaseRequisitionItem asc");
    let items = client.get_all(&root, REQUISITION_ITEM_SET, &query).await?;
    purchase_requests_from_items(&items, client.uoms()).map_err(|e| e.into_delivery(VENDOR))
}

/// Rows one poll page asks for (`$top`).
pub const POLL_PAGE_SIZE: u32 = 200;

/// One page of the deliveries changed since the cursor, items expanded, each version once, and
/// whether more follow. `A_OutbDeliveryHeader` has only `LastChangeDate` (a date), so a scan
/// starts a day before the watermark's date: whole days are re-read and the cursor drops the
/// versions it has already delivered.
pub async fn poll_deliveries(
    client: &SapClient,
    cursor: &mut ChangeCursor,
) -> Result<(Vec<ErpRecord>, bool), DeliveryError> {
    let date = |at: Timestamp| wire::datetime_literal(at.to_zoned(TimeZone::UTC).date());
    let start = cursor.watermark().map(|watermark| {
        let since = watermark.checked_sub(SignedDuration::from_hours(24)).unwrap_or(watermark);
        format!("LastChangeDate ge {}", date(since))
    });
    let mut query = Query::default()
        .expand(&[DELIVERY_EXPAND])
        .orderby("LastChangeDate asc,DeliveryDocument asc")
        .top(POLL_PAGE_SIZE);
    if let Some(filter) = cursor.page_filter("LastChangeDate", "DeliveryDocument", date, start) {
        query = query.filter(filter);
    }
    let rows = client.get_all(&service_root(OUTBOUND_DELIVERY_SERVICE), DELIVERY_SET, &query).await?;
    let full = rows.len() >= POLL_PAGE_SIZE as usize;
    let (mut out, mut last) = (Vec::new(), None);
    for row in rows {
        let record = shipment_from_delivery(&row, client.uoms()).map_err(|e| e.into_delivery(VENDOR))?;
        let changed = wire::instant(&row, "LastChangeDate")
            .map_err(|e| MapError::parse(DELIVERY_SET, &record.entity_id, e).into_delivery(VENDOR))?
            .map(|t| t.timestamp());
        let Some(changed) = changed else { continue };
        // The key as the service orders it (with its leading zeros), not the trimmed entity id.
        last = Some((changed, row["DeliveryDocument"].as_str().unwrap_or_default().to_owned()));
        if cursor.accept(&record.entity_id, &record.version, changed) {
            out.push(record);
        }
    }
    let more = cursor.end_page(last, full);
    Ok((out, more))
}

/// One page of the purchase orders changed since the cursor (`LastChangeDateTime`), items
/// expanded, each version once, and whether more follow.
pub async fn poll_purchase_orders_canonical(
    client: &SapClient,
    cursor: &mut ChangeCursor,
) -> Result<(Vec<ErpRecord>, bool), DeliveryError> {
    let (field, key_field) = ("LastChangeDateTime", "PurchaseOrder");
    let mut query = Query::default()
        .orderby(format!("{field} asc,{key_field} asc"))
        .expand(&[PURCHASE_ORDER_EXPAND])
        .top(POLL_PAGE_SIZE);
    if let Some(filter) = cursor.page_filter(field, key_field, wire::datetimeoffset_literal, cursor.filter(field)) {
        query = query.filter(filter);
    }
    let rows = client.get_all(&service_root(PURCHASE_ORDER_SERVICE), PURCHASE_ORDER_SET, &query).await?;
    let full = rows.len() >= POLL_PAGE_SIZE as usize;
    let (mut out, mut last) = (Vec::new(), None);
    for row in rows {
        let record = purchase_order_from_odata(&row, client.uoms()).map_err(|e| e.into_delivery(VENDOR))?;
        let Some(changed) = record.source_time_ms.and_then(|ms| Timestamp::from_millisecond(ms).ok()) else { continue };
        last = Some((changed, row[key_field].as_str().unwrap_or_default().to_owned()));
        if cursor.accept(&record.entity_id, &record.version, changed) {
            out.push(record);
        }
    }
    let more = cursor.end_page(last, full);
    Ok((out, more))
}

#[cfg(test)]
#[path = "canonical_tests.rs"]
mod tests;
