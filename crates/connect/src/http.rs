//! The one shared outbound HTTP client.
//!
//! Every connector sends through [`HttpClient`] so timeouts, TLS (rustls), the outbound safety
//! rules (RELIABILITY.md R22) and redaction are decided once:
//!
//! - **No private destinations.** A host that is, or resolves to, a loopback, private,
//!   link-local (cloud metadata), CGNAT or "this network" address is refused unless the
//!   deployment lists it in [`PrivateHosts`] (`[server] allow_private_hosts`, and the simulators
//!   of `--sim-endpoints`). Names are checked in the client's DNS resolver, i.e. at connect time,
//!   so a name that resolved to a public address when the config was checked and to 127.0.0.1
//!   now is still refused; URLs with a literal IP are checked in [`HttpClient::send`], because
//!   no resolver sees them.
//! - **No redirects.** A 3xx could point a delivery (and its credentials) at a host nobody
//!   configured, so it is never followed and [`HttpClient::send`] turns it into a permanent failure.
//! - **Vendor-named hosts stay on the vendor's domains.** [`VendorHosts`] checks hosts that an
//!   answer names (Salesforce `instance_url`, Zoho `api_domain`) before anything is sent there.
//! - **TLS trust** is the OS certificate store plus the webpki roots, plus an optional
//!   [`CaBundle`]; a [`ClientIdentity`] is presented to servers that require mutual TLS.
//!
//! Endpoints in errors and logs go through [`redact_url`] because DingTalk robot access tokens
//! travel in the query string.

use crate::error::DeliveryError;
use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use std::collections::BTreeSet;
use std::error::Error as _;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use url::{Host, Url};

/// Placeholder for redacted values in logs, errors and the dashboard.
pub const REDACTED: &str = "[redacted]";

/// Header names always redacted (lower case, as `http` stores them).
const SENSITIVE_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-acs-dingtalk-access-token",
    "webhook-signature",
];
/// Any header whose name contains one of these is redacted too (vendor-specific auth headers).
const SENSITIVE_FRAGMENTS: &[&str] = &["token", "secret", "key", "signature", "password", "auth", "session"];

/// Addresses no vendor lives at (R22): reaching them from the gateway means reaching the
/// gateway's own machine, its network or its cloud's metadata service.
const BLOCKED_RANGES: [IpNet; 11] = [
    // "This network"; connecting to 0.0.0.0 reaches the local host.
    IpNet::V4(Ipv4Net::new_assert(Ipv4Addr::new(0, 0, 0, 0), 8)),
    IpNet::V4(Ipv4Net::new_assert(Ipv4Addr::new(10, 0, 0, 0), 8)),
    // Carrier-grade NAT, also used inside some clouds.
    IpNet::V4(Ipv4Net::new_assert(Ipv4Addr::new(100, 64, 0, 0), 10)),
    IpNet::V4(Ipv4Net::new_assert(Ipv4Addr::new(127, 0, 0, 0), 8)),
    // Link-local, including the metadata service at 169.254.169.254.
    IpNet::V4(Ipv4Net::new_assert(Ipv4Addr::new(169, 254, 0, 0), 16)),
    IpNet::V4(Ipv4Net::new_assert(Ipv4Addr::new(172, 16, 0, 0), 12)),
    IpNet::V4(Ipv4Net::new_assert(Ipv4Addr::new(192, 168, 0, 0), 16)),
    IpNet::V6(Ipv6Net::new_assert(Ipv6Addr::UNSPECIFIED, 128)),
    IpNet::V6(Ipv6Net::new_assert(Ipv6Addr::LOCALHOST, 128)),
    // Unique local.
    IpNet::V6(Ipv6Net::new_assert(Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0), 7)),
    // Link-local.
    IpNet::V6(Ipv6Net::new_assert(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10)),
];

/// True when `ip` is in one of the R22 ranges. IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`)
/// are judged as the IPv4 address they carry.
pub fn is_private_address(ip: IpAddr) -> bool {
    let ip = ip.to_canonical();
    BLOCKED_RANGES.iter().any(|range| range.contains(&ip))
}

/// A private or loopback address reached without being allowed; the resolver's error, and the
/// reason of the [`DeliveryError::UnsafeDestination`] it becomes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{host}` is or resolves to {address}, a private, loopback or link-local address; \
     list it in [server] allow_private_hosts if it is an on-premises system"
)]
pub struct PrivateAddress {
    pub host: String,
    pub address: IpAddr,
}

/// Something in the outbound settings that cannot be used; the config turns it into a coded
/// diagnostic at the key that named it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutboundError {
    #[error("`{entry}` is not a host name, an IP address or a CIDR range")]
    BadHostEntry { entry: String },
    #[error("the CA bundle holds no PEM certificate (-----BEGIN CERTIFICATE-----)")]
    EmptyCaBundle,
    #[error("the CA bundle cannot be used: {reason}")]
    BadCaBundle { reason: String },
    #[error("the client certificate and key cannot be used: {reason}")]
    BadClientIdentity { reason: String },
}

/// Private and loopback hosts a client may reach anyway: host names (the URL's host, compared
/// without case), addresses and CIDR ranges. Empty by default: nothing private is reachable.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrivateHosts {
    names: BTreeSet<String>,
    ranges: Vec<IpNet>,
}

