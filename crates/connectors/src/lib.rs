//! Vendor connectors: one module per system, the same files in each (`auth`, `client`, `sink`,
//! `sim`, `errors`, `tests`). A connector owns its vendor knowledge; the shared machinery
//! (sink contract, retry, rate limiting) lives in `dingbridge-connect`, the simulator chassis in
//! `dingbridge-sim`.

pub mod approval;
pub mod crm;
pub mod dingtalk;
pub mod dynamics;
pub mod erp;
pub mod netsuite;
pub mod salesforce;
pub mod sap;
pub mod zoho;
