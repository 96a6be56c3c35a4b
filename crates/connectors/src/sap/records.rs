//! Typed views of the OData entities dingbridge reads (reference A2), parsed from the wire JSON
//! with exact decimals, calendar dates for date-only fields and units through the [`UomTable`].

use super::uom::UomTable;
use super::wire;
use jiff::civil::{Date, Time};
use model::{Decimal, Money, ParseError, Quantity, ZonedTime};
use serde_json::Value;

/// `A_PurchaseRequisitionItem`.
#[derive(Debug, Clone, PartialEq)]
pub struct PurchaseRequisitionItem {
    pub requisition: String,
    pub item: String,
    pub material: Option<String>,
    pub text: String,
    pub quantity: Quantity,
    /// Price per `price_quantity` units, in `PurReqnItemCurrency`.
    pub price: Option<Money>,
    pub price_quantity: Decimal,
    pub net_amount: Option<Money>,
    pub plant: String,
    pub company_code: String,
    pub purchasing_group: String,
    pub delivery_date: Option<Date>,
    pub creation_date: Option<Date>,
    pub requisitioner: Option<String>,
    pub fixed_supplier: Option<String>,
    pub release_strategy: Option<String>,
    pub release_code: Option<String>,
    /// The primary "awaiting approval" flag (reference A2).
    pub release_not_completed: bool,
    pub last_changed: Option<ZonedTime>,
    pub etag: Option<String>,
}

impl PurchaseRequisitionItem {
    pub fn from_entity(e: &Value, uoms: &UomTable) -> Result<Self, ParseError> {
        let currency = wire::opt_string(e, "PurReqnItemCurrency");
        let money = |field: &str| -> Result<Option<Money>, ParseError> {
            match &currency {
                Some(c) => Money::parse(field, &wire::string(e, field)?, c).map(Some),
                None => Ok(None),
            }
        };
        Ok(Self {
            requisition: wire::string(e, "PurchaseRequisition")?,
            item: wire::string(e, "PurchaseRequisitionItem")?,
            material: wire::opt_string(e, "Material"),
            text: wire::opt_string(e, "PurchaseRequisitionItemText").unwrap_or_default(),
            quantity: uoms.sap_quantity(
                "RequestedQuantity",
                &wire::string(e, "RequestedQuantity")?,
                &wire::string(e, "BaseUnit")?,
            )?,
            price: money("PurchaseRequisitionPrice")?,
            price_quantity: wire::decimal(e, "PurReqnPriceQuantity")?,
            net_amount: money("ItemNetAmount")?,
            plant: wire::string(e, "Plant")?,
            company_code: wire::opt_string(e, "CompanyCode").unwrap_or_default(),
            purchasing_group: wire::opt_string(e, "PurchasingGroup").unwrap_or_default(),
            delivery_date: wire::date(e, "DeliveryDate")?,
            creation_date: wire::date(e, "CreationDate")?,
            requisitioner: wire::opt_string(e, "RequisitionerName"),
            fixed_supplier: wire::opt_string(e, "FixedSupplier"),
            release_strategy: wire::opt_string(e, "ReleaseStrategy"),
            release_code: wire::opt_string(e, "ReleaseCode"),
            release_not_completed: wire::boolean(e, "ReleaseIsNotCompleted")?,
            last_changed: wire::instant(e, "LastChangeDateTime")?,
            etag: wire::etag(e),
        })
    }
}

/// `A_PurchaseOrder`, with its items when `to_PurchaseOrderItem` was expanded.
#[derive(Debug, Clone, PartialEq)]
pub struct PurchaseOrder {
    pub number: String,
    pub company_code: String,
    pub order_type: String,
    pub supplier: String,
    pub purchasing_org: String,
    pub purchasing_group: String,
    pub order_date: Option<Date>,
    pub currency: String,
    /// EKKO-PROCSTAT, a 2-char code (meanings UNVERIFIED, reference A2).
    pub processing_status: Option<String>,
    pub release_not_completed: bool,
    pub last_changed: Option<ZonedTime>,
    pub etag: Option<String>,
    /// Empty unless the items were expanded.
    pub items: Vec<PurchaseOrderItem>,
}

/// `A_PurchaseOrderItem`.
#[derive(Debug, Clone, PartialEq)]
pub struct PurchaseOrderItem {
    pub item: String,
    pub material: Option<String>,
    pub text: String,
    pub plant: String,
    pub storage_location: Option<String>,
    pub quantity: Quantity,
    /// Net price per `price_quantity` order-price units.
    pub net_price: Money,
    pub price_quantity: Decimal,
    /// Source requisition (number, item) when the item came from one.
    pub requisition: Option<(String, String)>,
}