impl PrivateHosts {
    /// Only loopback (127.0.0.0/8 and ::1): for clients that talk to processes on this machine
    /// (tests, benchmarks, the simulators).
    pub fn loopback() -> Self {
        Self {
            names: BTreeSet::new(),
            ranges: vec![
                IpNet::V4(Ipv4Net::new_assert(Ipv4Addr::new(127, 0, 0, 0), 8)),
                IpNet::V6(Ipv6Net::new_assert(Ipv6Addr::LOCALHOST, 128)),
            ],
        }
    }

    /// Adds one `allow_private_hosts` entry: `sap.corp.local`, `10.1.2.3`, `[fd00::1]` or
    /// `10.1.0.0/16`.
    pub fn allow(&mut self, entry: &str) -> Result<(), OutboundError> {
        let bad = || OutboundError::BadHostEntry { entry: entry.to_owned() };
        let trimmed = entry.trim();
        if let Ok(range) = trimmed.parse::<IpNet>() {
            self.ranges.push(range.trunc());
            return Ok(());
        }
        if let Ok(address) = trimmed.parse::<IpAddr>() {
            self.ranges.push(IpNet::from(address.to_canonical()));
            return Ok(());
        }
        if trimmed.is_empty() {
            return Err(bad());
        }
        match Host::parse(trimmed).map_err(|_| bad())? {
            Host::Domain(name) => {
                self.names.insert(normalize_name(&name));
            }
            Host::Ipv4(ip) => self.ranges.push(IpNet::from(IpAddr::V4(ip))),
            Host::Ipv6(ip) => self.ranges.push(IpNet::from(IpAddr::V6(ip).to_canonical())),
        }
        Ok(())
    }

    /// Allows exactly the host of `url` (a simulator endpoint given with `--sim-endpoints`).
    pub fn allow_url_host(&mut self, url: &Url) {
        match url.host() {
            Some(Host::Domain(name)) => {
                self.names.insert(normalize_name(name));
            }
            Some(Host::Ipv4(ip)) => self.ranges.push(IpNet::from(IpAddr::V4(ip))),
            Some(Host::Ipv6(ip)) => self.ranges.push(IpNet::from(IpAddr::V6(ip).to_canonical())),
            None => {}
        }
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty() && self.ranges.is_empty()
    }

    /// `Ok` when `address` (what `host` is or resolved to) is public, or private but allowed by
    /// name or by range.
    pub fn check(&self, host: &str, address: IpAddr) -> Result<(), PrivateAddress> {
        if !is_private_address(address) || self.names.contains(&normalize_name(host)) {
            return Ok(());
        }
        let canonical = address.to_canonical();
        if self.ranges.iter().any(|range| range.contains(&address) || range.contains(&canonical)) {
            return Ok(());
        }
        Err(PrivateAddress { host: host.to_owned(), address })
    }
}

/// Host names compare without case and without the root's trailing dot.
fn normalize_name(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// Extra CA certificates trusted beside the OS store and the webpki roots (a corporate or
/// on-premises CA). Checked when made, so building a client cannot fail on them later.
#[derive(Clone, PartialEq, Eq)]
pub struct CaBundle {
    pem: Vec<u8>,
    count: usize,
}

impl CaBundle {
    pub fn from_pem(pem: &[u8]) -> Result<Self, OutboundError> {
        let certificates = reqwest::Certificate::from_pem_bundle(pem)
            .map_err(|e| OutboundError::BadCaBundle { reason: error_chain(&e) })?;
        if certificates.is_empty() {
            return Err(OutboundError::EmptyCaBundle);
        }
        let count = certificates.len();
        // rustls parses each certificate only when a client is built: build one now so a
        // malformed certificate is reported here, against the config key that named it.
        let mut builder = reqwest::Client::builder().use_rustls_tls().tls_built_in_root_certs(false);
        for certificate in certificates {
            builder = builder.add_root_certificate(certificate);
        }
        builder.build().map_err(|e| OutboundError::BadCaBundle { reason: error_chain(&e) })?;
        Ok(Self { pem: pem.to_vec(), count })
    }

    /// How many certificates the bundle holds.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    fn certificates(&self) -> Result<Vec<reqwest::Certificate>, reqwest::Error> {
        reqwest::Certificate::from_pem_bundle(&self.pem)
    }
}

impl fmt::Debug for CaBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaBundle").field("certificates", &self.count).finish()
    }
}

/// A client certificate chain and its private key (PEM), presented to servers that require
/// mutual TLS (on-premises SAP). `Debug` never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    pem: Vec<u8>,
}

impl ClientIdentity {
    /// `certificate_pem`: the client certificate, then any intermediates; `key_pem`: its
    /// PKCS#8, PKCS#1 (RSA) or SEC1 (EC) private key. The two may also be one file given twice.
    pub fn from_pem(certificate_pem: &[u8], key_pem: &[u8]) -> Result<Self, OutboundError> {
        let bad = |reason: String| OutboundError::BadClientIdentity { reason };
        let mut pem = certificate_pem.to_vec();
        // One file holding both is given twice: use it once, or the key would be read twice.
        if pem != key_pem {
            if !pem.ends_with(b"\n") {
                pem.push(b'\n');
            }
            pem.extend_from_slice(key_pem);
        }
        let identity = reqwest::Identity::from_pem(&pem).map_err(|e| bad(error_chain(&e)))?;
        // As for CA bundles: rustls checks the key only when a client is built.
        reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .identity(identity)
            .build()
            .map_err(|e| bad(error_chain(&e)))?;
        Ok(Self { pem })
    }

    fn identity(&self) -> Result<reqwest::Identity, reqwest::Error> {
        reqwest::Identity::from_pem(&self.pem)
    }
}

