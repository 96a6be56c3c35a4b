//! Salesforce connector (reference `crm-apis.md` Part A): OAuth token fetchers, the REST data
//! client with its error table and API-quota guard, change detection (Outbound Messages and
//! `SystemModstamp` polling) and a loopback simulator.

pub mod auth;
pub mod client;
pub mod config;
pub mod errors;
pub mod ids;
pub mod limits;
pub mod push;
pub mod reader;
pub mod sim;
pub mod sink;
pub mod snapshot;
pub mod source;

#[cfg(test)]
mod tests;

/// Vendor label in errors and logs.
pub const VENDOR: &str = "salesforce";
/// API version used unless configured otherwise (reference A2 "Versioning").
pub const DEFAULT_API_VERSION: &str = "v62.0";
