//! Zoho CRM connector (reference `crm-apis.md` Part B): OAuth per data centre ([`auth`]), one
//! error table ([`errors`]), the REST client with paging, batching, credits and concurrency
//! ([`client`]), notification channels ([`source`]) and a simulator ([`sim`]).

pub mod auth;
pub mod client;
pub mod config;
pub mod errors;
pub mod poll;
pub mod push;
pub mod reader;
pub mod sim;
pub mod sink;
pub mod snapshot;
pub mod source;

#[cfg(test)]
mod tests;

/// Vendor name used in errors and logs.
pub const VENDOR: &str = "Zoho CRM";