impl fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientIdentity([redacted])")
    }
}

/// What a deployment says about outbound traffic: which private hosts are reachable and which
/// extra TLS material to use. The default reaches public hosts only, trusting the OS store and
/// the webpki roots.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outbound {
    pub private_hosts: PrivateHosts,
    pub ca_bundle: Option<CaBundle>,
    pub identity: Option<ClientIdentity>,
}

impl Outbound {
    /// Loopback only, no extra TLS material: see [`PrivateHosts::loopback`].
    pub fn loopback() -> Self {
        Self { private_hosts: PrivateHosts::loopback(), ..Self::default() }
    }
}

/// Client settings; durations are bounds on every request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpSettings {
    /// Whole request, from connect to the last body byte.
    pub timeout: Duration,
    /// TCP + TLS handshake.
    pub connect_timeout: Duration,
    pub user_agent: String,
    pub outbound: Outbound,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            user_agent: format!("dingbridge/{}", env!("CARGO_PKG_VERSION")),
            outbound: Outbound::default(),
        }
    }
}

impl HttpSettings {
    /// The defaults with loopback reachable ([`Outbound::loopback`]): for clients of the local
    /// simulators and of a gateway on this machine.
    pub fn loopback() -> Self {
        Self { outbound: Outbound::loopback(), ..Self::default() }
    }
}

/// The client could not be built; a local setup problem, not a delivery failure.
#[derive(Debug, thiserror::Error)]
#[error("could not build the HTTP client ({reason}); check the TLS setup and the user agent setting")]
pub struct HttpClientError {
    reason: String,
}

/// Name → addresses; the system resolver in production, a fake in tests.
#[async_trait::async_trait]
pub(crate) trait Lookup: Send + Sync + 'static {
    async fn lookup(&self, host: &str) -> std::io::Result<Vec<IpAddr>>;
}

/// The operating system's resolver (getaddrinfo on a blocking thread), as reqwest's default.
struct SystemLookup;

#[async_trait::async_trait]
impl Lookup for SystemLookup {
    async fn lookup(&self, host: &str) -> std::io::Result<Vec<IpAddr>> {
        Ok(tokio::net::lookup_host((host, 0)).await?.map(|addr| addr.ip()).collect())
    }
}

/// reqwest's resolver with the R22 check on every answer (Svix's approach): the check happens
/// each time a connection is opened, after the lookup, so DNS rebinding cannot slip past a check
/// made earlier. An answer with any private address is refused as a whole.
struct GuardedResolver {
    private_hosts: Arc<PrivateHosts>,
    lookup: Arc<dyn Lookup>,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let private_hosts = self.private_hosts.clone();
        let lookup = self.lookup.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addresses = lookup.lookup(&host).await?;
            if addresses.is_empty() {
                let err = std::io::Error::new(std::io::ErrorKind::NotFound, format!("`{host}` has no address"));
                return Err(err.into());
            }
            for address in &addresses {
                private_hosts.check(&host, *address)?;
            }
            let addrs: reqwest::dns::Addrs = Box::new(addresses.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}

/// A `reqwest::Client` with dingbridge's policy baked in. Cheap to clone (shares the pool).
#[derive(Debug, Clone)]
pub struct HttpClient {
    client: reqwest::Client,
    settings: HttpSettings,
}

impl HttpClient {
    pub fn new(settings: HttpSettings) -> Result<Self, HttpClientError> {
        Self::with_lookup(settings, Arc::new(SystemLookup))
    }

    pub(crate) fn with_lookup(settings: HttpSettings, lookup: Arc<dyn Lookup>) -> Result<Self, HttpClientError> {
        let failed = |e: reqwest::Error| HttpClientError { reason: error_chain(&e.without_url()) };
        let resolver = GuardedResolver { private_hosts: Arc::new(settings.outbound.private_hosts.clone()), lookup };
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            // The OS store and the webpki roots, both: a CA the host trusts works without config.
            .tls_built_in_root_certs(true)
            .timeout(settings.timeout)
            .connect_timeout(settings.connect_timeout)
            .user_agent(settings.user_agent.clone())
            .redirect(reqwest::redirect::Policy::none())
            // An HTTP(S)_PROXY from the environment would resolve vendor hosts itself, past the
            // R22 check, so proxies are not taken from the environment.
            .no_proxy()
            .dns_resolver(Arc::new(resolver));
        if let Some(bundle) = &settings.outbound.ca_bundle {
            for certificate in bundle.certificates().map_err(failed)? {
                builder = builder.add_root_certificate(certificate);
            }
        }
        if let Some(identity) = &settings.outbound.identity {
            builder = builder.identity(identity.identity().map_err(failed)?);
        }
        let client = builder.build().map_err(failed)?;
        Ok(Self { client, settings })
    }

    pub fn settings(&self) -> &HttpSettings {
        &self.settings
    }

    pub fn request(&self, method: http::Method, url: Url) -> reqwest::RequestBuilder {
        self.client.request(method, url)
    }

    pub fn get(&self, url: Url) -> reqwest::RequestBuilder {
        self.client.get(url)
    }

    pub fn post(&self, url: Url) -> reqwest::RequestBuilder {
        self.client.post(url)
    }

