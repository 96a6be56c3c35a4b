//! Phase 2: pure validation. No environment, no network, no clock, no file reads.

use super::raw::*;
use super::refs::{check_cel, check_template_vars, BadRef};
use super::*;
use connect::config::{
    at, known_list, require_https, span, suggest, validate_private_hosts, ConnectionTable, Diagnostics, SecretRefError,
};
use connectors::crm_destination;
use connectors::crm_source::{self, api_name_error, crm_only_label, is_api_name, CrmOrgs};
use connectors::erp_source::{self, erp_only_label};
use connectors::registry::{Connections as RecordConnections, RawTables};
use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use std::collections::{BTreeSet, HashMap};

const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8080);
/// `/metrics` and `/api/` listen here by default: loopback, apart from what vendors reach.
const DEFAULT_ADMIN_LISTEN: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9090);
const DEFAULT_MAX_BODY: u64 = 1_048_576;
/// Accepted events waiting for their commit, in bytes: 64 MiB.
const DEFAULT_MAX_INTAKE: u64 = 64 * 1_048_576;
const DEFAULT_SERVER_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_MAX_CONCURRENT_REQUESTS: usize = 1_024;
const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_STORE_URL: &str = "sqlite://dingbridge.db";
const DEFAULT_DINGTALK_URL: &str = "https://oapi.dingtalk.com";
const DEFAULT_PER_MINUTE: u32 = 20;
const DEFAULT_ENTITY_ID: &str = "/data/id";
const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);

/// Every source `type`: the gateway's own, then the record systems' from the registry.
pub fn source_types() -> Vec<&'static str> {
    let crms = CrmSystem::ALL.into_iter().map(CrmSystem::as_str);
    ["webhook", "dingtalk"].into_iter().chain(crms).chain(ErpSystem::ALL.into_iter().map(ErpSystem::as_str)).collect()
}

/// Every destination `type`: DingTalk's, then the CRMs' from the registry.
pub fn destination_types() -> Vec<&'static str> {
    ["dingtalk_robot", "dingtalk_app"].into_iter().chain(CrmSystem::ALL.into_iter().map(CrmSystem::as_str)).collect()
}
/// Every message `type`: the robot, app and CRM message types, in that order.
pub const MESSAGE_TYPES: [&str; 10] = [
    "markdown",
    "action_card",
    "text",
    "work_notice",
    "robot_message",
    "group_message",
    "card",
    "card_update",
    "approval",
    "record",
];

/// A minijinja environment configured the way message templates render: strict undefined, and
/// every value printed into text a person reads in DingTalk escaped (see [`escaping_for`]);
/// `| raw` prints a value as it is.
pub(crate) fn template_env() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_auto_escape_callback(escaping_for);
    env.set_formatter(dingtalk_formatter);
    env.add_filter("raw", |value: minijinja::Value| minijinja::Value::from_safe_string(value.to_string()));
    env.set_keep_trailing_newline(true);
    env
}

/// Auto-escape mode of text DingTalk renders as markdown (message text, titles, card fields,
/// approval form values).
const ESCAPE_MARKDOWN: AutoEscape = AutoEscape::Custom("dingtalk-markdown");
/// Auto-escape mode of plain text messages: only mentions are neutralised.
const ESCAPE_MENTIONS: AutoEscape = AutoEscape::Custom("dingtalk-text");

/// How a message template named `flows[i].deliver[j].<key>` escapes what it prints: values
/// that come from a vendor record (a customer's name, a note) are data, so in text DingTalk
/// renders they cannot become a link, an image, a heading or an `@all`. Ids, user lists, URLs,
/// ordering keys and CRM record fields are not DingTalk text and print as they are.
fn escaping_for(name: &str) -> AutoEscape {
    let Some((_, key)) = name.split_once("].deliver[").and_then(|(_, rest)| rest.split_once("].")) else {
        return AutoEscape::None;
    };
    let (head, tail) = key.split_once('.').unwrap_or((key, ""));
    match head {
        "title" | "text" | "single_title" | "params" | "private_params" | "form" => ESCAPE_MARKDOWN,
        _ if head.starts_with("buttons[") && tail == "title" => ESCAPE_MARKDOWN,
        "content" => ESCAPE_MENTIONS,
        _ => AutoEscape::None,
    }
}

/// Prints a value under [`escaping_for`]'s modes; a `| raw` (safe) value prints as it is.
fn dingtalk_formatter(
    out: &mut minijinja::Output<'_>,
    state: &minijinja::State<'_, '_>,
    value: &minijinja::Value,
) -> Result<(), minijinja::Error> {
    use connectors::dingtalk::markdown::{escape_markdown, neutralise_mentions};
    let escape: fn(&str) -> String = match state.auto_escape() {
        mode if mode == ESCAPE_MARKDOWN => escape_markdown,
        mode if mode == ESCAPE_MENTIONS => neutralise_mentions,
        _ => return minijinja::escape_formatter(out, state, value),
    };
    let text = value.to_string();
    let printed = if value.is_safe() { text } else { escape(&text) };
    out.write_str(&printed).map_err(minijinja::Error::from)
}

struct Ctx<'a> {
    diag: Diagnostics,
    env: Environment<'static>,
    text: &'a str,
    /// The config file's directory: relative paths in the config are relative to it.
    base_dir: PathBuf,
}

impl Ctx<'_> {
    fn push(&mut self, e: ConfigError) {
        self.diag.push(e);
    }

    fn duration(&mut self, s: &S<String>, what: &str) -> Option<Duration> {
        self.diag.duration(s, what)
    }

    fn positive(&mut self, s: &S<u64>, what: &str) -> Option<usize> {
        self.diag.positive(s, what)
    }

    /// A `host:port` key, or `default` when it is absent (or wrong, after reporting it).
    fn socket_addr(&mut self, s: Option<&S<String>>, key: &str, default: SocketAddr) -> SocketAddr {
        let Some(s) = s else { return default };
        s.get_ref().parse::<SocketAddr>().unwrap_or_else(|e| {
            self.push(ConfigError::new(
                Code::BadAddress,
                format!("{key} `{}` is not an address: {e}", s.get_ref()),
                span(s),
                format!("expected host:port, e.g. {default}"),
            ));
            default
        })
    }

    fn secret(&mut self, s: &S<RawSecretRef>, what: &str) -> Option<SecretRef> {
        self.diag.secret(s, what)
    }

    /// Compile a template and check the event fields it references.
    fn template(
        &mut self,
        name: String,
        s: &S<String>,
        what: &str,
        fields: Option<&BTreeMap<String, FieldKind>>,
    ) -> String {
        match self.env.add_template_owned(name.clone(), s.get_ref().clone()) {
            Ok(()) => {
                if let (Some(fields), Ok(t)) = (fields, self.env.get_template(&name)) {
                    let vars: BTreeSet<String> = t.undeclared_variables(true).into_iter().collect();
                    for bad in check_template_vars(&vars, fields) {
                        self.push(unknown_field(what, &bad, s.span()));
                    }
                }
            }
            Err(e) => {
                let detail = e.detail().map(str::to_string).unwrap_or_else(|| e.to_string());
                let line = e.line().map(|l| format!(" (template line {l})")).unwrap_or_default();
                self.push(ConfigError::new(
                    Code::Template,
                    format!("{what} does not compile: {detail}{line}"),
                    span(s),
                    "invalid template",
                ));
            }
        }
        name
    }

    /// `DB0101` for each key that is present but not used by `owner`; true if any was.
    fn unused_keys(&mut self, keys: &[(&str, Option<Range<usize>>)], owner: &str, label: &str) -> bool {
        self.diag.unused_keys(keys, owner, label)
    }

    fn slice(&self, r: &Range<usize>) -> &str {
        self.text.get(r.clone()).unwrap_or_default()
    }
}

/// The `[server]` limits that bound memory and slow clients.
struct ServerLimits {
    max_intake_bytes: u64,
    request_timeout: Duration,
    max_concurrent_requests: usize,
    header_read_timeout: Duration,
}