impl PurchaseOrder {
    pub fn from_entity(e: &Value, uoms: &UomTable) -> Result<Self, ParseError> {
        let items = match wire::expanded(e, "to_PurchaseOrderItem") {
            Some(list) => list.iter().map(|i| PurchaseOrderItem::from_entity(i, uoms)).collect::<Result<_, _>>()?,
            None => Vec::new(),
        };
        Ok(Self {
            number: wire::string(e, "PurchaseOrder")?,
            company_code: wire::opt_string(e, "CompanyCode").unwrap_or_default(),
            order_type: wire::opt_string(e, "PurchaseOrderType").unwrap_or_default(),
            supplier: wire::opt_string(e, "Supplier").unwrap_or_default(),
            purchasing_org: wire::opt_string(e, "PurchasingOrganization").unwrap_or_default(),
            purchasing_group: wire::opt_string(e, "PurchasingGroup").unwrap_or_default(),
            order_date: wire::date(e, "PurchaseOrderDate")?,
            currency: wire::string(e, "DocumentCurrency")?,
            processing_status: wire::opt_string(e, "PurchasingProcessingStatus"),
            release_not_completed: wire::boolean(e, "ReleaseIsNotCompleted")?,
            last_changed: wire::instant(e, "LastChangeDateTime")?,
            etag: wire::etag(e),
            items,
        })
    }
}

impl PurchaseOrderItem {
    pub fn from_entity(e: &Value, uoms: &UomTable) -> Result<Self, ParseError> {
        let requisition = wire::opt_string(e, "PurchaseRequisition")
            .map(|pr| (pr, wire::opt_string(e, "PurchaseRequisitionItem").unwrap_or_default()));
        Ok(Self {
            item: wire::string(e, "PurchaseOrderItem")?,
            material: wire::opt_string(e, "Material"),
            text: wire::opt_string(e, "PurchaseOrderItemText").unwrap_or_default(),
            plant: wire::string(e, "Plant")?,
            storage_location: wire::opt_string(e, "StorageLocation"),
            quantity: uoms.sap_quantity(
                "OrderQuantity",
                &wire::string(e, "OrderQuantity")?,
                &wire::string(e, "PurchaseOrderQuantityUnit")?,
            )?,
            net_price: Money::parse(
                "NetPriceAmount",
                &wire::string(e, "NetPriceAmount")?,
                &wire::string(e, "DocumentCurrency")?,
            )?,
            price_quantity: wire::decimal(e, "NetPriceQuantity")?,
            requisition,
        })
    }
}

/// One `A_MatlStkInAcctMod` row: stock of a material per plant, storage location, batch and
/// stock type (`01` unrestricted, `02` quality inspection, ...).
#[derive(Debug, Clone, PartialEq)]
pub struct StockRow {
    pub material: String,
    pub plant: String,
    pub storage_location: String,
    pub batch: Option<String>,
    pub stock_type: String,
    pub special_stock_type: Option<String>,
    pub quantity: Quantity,
}

impl StockRow {
    pub fn from_entity(e: &Value, uoms: &UomTable) -> Result<Self, ParseError> {
        Ok(Self {
            material: wire::string(e, "Material")?,
            plant: wire::string(e, "Plant")?,
            storage_location: wire::string(e, "StorageLocation")?,
            batch: wire::opt_string(e, "Batch"),
            stock_type: wire::string(e, "InventoryStockType")?,
            special_stock_type: wire::opt_string(e, "InventorySpecialStockType"),
            quantity: uoms.sap_quantity(
                "MatlWrhsStkQtyInMatlBaseUnit",
                &wire::string(e, "MatlWrhsStkQtyInMatlBaseUnit")?,
                &wire::string(e, "MaterialBaseUnit")?,
            )?,
        })
    }
}

/// `A_OutbDeliveryHeader`. Status letters: blank not relevant, A not yet, B partially, C completely.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboundDelivery {
    pub number: String,
    pub delivery_type: String,
    pub shipping_point: String,
    pub sold_to: String,
    pub ship_to: String,
    pub planned_goods_issue: Option<Date>,
    pub actual_goods_movement_date: Option<Date>,
    pub actual_goods_movement_time: Option<Time>,
    pub delivery_date: Option<Date>,
    pub picking_status: String,
    pub goods_movement_status: String,
    pub gross_weight: Option<Quantity>,
    pub net_weight: Option<Quantity>,
    pub bill_of_lading: Option<String>,
    pub packages: Option<u32>,
    pub last_change_date: Option<Date>,
    pub etag: Option<String>,
}

