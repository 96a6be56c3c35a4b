//! Microsoft Dynamics 365 connector (reference `erp-apis.md` part C): Microsoft identity platform
//! client-credentials tokens (one per resource), the Dataverse Web API client (OData v4: paging,
//! ETags, `$batch`, change tracking), the Business Central API v2.0 client, service-protection
//! handling, change detection (webhook `RemoteExecutionContext` + delta-link polling) and a
//! loopback simulator.

pub mod approval;
pub mod auth;
pub mod bc;
pub mod canonical;
pub mod client;
pub mod config;
pub mod errors;
pub mod push;
pub mod reader;
pub mod sim;
pub mod source;

#[cfg(test)]
mod tests;

/// Vendor label in errors and logs.
pub const VENDOR: &str = "dynamics";
/// Dataverse Web API path prefix (reference C1).
pub const DATAVERSE_API_PATH: &str = "/api/data/v9.2";
/// Business Central API version path segment (reference C1).
pub const BC_API_PATH: &str = "api/v2.0";
/// The Business Central resource, used as the token scope `<resource>/.default` (reference C1).
pub const BC_RESOURCE: &str = "https://api.businesscentral.dynamics.com";
