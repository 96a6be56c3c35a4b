//! The services the simulator serves and their entity sets, derived from the `$metadata`
//! documents: SAP's real ones (the shared fixtures, embedded at build time by `build.rs`, served
//! byte for byte) and a generated one for TASKPROCESSING, which has no fixture.
//!
//! What a document declares, the simulator answers (an empty collection where there is no seed
//! data); what it does not declare is refused as Gateway refuses it.

use super::edmx::{Edmx, Property};
use std::sync::OnceLock;

pub(crate) const PO: &str = "API_PURCHASEORDER_PROCESS_SRV";
pub(crate) const PR: &str = "API_PURCHASEREQ_PROCESS_SRV";
pub(crate) const STOCK: &str = "API_MATERIAL_STOCK_SRV";
pub(crate) const DLV: &str = "API_OUTBOUND_DELIVERY_SRV;v=0002";
pub(crate) const TASKS: &str = "TASKPROCESSING";

/// (service as in the path, its `$metadata` document).
const DOCUMENTS: &[(&str, &str)] = &[
    (PO, include_str!(concat!(env!("DINGBRIDGE_FIXTURES_DIR"), "/sap/API_PURCHASEORDER_PROCESS_SRV.metadata.xml"))),
    (PR, include_str!(concat!(env!("DINGBRIDGE_FIXTURES_DIR"), "/sap/API_PURCHASEREQ_PROCESS_SRV.metadata.xml"))),
    (STOCK, include_str!(concat!(env!("DINGBRIDGE_FIXTURES_DIR"), "/sap/API_MATERIAL_STOCK_SRV.metadata.xml"))),
    (DLV, include_str!(concat!(env!("DINGBRIDGE_FIXTURES_DIR"), "/sap/API_OUTBOUND_DELIVERY_SRV.metadata.xml"))),
    (TASKS, include_str!("taskprocessing.metadata.xml")),
];

/// Properties whose value the weak ETag is made of. SAP's A2X PO and PR documents declare no
/// `ConcurrencyMode`, yet Gateway answers them with ETags from the last change time (fixture
/// `csrf_fetch_exchange.http`); the delivery's declared `DeliveryVersion` is not kept by the
/// simulator, so its date stands in (UNVERIFIED-sap.md).
const ETAG_FIELDS: &[(&str, &str)] = &[
    ("A_PurchaseOrder", "LastChangeDateTime"),
    ("A_PurchaseRequisitionItem", "LastChangeDateTime"),
    ("A_OutbDeliveryHeader", "LastChangeDate"),
];

/// One service: its path name, document and model.
#[derive(Debug)]
pub(crate) struct Service {
    pub name: &'static str,
    pub document: &'static str,
    pub model: Edmx,
}

/// Where a navigation property leads.
#[derive(Debug, Clone)]
pub(crate) struct Nav {
    pub name: &'static str,
    pub target: &'static str,
    /// A collection (`*`), else one entity or null.
    pub many: bool,
    /// (own property, target property) pairs that must be equal.
    pub pairs: Vec<(&'static str, &'static str)>,
}

/// One entity set of one service.
#[derive(Debug)]
pub(crate) struct SetDef {
    pub service: &'static str,
    pub namespace: &'static str,
    pub set: &'static str,
    pub type_name: &'static str,
    pub keys: Vec<&'static str>,
    pub properties: &'static [Property],
    /// Property the weak ETag is derived from; `None`: no ETag, no If-Match needed.
    pub etag_field: Option<&'static str>,
    pub creatable: bool,
    pub updatable: bool,
    pub deletable: bool,
    pub navs: Vec<Nav>,
}

impl SetDef {
    pub fn property(&self, name: &str) -> Option<&'static Property> {
        self.properties.iter().find(|p| p.name == name)
    }

    pub fn nav(&self, name: &str) -> Option<&Nav> {
        self.navs.iter().find(|n| n.name == name)
    }

    pub fn is_key(&self, name: &str) -> bool {
        self.keys.contains(&name)
    }
}