impl OutboundDelivery {
    pub fn from_entity(e: &Value, uoms: &UomTable) -> Result<Self, ParseError> {
        let weight_unit = wire::opt_string(e, "HeaderWeightUnit");
        let weight = |field: &str| -> Result<Option<Quantity>, ParseError> {
            match &weight_unit {
                Some(unit) => uoms.sap_quantity(field, &wire::string(e, field)?, unit).map(Some),
                None => Ok(None),
            }
        };
        let packages = match wire::opt_string(e, "TotalNumberOfPackage") {
            Some(text) => Some(
                text.trim()
                    .parse::<u32>()
                    .map_err(|_| ParseError::new("TotalNumberOfPackage", &text, "is not a package count"))?,
            ),
            None => None,
        };
        Ok(Self {
            number: wire::string(e, "DeliveryDocument")?,
            delivery_type: wire::opt_string(e, "DeliveryDocumentType").unwrap_or_default(),
            shipping_point: wire::opt_string(e, "ShippingPoint").unwrap_or_default(),
            sold_to: wire::opt_string(e, "SoldToParty").unwrap_or_default(),
            ship_to: wire::opt_string(e, "ShipToParty").unwrap_or_default(),
            planned_goods_issue: wire::date(e, "PlannedGoodsIssueDate")?,
            actual_goods_movement_date: wire::date(e, "ActualGoodsMovementDate")?,
            actual_goods_movement_time: wire::edm_time(e, "ActualGoodsMovementTime")?,
            delivery_date: wire::date(e, "DeliveryDate")?,
            picking_status: wire::opt_string(e, "OverallPickingStatus").unwrap_or_default(),
            goods_movement_status: wire::opt_string(e, "OverallGoodsMovementStatus").unwrap_or_default(),
            gross_weight: weight("HeaderGrossWeight")?,
            net_weight: weight("HeaderNetWeight")?,
            bill_of_lading: wire::opt_string(e, "BillOfLading"),
            packages,
            last_change_date: wire::date(e, "LastChangeDate")?,
            etag: wire::etag(e),
        })
    }
}

/// A `TASKPROCESSING` `DecisionOptions` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecisionOption {
    pub origin: String,
    pub instance_id: String,
    pub key: String,
    pub text: String,
    pub comment_mandatory: bool,
    /// `POSITIVE` / `NEGATIVE` (may be empty).
    pub nature: String,
}

impl DecisionOption {
    pub fn from_entity(e: &Value) -> Result<Self, ParseError> {
        Ok(Self {
            origin: wire::string(e, "SAP__Origin")?,
            instance_id: wire::string(e, "InstanceID")?,
            key: wire::string(e, "DecisionKey")?,
            text: wire::opt_string(e, "DecisionText").unwrap_or_default(),
            comment_mandatory: e.get("CommentMandatory").and_then(Value::as_bool).unwrap_or(false),
            nature: wire::opt_string(e, "Nature").unwrap_or_default(),
        })
    }
}

/// A `TASKPROCESSING` `Task` (work item).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    pub origin: String,
    pub instance_id: String,
    pub definition_id: String,
    pub title: String,
    /// `READY`, `RESERVED`, `IN_PROGRESS`, `COMPLETED`, ...
    pub status: String,
    pub processor: Option<String>,
    pub completed_on: Option<ZonedTime>,
}

impl Task {
    pub fn from_entity(e: &Value) -> Result<Self, ParseError> {
        Ok(Self {
            origin: wire::string(e, "SAP__Origin")?,
            instance_id: wire::string(e, "InstanceID")?,
            definition_id: wire::opt_string(e, "TaskDefinitionID").unwrap_or_default(),
            title: wire::opt_string(e, "TaskTitle").unwrap_or_default(),
            status: wire::string(e, "Status")?,
            processor: wire::opt_string(e, "Processor"),
            completed_on: wire::instant(e, "CompletedOn")?,
        })
    }
}

/// A `TASKPROCESSING` `TaskObject`: a document a work item is about (`TaskCollection(…)/TaskObjects`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskObject {
    /// The document number (`10000045`, `4500000123`).
    pub object_id: String,
    /// The business object type (`BUS2105` requisition, `BUS2012` purchase order), may be empty.
    pub object_type: String,
    pub object_name: String,
}

impl TaskObject {
    pub fn from_entity(e: &Value) -> Result<Self, ParseError> {
        Ok(Self {
            object_id: wire::string(e, "ObjectID")?,
            object_type: wire::opt_string(e, "ObjectType").unwrap_or_default(),
            object_name: wire::opt_string(e, "ObjectName").unwrap_or_default(),
        })
    }
}