    /// Sends a request. Any answer but a redirect is `Ok` (4xx/5xx included); a 3xx is
    /// `UnsafeDestination` (never followed). Failures before an answer are `Timeout` or
    /// `Transport`, or `UnsafeDestination` for a private address; all name the redacted endpoint.
    pub async fn send(&self, request: reqwest::RequestBuilder) -> Result<reqwest::Response, DeliveryError> {
        let request = request.build().map_err(|e| DeliveryError::BadPayload {
            destination: e.url().map_or_else(|| "unknown endpoint".to_owned(), redact_url),
            detail: error_chain(&e.without_url()),
        })?;
        let url = request.url().clone();
        self.check_literal_address(&url)?;
        let resp = self.client.execute(request).await.map_err(|e| self.map_error(e, &url))?;
        refuse_redirect(&resp)?;
        Ok(resp)
    }

    /// Maps a reqwest failure to the delivery error the outbox understands.
    pub fn map_error(&self, err: reqwest::Error, url: &Url) -> DeliveryError {
        map_reqwest_error(err, url, &self.settings)
    }

    /// A URL whose host is an IP address never reaches the resolver: check it here.
    fn check_literal_address(&self, url: &Url) -> Result<(), DeliveryError> {
        let address = match url.host() {
            Some(Host::Ipv4(ip)) => IpAddr::V4(ip),
            Some(Host::Ipv6(ip)) => IpAddr::V6(ip),
            Some(Host::Domain(_)) | None => return Ok(()),
        };
        self.settings.outbound.private_hosts.check(&address.to_string(), address).map_err(|refused| {
            DeliveryError::UnsafeDestination { endpoint: redact_url(url), reason: refused.to_string() }
        })
    }
}

/// `UnsafeDestination` when the resolver refused a private address, `Timeout` when reqwest gave
/// up on time (connect or whole request), `Transport` otherwise. The reason never contains the
/// URL, whose query may hold a token.
pub fn map_reqwest_error(err: reqwest::Error, url: &Url, settings: &HttpSettings) -> DeliveryError {
    let endpoint = redact_url(url);
    let mut source = err.source();
    while let Some(cause) = source {
        if let Some(refused) = cause.downcast_ref::<PrivateAddress>() {
            return DeliveryError::UnsafeDestination { endpoint, reason: refused.to_string() };
        }
        source = cause.source();
    }
    if err.is_timeout() {
        let after = if err.is_connect() { settings.connect_timeout } else { settings.timeout };
        return DeliveryError::Timeout { endpoint, after };
    }
    DeliveryError::Transport { endpoint, reason: error_chain(&err.without_url()) }
}

/// A 3xx answer as a permanent failure: the configured URL is wrong (or something tries to send
/// us elsewhere), and retrying will not change that. Two 3xx are answers, not redirects, and go
/// to the connector like any other status: 304 Not Modified (our own conditional requests, Zoho's
/// `If-Modified-Since` polling) and 300 Multiple Choices (Salesforce: an upsert's external id
/// matches several records).
fn refuse_redirect(resp: &reqwest::Response) -> Result<(), DeliveryError> {
    let status = resp.status();
    let answer = matches!(status, http::StatusCode::NOT_MODIFIED | http::StatusCode::MULTIPLE_CHOICES);
    if !status.is_redirection() || answer {
        return Ok(());
    }
    let target = resp
        .headers()
        .get(http::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(|loc| resp.url().join(loc).map_or_else(|_| REDACTED.to_owned(), |u| redact_url(&u)))
        .unwrap_or_else(|| "no Location".to_owned());
    Err(DeliveryError::UnsafeDestination {
        endpoint: redact_url(resp.url()),
        reason: format!(
            "it answered HTTP {} redirecting to {target}; redirects are never followed, configure the final URL",
            status.as_u16()
        ),
    })
}

/// The hosts a vendor's answers may send dingbridge to (R22): https on the vendor's own
/// domains (a domain or any subdomain of it), or exactly an origin the configuration named (the
/// login host; the simulator under `--sim-endpoints`, which is plain http on 127.0.0.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VendorHosts {
    domains: Vec<String>,
    origins: Vec<url::Origin>,
}

impl VendorHosts {
    /// `domains` like `salesforce.com`: the domain itself and every subdomain.
    pub fn new<D: Into<String>>(domains: impl IntoIterator<Item = D>) -> Self {
        Self { domains: domains.into_iter().map(|d| normalize_name(&d.into())).collect(), origins: Vec::new() }
    }

    /// Also allows exactly the scheme, host and port of `url`.
    pub fn with_origin_of(mut self, url: &Url) -> Self {
        let origin = url.origin();
        if origin.is_tuple() && !self.origins.contains(&origin) {
            self.origins.push(origin);
        }
        self
    }

