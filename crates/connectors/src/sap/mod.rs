//! SAP S/4HANA OData v2 and legacy ECC IDoc-XML connector (reference `erp-apis.md` section A):
//! error table, Basic/bearer authentication with the CSRF-token protocol, the OData v2 client
//! (purchase requisitions, purchase orders, stock, outbound deliveries, workflow decisions,
//! `$batch`), unit-of-measure mapping, change-polling cursor and the IDoc-XML parser.

pub mod approval;
pub mod auth;
pub mod batch;
pub mod canonical;
pub mod client;
pub mod config;
pub mod errors;
pub mod idoc;
pub mod push;
pub mod reader;
pub mod records;
pub mod sim;
pub mod source;
pub mod uom;
pub mod wire;

#[cfg(test)]
mod tests;

/// Vendor label in errors and logs.
pub const VENDOR: &str = "sap";
