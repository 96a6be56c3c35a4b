//! IDoc-XML parsing (reference A9): ORDERS05 (purchase orders, also ORDCHG) and DESADV on
//! DELVRY0x (shipping notifications) into plain structs with typed quantities, money and dates.
//!
//! Layout: `<BASICTYPE><IDOC BEGIN="1"><EDI_DC40>…</EDI_DC40><segments…/></IDOC>…</BASICTYPE>`;
//! a file (packet) may hold several `IDOC` elements. All values are character fields and absent
//! fields are simply omitted. Errors name the IDoc number and the segment so an SAP admin can find
//! it in WE02. Receiving the HTTP POST (the drop folder / XML-HTTP port) is not this module's job.

use super::uom::UomTable;
use jiff::civil::Date;
use jiff::tz::TimeZone;
use model::{Decimal, Money, ParseError, Quantity, ZonedTime};
use quick_xml::events::Event;
use quick_xml::Reader;

/// Why an IDoc-XML document was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdocError {
    #[error("the IDoc XML is not well-formed: {0}")]
    Xml(String),
    #[error("IDoc {docnum}: segment {segment}: {reason}")]
    Segment { docnum: String, segment: String, reason: String },
    #[error(
        "IDoc {docnum} has basic type {idoctyp} / message type {mestyp}, which dingbridge does not parse \
         (supported: ORDERS05 with ORDERS/ORDCHG, DELVRY0x with DESADV)"
    )]
    Unsupported { docnum: String, idoctyp: String, mestyp: String },
}

/// One XML element: its text (leaf fields) and child elements (segments or fields).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Node {
    name: String,
    text: String,
    children: Vec<Node>,
}

impl Node {
    fn field(&self, name: &str) -> Option<&str> {
        self.children.iter().find(|c| c.name == name).map(|c| c.text.trim()).filter(|t| !t.is_empty())
    }
    fn segments<'a, 'n>(&'a self, name: &'n str) -> impl Iterator<Item = &'a Node> + use<'a, 'n> {
        self.children.iter().filter(move |c| c.name == name)
    }
}