/// A duration key that must be longer than zero; `DB0107` / `DB0116` otherwise.
fn longer_than_zero(cx: &mut Ctx<'_>, s: &S<String>, key: &str, label: &str) -> Option<Duration> {
    match cx.duration(s, key) {
        Some(v) if v.is_zero() => {
            cx.push(ConfigError::new(Code::OutOfRange, format!("{key} must be longer than 0s"), span(s), label));
            None
        }
        other => other,
    }
}

fn server_limits(cx: &mut Ctx<'_>, raw: &RawServer, max_body_bytes: u64) -> ServerLimits {
    let mut limits = ServerLimits {
        max_intake_bytes: DEFAULT_MAX_INTAKE.max(max_body_bytes),
        request_timeout: DEFAULT_SERVER_REQUEST_TIMEOUT,
        max_concurrent_requests: DEFAULT_MAX_CONCURRENT_REQUESTS,
        header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
    };
    if let Some(s) = &raw.max_intake_bytes {
        let v = *s.get_ref();
        if v < max_body_bytes {
            cx.push(ConfigError::new(
                Code::OutOfRange,
                format!("server.max_intake_bytes ({v}) must be at least server.max_body_bytes ({max_body_bytes})"),
                span(s),
                "one event of the largest accepted body must fit, e.g. 67108864 (64 MiB)",
            ));
        } else {
            limits.max_intake_bytes = v;
        }
    }
    if let Some(s) = &raw.max_concurrent_requests {
        limits.max_concurrent_requests =
            cx.positive(s, "server.max_concurrent_requests").unwrap_or(limits.max_concurrent_requests);
    }
    if let Some(s) = &raw.request_timeout {
        limits.request_timeout =
            longer_than_zero(cx, s, "server.request_timeout", "e.g. \"30s\"").unwrap_or(limits.request_timeout);
    }
    if let Some(s) = &raw.header_read_timeout {
        limits.header_read_timeout =
            longer_than_zero(cx, s, "server.header_read_timeout", "e.g. \"10s\"").unwrap_or(limits.header_read_timeout);
    }
    limits
}

fn unknown_field(what: &str, bad: &BadRef, span: Range<usize>) -> ConfigError {
    ConfigError::new(
        Code::UnknownEventField,
        format!("{what} references `{}`, which events do not have", bad.path),
        Some(span),
        bad.reason.clone(),
    )
}

pub(super) fn validate(raw: RawConfig, text: &str, path: &str) -> Result<Config, ConfigErrors> {
    let base_dir = Path::new(path).parent().map(Path::to_path_buf).unwrap_or_default();
    let mut cx = Ctx { diag: Diagnostics::new(), env: template_env(), text, base_dir };

    // [server]
    let listen = cx.socket_addr(raw.server.listen.as_ref(), "server.listen", DEFAULT_LISTEN);
    let admin_listen = cx.socket_addr(raw.server.admin_listen.as_ref(), "server.admin_listen", DEFAULT_ADMIN_LISTEN);
    let max_body_bytes = raw.server.max_body_bytes.as_ref().map_or(DEFAULT_MAX_BODY, |s| *s.get_ref());
    let admin_token = raw.server.admin_token.as_ref().and_then(|s| cx.secret(s, "server.admin_token"));
    let private_hosts = validate_private_hosts(&mut cx.diag, raw.server.allow_private_hosts.as_ref());
    let ca_bundle = match &raw.server.ca_bundle {
        Some(s) if s.get_ref().trim().is_empty() => {
            cx.push(ConfigError::new(
                Code::EmptyValue,
                "server.ca_bundle is empty",
                span(s),
                "a PEM file of CA certificates, e.g. /etc/dingbridge/corp-ca.pem",
            ));
            None
        }
        Some(s) => Some(FileRef { path: cx.base_dir.join(s.get_ref().trim()), span: s.span() }),
        None => None,
    };
    let limits = server_limits(&mut cx, &raw.server, max_body_bytes);
    let server = ServerConfig {
        listen,
        admin_listen,
        max_body_bytes,
        max_intake_bytes: limits.max_intake_bytes,
        request_timeout: limits.request_timeout,
        max_concurrent_requests: limits.max_concurrent_requests,
        header_read_timeout: limits.header_read_timeout,
        admin_token,
        private_hosts,
        ca_bundle,
    };
    let mut store = StoreConfig {
        url: raw.store.url.as_ref().map_or_else(|| DEFAULT_STORE_URL.to_string(), |s| s.get_ref().clone()),
        retention: StoreConfig::DEFAULT_RETENTION,
        token_key: raw.store.token_key.as_ref().and_then(|s| cx.secret(s, "store.token_key")),
    };
    if let Some(s) = &raw.store.retention {
        match cx.duration(s, "store.retention") {
            Some(v) if v < StoreConfig::MIN_RETENTION => cx.push(ConfigError::new(
                Code::OutOfRange,
                format!("store.retention `{}` must be at least 1d", s.get_ref()),
                span(s),
                "dedup keys must outlive every replay window and vendor redelivery, e.g. \"30d\"",
            )),
            Some(v) => store.retention = v,
            None => {}
        }
    }
    let audit = AuditConfig { key: raw.audit.key.as_ref().and_then(|s| cx.secret(s, "audit.key")) };

    // [delivery]
    let mut delivery = DeliveryConfig::default();
    let d = &raw.delivery;
    if let Some(sched) = &d.retry_schedule {
        if sched.get_ref().is_empty() {
            cx.push(
                ConfigError::new(
                    Code::BadDuration,
                    "delivery.retry_schedule is empty",
                    span(sched),
                    "needs at least one step",
                )
                .with_help("e.g. retry_schedule = [\"1s\", \"5s\", \"30s\", \"2m\"]; its length bounds the retries"),
            );
        }
        let steps: Vec<Option<Duration>> =
            sched.get_ref().iter().map(|s| cx.duration(s, "delivery.retry_schedule step")).collect();
        delivery.schedule.steps = steps.into_iter().flatten().collect();
    }
    if let Some(j) = &d.jitter {
        let v = *j.get_ref();
        if (0.0..1.0).contains(&v) {
            delivery.schedule.jitter = v;
        } else {
            cx.push(ConfigError::new(
                Code::OutOfRange,
                format!("delivery.jitter must be in [0, 1), found {v}"),
                span(j),
                "a fraction, e.g. 0.2 for ±20 %",
            ));
        }
    }
    if let Some(s) = &d.lease {
        delivery.lease = cx.duration(s, "delivery.lease").unwrap_or(delivery.lease);
    }
    if let Some(s) = &d.max_retry_after {
        match cx.duration(s, "delivery.max_retry_after") {
            Some(v) if v.is_zero() => cx.push(ConfigError::new(
                Code::OutOfRange,
                "delivery.max_retry_after must be longer than 0s",
                span(s),
                "a throttled destination waits at most this long, e.g. \"1h\"",
            )),
            Some(v) => delivery.max_retry_after = v,
            None => {}
        }
    }
    if let Some(s) = &d.request_timeout {
        delivery.request_timeout = cx.duration(s, "delivery.request_timeout").unwrap_or(delivery.request_timeout);
    }
    // Point at whichever of the two the user wrote (the lease first); with neither written the
    // defaults are consistent.
    let lease_span = d.lease.as_ref().map(span).or_else(|| d.request_timeout.as_ref().map(span));
    if let Some(at) = lease_span {
        if delivery.lease <= delivery.request_timeout {
            cx.push(ConfigError::new(
                Code::OutOfRange,
                format!(
                    "delivery.lease ({:?}) must be longer than delivery.request_timeout ({:?})",
                    delivery.lease, delivery.request_timeout
                ),
                at,
                "a lease shorter than a request lets another worker re-send a job still in flight",
            ));
        }
    }
    if let Some(s) = &d.concurrency_per_destination {
        delivery.concurrency_per_destination =
            cx.positive(s, "delivery.concurrency_per_destination").unwrap_or(delivery.concurrency_per_destination);
    }
    if let Some(s) = &d.claim_batch {
        delivery.claim_batch = cx.positive(s, "delivery.claim_batch").unwrap_or(delivery.claim_batch);
    }

    // [dingtalk.apps.*]
    let mut dingtalk_apps = BTreeMap::new();
    for (name, app) in &raw.dingtalk.apps {
        if let Some(a) = connectors::dingtalk::config::validate_app(&mut cx.diag, name, app) {
            dingtalk_apps.insert(name.get_ref().clone(), a);
        }
    }

    // [salesforce.orgs.*], [netsuite.accounts.*], …: each table by its connector.
    let tables = raw.tables();
    let record_connections = RecordConnections::validate(&mut cx.diag, tables);

    // Names as written, so a reference to a connection with an error is not reported twice.
    let names = |keys: Vec<&S<String>>| keys.into_iter().map(|k| k.get_ref().clone()).collect::<Vec<_>>();
    let connections = Connections { apps: names(raw.dingtalk.apps.keys().collect()), tables };

    // [sources.*]
    let mut sources = BTreeMap::new();
    for (name, src) in &raw.sources {
        if let Some(s) = validate_source(&mut cx, name, src, &connections) {
            sources.insert(name.get_ref().clone(), s);
        }
    }

    // What a valid CRM source needs of its org, once both are validated (Salesforce: the org id
    // Outbound Messages are checked against).
    let crm_orgs = CrmOrgs { tables, connections: &record_connections };
    for (name, src) in &sources {
        let Some((system, crm)) = src.kind.crm() else { continue };
        if let Some(system) = CrmSystem::from_system(system) {
            crm_source::check_org(&mut cx.diag, name, system, crm, &crm_orgs);
        }
    }

    // [destinations.*]
    let mut destinations = BTreeMap::new();
    for (name, dst) in &raw.destinations {
        if let Some(d) = validate_destination(&mut cx, name, dst, &connections) {
            destinations.insert(name.get_ref().clone(), d);
        }
    }
    let dest_names: Vec<String> = raw.destinations.keys().map(|k| k.get_ref().clone()).collect();
    let dest_types: BTreeMap<String, &'static str> =
        destinations.iter().map(|(n, d): (&String, &DestinationConfig)| (n.clone(), d.kind.type_name())).collect();
    let source_names: Vec<String> = raw.sources.keys().map(|k| k.get_ref().clone()).collect();

    // [[flows]]
    let mut flows = Vec::new();
    let mut seen: HashMap<String, Range<usize>> = HashMap::new();
    for (i, f) in raw.flows.iter().enumerate() {
        let name = f.name.get_ref().clone();
        if name.trim().is_empty() {
            cx.push(ConfigError::new(
                Code::EmptyValue,
                format!("flow #{} has an empty name", i + 1),
                span(&f.name),
                "empty",
            ));
        }
        if let Some(first) = seen.get(&name) {
            let (l, c) = line_col(text, first.start);
            cx.push(
                ConfigError::new(
                    Code::DuplicateName,
                    format!("duplicate flow name `{name}`"),
                    span(&f.name),
                    "defined again here",
                )
                .with_help(format!("the first flow `{name}` is at {path}:{l}:{c}; flow names must be unique")),
            );
        } else {
            seen.insert(name.clone(), f.name.span());
        }
        flows.push(validate_flow(&mut cx, i, f, &sources, &source_names, &dest_names, &dest_types));
    }

    // [roles.*], [identity.*], [approvals]
    let sections = crate::approvals::config::RawSections {
        roles: &raw.roles,
        identity: &raw.identity,
        approvals: raw.approvals.as_ref(),
    };
    let (approvals, approval_errors) = crate::approvals::config::validate(&sections, text, &sources, &destinations);
    cx.diag.extend(approval_errors);
    // Approval decisions are evidence: without a key, whoever can write to the store could
    // rewrite them and hash the chain again. (A malformed key is reported above.)
    let first_policy = raw.approvals.as_ref().and_then(|a| a.policies.first());
    if let (Some(policy), None) = (first_policy, &raw.audit.key) {
        cx.push(
            ConfigError::new(
                Code::AuditKey,
                format!("approval policy `{}` needs an audit key, and `[audit] key` is not set", policy.name.get_ref()),
                span(&policy.name),
                "decisions are audited in a keyed hash chain",
            )
            .with_help(
                "add `[audit]` with `key = { env = \"DINGBRIDGE_AUDIT_KEY\" }` (or `{ file = \"...\" }`), \
                 at least 32 bytes, e.g. from `openssl rand -hex 32`",
            ),
        );
    }

    // The inbox keeps dedup keys for `retention`: a sender's replay window must fit inside it.
    if let Some(s) = &raw.store.retention {
        for source in sources.values().filter(|src| src.tolerance > store.retention) {
            cx.push(ConfigError::new(
                Code::OutOfRange,
                format!(
                    "store.retention `{}` must be at least sources.{}.tolerance ({:?})",
                    s.get_ref(),
                    source.name,
                    source.tolerance
                ),
                span(s),
                "a replayed webhook inside its tolerance must still find its dedup key",
            ));
        }
    }

    if !cx.diag.is_empty() {
        let mut errors = cx.diag.into_errors();
        // Report in file order.
        errors.sort_by_key(|e| e.span.as_ref().map_or(0, |s| s.start));
        return Err(ConfigErrors::new(path, text, errors));
    }
    Ok(Config {
        server,
        store,
        delivery,
        sources,
        destinations,
        flows,
        dingtalk_apps,
        connections: record_connections,
        approvals,
        audit,
        templates: Arc::new(cx.env),
        path: path.to_string(),
        text: Arc::from(text),
    })
}