    /// `raw` as a URL when it is allowed; otherwise `UnsafeDestination` (permanent) saying
    /// `what` named it. Nothing is sent anywhere.
    pub fn check(&self, what: &str, raw: &str) -> Result<Url, DeliveryError> {
        let refuse = |endpoint: String, why: &str| DeliveryError::UnsafeDestination {
            endpoint,
            reason: format!("{what} {why}; it is not called"),
        };
        let url = Url::parse(raw).map_err(|e| refuse(REDACTED.to_owned(), &format!("is not a URL ({e})")))?;
        if self.origins.contains(&url.origin()) && url.username().is_empty() && url.password().is_none() {
            return Ok(url);
        }
        let on_domains = match url.host() {
            Some(Host::Domain(host)) => {
                let host = normalize_name(host);
                self.domains
                    .iter()
                    .any(|d| host == *d || host.strip_suffix(d.as_str()).is_some_and(|p| p.ends_with('.')))
            }
            _ => false,
        };
        if url.scheme() != "https" || !on_domains || !url.username().is_empty() || url.password().is_some() {
            let domains = self.domains.join(", ");
            return Err(refuse(redact_url(&url), &format!("is not an https URL on {domains}")));
        }
        Ok(url)
    }
}

/// Reads the whole body, refusing more than `max_bytes` (checked against `Content-Length` first, so
/// an announced oversize body is not read at all).
pub async fn read_body_capped(mut resp: reqwest::Response, max_bytes: usize) -> Result<Bytes, DeliveryError> {
    let url = resp.url().clone();
    let too_large = |endpoint: String| DeliveryError::Transport {
        endpoint,
        reason: format!("the response body exceeds the {max_bytes}-byte limit; the answer was not read"),
    };
    if resp.content_length().is_some_and(|len| len > max_bytes as u64) {
        return Err(too_large(redact_url(&url)));
    }
    let mut buf = BytesMut::new();
    loop {
        // A timeout here is reported as Transport: the response does not carry the client's
        // configured duration, and both variants retry the same way.
        let chunk = resp.chunk().await.map_err(|e| DeliveryError::Transport {
            endpoint: redact_url(&url),
            reason: format!("reading the response body failed: {}", error_chain(&e.without_url())),
        })?;
        let Some(chunk) = chunk else { break };
        if buf.len().saturating_add(chunk.len()) > max_bytes {
            return Err(too_large(redact_url(&url)));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// Scheme, host, port and path: never the query (DingTalk robot tokens), fragment or userinfo.
pub fn redact_url(url: &Url) -> String {
    let mut out = format!("{}://", url.scheme());
    if let Some(host) = url.host_str() {
        out.push_str(host);
    }
    if let Some(port) = url.port() {
        out.push(':');
        out.push_str(&port.to_string());
    }
    out.push_str(url.path());
    out
}

/// Headers as printable pairs with credentials replaced by `[redacted]`; the only way headers may
/// reach a log line, an error, the request journal or the dashboard.
pub fn redact_headers(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(name, value)| {
            let name = name.as_str();
            let value = if is_sensitive(name) {
                REDACTED.to_owned()
            } else {
                String::from_utf8_lossy(value.as_bytes()).into_owned()
            };
            (name.to_owned(), value)
        })
        .collect()
}

fn is_sensitive(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    SENSITIVE_HEADERS.contains(&name.as_str()) || SENSITIVE_FRAGMENTS.iter().any(|f| name.contains(f))
}

/// reqwest's top-level message ("error sending request") says little; the sources say why
/// ("connection refused", "dns error").
fn error_chain(err: &reqwest::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::response::IntoResponse;
    use axum::routing::get;
    use axum::Router;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    async fn serve(router: Router) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        format!("http://{addr}")
    }

    fn client(timeout: Duration) -> HttpClient {
        HttpClient::new(HttpSettings { timeout, connect_timeout: timeout, ..HttpSettings::loopback() }).unwrap()
    }

    /// A local server counting the requests it answers.
    async fn counting_server() -> (String, Arc<AtomicUsize>) {
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        let router = Router::new().fallback(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            async { "reached" }
        });
        (serve(router).await, hits)
    }

    /// Answers every name with the next address of its list (the last one repeating): a DNS
    /// server that changes its mind.
    struct FakeLookup {
        answers: Vec<IpAddr>,
        calls: AtomicUsize,
    }

    impl FakeLookup {
        fn new(answers: &[&str]) -> Arc<Self> {
            Arc::new(Self { answers: answers.iter().map(|a| a.parse().unwrap()).collect(), calls: AtomicUsize::new(0) })
        }
    }

    #[async_trait::async_trait]
    impl Lookup for FakeLookup {
        async fn lookup(&self, _host: &str) -> std::io::Result<Vec<IpAddr>> {
            let i = self.calls.fetch_add(1, Ordering::SeqCst).min(self.answers.len() - 1);
            Ok(vec![self.answers[i]])
        }
    }

    fn allowing(entries: &[&str]) -> PrivateHosts {
        let mut hosts = PrivateHosts::default();
        for entry in entries {
            hosts.allow(entry).unwrap();
        }
        hosts
    }

    #[test]
    fn r22_every_private_range_is_refused_and_public_addresses_pass() {
        let refused = [
            "127.0.0.1",
            "127.255.0.9",
            "10.0.0.1",
            "10.255.255.255",
            "172.16.0.1",
            "172.31.255.254",
            "192.168.0.1",
            "192.168.255.255",
            "169.254.169.254",
            "169.254.0.1",
            "100.64.0.1",
            "100.127.255.254",
            "0.0.0.0",
            "0.1.2.3",
            "::1",
            "::",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "febf::1",
            "::ffff:127.0.0.1",
            "::ffff:10.1.2.3",
            "::ffff:169.254.169.254",
            "::ffff:192.168.1.1",
        ];
        let public = [
            "8.8.8.8",
            "11.0.0.1",
            "172.15.255.255",
            "172.32.0.1",
            "192.169.0.1",
            "100.63.255.255",
            "100.128.0.1",
            "169.255.0.1",
            "1.0.0.1",
            "2606:4700::1111",
            "fec0::1",
            "::ffff:8.8.8.8",
        ];
        let none = PrivateHosts::default();
        for text in refused {
            let ip: IpAddr = text.parse().unwrap();
            assert!(is_private_address(ip), "{text} must be private");
            let err = none.check("vendor.example", ip).unwrap_err();
            assert_eq!(err.address, ip);
            assert!(err.to_string().contains("allow_private_hosts"), "{err}");
        }
        for text in public {
            let ip: IpAddr = text.parse().unwrap();
            assert!(!is_private_address(ip), "{text} must be public");
            assert!(none.check("vendor.example", ip).is_ok(), "{text}");
        }
    }

    #[test]
    fn allow_listed_hosts_addresses_and_ranges_are_reachable() {
        let hosts = allowing(&["SAP.corp.local.", "10.1.2.3", "10.9.0.0/16", "[fd00::7]", "::ffff:192.168.7.7"]);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        // By name: whatever the name resolves to.
        assert!(hosts.check("sap.corp.local", ip("10.200.0.5")).is_ok());
        assert!(hosts.check("sap.CORP.local.", ip("127.0.0.1")).is_ok());
        assert!(hosts.check("other.corp.local", ip("10.200.0.5")).is_err());
        // By address and range, whatever the name.
        assert!(hosts.check("10.1.2.3", ip("10.1.2.3")).is_ok());
        assert!(hosts.check("erp.corp.local", ip("10.1.2.3")).is_ok());
        assert!(hosts.check("erp.corp.local", ip("::ffff:10.1.2.3")).is_ok());
        assert!(hosts.check("10.1.2.4", ip("10.1.2.4")).is_err());
        assert!(hosts.check("x", ip("10.9.254.1")).is_ok());
        assert!(hosts.check("x", ip("10.10.0.1")).is_err());
        assert!(hosts.check("x", ip("fd00::7")).is_ok());
        assert!(hosts.check("x", ip("fd00::8")).is_err());
        assert!(hosts.check("x", ip("192.168.7.7")).is_ok());
        for bad in ["", "  ", "http://sap.corp.local", "sap.corp.local/odata", "a b", "10.0.0.0/33", "host:8443"] {
            let err = PrivateHosts::default().allow(bad).unwrap_err();
            assert_eq!(err, OutboundError::BadHostEntry { entry: bad.to_owned() });
        }
        let mut sims = PrivateHosts::default();
        sims.allow_url_host(&Url::parse("http://127.0.0.1:4010").unwrap());
        sims.allow_url_host(&Url::parse("http://sims.local:4011").unwrap());
        assert!(sims.check("127.0.0.1", ip("127.0.0.1")).is_ok());
        assert!(sims.check("127.0.0.2", ip("127.0.0.2")).is_err());
        assert!(sims.check("sims.local", ip("127.0.0.9")).is_ok());
    }

    #[tokio::test]
    async fn a_literal_private_address_is_refused_before_connecting() {
        let (base, hits) = counting_server().await;
        let port = Url::parse(&base).unwrap().port().unwrap();
        let strict = HttpClient::new(HttpSettings::default()).unwrap();
        for url in [format!("{base}/send?access_token=abc"), format!("http://[::ffff:127.0.0.1]:{port}/send")] {
            let err = strict.send(strict.post(Url::parse(&url).unwrap())).await.unwrap_err();
            assert!(matches!(err, DeliveryError::UnsafeDestination { .. }), "{url}: {err:?}");
            assert_eq!(err.disposition(), crate::Disposition::Permanent);
            assert!(!err.to_string().contains("abc"), "{err}");
        }
        assert_eq!(hits.load(Ordering::SeqCst), 0, "nothing may reach a refused address");
        let allowed = client(Duration::from_secs(5));
        allowed.send(allowed.post(Url::parse(&format!("{base}/send")).unwrap())).await.unwrap();
        assert_eq!(hits.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_name_resolving_to_a_private_address_is_refused_at_connect_time() {
        let (base, hits) = counting_server().await;
        let port = Url::parse(&base).unwrap().port().unwrap();
        let url = Url::parse(&format!("http://erp.vendor.test:{port}/orders")).unwrap();
        // The public-looking name resolves to this machine when the request is sent.
        let strict = HttpClient::with_lookup(HttpSettings::default(), FakeLookup::new(&["127.0.0.1"])).unwrap();
        let err = strict.send(strict.get(url.clone())).await.unwrap_err();
        match &err {
            DeliveryError::UnsafeDestination { endpoint, reason } => {
                assert_eq!(endpoint, &format!("http://erp.vendor.test:{port}/orders"));
                assert!(reason.contains("erp.vendor.test") && reason.contains("127.0.0.1"), "{reason}");
            }
            other => panic!("expected UnsafeDestination, got {other:?}"),
        }
        assert_eq!(err.disposition(), crate::Disposition::Permanent);
        assert_eq!(hits.load(Ordering::SeqCst), 0);
        // Listed by name (an on-premises system), the same answer is fine.
        let settings = HttpSettings {
            outbound: Outbound { private_hosts: allowing(&["erp.vendor.test"]), ..Outbound::default() },
            ..HttpSettings::default()
        };
        let listed = HttpClient::with_lookup(settings, FakeLookup::new(&["127.0.0.1"])).unwrap();
        listed.send(listed.get(url)).await.unwrap();
        assert_eq!(hits.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn dns_rebinding_is_caught_on_every_resolution() {
        use reqwest::dns::Resolve as _;
        // Public when first asked (say, when the config was checked), loopback afterwards.
        let lookup = FakeLookup::new(&["93.184.216.34", "127.0.0.1", "::ffff:169.254.169.254"]);
        let resolver = GuardedResolver { private_hosts: Arc::new(PrivateHosts::default()), lookup: lookup.clone() };
        let name = || "api.vendor.test".parse::<reqwest::dns::Name>().unwrap();
        let first: Vec<SocketAddr> = resolver.resolve(name()).await.unwrap().collect();
        assert_eq!(first, vec!["93.184.216.34:0".parse().unwrap()]);
        for _ in 0..2 {
            let err = resolver.resolve(name()).await.err().expect("a private answer must be refused");
            assert!(err.downcast_ref::<PrivateAddress>().is_some(), "{err}");
        }
        assert_eq!(lookup.calls.load(Ordering::SeqCst), 3, "every connection resolves (and checks) again");
    }

    #[test]
    fn vendor_hosts_accept_only_https_on_the_vendor_domains_or_a_named_origin() {
        let sim = Url::parse("http://127.0.0.1:4010").unwrap();
        let hosts = VendorHosts::new(["salesforce.com", "force.com"]).with_origin_of(&sim);
        for ok in [
            "https://hktrading.my.salesforce.com",
            "https://na211.salesforce.com/services/data",
            "https://hktrading--uat.sandbox.my.salesforce.com",
            "https://hktrading.lightning.force.com:443",
            "https://SALESFORCE.com",
            "http://127.0.0.1:4010",
            "http://127.0.0.1:4010/services/data/v62.0/query/01g-2000",
        ] {
            assert!(hosts.check("instance_url", ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://hktrading.my.salesforce.com",
            "https://evilsalesforce.com",
            "https://salesforce.com.evil.example",
            "https://my-salesforce.com",
            "https://10.0.0.1",
            "https://user:pw@hktrading.my.salesforce.com",
            "http://127.0.0.1:4011",
            "https://127.0.0.1:4010",
            "http://user@127.0.0.1:4010",
            "not a url",
            "",
        ] {
            let err = hosts.check("the token answer's instance_url", bad).unwrap_err();
            assert_eq!(err.disposition(), crate::Disposition::Permanent, "{bad}");
            assert!(err.to_string().contains("instance_url"), "{bad}: {err}");
            assert!(!err.to_string().contains("pw"), "{bad}: {err}");
        }
    }

    const TEST_CA: &[u8] = include_bytes!("../testdata/ca.pem");
    const TEST_CLIENT_CERT: &[u8] = include_bytes!("../testdata/client.pem");
    /// A key made for these tests only (it signs nothing real).
    const TEST_CLIENT_KEY: &[u8] = include_bytes!("../testdata/client.key");

    #[test]
    fn ca_bundles_and_client_identities_are_checked_when_made() {
        let mut two = TEST_CA.to_vec();
        two.extend_from_slice(TEST_CLIENT_CERT);
        assert_eq!(CaBundle::from_pem(TEST_CA).unwrap().len(), 1);
        assert_eq!(CaBundle::from_pem(&two).unwrap().len(), 2);
        assert_eq!(CaBundle::from_pem(b"").unwrap_err(), OutboundError::EmptyCaBundle);
        assert_eq!(CaBundle::from_pem(TEST_CLIENT_KEY).unwrap_err(), OutboundError::EmptyCaBundle);
        let garbage = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(matches!(CaBundle::from_pem(garbage), Err(OutboundError::BadCaBundle { .. })));

        let identity = ClientIdentity::from_pem(TEST_CLIENT_CERT, TEST_CLIENT_KEY).unwrap();
        assert_eq!(format!("{identity:?}"), "ClientIdentity([redacted])");
        let mut combined = TEST_CLIENT_CERT.to_vec();
        combined.extend_from_slice(TEST_CLIENT_KEY);
        assert!(ClientIdentity::from_pem(&combined, &combined).is_ok());
        for (cert, key) in [(TEST_CLIENT_CERT, &b""[..]), (&b""[..], TEST_CLIENT_KEY), (TEST_CLIENT_KEY, TEST_CA)] {
            assert!(matches!(ClientIdentity::from_pem(cert, key), Err(OutboundError::BadClientIdentity { .. })));
        }
        let settings = HttpSettings {
            outbound: Outbound {
                private_hosts: PrivateHosts::default(),
                ca_bundle: Some(CaBundle::from_pem(TEST_CA).unwrap()),
                identity: Some(identity),
            },
            ..HttpSettings::default()
        };
        assert!(HttpClient::new(settings).is_ok());
    }

    #[test]
    fn redact_url_drops_query_fragment_and_userinfo() {
        let url = Url::parse("https://user:pw@oapi.dingtalk.com:8443/robot/send?access_token=abc123&x=1#frag").unwrap();
        let s = redact_url(&url);
        assert_eq!(s, "https://oapi.dingtalk.com:8443/robot/send");
        assert!(!s.contains("abc123") && !s.contains("pw"));
    }

    #[test]
    fn redact_headers_hides_credentials_and_keeps_the_rest() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("authorization", "Bearer s3cret"),
            ("cookie", "sid=s3cret"),
            ("x-acs-dingtalk-access-token", "s3cret"),
            ("webhook-signature", "v1,s3cret"),
            ("x-refresh-token", "s3cret"),
            ("client-secret", "s3cret"),
            ("x-api-key", "s3cret"),
            ("content-type", "application/json"),
            ("webhook-id", "msg_1"),
        ] {
            h.insert(http::HeaderName::from_static(k), http::HeaderValue::from_static(v));
        }
        let out = redact_headers(&h);
        assert_eq!(out.len(), 9);
        for (k, v) in &out {
            match k.as_str() {
                "content-type" => assert_eq!(v, "application/json"),
                "webhook-id" => assert_eq!(v, "msg_1"),
                _ => assert_eq!(v, REDACTED, "{k}"),
            }
        }
        assert!(!format!("{out:?}").contains("s3cret"));
    }

    #[tokio::test]
    async fn a_3xx_is_not_followed_and_is_a_permanent_failure() {
        let hits = Arc::new(AtomicUsize::new(0));
        let target_hits = hits.clone();
        let router = Router::new()
            .route(
                "/start",
                get(|| async { (http::StatusCode::FOUND, [(http::header::LOCATION, "/target?token=t0p")]) }),
            )
            .route(
                "/target",
                get(move || {
                    target_hits.fetch_add(1, Ordering::SeqCst);
                    async { "reached" }
                }),
            )
            .route("/unchanged", get(|| async { http::StatusCode::NOT_MODIFIED }))
            .route("/several", get(|| async { http::StatusCode::MULTIPLE_CHOICES }))
            .route(
                "/moved",
                get(|| async { (http::StatusCode::PERMANENT_REDIRECT, [(http::header::LOCATION, "https://x.test/")]) }),
            );
        let base = serve(router).await;
        let c = client(Duration::from_secs(5));
        let err = c.send(c.get(Url::parse(&format!("{base}/start?access_token=abc")).unwrap())).await.unwrap_err();
        assert_eq!(hits.load(Ordering::SeqCst), 0, "the redirect target must never be requested");
        assert!(matches!(err, DeliveryError::UnsafeDestination { .. }), "{err:?}");
        assert_eq!(err.disposition(), crate::Disposition::Permanent);
        let msg = err.to_string();
        assert!(msg.contains("302") && msg.contains("/target"), "{msg}");
        assert!(!msg.contains("abc") && !msg.contains("t0p"), "{msg}");
        let err = c.send(c.get(Url::parse(&format!("{base}/moved")).unwrap())).await.unwrap_err();
        assert!(err.to_string().contains("308") && err.to_string().contains("https://x.test/"), "{err}");
        // 304 answers a conditional request and 300 lists records (Salesforce): no redirects.
        for (path, status) in [("unchanged", 304), ("several", 300)] {
            let resp = c.send(c.get(Url::parse(&format!("{base}/{path}")).unwrap())).await.unwrap();
            assert_eq!(resp.status().as_u16(), status);
        }
    }

    #[tokio::test]
    async fn a_2xx_is_answered_and_capped() {
        let base = serve(Router::new().route("/ok", get(|| async { "ok" }))).await;
        let c = client(Duration::from_secs(5));
        let resp = c.send(c.get(Url::parse(&format!("{base}/ok")).unwrap())).await.unwrap();
        assert_eq!(read_body_capped(resp, 2).await.unwrap(), Bytes::from_static(b"ok"));
    }

    #[tokio::test]
    async fn timeout_maps_to_timeout_without_the_query() {
        let router = Router::new().route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "late"
            }),
        );
        let base = serve(router).await;
        let c = client(Duration::from_millis(200));
        let err = c.send(c.get(Url::parse(&format!("{base}/slow?access_token=abc")).unwrap())).await.unwrap_err();
        match &err {
            DeliveryError::Timeout { endpoint, after } => {
                assert_eq!(endpoint, &format!("{base}/slow"));
                assert_eq!(*after, Duration::from_millis(200));
            }
            other => panic!("expected timeout, got {other:?}"),
        }
        assert!(!err.to_string().contains("abc"));
    }

    #[tokio::test]
    async fn connection_refused_maps_to_transport_without_the_query() {
        // Bind and drop to get a port nobody listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let c = client(Duration::from_secs(2));
        let url = Url::parse(&format!("http://127.0.0.1:{port}/robot/send?access_token=abc")).unwrap();
        let err = c.send(c.post(url)).await.unwrap_err();
        assert!(matches!(err, DeliveryError::Transport { .. }), "{err:?}");
        assert_eq!(err.disposition(), crate::Disposition::Retry);
        let msg = err.to_string();
        assert!(msg.contains("/robot/send") && !msg.contains("abc"), "{msg}");
    }

    #[tokio::test]
    async fn body_cap_refuses_oversize_bodies() {
        let router = Router::new().route("/big", get(|| async { "x".repeat(10_000) })).route(
            "/chunked",
            get(|| async {
                // No Content-Length: the cap must hold while streaming.
                let chunks = (0..10).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![b'y'; 1000])));
                axum::body::Body::from_stream(futures::stream::iter(chunks)).into_response()
            }),
        );
        let base = serve(router).await;
        let c = client(Duration::from_secs(5));
        for path in ["big", "chunked"] {
            let resp = c.send(c.get(Url::parse(&format!("{base}/{path}?k=secretval")).unwrap())).await.unwrap();
            let err = read_body_capped(resp, 4096).await.unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains("4096") && !msg.contains("secretval"), "{path}: {msg}");
            let resp = c.send(c.get(Url::parse(&format!("{base}/{path}")).unwrap())).await.unwrap();
            assert_eq!(read_body_capped(resp, 10_000).await.unwrap().len(), 10_000, "{path}");
        }
    }

    #[test]
    fn default_settings_are_bounded() {
        let s = HttpSettings::default();
        assert!(s.timeout > Duration::ZERO && s.connect_timeout <= s.timeout);
        assert!(s.user_agent.starts_with("dingbridge/"));
        assert!(HttpClient::new(s).is_ok());
    }
}