fn parse_tree(xml: &str) -> Result<Node, IdocError> {
    let mut reader = Reader::from_str(xml);
    reader.config_mut().trim_text(true);
    let mut stack: Vec<Node> = vec![Node::default()];
    loop {
        let event =
            reader.read_event().map_err(|e| IdocError::Xml(format!("at byte {}: {e}", reader.buffer_position())))?;
        match event {
            Event::Start(e) => {
                stack.push(Node { name: String::from_utf8_lossy(e.name().as_ref()).into_owned(), ..Node::default() })
            }
            Event::Empty(e) => {
                let node = Node { name: String::from_utf8_lossy(e.name().as_ref()).into_owned(), ..Node::default() };
                if let Some(parent) = stack.last_mut() {
                    parent.children.push(node);
                }
            }
            Event::Text(t) => {
                let text = t.unescape().map_err(|e| IdocError::Xml(e.to_string()))?;
                if let Some(node) = stack.last_mut() {
                    node.text.push_str(&text);
                }
            }
            Event::CData(t) => {
                if let Some(node) = stack.last_mut() {
                    node.text.push_str(&String::from_utf8_lossy(&t));
                }
            }
            Event::End(_) => {
                let node = stack.pop().ok_or_else(|| IdocError::Xml("unbalanced end tag".to_owned()))?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(node),
                    None => return Err(IdocError::Xml("unbalanced end tag".to_owned())),
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if stack.len() != 1 {
        return Err(IdocError::Xml("the document ends inside an element".to_owned()));
    }
    let mut top = stack.pop().unwrap_or_default();
    match top.children.len() {
        1 => Ok(top.children.remove(0)),
        0 => Err(IdocError::Xml("no root element".to_owned())),
        _ => Err(IdocError::Xml("more than one root element".to_owned())),
    }
}

/// The `EDI_DC40` control record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlRecord {
    /// 16-digit IDoc number; with `sender_partner` the idempotency key.
    pub docnum: String,
    pub client: Option<String>,
    pub idoc_type: String,
    pub extension: Option<String>,
    pub message_type: String,
    /// `1` outbound from SAP, `2` inbound to SAP.
    pub direction: Option<String>,
    pub sender_port: Option<String>,
    pub sender_partner_type: Option<String>,
    pub sender_partner: String,
    pub receiver_port: Option<String>,
    pub receiver_partner_type: Option<String>,
    pub receiver_partner: Option<String>,
    /// CREDAT + CRETIM in the SAP system's zone.
    pub created: Option<ZonedTime>,
    pub serial: Option<String>,
}

impl ControlRecord {
    /// `(DOCNUM, SNDPRN)`: the reference's idempotency key for an IDoc.
    pub fn idempotency_key(&self) -> String {
        format!("{}/{}", self.docnum, self.sender_partner)
    }
}

/// A parsed IDoc.
#[derive(Debug, Clone, PartialEq)]
pub enum Idoc {
    Order(OrderIdoc),
    Delivery(DeliveryIdoc),
}

/// ORDERS05 / ORDCHG.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderIdoc {
    pub control: ControlRecord,
    /// E1EDK01-BELNR.
    pub document: String,
    pub currency: String,
    pub order_type: Option<String>,
    pub payment_terms: Option<String>,
    pub purchasing_org: Option<String>,
    pub purchasing_group: Option<String>,
    pub company_code: Option<String>,
    /// E1EDK03 IDDAT 012 (UNVERIFIED code list, reference A9).
    pub document_date: Option<Date>,
    /// E1EDKA1 (PARVW, PARTN), leading zeros kept.
    pub partners: Vec<(String, String)>,
    pub items: Vec<OrderItem>,
    /// E1EDS01 SUMID 002.
    pub total: Option<Money>,
}

impl OrderIdoc {
    /// The vendor (PARVW `LF`).
    pub fn vendor(&self) -> Option<&str> {
        self.partners.iter().find(|(role, _)| role == "LF").map(|(_, id)| id.as_str())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct OrderItem {
    pub item: String,
    /// `001` new, `002` change, `003` delete (ORDCHG, UNVERIFIED).
    pub action: Option<String>,
    pub quantity: Quantity,
    pub price: Option<Money>,
    /// Price unit (PEINH): the price is per this many units.
    pub price_unit: Decimal,
    pub net_value: Option<Money>,
    pub plant: Option<String>,
    pub storage_location: Option<String>,
    pub material_group: Option<String>,
    /// E1EDP19 QUALF 001 (buyer's material number).
    pub material: Option<String>,
    pub description: Option<String>,
    pub schedules: Vec<ScheduleLine>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleLine {
    pub quantity: Quantity,
    pub date: Option<Date>,
}

/// DESADV on DELVRY0x.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryIdoc {
    pub control: ControlRecord,
    pub delivery: String,
    pub shipping_point: Option<String>,
    pub sales_org: Option<String>,
    pub incoterms: Option<String>,
    pub gross_weight: Option<Quantity>,
    pub net_weight: Option<Quantity>,
    pub packages: Option<u32>,
    pub bill_of_lading: Option<String>,
    pub dates: Vec<DeliveryDeadline>,
    pub partners: Vec<DeliveryPartner>,
    pub items: Vec<DeliveryItem>,
}

/// E1EDT13: `006` goods issue, `007` delivery (UNVERIFIED codes, reference A9).
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryDeadline {
    pub qualifier: String,
    pub planned: Option<ZonedTime>,
    pub actual: Option<ZonedTime>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryPartner {
    pub role: String,
    pub id: String,
    pub name: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryItem {
    pub item: String,
    pub material: Option<String>,
    pub description: Option<String>,
    pub plant: Option<String>,
    pub storage_location: Option<String>,
    pub batch: Option<String>,
    /// UNVERIFIED whether DELVRY07 also carries ISO twins of VRKME/MEINS (reference A9).
    /// LFIMG in the sales unit VRKME, kept as SAP sent it: sales units such as `BAG` are
    /// item-specific packaging that the unit table may not know.
    pub sales_quantity: Decimal,
    pub sales_unit: String,
    /// LGMNG in the base unit MEINS.
    pub base_quantity: Quantity,
    /// UMVKZ / UMVKN: base = sales × numerator / denominator.
    pub numerator: Decimal,
    pub denominator: Decimal,
    pub reference_document: Option<String>,
    pub reference_item: Option<String>,
    /// E1EDL41 QUALI 001 BSTNR.
    pub customer_po: Option<String>,
}

impl DeliveryItem {
    /// The sales quantity in the base unit by the item's own conversion factors.
    pub fn sales_in_base(&self) -> Option<Decimal> {
        if self.denominator.is_zero() {
            return None;
        }
        Some(self.sales_quantity * self.numerator / self.denominator)
    }
}

/// Parses IDoc-XML from SAP. `zone` is the SAP system's time zone (CREDAT/CRETIM and E1EDT13
/// times carry none); `uoms` maps DELVRY's internal unit codes.
#[derive(Debug, Clone)]
pub struct IdocParser {
    pub zone: TimeZone,
    pub uoms: UomTable,
}

impl IdocParser {
    pub fn new(zone: TimeZone, uoms: UomTable) -> Self {
        Self { zone, uoms }
    }

    /// Every IDoc of a file (packet), in document order.
    pub fn parse(&self, xml: &str) -> Result<Vec<Idoc>, IdocError> {
        let root = parse_tree(xml)?;
        let idocs: Vec<&Node> = root.segments("IDOC").collect();
        if idocs.is_empty() {
            return Err(IdocError::Segment {
                docnum: "?".to_owned(),
                segment: root.name.clone(),
                reason: "holds no IDOC element".to_owned(),
            });
        }
        idocs.into_iter().map(|idoc| self.parse_one(idoc)).collect()
    }

    fn parse_one(&self, idoc: &Node) -> Result<Idoc, IdocError> {
        let dc = idoc.segments("EDI_DC40").next().ok_or_else(|| IdocError::Segment {
            docnum: "?".to_owned(),
            segment: "EDI_DC40".to_owned(),
            reason: "control record missing".to_owned(),
        })?;
        let control = self.control(dc)?;
        let ctx = Ctx { docnum: control.docnum.clone() };
        let mestyp = control.message_type.as_str();
        let basic = control.idoc_type.as_str();
        if (mestyp == "ORDERS" || mestyp == "ORDCHG") && basic.starts_with("ORDERS") {
            return self.order(idoc, control, &ctx).map(Idoc::Order);
        }
        if mestyp == "DESADV" && basic.starts_with("DELVRY") {
            return self.delivery(idoc, control, &ctx).map(Idoc::Delivery);
        }
        Err(IdocError::Unsupported { docnum: control.docnum, idoctyp: control.idoc_type, mestyp: control.message_type })
    }

    fn control(&self, dc: &Node) -> Result<ControlRecord, IdocError> {
        let docnum = dc.field("DOCNUM").unwrap_or("?").to_owned();
        let ctx = Ctx { docnum: docnum.clone() };
        let created = match dc.field("CREDAT") {
            Some(d) => ctx.datetime(&self.zone, "EDI_DC40", "CREDAT", d, dc.field("CRETIM"))?,
            None => None,
        };
        let owned = |f: &str| dc.field(f).map(str::to_owned);
        Ok(ControlRecord {
            docnum: ctx.required(dc, "EDI_DC40", "DOCNUM")?.to_owned(),
            client: owned("MANDT"),
            idoc_type: ctx.required(dc, "EDI_DC40", "IDOCTYP")?.to_owned(),
            extension: owned("CIMTYP"),
            message_type: ctx.required(dc, "EDI_DC40", "MESTYP")?.to_owned(),
            direction: owned("DIRECT"),
            sender_port: owned("SNDPOR"),
            sender_partner_type: owned("SNDPRT"),
            sender_partner: ctx.required(dc, "EDI_DC40", "SNDPRN")?.to_owned(),
            receiver_port: owned("RCVPOR"),
            receiver_partner_type: owned("RCVPRT"),
            receiver_partner: owned("RCVPRN"),
            created,
            serial: owned("SERIAL"),
        })
    }

    fn order(&self, idoc: &Node, control: ControlRecord, ctx: &Ctx) -> Result<OrderIdoc, IdocError> {
        let k01 = ctx.segment(idoc, "E1EDK01")?;
        let currency = ctx.required(k01, "E1EDK01", "CURCY")?.to_owned();
        let org = |qualf: &str| {
            idoc.segments("E1EDK14")
                .find(|s| s.field("QUALF") == Some(qualf))
                .and_then(|s| s.field("ORGID"))
                .map(str::to_owned)
        };
        let document_date = match idoc.segments("E1EDK03").find(|s| s.field("IDDAT") == Some("012")) {
            Some(s) => ctx.date("E1EDK03", "DATUM", s.field("DATUM"))?,
            None => None,
        };
        let partners = idoc
            .segments("E1EDKA1")
            .map(|s| {
                Ok((ctx.required(s, "E1EDKA1", "PARVW")?.to_owned(), ctx.required(s, "E1EDKA1", "PARTN")?.to_owned()))
            })
            .collect::<Result<Vec<_>, IdocError>>()?;
        let items =
            idoc.segments("E1EDP01").map(|p| self.order_item(p, &currency, ctx)).collect::<Result<Vec<_>, _>>()?;
        let total = match idoc.segments("E1EDS01").find(|s| s.field("SUMID") == Some("002")) {
            Some(s) => {
                let unit = s.field("SUNIT").unwrap_or(&currency);
                Some(ctx.money("E1EDS01", "SUMME", ctx.required(s, "E1EDS01", "SUMME")?, unit)?)
            }
            None => None,
        };
        Ok(OrderIdoc {
            document: ctx.required(k01, "E1EDK01", "BELNR")?.to_owned(),
            order_type: k01.field("BSART").map(str::to_owned),
            payment_terms: k01.field("ZTERM").map(str::to_owned),
            purchasing_org: org("014"),
            purchasing_group: org("009"),
            company_code: org("011"),
            document_date,
            partners,
            items,
            total,
            currency,
            control,
        })
    }

    fn order_item(&self, p: &Node, currency: &str, ctx: &Ctx) -> Result<OrderItem, IdocError> {
        const SEG: &str = "E1EDP01";
        let item = ctx.required(p, SEG, "POSEX")?.to_owned();
        let seg = format!("{SEG} {item}");
        let unit = self.uoms.iso_unit("MENEE", ctx.required(p, &seg, "MENEE")?).map_err(|e| ctx.parse(&seg, e))?;
        let quantity = Quantity::new(ctx.decimal(&seg, "MENGE", ctx.required(p, &seg, "MENGE")?)?, unit);
        let price = p.field("VPREI").map(|v| ctx.money(&seg, "VPREI", v, currency)).transpose()?;
        let net_value = p.field("NETWR").map(|v| ctx.money(&seg, "NETWR", v, currency)).transpose()?;
        let price_unit = match p.field("PEINH") {
            Some(v) => ctx.decimal(&seg, "PEINH", v)?,
            None => Decimal::ONE,
        };
        let buyer = p.segments("E1EDP19").find(|s| s.field("QUALF") == Some("001"));
        let schedules = p
            .segments("E1EDP20")
            .map(|s| {
                let seg20 = format!("{seg} E1EDP20");
                Ok(ScheduleLine {
                    quantity: Quantity::new(ctx.decimal(&seg20, "WMENG", ctx.required(s, &seg20, "WMENG")?)?, unit),
                    date: ctx.date(&seg20, "EDATU", s.field("EDATU"))?,
                })
            })
            .collect::<Result<Vec<_>, IdocError>>()?;
        Ok(OrderItem {
            item,
            action: p.field("ACTION").map(str::to_owned),
            quantity,
            price,
            price_unit,
            net_value,
            plant: p.field("WERKS").map(str::to_owned),
            storage_location: p.field("LGORT").map(str::to_owned),
            material_group: p.field("MATKL").map(str::to_owned),
            material: buyer.and_then(|s| s.field("IDTNR")).map(str::to_owned),
            description: buyer.and_then(|s| s.field("KTEXT")).map(str::to_owned),
            schedules,
        })
    }

    fn delivery(&self, idoc: &Node, control: ControlRecord, ctx: &Ctx) -> Result<DeliveryIdoc, IdocError> {
        const SEG: &str = "E1EDL20";
        let l20 = ctx.segment(idoc, SEG)?;
        let weight = |field: &str| -> Result<Option<Quantity>, IdocError> {
            match (l20.field(field), l20.field("GEWEI")) {
                (Some(v), Some(unit)) => Ok(Some(self.sap_quantity(ctx, SEG, field, v, unit)?)),
                _ => Ok(None),
            }
        };
        let packages = l20
            .field("ANZPK")
            .map(|v| v.parse::<u32>().map_err(|_| ctx.error(SEG, format!("ANZPK {v:?} is not a package count"))))
            .transpose()?;
        let dates = l20
            .segments("E1EDT13")
            .map(|s| {
                let seg = "E1EDT13";
                Ok(DeliveryDeadline {
                    qualifier: ctx.required(s, seg, "QUALF")?.to_owned(),
                    planned: match s.field("NTANF") {
                        Some(d) => ctx.datetime(&self.zone, seg, "NTANF", d, s.field("NTANZ"))?,
                        None => None,
                    },
                    actual: match s.field("ISDD") {
                        Some(d) => ctx.datetime(&self.zone, seg, "ISDD", d, s.field("ISDZ"))?,
                        None => None,
                    },
                })
            })
            .collect::<Result<Vec<_>, IdocError>>()?;
        let partners = l20
            .segments("E1ADRM1")
            .map(|s| {
                Ok(DeliveryPartner {
                    role: ctx.required(s, "E1ADRM1", "PARTNER_Q")?.to_owned(),
                    id: ctx.required(s, "E1ADRM1", "PARTNER_ID")?.to_owned(),
                    name: s.field("NAME1").map(str::to_owned),
                })
            })
            .collect::<Result<Vec<_>, IdocError>>()?;
        let items = l20.segments("E1EDL24").map(|s| self.delivery_item(s, ctx)).collect::<Result<Vec<_>, _>>()?;
        Ok(DeliveryIdoc {
            control,
            delivery: ctx.required(l20, SEG, "VBELN")?.to_owned(),
            shipping_point: l20.field("VSTEL").map(str::to_owned),
            sales_org: l20.field("VKORG").map(str::to_owned),
            incoterms: l20.field("INCO1").map(str::to_owned),
            gross_weight: weight("BTGEW")?,
            net_weight: weight("NTGEW")?,
            packages,
            bill_of_lading: l20.field("BOLNR").map(str::to_owned),
            dates,
            partners,
            items,
        })
    }

    fn delivery_item(&self, s: &Node, ctx: &Ctx) -> Result<DeliveryItem, IdocError> {
        let item = ctx.required(s, "E1EDL24", "POSNR")?.to_owned();
        let seg = format!("E1EDL24 {item}");
        let factor = |field: &str| match s.field(field) {
            Some(v) => ctx.decimal(&seg, field, v),
            None => Ok(Decimal::ONE),
        };
        let base_quantity =
            self.sap_quantity(ctx, &seg, "LGMNG", ctx.required(s, &seg, "LGMNG")?, ctx.required(s, &seg, "MEINS")?)?;
        Ok(DeliveryItem {
            material: s.field("MATNR").map(str::to_owned),
            description: s.field("ARKTX").map(str::to_owned),
            plant: s.field("WERKS").map(str::to_owned),
            storage_location: s.field("LGORT").map(str::to_owned),
            batch: s.field("CHARG").map(str::to_owned),
            sales_quantity: ctx.decimal(&seg, "LFIMG", ctx.required(s, &seg, "LFIMG")?)?,
            sales_unit: ctx.required(s, &seg, "VRKME")?.to_owned(),
            base_quantity,
            numerator: factor("UMVKZ")?,
            denominator: factor("UMVKN")?,
            reference_document: s.field("VGBEL").map(str::to_owned),
            reference_item: s.field("VGPOS").map(str::to_owned),
            customer_po: s
                .segments("E1EDL41")
                .find(|r| r.field("QUALI") == Some("001"))
                .and_then(|r| r.field("BSTNR"))
                .map(str::to_owned),
            item,
        })
    }

    fn sap_quantity(&self, ctx: &Ctx, seg: &str, field: &str, value: &str, unit: &str) -> Result<Quantity, IdocError> {
        let unit = self.uoms.sap_unit(field, unit).map_err(|e| ctx.parse(seg, e))?;
        Ok(Quantity::new(ctx.decimal(seg, field, value)?, unit))
    }
}

/// Error context: the IDoc number.
struct Ctx {
    docnum: String,
}

impl Ctx {
    fn error(&self, segment: &str, reason: String) -> IdocError {
        IdocError::Segment { docnum: self.docnum.clone(), segment: segment.to_owned(), reason }
    }

    fn parse(&self, segment: &str, e: ParseError) -> IdocError {
        self.error(segment, e.to_string())
    }

    fn segment<'a>(&self, parent: &'a Node, name: &str) -> Result<&'a Node, IdocError> {
        parent.segments(name).next().ok_or_else(|| self.error(name, "required segment is missing".to_owned()))
    }

    fn required<'a>(&self, node: &'a Node, segment: &str, field: &str) -> Result<&'a str, IdocError> {
        node.field(field).ok_or_else(|| self.error(segment, format!("required field {field} is missing or empty")))
    }

    /// IDoc numbers: `.` decimal point, possibly space-padded, sign possibly trailing (`100.00-`).
    fn decimal(&self, segment: &str, field: &str, text: &str) -> Result<Decimal, IdocError> {
        let trimmed = text.trim();
        let (digits, negative) = match trimmed.strip_suffix('-') {
            Some(d) => (d.trim(), true),
            None => (trimmed, false),
        };
        let value = model::parse_decimal(field, digits).map_err(|e| self.parse(segment, e))?;
        Ok(if negative { -value } else { value })
    }

    fn money(&self, segment: &str, field: &str, text: &str, currency: &str) -> Result<Money, IdocError> {
        let amount = self.decimal(segment, field, text)?;
        let currency = model::Currency::parse(field, currency).map_err(|e| self.parse(segment, e))?;
        Money::new(field, amount, currency).map_err(|e| self.parse(segment, e))
    }

    /// `YYYYMMDD`; absent or `00000000` is "no date". Never zoned (reference A9).
    fn date(&self, segment: &str, field: &str, text: Option<&str>) -> Result<Option<Date>, IdocError> {
        let Some(text) = text.map(str::trim).filter(|t| !t.is_empty() && *t != "00000000") else { return Ok(None) };
        let bad = || self.error(segment, format!("{field} {text:?} is not a date (expected YYYYMMDD)"));
        if text.len() != 8 || !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let y: i16 = text[0..4].parse().map_err(|_| bad())?;
        let m: i8 = text[4..6].parse().map_err(|_| bad())?;
        let d: i8 = text[6..8].parse().map_err(|_| bad())?;
        Date::new(y, m, d).map(Some).map_err(|_| bad())
    }

    fn datetime(
        &self,
        zone: &TimeZone,
        segment: &str,
        field: &str,
        date: &str,
        time: Option<&str>,
    ) -> Result<Option<ZonedTime>, IdocError> {
        if date.trim() == "00000000" {
            return Ok(None);
        }
        ZonedTime::from_sap(field, date.trim(), time.unwrap_or("000000").trim(), zone.clone())
            .map(Some)
            .map_err(|e| self.parse(segment, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::Uom;

    fn parser() -> IdocParser {
        IdocParser::new(TimeZone::get("Asia/Hong_Kong").unwrap(), UomTable::default())
    }

    #[test]
    fn orders05_fixture() {
        let xml = fixtures::read_fixture("sap/idoc_ORDERS05_purchase_order.xml");
        let mut idocs = parser().parse(&xml).unwrap();
        assert_eq!(idocs.len(), 1);
        let Idoc::Order(po) = idocs.remove(0) else { panic!("not an order") };
        assert_eq!(po.control.docnum, "0000000000481516");
        assert_eq!(po.control.idempotency_key(), "0000000000481516/PRDCLNT100");
        // 2024-03-15 10:31:07 HKT = 02:31:07 UTC
        assert_eq!(po.control.created.unwrap().timestamp().to_string(), "2024-03-15T02:31:07Z");
        assert_eq!(po.document, "4500000123");
        assert_eq!(po.vendor(), Some("0000100131"));
        assert_eq!(po.purchasing_org.as_deref(), Some("HK01"));
        assert_eq!(po.purchasing_group.as_deref(), Some("001"));
        assert_eq!(po.document_date, Some(Date::constant(2024, 3, 15)));
        assert_eq!(po.items.len(), 2);
        let resin = &po.items[1];
        assert_eq!(resin.quantity, Quantity::new(Decimal::new(37_500, 3), Uom::KGM));
        assert_eq!(resin.price.unwrap().amount, Decimal::new(1840, 2));
        assert_eq!(resin.schedules[0].date, Some(Date::constant(2024, 4, 5)));
        assert_eq!(po.items[0].quantity.unit, Uom::PCE);
        assert_eq!(po.items[0].material.as_deref(), Some("000000000000101001"));
        assert_eq!(po.total.unwrap().amount, Decimal::new(171_000, 2));
    }

    #[test]
    fn delvry07_fixture() {
        let xml = fixtures::read_fixture("sap/idoc_DELVRY07_DESADV_shipment.xml");
        let Idoc::Delivery(d) = parser().parse(&xml).unwrap().remove(0) else { panic!("not a delivery") };
        assert_eq!(d.delivery, "0080001234");
        assert_eq!(d.gross_weight, Some(Quantity::new(Decimal::from(940), Uom::KGM)));
        assert_eq!(d.packages, Some(12));
        assert_eq!(d.dates[0].actual.unwrap().timestamp().to_string(), "2024-03-19T07:40:00Z");
        assert_eq!(d.partners[0].role, "WE");
        let bolts = &d.items[0];
        assert_eq!(bolts.base_quantity, Quantity::new(Decimal::from(1200), Uom::PCE));
        assert_eq!(bolts.customer_po.as_deref(), Some("HCR-PO-2024-0311"));
        let resin = &d.items[1];
        assert_eq!(resin.sales_unit, "BAG");
        assert_eq!(resin.sales_in_base(), Some(resin.base_quantity.value));
        assert_eq!(resin.batch.as_deref(), Some("B2403001"));
    }

    #[test]
    fn malformed_idocs_name_the_segment() {
        let xml = fixtures::read_fixture("sap/idoc_ORDERS05_purchase_order.xml");
        let broken = xml.replacen("<MENGE>37.500</MENGE>", "<MENGE>37,5x</MENGE>", 1);
        let err = parser().parse(&broken).unwrap_err();
        assert!(matches!(&err, IdocError::Segment { segment, .. } if segment == "E1EDP01 00020"), "{err}");
        assert!(err.to_string().contains("0000000000481516"), "{err}");

        let no_currency = xml.replacen("<CURCY>HKD</CURCY>", "", 1);
        let err = parser().parse(&no_currency).unwrap_err();
        assert!(err.to_string().contains("E1EDK01") && err.to_string().contains("CURCY"), "{err}");

        let err = parser().parse("<ORDERS05><IDOC BEGIN=\"1\"><EDI_DC40>").unwrap_err();
        assert!(matches!(err, IdocError::Xml(_)), "{err}");

        let other = xml.replace("<MESTYP>ORDERS</MESTYP>", "<MESTYP>INVOIC</MESTYP>");
        assert!(matches!(parser().parse(&other).unwrap_err(), IdocError::Unsupported { .. }));

        let bad_date = xml.replacen("<EDATU>20240402</EDATU>", "<EDATU>20241302</EDATU>", 1);
        let err = parser().parse(&bad_date).unwrap_err();
        assert!(err.to_string().contains("E1EDP20") && err.to_string().contains("EDATU"), "{err}");
    }

    #[test]
    fn trailing_signs_padding_and_empty_dates() {
        let ctx = Ctx { docnum: "1".to_owned() };
        assert_eq!(ctx.decimal("S", "F", " 100.00- ").unwrap(), Decimal::new(-10_000, 2));
        assert_eq!(ctx.decimal("S", "F", "  5.5").unwrap(), Decimal::new(55, 1));
        assert_eq!(ctx.date("S", "F", Some("00000000")).unwrap(), None);
        assert_eq!(ctx.date("S", "F", None).unwrap(), None);
    }

    #[test]
    fn a_packet_with_two_idocs_yields_both() {
        let xml = fixtures::read_fixture("sap/idoc_ORDERS05_purchase_order.xml");
        let start = xml.find("<IDOC").unwrap();
        let end = xml.find("</IDOC>").unwrap() + "</IDOC>".len();
        let idoc = &xml[start..end];
        let packet = format!("<ORDERS05>{idoc}{}</ORDERS05>", idoc.replace("0000000000481516", "0000000000481517"));
        let all = parser().parse(&packet).unwrap();
        assert_eq!(all.len(), 2);
        let Idoc::Order(second) = &all[1] else { panic!() };
        assert_eq!(second.control.docnum, "0000000000481517");
    }
}
