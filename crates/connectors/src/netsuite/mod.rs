//! Oracle NetSuite connector (reference `erp-apis.md` section B): Token-Based Authentication
//! (OAuth 1.0a HMAC-SHA256) and OAuth 2.0 client credentials, the REST record + SuiteQL client
//! with its error table and account concurrency semaphore, change detection (SuiteScript
//! user-event webhook and a SuiteQL `lastmodifieddate` poll cursor) and a loopback simulator.

pub mod account;
pub mod approval;
pub mod auth;
pub mod canonical;
pub mod client;
pub mod config;
pub mod errors;
pub mod push;
pub mod reader;
pub mod records;
pub mod sim;
pub mod source;

#[cfg(test)]
mod tests;

/// Vendor label in errors and logs.
pub const VENDOR: &str = "netsuite";