/// A `TASKPROCESSING` `Comment` of a work item (`TaskCollection(…)/Comments`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskComment {
    pub id: String,
    pub text: String,
    pub created_by: Option<String>,
    pub created_at: Option<ZonedTime>,
}

impl TaskComment {
    pub fn from_entity(e: &Value) -> Result<Self, ParseError> {
        Ok(Self {
            id: wire::string(e, "ID")?,
            text: wire::opt_string(e, "Text").unwrap_or_default(),
            created_by: wire::opt_string(e, "CreatedBy"),
            created_at: wire::instant(e, "CreatedAt")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::Uom;

    #[test]
    fn purchase_order_with_expanded_items_from_the_fixture() {
        let body = fixtures::read_json("sap/purchaseorder_single_expanded.v2.json");
        let po = PurchaseOrder::from_entity(wire::entity(&body).unwrap(), &UomTable::default()).unwrap();
        assert_eq!(po.number, "4500000123");
        assert_eq!(po.currency, "HKD");
        assert_eq!(po.items.len(), 2);
        let resin = &po.items[1];
        assert_eq!(resin.item, "20");
        assert_eq!(resin.quantity, Quantity::new(Decimal::new(37_500, 3), Uom::KGM));
        assert_eq!(resin.net_price.amount, Decimal::new(1840, 2));
        assert_eq!(po.items[0].quantity.unit, Uom::PCE);
        assert!(po.etag.is_some());
    }

    #[test]
    fn collection_page_rows_parse() {
        let uoms = UomTable::default();
        let page = wire::page(&fixtures::read_json("sap/purchaseorder_collection_page.v2.json")).unwrap();
        let first = PurchaseOrder::from_entity(&page.results[0], &uoms).unwrap();
        assert!(first.release_not_completed);
        assert_eq!(first.last_changed.unwrap().as_millis(), 1_710_469_867_000);
        assert_eq!(first.order_date, Some(Date::constant(2024, 3, 15)));
        assert_eq!(first.etag.as_deref(), Some("W/\"datetimeoffset'2024-03-15T02%3A31%3A07.0000000Z'\""));

        let pr = wire::page(&fixtures::read_json("sap/purchaserequisition_items_page.v2.json")).unwrap();
        let item = PurchaseRequisitionItem::from_entity(&pr.results[0], &uoms).unwrap();
        assert_eq!(item.quantity, Quantity::new(Decimal::from(1200), Uom::PCE));
        assert_eq!(item.net_amount.unwrap().amount, Decimal::new(102_000, 2));
        assert_eq!(item.delivery_date, Some(Date::constant(2024, 4, 2)));
        assert_eq!(item.release_strategy.as_deref(), Some("Z1"));

        let stock = wire::page(&fixtures::read_json("sap/material_stock_page.v2.json")).unwrap();
        let rows: Vec<StockRow> = stock.results.iter().map(|r| StockRow::from_entity(r, &uoms).unwrap()).collect();
        assert_eq!(rows[0].quantity, Quantity::new(Decimal::from(5400), Uom::PCE));
        assert_eq!(rows[1].stock_type, "02");
    }

    #[test]
    fn outbound_delivery_and_task_entities() {
        let uoms = UomTable::default();
        let body = fixtures::read_json("sap/outbound_delivery_header.v2.json");
        let d = OutboundDelivery::from_entity(wire::entity(&body).unwrap(), &uoms).unwrap();
        assert_eq!(d.number, "80001234");
        assert_eq!(d.gross_weight, Some(Quantity::new(Decimal::from(940), Uom::KGM)));
        assert_eq!(d.packages, Some(12));
        assert_eq!(d.actual_goods_movement_time, Some(Time::constant(15, 40, 0, 0)));
        assert_eq!(d.goods_movement_status, "C");

        let options = wire::page(&fixtures::read_json("sap/taskprocessing_decision_options.v2.json")).unwrap();
        let opts: Vec<DecisionOption> =
            options.results.iter().map(|o| DecisionOption::from_entity(o).unwrap()).collect();
        assert_eq!(opts[0].key, "0001");
        assert!(opts[1].comment_mandatory);
        let task = fixtures::read_json("sap/taskprocessing_decision_response.v2.json");
        let task = Task::from_entity(wire::entity(&task).unwrap()).unwrap();
        assert_eq!(task.status, "COMPLETED");
        assert_eq!(task.processor.as_deref(), Some("LEEPY"));
    }
}
