//! Rules for the places dingbridge sends requests to (RELIABILITY.md R22): vendor URLs are
//! https, and private hosts are reachable only when listed.

use super::diagnostics::Diagnostics;
use super::error::{Code, ConfigError};
use super::spanned::{span, S};
use crate::http::PrivateHosts;

/// DB0114 when a vendor endpoint is plain `http://`. Only the local simulators speak plain http,
/// and `--sim-endpoints` puts their URLs in place after validation, so no config file needs it.
/// The value is otherwise well formed, so the connection stays valid (no follow-on errors).
pub fn require_https(diag: &mut Diagnostics, key: &str, s: &S<String>) {
    let url = s.get_ref().trim();
    if url.get(..7).is_some_and(|scheme| scheme.eq_ignore_ascii_case("http://")) {
        diag.push(
            ConfigError::new(
                Code::InsecureEndpoint,
                format!("{key} `{url}` is plain http; vendor endpoints must be https"),
                span(s),
                "credentials and business data would travel unencrypted",
            )
            .with_help("write https://…; the local simulators (plain http) are reached with `--sim-endpoints`, which replaces this URL"),
        );
    }
}

/// `https://host[:port]` (or http, refused separately by [`require_https`]): paths are
/// appended to it.
pub fn is_base_url(url: &str) -> bool {
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"));
    rest.is_some_and(|host| !host.is_empty() && !host.contains(['/', '?', '#', ' ']))
}

/// `[server] allow_private_hosts`: each entry a host name, an IP address or a CIDR range.
pub fn validate_private_hosts(diag: &mut Diagnostics, entries: Option<&S<Vec<S<String>>>>) -> PrivateHosts {
    let mut hosts = PrivateHosts::default();
    for entry in entries.map(|s| s.get_ref().as_slice()).unwrap_or_default() {
        if let Err(e) = hosts.allow(entry.get_ref()) {
            diag.push(
                ConfigError::new(
                    Code::BadAddress,
                    format!("server.allow_private_hosts: {e}"),
                    span(entry),
                    "expected a host name, an IP address or a CIDR range",
                )
                .with_help("e.g. allow_private_hosts = [\"sap.corp.local\", \"10.1.2.3\", \"10.20.0.0/16\"]: no scheme, port or path"),
            );
        }
    }
    hosts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_base_url_is_a_scheme_and_a_host_only() {
        assert!(is_base_url("https://erp.example.com"));
        assert!(is_base_url("https://s4.example.com:44300"));
        assert!(!is_base_url("https://erp.example.com/services"));
        assert!(!is_base_url("erp.example.com"));
        assert!(!is_base_url("https://"));
    }
}