/// The connections sources and destinations may name.
struct Connections<'a> {
    apps: Vec<String>,
    /// The record systems' tables as written; a source's or destination's connector reads the
    /// one it names.
    tables: RawTables<'a>,
}

impl Connections<'_> {
    fn apps(&self) -> ConnectionTable<'_> {
        ConnectionTable { key: "app", what: "DingTalk app", path: "dingtalk.apps", known: &self.apps }
    }
}

/// Where the keys CRM and ERP sources share were written.
fn record_source_keys(src: &RawSource) -> [(&'static str, Option<Range<usize>>); 3] {
    [("org", at(&src.org)), ("objects", at(&src.objects)), ("coalesce", at(&src.coalesce))]
}

/// `DB0101` for the CRM and ERP keys on a source of another kind (webhook, dingtalk); true if any.
fn foreign_record_keys(cx: &mut Ctx<'_>, src: &RawSource, owner: &str) -> bool {
    let mut any = cx.unused_keys(&record_source_keys(src), owner, &record_sources_only());
    any |= cx.unused_keys(&src.crm_keys().crm_only(), owner, &crm_only_label("sources"));
    any |= cx.unused_keys(&src.erp_keys().erp_only(), owner, &erp_only_label());
    any
}

/// Where the `dingtalk` source keys were written.
fn dingtalk_source_keys(src: &RawSource) -> [(&'static str, Option<Range<usize>>); 5] {
    [
        ("app", at(&src.app)),
        ("mode", at(&src.mode)),
        ("callback_token", at(&src.callback_token)),
        ("callback_aes_key", at(&src.callback_aes_key)),
        ("card_callback_token", at(&src.card_callback_token)),
    ]
}

/// Where the webhook source keys were written.
fn webhook_source_keys(src: &RawSource) -> [(&'static str, Option<Range<usize>>); 3] {
    [("secret", at(&src.secret)), ("tolerance", at(&src.tolerance)), ("entity_id", at(&src.entity_id))]
}

/// The label under a key CRM and ERP sources share (`org`, `objects`, `coalesce`) on a source of
/// another type; the CRM and ERP types are the registry's.
fn record_sources_only() -> String {
    let crm: Vec<String> = CrmSystem::ALL.iter().map(|s| format!("`{}`", s.as_str())).collect();
    let erp: Vec<String> = ErpSystem::ALL.iter().map(|s| format!("`{}`", s.as_str())).collect();
    format!("only CRM ({}) and ERP ({}) sources take it", crm.join(", "), erp.join(", "))
}

fn validate_source(
    cx: &mut Ctx<'_>,
    name: &S<String>,
    src: &RawSource,
    connections: &Connections<'_>,
) -> Option<SourceConfig> {
    let n = name.get_ref();
    match src.kind.get_ref().as_str() {
        "webhook" => {
            let owner = format!("a webhook source (`{n}`)");
            cx.unused_keys(&dingtalk_source_keys(src), &owner, "only `dingtalk` sources take it");
            foreign_record_keys(cx, src, &owner);
        }
        "dingtalk" => return validate_dingtalk_source(cx, name, src, &connections.apps()),
        other => {
            if let Some(system) = CrmSystem::from_name(other) {
                return validate_crm_source(cx, name, src, system, connections);
            }
            if let Some(system) = ErpSystem::from_name(other) {
                return validate_erp_source(cx, name, src, system, connections);
            }
            cx.push(ConfigError::new(
                Code::UnknownChoice,
                format!("source `{n}` has unknown type `{other}`"),
                span(&src.kind),
                format!("known source types: {}", source_types().join(", ")),
            ));
            return None;
        }
    }
    let mut ok = true;
    let mut secrets = Vec::new();
    match &src.secret {
        Some(s) => {
            if s.get_ref().0.is_empty() {
                cx.push(SecretRefError::EmptyList.to_config_error(&format!("sources.{n}.secret"), s.span()));
                ok = false;
            }
            for r in &s.get_ref().0 {
                match SecretRef::from_raw(r, s.span()) {
                    Ok(r) => secrets.push(r),
                    Err(e) => {
                        cx.push(e.to_config_error(&format!("sources.{n}.secret"), s.span()));
                        ok = false;
                    }
                }
            }
        }
        None => {
            cx.push(
                ConfigError::new(
                    Code::MissingKey,
                    format!("webhook source `{n}` has no `secret`; unsigned webhooks are refused"),
                    Some(name.span()),
                    "needs secret = { env = \"...\" }",
                )
                .with_help("add secret = { env = \"DINGBRIDGE_WEBHOOK_SECRET\" }"),
            );
            ok = false;
        }
    }
    let entity_id = src.entity_id.as_ref().map_or_else(|| DEFAULT_ENTITY_ID.to_string(), |s| s.get_ref().clone());
    if let Some(s) = &src.entity_id {
        if !s.get_ref().starts_with('/') {
            cx.push(pointer_error(&format!("sources.{n}.entity_id"), s));
            ok = false;
        }
    }
    let tolerance = match &src.tolerance {
        Some(s) => cx.duration(s, &format!("sources.{n}.tolerance")).unwrap_or(DEFAULT_TOLERANCE),
        None => DEFAULT_TOLERANCE,
    };
    let fields = validate_fields(cx, n, src, &mut ok);
    let system = src.system.as_ref().map_or_else(|| n.clone(), |s| s.get_ref().clone());
    ok.then(|| SourceConfig {
        name: n.clone(),
        kind: SourceKind::Webhook,
        system,
        secrets,
        entity_id,
        tolerance,
        fields,
    })
}

fn validate_fields(cx: &mut Ctx<'_>, n: &str, src: &RawSource, ok: &mut bool) -> BTreeMap<String, FieldSpec> {
    let mut fields = BTreeMap::new();
    for (fname, f) in &src.fields {
        let f_ref = f.get_ref();
        if !f_ref.path.get_ref().starts_with('/') {
            cx.push(pointer_error(&format!("sources.{n}.fields.{}.path", fname.get_ref()), &f_ref.path));
            *ok = false;
        }
        match FieldKind::parse(f_ref.kind.get_ref()) {
            Some(kind) => {
                fields.insert(
                    fname.get_ref().clone(),
                    FieldSpec { path: f_ref.path.get_ref().clone(), kind, required: f_ref.required.unwrap_or(true) },
                );
            }
            None => {
                let known: Vec<&str> = FieldKind::ALL.iter().map(|k| k.as_str()).collect();
                cx.push(ConfigError::new(
                    Code::UnknownChoice,
                    format!("field `{}` of source `{n}` has unknown type `{}`", fname.get_ref(), f_ref.kind.get_ref()),
                    span(&f_ref.kind),
                    format!("known field types: {}", known.join(", ")),
                ));
                *ok = false;
            }
        }
    }
    fields
}

fn validate_dingtalk_source(
    cx: &mut Ctx<'_>,
    name: &S<String>,
    src: &RawSource,
    apps: &ConnectionTable<'_>,
) -> Option<SourceConfig> {
    let n = name.get_ref();
    let owner = format!("a dingtalk source (`{n}`)");
    let mut ok = !cx.unused_keys(
        &webhook_source_keys(src),
        &owner,
        "dingtalk sources are authenticated by the app (Stream) or by callback_token + callback_aes_key (HTTP)",
    );
    ok &= !foreign_record_keys(cx, src, &owner);
    let app = cx.diag.connection_ref(&format!("source `{n}`"), apps, src.app.as_ref(), name.span());
    let inbound = match src.mode.as_ref().map(|s| s.get_ref().as_str()) {
        None | Some("stream") => {
            if cx.unused_keys(
                &[
                    ("callback_token", at(&src.callback_token)),
                    ("callback_aes_key", at(&src.callback_aes_key)),
                    ("card_callback_token", at(&src.card_callback_token)),
                ],
                &format!("a dingtalk source in Stream mode (`{n}`)"),
                "only mode = \"http\" uses callback keys",
            ) {
                ok = false;
            }
            Some(DingtalkInbound::Stream)
        }
        Some("http") => {
            let mut need = |cx: &mut Ctx<'_>, key: &str, v: &Option<S<RawSecretRef>>| match v {
                Some(s) => cx.secret(s, &format!("sources.{n}.{key}")),
                None => {
                    cx.push(ConfigError::new(
                        Code::MissingKey,
                        format!("dingtalk source `{n}` in http mode needs `{key}`"),
                        Some(name.span()),
                        format!("add {key} = {{ env = \"...\" }} (from the app's event subscription page)"),
                    ));
                    ok = false;
                    None
                }
            };
            let token = need(cx, "callback_token", &src.callback_token);
            let aes_key = need(cx, "callback_aes_key", &src.callback_aes_key);
            let card_token = src
                .card_callback_token
                .as_ref()
                .and_then(|s| cx.secret(s, &format!("sources.{n}.card_callback_token")));
            match (token, aes_key) {
                (Some(token), Some(aes_key)) => Some(DingtalkInbound::Http { token, aes_key, card_token }),
                _ => None,
            }
        }
        Some(other) => {
            cx.push(ConfigError::new(
                Code::UnknownChoice,
                format!("source `{n}` has unknown mode `{other}`"),
                src.mode.as_ref().map(|s| s.span()),
                "`stream` (outbound WebSocket, default) or `http` (encrypted callbacks)",
            ));
            None
        }
    };
    let fields = validate_fields(cx, n, src, &mut ok);
    let system = src.system.as_ref().map_or_else(|| "dingtalk".to_string(), |s| s.get_ref().clone());
    let (app, inbound) = (app?, inbound?);
    ok.then(|| SourceConfig {
        name: n.clone(),
        kind: SourceKind::Dingtalk { app, inbound },
        system,
        secrets: Vec::new(),
        entity_id: DEFAULT_ENTITY_ID.to_string(),
        tolerance: DEFAULT_TOLERANCE,
        fields,
    })
}

/// A source whose `type` is a CRM of the registry: its connector validates the CRM keys
/// (`connectors::crm_source`); the keys of the other source types and `fields` are checked here.
fn validate_crm_source(
    cx: &mut Ctx<'_>,
    name: &S<String>,
    src: &RawSource,
    system: CrmSystem,
    connections: &Connections<'_>,
) -> Option<SourceConfig> {
    let n = name.get_ref();
    let vendor = system.as_str();
    let owner = format!("a {vendor} source (`{n}`)");
    let mut ok = !cx.unused_keys(
        &webhook_source_keys(src),
        &owner,
        "CRM sources read records with their org's credentials; nothing is signed per request",
    );
    ok &= !cx.unused_keys(&dingtalk_source_keys(src), &owner, "only `dingtalk` sources take it");
    ok &= !cx.unused_keys(&src.erp_keys().erp_only(), &owner, &erp_only_label());
    let crm = crm_source::validate(&mut cx.diag, name, system, &src.crm_keys(), &connections.tables);
    let fields = validate_fields(cx, n, src, &mut ok);
    let system_name = src.system.as_ref().map_or_else(|| vendor.to_string(), |s| s.get_ref().clone());
    let crm = crm?;
    ok.then(|| SourceConfig {
        name: n.clone(),
        kind: SourceKind::from_crm(system, crm),
        system: system_name,
        secrets: Vec::new(),
        entity_id: DEFAULT_ENTITY_ID.to_string(),
        tolerance: DEFAULT_TOLERANCE,
        fields,
    })
}

/// A destination whose `type` is a CRM of the registry: its connector validates the CRM keys
/// (`connectors::crm_destination`); the keys of the DingTalk destinations and `concurrency` are
/// checked here.
fn validate_crm_destination(
    cx: &mut Ctx<'_>,
    name: &S<String>,
    dst: &RawDestination,
    system: CrmSystem,
    connections: &Connections<'_>,
) -> Option<DestinationConfig> {
    let n = name.get_ref();
    let vendor = system.as_str();
    let owner = format!("a {vendor} destination (`{n}`)");
    cx.unused_keys(
        &robot_destination_keys(dst),
        &owner,
        &format!("the org's credentials and hosts are set under [{vendor}.orgs.NAME]"),
    );
    cx.unused_keys(
        &[("app", at(&dst.app)), ("robot_code", at(&dst.robot_code))],
        &owner,
        "only `dingtalk_app` destinations take it",
    );
    let crm = crm_destination::validate(&mut cx.diag, name, system, &dst.crm_keys(), &connections.tables);
    let concurrency = dst.concurrency.as_ref().and_then(|s| cx.positive(s, &format!("destinations.{n}.concurrency")));
    Some(DestinationConfig { name: n.clone(), kind: DestinationKind::from_crm(system, crm?), concurrency })
}

fn pointer_error(what: &str, s: &S<String>) -> ConfigError {
    ConfigError::new(
        Code::InvalidValue,
        format!("{what} `{}` is not a JSON pointer", s.get_ref()),
        span(s),
        "a JSON pointer starts with `/`, e.g. /data/id",
    )
}

/// Where the `dingtalk_robot` destination keys were written.
fn robot_destination_keys(dst: &RawDestination) -> [(&'static str, Option<Range<usize>>); 4] {
    [
        ("access_token", at(&dst.access_token)),
        ("secret", at(&dst.secret)),
        ("base_url", at(&dst.base_url)),
        ("per_minute", at(&dst.per_minute)),
    ]
}

fn validate_destination(
    cx: &mut Ctx<'_>,
    name: &S<String>,
    dst: &RawDestination,
    connections: &Connections<'_>,
) -> Option<DestinationConfig> {
    let n = name.get_ref();
    match dst.kind.get_ref().as_str() {
        "dingtalk_robot" => {
            let owner = format!("a dingtalk_robot destination (`{n}`)");
            cx.unused_keys(
                &[("app", at(&dst.app)), ("robot_code", at(&dst.robot_code))],
                &owner,
                "only `dingtalk_app` destinations take it",
            );
            cx.unused_keys(&dst.crm_keys().crm_only(), &owner, &crm_only_label("destinations"));
        }
        "dingtalk_app" => {
            let owner = format!("a dingtalk_app destination (`{n}`)");
            cx.unused_keys(
                &robot_destination_keys(dst),
                &owner,
                "the app's credentials and hosts are set under [dingtalk.apps.NAME]",
            );
            cx.unused_keys(&dst.crm_keys().crm_only(), &owner, &crm_only_label("destinations"));
            let concurrency =
                dst.concurrency.as_ref().and_then(|s| cx.positive(s, &format!("destinations.{n}.concurrency")));
            let app = cx.diag.connection_ref(
                &format!("destination `{n}`"),
                &connections.apps(),
                dst.app.as_ref(),
                name.span(),
            )?;
            let robot_code = dst.robot_code.as_ref().map(|s| s.get_ref().clone());
            return Some(DestinationConfig {
                name: n.clone(),
                kind: DestinationKind::DingtalkApp(AppDestination { app, robot_code }),
                concurrency,
            });
        }
        other => {
            if let Some(system) = CrmSystem::from_name(other) {
                return validate_crm_destination(cx, name, dst, system, connections);
            }
            cx.push(ConfigError::new(
                Code::UnknownChoice,
                format!("destination `{n}` has unknown type `{other}`"),
                span(&dst.kind),
                format!("known destination types: {}", destination_types().join(", ")),
            ));
            return None;
        }
    }
    let access_token = match &dst.access_token {
        Some(s) => cx.secret(s, &format!("destinations.{n}.access_token")),
        None => {
            cx.push(ConfigError::new(
                Code::MissingKey,
                format!("destination `{n}` has no `access_token`"),
                Some(name.span()),
                "needs access_token = { env = \"...\" }",
            ));
            None
        }
    };
    let secret = dst.secret.as_ref().map(|s| cx.secret(s, &format!("destinations.{n}.secret")));
    let base_url = dst.base_url.as_ref().map_or_else(|| DEFAULT_DINGTALK_URL.to_string(), |s| s.get_ref().clone());
    if let Some(s) = &dst.base_url {
        require_https(&mut cx.diag, &format!("destinations.{n}.base_url"), s);
        if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
            cx.push(ConfigError::new(
                Code::BadAddress,
                format!("destinations.{n}.base_url `{base_url}` is not an http(s) URL"),
                span(s),
                "expected e.g. https://oapi.dingtalk.com",
            ));
        }
    }
    // 0 is the documented benchmarking switch: no pacing (against a simulator only; real
    // DingTalk blocks a robot for 10 minutes past 20 messages a minute).
    let per_minute = dst.per_minute.as_ref().map_or(DEFAULT_PER_MINUTE, |s| *s.get_ref());
    let concurrency = dst.concurrency.as_ref().and_then(|s| cx.positive(s, &format!("destinations.{n}.concurrency")));
    let access_token = access_token?;
    let secret = match secret {
        Some(None) => return None,
        Some(Some(s)) => Some(s),
        None => None,
    };
    Some(DestinationConfig {
        name: n.clone(),
        kind: DestinationKind::DingtalkRobot(RobotDestination { access_token, secret, base_url, per_minute }),
        concurrency,
    })
}

fn validate_flow(
    cx: &mut Ctx<'_>,
    index: usize,
    f: &RawFlow,
    sources: &BTreeMap<String, SourceConfig>,
    source_names: &[String],
    dest_names: &[String],
    dest_types: &BTreeMap<String, &'static str>,
) -> FlowConfig {
    let name = f.name.get_ref().clone();
    let on = f.on.get_ref();
    let mut source = Vec::new();
    for one in on.source.get_ref().names() {
        if !source_names.contains(&one) {
            let mut e = ConfigError::new(
                Code::UnknownSource,
                format!("flow `{name}` listens to unknown source `{one}`"),
                span(&on.source),
                format!("not defined; known sources: {}", known_list(source_names)),
            );
            if let Some(h) = suggest(&one, source_names) {
                e = e.with_help(h);
            }
            cx.push(e);
        }
        source.push(one);
    }
    if source.is_empty() {
        cx.push(ConfigError::new(
            Code::EmptyValue,
            format!("flow `{name}` listens to no source"),
            span(&on.source),
            "name at least one source",
        ));
    }
    // Field kinds of the sources, when they are known and agree; otherwise skip field checks.
    let kinds: Vec<_> = source.iter().filter_map(|s| sources.get(s).map(SourceConfig::field_kinds)).collect();
    let fields = match kinds.split_first() {
        Some((first, rest)) if kinds.len() == source.len() && rest.iter().all(|k| k == first) => Some(first.clone()),
        _ => None,
    };
    let entity = on.entity.as_ref().map(|e| e.get_ref().clone()).filter(|e| e != "*");
    if let (Some(entity), Some(at)) = (&entity, &on.entity) {
        if connectors::dingtalk::source::is_decision_entity(entity) {
            let not_dingtalk: Vec<&String> = source
                .iter()
                .filter(|s| sources.get(*s).is_some_and(|c| !matches!(c.kind, SourceKind::Dingtalk { .. })))
                .collect();
            if !not_dingtalk.is_empty() {
                let names = not_dingtalk.iter().map(|s| format!("`{s}`")).collect::<Vec<_>>().join(", ");
                cx.push(
                    ConfigError::new(
                        Code::DecisionSource,
                        format!(
                            "flow `{name}` takes `{entity}` events from {names}, which is not a DingTalk source: \
                             whoever can post to it could forge a decision"
                        ),
                        span(at),
                        "only a `type = \"dingtalk\"` source may produce this",
                    )
                    .with_help("listen to the DingTalk source of the app (Stream or encrypted HTTP callback)"),
                );
            }
        }
    }
    let changes = on.change.as_ref().map(|list| {
        // Vendor-specific change names are carried verbatim (`model::ChangeKind::Other`), so
        // any snake_case name is allowed.
        for c in list {
            let ok = !c.get_ref().is_empty()
                && c.get_ref().chars().all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_');
            if !ok {
                cx.push(ConfigError::new(
                    Code::BadName,
                    format!("flow `{name}` listens to change `{}`, which is not a snake_case name", c.get_ref()),
                    span(c),
                    "e.g. created, updated, deleted, status_changed",
                ));
            }
        }
        list.iter().map(|c| c.get_ref().clone()).collect::<Vec<_>>()
    });

    let when =
        f.when.as_ref().and_then(|w| condition(cx, &format!("the condition of flow `{name}`"), w, fields.as_ref()));

    let mut deliver = Vec::new();
    for (j, d) in f.deliver.iter().enumerate() {
        let dest = d.destination.get_ref().clone();
        if !dest_names.contains(&dest) {
            let mut e = ConfigError::new(
                Code::UnknownDestination,
                format!("flow `{name}` delivers to unknown destination `{dest}`"),
                span(&d.destination),
                format!("not defined; known destinations: {}", known_list(dest_names)),
            );
            if let Some(h) = suggest(&dest, dest_names) {
                e = e.with_help(h);
            }
            cx.push(e);
        }
        let prefix = format!("flows[{index}].deliver[{j}]");
        let ordering_key = match &d.ordering_key {
            Some(k) => OrderingKey::Template(cx.template(
                format!("{prefix}.ordering_key"),
                k,
                &format!("the ordering key of flow `{name}`"),
                fields.as_ref(),
            )),
            None => OrderingKey::Literal(dest.clone()),
        };
        let when = d.when.as_ref().and_then(|w| {
            condition(cx, &format!("the condition of delivery #{} of flow `{name}`", j + 1), w, fields.as_ref())
        });
        let dest_type = dest_types.get(&dest).copied();
        if let Some(message) = validate_message(cx, &prefix, &name, &d.message, fields.as_ref(), dest_type) {
            deliver.push(DeliverySpec { destination: dest, when, ordering_key, message });
        }
    }
    if f.deliver.is_empty() {
        cx.push(ConfigError::new(
            Code::MissingKey,
            format!("flow `{name}` has no [[flows.deliver]] entry"),
            span(&f.name),
            "delivers nowhere",
        ));
    }
    FlowConfig { name, source, entity, changes, when, deliver }
}

/// Compile a `when` condition (a flow's or a delivery's) and check the event fields it uses.
fn condition(
    cx: &mut Ctx<'_>,
    what: &str,
    w: &S<String>,
    fields: Option<&BTreeMap<String, FieldKind>>,
) -> Option<Condition> {
    match cel::Program::compile(w.get_ref()) {
        Ok(program) => {
            if let Some(fields) = fields {
                for bad in check_cel(program.expression(), fields) {
                    cx.push(unknown_field(what, &bad, w.span()));
                }
            }
            Some(Condition { source: w.get_ref().clone(), program: Arc::new(program) })
        }
        Err(errs) => {
            let detail: Vec<String> =
                errs.errors.iter().map(|e| format!("{}:{}: {}", e.pos.0, e.pos.1, e.msg)).collect();
            cx.push(ConfigError::new(
                Code::CelCompile,
                format!("{what} does not compile: {}", detail.join("; ")),
                span(w),
                format!("invalid CEL: `{}`", cx.slice(&w.span())),
            ));
            None
        }
    }
}

/// Message types per destination type.
pub(super) const ROBOT_MESSAGES: [&str; 3] = ["markdown", "action_card", "text"];
pub(super) const APP_MESSAGES: [&str; 6] =
    ["work_notice", "robot_message", "group_message", "card", "card_update", "approval"];
pub(super) const CRM_MESSAGES: [&str; 1] = ["record"];

/// The keys each message type takes besides `type`.
fn message_keys(kind: &str) -> Option<&'static [&'static str]> {
    Some(match kind {
        "markdown" => &["title", "text"],
        "text" => &["content"],
        "action_card" => &["title", "text", "buttons", "single_title", "single_url", "btn_orientation"],
        "work_notice" | "robot_message" => &["users", "title", "text"],
        "group_message" => &["group", "title", "text"],
        "card" => &[
            "template_id",
            "out_track_id",
            "group",
            "users",
            "params",
            "private_params",
            "private_to",
            "callback",
            "callback_route_key",
        ],
        "card_update" => &["out_track_id", "params", "private_params", "private_to"],
        "approval" => &["process_code", "originator", "dept_id", "approvers", "form"],
        "record" => &["object", "op", "id", "external_id_field", "external_id", "fields", "json_fields"],
        _ => return None,
    })
}

fn validate_message(
    cx: &mut Ctx<'_>,
    prefix: &str,
    flow: &str,
    m: &S<RawMessage>,
    fields: Option<&BTreeMap<String, FieldKind>>,
    dest_type: Option<&'static str>,
) -> Option<MessageSpec> {
    let msg = m.get_ref();
    let kind = msg.kind.get_ref().as_str();
    let Some(allowed) = message_keys(kind) else {
        cx.push(ConfigError::new(
            Code::UnknownChoice,
            format!("flow `{flow}` uses unknown message type `{kind}`"),
            span(&msg.kind),
            format!("known message types: {}", MESSAGE_TYPES.join(", ")),
        ));
        return None;
    };
    let sendable: Option<&[&str]> = match dest_type {
        Some("dingtalk_robot") => Some(&ROBOT_MESSAGES),
        Some("dingtalk_app") => Some(&APP_MESSAGES),
        Some(crm) if CrmSystem::from_name(crm).is_some() => Some(&CRM_MESSAGES),
        _ => None, // unknown destination: already reported
    };
    if let (Some(dest), Some(known)) = (dest_type, sendable.filter(|known| !known.contains(&kind))) {
        let known = known.join(", ");
        cx.push(ConfigError::new(
            Code::UnknownChoice,
            format!("flow `{flow}` sends a `{kind}` message to a {dest} destination, which cannot send it"),
            span(&msg.kind),
            format!("a {dest} destination sends: {known}"),
        ));
    }
    let sp = |v: &Option<S<String>>| v.as_ref().map(|s| s.span());
    let table = |v: &Option<S<BTreeMap<S<String>, S<String>>>>| v.as_ref().map(|s| s.span());
    let present: [(&str, Option<Range<usize>>); 28] = [
        ("title", sp(&msg.title)),
        ("text", sp(&msg.text)),
        ("content", sp(&msg.content)),
        ("buttons", msg.buttons.as_ref().map(|_| m.span())),
        ("single_title", sp(&msg.single_title)),
        ("single_url", sp(&msg.single_url)),
        ("btn_orientation", sp(&msg.btn_orientation)),
        ("users", sp(&msg.users)),
        ("group", sp(&msg.group)),
        ("template_id", sp(&msg.template_id)),
        ("out_track_id", sp(&msg.out_track_id)),
        ("params", table(&msg.params)),
        ("private_params", table(&msg.private_params)),
        ("private_to", sp(&msg.private_to)),
        ("callback", sp(&msg.callback)),
        ("callback_route_key", sp(&msg.callback_route_key)),
        ("process_code", sp(&msg.process_code)),
        ("originator", sp(&msg.originator)),
        ("dept_id", sp(&msg.dept_id)),
        ("approvers", sp(&msg.approvers)),
        ("form", table(&msg.form)),
        ("object", sp(&msg.object)),
        ("op", sp(&msg.op)),
        ("id", sp(&msg.id)),
        ("external_id_field", sp(&msg.external_id_field)),
        ("external_id", sp(&msg.external_id)),
        ("fields", table(&msg.fields)),
        ("json_fields", table(&msg.json_fields)),
    ];
    for (key, at) in present {
        if let Some(at) = at {
            if !allowed.contains(&key) {
                cx.push(ConfigError::new(
                    Code::UnknownKey,
                    format!("key `{key}` is not used by a `{kind}` message (flow `{flow}`)"),
                    Some(at),
                    format!("a `{kind}` message takes: {}", allowed.join(", ")),
                ));
            }
        }
    }
    let what = |key: &str| format!("`{key}` of the message of flow `{flow}`");
    let require = |cx: &mut Ctx<'_>, key: &str, v: &Option<S<String>>| -> Option<String> {
        match v {
            Some(s) => Some(cx.template(format!("{prefix}.{key}"), s, &what(key), fields)),
            None => {
                cx.push(ConfigError::new(
                    Code::MissingKey,
                    format!("a `{kind}` message of flow `{flow}` needs `{key}`"),
                    Some(m.span()),
                    format!("missing `{key}`"),
                ));
                None
            }
        }
    };
    let optional = |cx: &mut Ctx<'_>, key: &str, v: &Option<S<String>>| -> Option<String> {
        v.as_ref().map(|s| cx.template(format!("{prefix}.{key}"), s, &what(key), fields))
    };
    let map = |cx: &mut Ctx<'_>, key: &str, v: &Option<S<BTreeMap<S<String>, S<String>>>>| -> Vec<(String, String)> {
        let Some(v) = v else { return Vec::new() };
        v.get_ref()
            .iter()
            .map(|(k, t)| {
                let name = cx.template(format!("{prefix}.{key}.{}", k.get_ref()), t, &what(key), fields);
                (k.get_ref().clone(), name)
            })
            .collect()
    };
    let literal = |cx: &mut Ctx<'_>, key: &str, v: &Option<S<String>>| -> Option<String> {
        match v {
            Some(s) if !s.get_ref().trim().is_empty() && !s.get_ref().contains("{{") => Some(s.get_ref().clone()),
            Some(s) => {
                cx.push(ConfigError::new(
                    Code::InvalidValue,
                    format!("`{key}` of the message of flow `{flow}` must be a fixed, non-empty value"),
                    span(s),
                    "not a template: it names a template, process, object or field",
                ));
                None
            }
            None => {
                cx.push(ConfigError::new(
                    Code::MissingKey,
                    format!("a `{kind}` message of flow `{flow}` needs `{key}`"),
                    Some(m.span()),
                    format!("missing `{key}`"),
                ));
                None
            }
        }
    };
    match kind {
        "markdown" => {
            let title = require(cx, "title", &msg.title);
            let text = require(cx, "text", &msg.text);
            Some(MessageSpec::Markdown { title: title?, text: text? })
        }
        "text" => {
            let content = require(cx, "content", &msg.content);
            Some(MessageSpec::Text { content: content? })
        }
        "action_card" => {
            let title = require(cx, "title", &msg.title);
            let text = require(cx, "text", &msg.text);
            let buttons = match (&msg.buttons, &msg.single_title, &msg.single_url) {
                (Some(list), None, None) if !list.is_empty() => {
                    let mut out = Vec::new();
                    for (k, b) in list.iter().enumerate() {
                        let bt = b.get_ref();
                        let t = cx.template(
                            format!("{prefix}.buttons[{k}].title"),
                            &bt.title,
                            &what("buttons.title"),
                            fields,
                        );
                        let u =
                            cx.template(format!("{prefix}.buttons[{k}].url"), &bt.url, &what("buttons.url"), fields);
                        out.push((t, u));
                    }
                    let orientation =
                        msg.btn_orientation.as_ref().map_or_else(|| "0".to_string(), |s| s.get_ref().clone());
                    Some(CardButtons::Many { buttons: out, orientation })
                }
                (None, Some(t), Some(u)) => {
                    if let Some(at) = sp(&msg.btn_orientation) {
                        cx.push(ConfigError::new(
                            Code::UnknownKey,
                            format!("key `btn_orientation` is only used with `buttons` (flow `{flow}`)"),
                            Some(at),
                            "a single-button card has no orientation",
                        ));
                    }
                    let t = cx.template(format!("{prefix}.single_title"), t, &what("single_title"), fields);
                    let u = cx.template(format!("{prefix}.single_url"), u, &what("single_url"), fields);
                    Some(CardButtons::Single { title: t, url: u })
                }
                _ => {
                    cx.push(
                        ConfigError::new(
                            Code::KeyConflict,
                            format!("the action_card message of flow `{flow}` needs either `buttons` or `single_title` + `single_url`"),
                            Some(m.span()),
                            "give one button set",
                        )
                        .with_help("buttons = [{ title = \"Open\", url = \"https://...\" }] or single_title = \"..\", single_url = \"..\""),
                    );
                    None
                }
            };
            Some(MessageSpec::ActionCard { title: title?, text: text?, buttons: buttons? })
        }
        "work_notice" => {
            let users = require(cx, "users", &msg.users);
            let title = require(cx, "title", &msg.title);
            let text = require(cx, "text", &msg.text);
            Some(MessageSpec::WorkNotice { users: users?, title: title?, text: text? })
        }
        "robot_message" => {
            let users = require(cx, "users", &msg.users);
            let title = require(cx, "title", &msg.title);
            let text = require(cx, "text", &msg.text);
            Some(MessageSpec::RobotMessage { users: users?, title: title?, text: text? })
        }
        "group_message" => {
            let group = require(cx, "group", &msg.group);
            let title = require(cx, "title", &msg.title);
            let text = require(cx, "text", &msg.text);
            Some(MessageSpec::GroupMessage { group: group?, title: title?, text: text? })
        }
        "card" => {
            let template_id = literal(cx, "template_id", &msg.template_id);
            let out_track_id = optional(cx, "out_track_id", &msg.out_track_id);
            let group = optional(cx, "group", &msg.group);
            let users = optional(cx, "users", &msg.users);
            if group.is_some() == users.is_some() {
                cx.push(ConfigError::new(
                    Code::KeyConflict,
                    format!("the card message of flow `{flow}` needs exactly one of `group` and `users`"),
                    Some(m.span()),
                    "where the card goes: a group's openConversationId, or userids (1:1 with the app robot)",
                ));
            }
            let params = map(cx, "params", &msg.params);
            let private_params = map(cx, "private_params", &msg.private_params);
            let private_to = optional(cx, "private_to", &msg.private_to);
            if private_params.is_empty() != private_to.is_none() {
                cx.push(ConfigError::new(
                    Code::KeyConflict,
                    format!("the card message of flow `{flow}` needs `private_params` and `private_to` together"),
                    Some(m.span()),
                    "private_params are shown only to the users in private_to",
                ));
            }
            let callback = match (msg.callback.as_ref().map(|s| s.get_ref().as_str()), &msg.callback_route_key) {
                (None | Some("stream"), None) => Some(CardCallback::Stream),
                (Some("http"), Some(key)) => Some(CardCallback::Http { route_key: key.get_ref().clone() }),
                (Some("http"), None) => {
                    cx.push(ConfigError::new(
                        Code::MissingKey,
                        format!(
                            "the card message of flow `{flow}` uses HTTP callbacks but has no `callback_route_key`"
                        ),
                        sp(&msg.callback),
                        "the route key registered with /v1.0/card/callbacks/register",
                    ));
                    None
                }
                (None | Some("stream"), Some(key)) => {
                    cx.push(ConfigError::new(
                        Code::UnknownKey,
                        format!("`callback_route_key` is only used with callback = \"http\" (flow `{flow}`)"),
                        span(key),
                        "Stream callbacks need no route key",
                    ));
                    None
                }
                (Some(other), _) => {
                    cx.push(ConfigError::new(
                        Code::UnknownChoice,
                        format!("the card message of flow `{flow}` has unknown callback `{other}`"),
                        sp(&msg.callback),
                        "`stream` (default) or `http`",
                    ));
                    None
                }
            };
            Some(MessageSpec::Card(CardSpec {
                template_id: template_id?,
                out_track_id,
                group,
                users,
                params,
                private_params,
                private_to,
                callback: callback?,
            }))
        }
        "card_update" => {
            let out_track_id = require(cx, "out_track_id", &msg.out_track_id);
            let params = map(cx, "params", &msg.params);
            let private_params = map(cx, "private_params", &msg.private_params);
            let private_to = optional(cx, "private_to", &msg.private_to);
            if params.is_empty() && private_params.is_empty() {
                cx.push(ConfigError::new(
                    Code::MissingKey,
                    format!("the card_update message of flow `{flow}` needs `params` or `private_params`"),
                    Some(m.span()),
                    "the card parameters to change",
                ));
            }
            if private_params.is_empty() != private_to.is_none() {
                cx.push(ConfigError::new(
                    Code::KeyConflict,
                    format!(
                        "the card_update message of flow `{flow}` needs `private_params` and `private_to` together"
                    ),
                    Some(m.span()),
                    "private_params change what the users in private_to see",
                ));
            }
            Some(MessageSpec::CardUpdate { out_track_id: out_track_id?, params, private_params, private_to })
        }
        "approval" => {
            let process_code = literal(cx, "process_code", &msg.process_code);
            let originator = require(cx, "originator", &msg.originator);
            let dept_id = optional(cx, "dept_id", &msg.dept_id);
            let approvers = optional(cx, "approvers", &msg.approvers);
            let form = map(cx, "form", &msg.form);
            Some(MessageSpec::Approval(ApprovalSpec {
                process_code: process_code?,
                originator: originator?,
                dept_id,
                approvers,
                form,
            }))
        }
        "record" => {
            // Object and field names go into vendor URLs and bodies: check their shape here
            // rather than learn about a typo from a dead letter.
            let api_name = |cx: &mut Ctx<'_>, key: &str, name: &str, at: Range<usize>| {
                if !is_api_name(name) {
                    cx.push(api_name_error(&format!("`{key}` `{name}` of the message of flow `{flow}`"), at));
                }
            };
            let object = literal(cx, "object", &msg.object);
            if let (Some(o), Some(s)) = (&object, &msg.object) {
                api_name(cx, "object", o, s.span());
            }
            let unused = |cx: &mut Ctx<'_>, op: &str, keys: &[(&str, Option<Range<usize>>)], label: &str| {
                for (key, at) in keys.iter().filter_map(|(k, at)| at.clone().map(|at| (k, at))) {
                    cx.push(ConfigError::new(
                        Code::UnknownKey,
                        format!("key `{key}` is not used by an `{op}` record message (flow `{flow}`)"),
                        Some(at),
                        label.to_string(),
                    ));
                }
            };
            let op = match msg.op.as_ref().map(|s| (s, s.get_ref().as_str())) {
                Some((_, "update")) => {
                    unused(
                        cx,
                        "update",
                        &[("external_id_field", sp(&msg.external_id_field)), ("external_id", sp(&msg.external_id))],
                        "an update names its record by `id`",
                    );
                    require(cx, "id", &msg.id).map(|id| RecordOp::Update { id })
                }
                Some((_, "upsert")) => {
                    unused(cx, "upsert", &[("id", sp(&msg.id))], "an upsert names its record by `external_id`");
                    let field = literal(cx, "external_id_field", &msg.external_id_field);
                    if let (Some(f), Some(s)) = (&field, &msg.external_id_field) {
                        api_name(cx, "external_id_field", f, s.span());
                    }
                    let value = require(cx, "external_id", &msg.external_id);
                    match (field, value) {
                        (Some(external_id_field), Some(external_id)) => {
                            Some(RecordOp::Upsert { external_id_field, external_id })
                        }
                        _ => None,
                    }
                }
                Some((s, other)) => {
                    cx.push(ConfigError::new(
                        Code::UnknownChoice,
                        format!("the record message of flow `{flow}` has unknown op `{other}`"),
                        span(s),
                        "`update` (by `id`) or `upsert` (by `external_id_field` + `external_id`)",
                    ));
                    None
                }
                None => {
                    cx.push(ConfigError::new(
                        Code::MissingKey,
                        format!("a `record` message of flow `{flow}` needs `op`"),
                        Some(m.span()),
                        "missing `op`: `update` or `upsert`",
                    ));
                    None
                }
            };
            let written = [&msg.fields, &msg.json_fields];
            for (key, _) in written.into_iter().flatten().flat_map(|t| t.get_ref().iter()) {
                api_name(cx, "field", key.get_ref(), key.span());
            }
            if let (Some(plain), Some(json)) = (&msg.fields, &msg.json_fields) {
                for key in json.get_ref().keys() {
                    if plain.get_ref().keys().any(|k| k.get_ref() == key.get_ref()) {
                        cx.push(ConfigError::new(
                            Code::KeyConflict,
                            format!(
                                "field `{}` is in both `fields` and `json_fields` of the message of flow `{flow}`",
                                key.get_ref()
                            ),
                            span(key),
                            "give each field once: in `fields` as text, or in `json_fields` as JSON",
                        ));
                    }
                }
            }
            let fields = map(cx, "fields", &msg.fields);
            let json_fields = map(cx, "json_fields", &msg.json_fields);
            if fields.is_empty() && json_fields.is_empty() {
                cx.push(ConfigError::new(
                    Code::MissingKey,
                    format!("the record message of flow `{flow}` writes no fields"),
                    Some(m.span()),
                    "add fields = { Field__c = \"{{ event.data.x }}\" } or json_fields",
                ));
            }
            Some(MessageSpec::Record(RecordSpec { object: object?, op: op?, fields, json_fields }))
        }
        _ => None,
    }
}

