//! The origin a simulator names in the links it answers with (token endpoints, next pages,
//! instance URLs): the one the client reached. A client addressed the simulator directly
//! (`127.0.0.1:PORT`) and gets `http://` links back; a client whose vendor host is mapped to the
//! simulator (the conformance suite's transport adapter keeps the vendor's `Host`) gets the
//! vendor's `https://` origin back, as from the real service, since clients such as MSAL refuse a
//! non-https endpoint.

/// `http://host` for an address (IP literal or `localhost`, with or without a port), else
/// `https://host`.
pub fn origin(host: &str) -> String {
    if is_address(host) {
        format!("http://{host}")
    } else {
        format!("https://{host}")
    }
}

fn is_address(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => return v6.split(']').next().is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok()),
        None => host.rsplit_once(':').map_or(
            host,
            |(name, port)| {
                if port.chars().all(|c| c.is_ascii_digit()) {
                    name
                } else {
                    host
                }
            },
        ),
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::origin;

    #[test]
    fn addresses_get_http_and_vendor_hosts_get_https() {
        assert_eq!(origin("127.0.0.1:8080"), "http://127.0.0.1:8080");
        assert_eq!(origin("localhost:9"), "http://localhost:9");
        assert_eq!(origin("[::1]:443"), "http://[::1]:443");
        assert_eq!(origin("10.1.2.3"), "http://10.1.2.3");
        assert_eq!(origin("org.crm5.dynamics.com"), "https://org.crm5.dynamics.com");
        assert_eq!(origin("login.microsoftonline.com:443"), "https://login.microsoftonline.com:443");
    }
}