pub(crate) fn services() -> &'static [Service] {
    static SERVICES: OnceLock<Vec<Service>> = OnceLock::new();
    SERVICES.get_or_init(|| {
        DOCUMENTS
            .iter()
            .map(|(name, document)| {
                // The documents are compiled in; `metadata_documents_parse` proves each one parses.
                let model = Edmx::parse(document)
                    .unwrap_or_else(|e| panic!("embedded $metadata of {name} does not parse: {e}"));
                Service { name, document, model }
            })
            .collect()
    })
}

pub(crate) fn service(name: &str) -> Option<&'static Service> {
    services().iter().find(|s| s.name == name)
}

/// Every entity set of every service.
pub(crate) fn sets() -> &'static [SetDef] {
    static SETS: OnceLock<Vec<SetDef>> = OnceLock::new();
    SETS.get_or_init(|| {
        let mut out = Vec::new();
        for service in services() {
            let model = &service.model;
            for set in &model.entity_sets {
                let Some(ty) = model.entity_type(&set.entity_type) else { continue };
                let navs = ty
                    .navs
                    .iter()
                    .filter_map(|nav| {
                        let target = model.nav_target(ty, nav)?;
                        Some(Nav { name: &nav.name, target: &target.set.name, many: target.many, pairs: target.pairs })
                    })
                    .collect();
                out.push(SetDef {
                    service: service.name,
                    namespace: &model.namespace,
                    set: &set.name,
                    type_name: &ty.name,
                    keys: ty.keys.iter().map(String::as_str).collect(),
                    properties: &ty.properties,
                    etag_field: ETAG_FIELDS.iter().find(|(s, _)| *s == set.name).map(|(_, f)| *f),
                    creatable: set.creatable,
                    updatable: set.updatable,
                    deletable: set.deletable,
                    navs,
                });
            }
        }
        out
    })
}

/// The set `name` of `service`.
pub(crate) fn set_in(service: &str, name: &str) -> Option<&'static SetDef> {
    sets().iter().find(|d| d.service == service && d.set == name)
}

/// The set `name` in whichever service declares it (set names are unique across the services).
pub(crate) fn set_def(name: &str) -> Option<&'static SetDef> {
    sets().iter().find(|d| d.set == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_documents_parse_and_declare_what_the_simulator_serves() {
        assert_eq!(services().len(), DOCUMENTS.len());
        for name in [PO, PR, STOCK, DLV, TASKS] {
            assert!(!service(name).unwrap().model.entity_sets.is_empty(), "{name}");
        }
        let po = set_def("A_PurchaseOrder").unwrap();
        assert_eq!(po.keys, vec!["PurchaseOrder"]);
        let items = po.nav("to_PurchaseOrderItem").unwrap();
        assert_eq!((items.target, items.many), ("A_PurchaseOrderItem", true));
        assert_eq!(items.pairs, vec![("PurchaseOrder", "PurchaseOrder")]);
        let stock = set_def("A_MatlStkInAcctMod").unwrap();
        assert_eq!(stock.keys.len(), 11);
        assert!(!stock.creatable && !stock.updatable && !stock.deletable);
        assert!(set_def("A_MaterialStock").unwrap().nav("to_MatlStkInAcctMod").is_some());
        let dlv = set_def("A_OutbDeliveryHeader").unwrap();
        assert_eq!(dlv.nav("to_DeliveryDocumentItem").unwrap().target, "A_OutbDeliveryItem");
        assert!(service(PR).unwrap().model.function_import("EnableForPurchasing").is_some());
        assert!(service(TASKS).unwrap().model.function_import("Decision").is_some());
    }

    #[test]
    fn set_names_are_unique_across_services() {
        let mut names: Vec<&str> = sets().iter().map(|d| d.set).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len());
    }

    #[test]
    fn every_navigation_of_a_served_type_resolves_to_a_join() {
        for def in sets() {
            for nav in &def.navs {
                assert!(!nav.pairs.is_empty(), "{}/{} has no join", def.set, nav.name);
            }
        }
    }
}