/// A source whose `type` is an ERP of the registry: its connector validates the ERP keys
/// (`connectors::erp_source`); the keys of the other source types and `fields` are checked here.
fn validate_erp_source(
    cx: &mut Ctx<'_>,
    name: &S<String>,
    src: &RawSource,
    system: ErpSystem,
    connections: &Connections<'_>,
) -> Option<SourceConfig> {
    let n = name.get_ref();
    let vendor = system.as_str();
    let owner = format!("a {vendor} source (`{n}`)");
    let push = system.source_rules().push();
    let mut ok = !cx.unused_keys(&webhook_source_keys(src), &owner, push.instead_of_webhook);
    ok &= !cx.unused_keys(&dingtalk_source_keys(src), &owner, "only `dingtalk` sources take it");
    ok &= !cx.unused_keys(
        &src.crm_keys().crm_only(),
        &owner,
        &format!("{}; ERP sources poll with `poll`", crm_only_label("sources")),
    );
    let erp = erp_source::validate(&mut cx.diag, name, system, &src.erp_keys(), &connections.tables, &cx.base_dir);
    let fields = validate_fields(cx, n, src, &mut ok);
    let erp = erp?;
    ok.then(|| SourceConfig {
        name: n.clone(),
        kind: SourceKind::Erp(erp),
        system: vendor.to_string(),
        secrets: Vec::new(),
        entity_id: DEFAULT_ENTITY_ID.to_string(),
        tolerance: DEFAULT_TOLERANCE,
        fields,
    })
}
