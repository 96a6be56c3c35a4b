//! Phase 2: pure validation. No environment, no network, no clock, no file reads.

use super::raw::*;
use super::refs::{check_cel, check_template_vars, BadRef};
use super::*;
use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use std::collections::{BTreeSet, HashMap};

const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
const DEFAULT_MAX_BODY: u64 = 1_048_576;
const DEFAULT_STORE_URL: &str = "sqlite://dingbridge.db";
const DEFAULT_DINGTALK_URL: &str = "https://oapi.dingtalk.com";
const DEFAULT_PER_MINUTE: u32 = 20;
const DEFAULT_ENTITY_ID: &str = "/data/id";
const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);

/// A minijinja environment configured the way message templates render: strict undefined,
/// no auto-escaping.
pub(crate) fn template_env() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env.set_keep_trailing_newline(true);
    env
}

struct Ctx<'a> {
    errors: Vec<ConfigError>,
    env: Environment<'static>,
    text: &'a str,
}

fn span<T>(s: &S<T>) -> Option<Range<usize>> {
    Some(s.span())
}

impl Ctx<'_> {
    fn push(&mut self, e: ConfigError) {
        self.errors.push(e);
    }

    fn duration(&mut self, s: &S<String>, what: &str) -> Option<Duration> {
        match parse_duration(s.get_ref()) {
            Ok(d) => Some(d),
            Err(msg) => {
                self.push(ConfigError::new(Code::BadDuration, format!("{what}: {msg}"), span(s), "not a duration"));
                None
            }
        }
    }

    fn positive(&mut self, s: &S<u64>, what: &str) -> Option<usize> {
        match usize::try_from(*s.get_ref()) {
            Ok(n) if n > 0 => Some(n),
            _ => {
                self.push(ConfigError::new(
                    Code::InvalidValue,
                    format!("{what} must be a positive number, found {}", s.get_ref()),
                    span(s),
                    "must be at least 1",
                ));
                None
            }
        }
    }

    fn secret(&mut self, s: &S<RawSecretRef>, what: &str) -> Option<SecretRef> {
        secret_ref(s.get_ref(), s.span()).map_err(|msg| self.push(invalid_secret(what, &msg, s.span()))).ok()
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
        let mut any = false;
        for (key, at) in keys {
            if let Some(at) = at {
                self.push(ConfigError::new(
                    Code::UnknownKey,
                    format!("key `{key}` is not used by {owner}"),
                    Some(at.clone()),
                    label.to_string(),
                ));
                any = true;
            }
        }
        any
    }

    fn slice(&self, r: &Range<usize>) -> &str {
        self.text.get(r.clone()).unwrap_or_default()
    }
}

/// Where an optional key was written, if it was.
fn at<T>(value: &Option<S<T>>) -> Option<Range<usize>> {
    value.as_ref().map(|s| s.span())
}

fn invalid_secret(what: &str, msg: &str, span: Range<usize>) -> ConfigError {
    ConfigError::new(Code::InvalidValue, format!("{what}: {msg}"), Some(span), "invalid secret reference").with_help(
        "write `{ env = \"NAME\" }` or `{ file = \"/path/to/secret\" }`; secrets are never literal in config",
    )
}

fn secret_ref(r: &RawSecretRef, span: Range<usize>) -> Result<SecretRef, String> {
    let location = match (&r.env, &r.file) {
        (Some(v), None) if !v.trim().is_empty() => SecretLocation::Env(v.clone()),
        (None, Some(p)) if !p.trim().is_empty() => SecretLocation::File(PathBuf::from(p)),
        (Some(_), Some(_)) => return Err("give either `env` or `file`, not both".into()),
        (None, None) => return Err("a secret reference needs `env` or `file`".into()),
        _ => return Err("the variable name or path is empty".into()),
    };
    Ok(SecretRef { location, span })
}

fn unknown_field(what: &str, bad: &BadRef, span: Range<usize>) -> ConfigError {
    ConfigError::new(
        Code::UnknownEventField,
        format!("{what} references `{}`, which events do not have", bad.path),
        Some(span),
        bad.reason.clone(),
    )
}

/// Edit distance for "did you mean" hints.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

fn suggest<'a>(name: &str, known: impl IntoIterator<Item = &'a String>) -> Option<String> {
    known
        .into_iter()
        .map(|k| (distance(name, k), k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| format!("did you mean `{k}`?"))
}

fn known_list(known: &[String]) -> String {
    if known.is_empty() {
        "none are defined".to_string()
    } else {
        known.join(", ")
    }
}

pub(super) fn validate(raw: RawConfig, text: &str, path: &str) -> Result<Config, ConfigErrors> {
    let mut cx = Ctx { errors: Vec::new(), env: template_env(), text };

    // [server]
    let listen = match &raw.server.listen {
        Some(s) => match s.get_ref().parse::<SocketAddr>() {
            Ok(a) => a,
            Err(e) => {
                cx.push(ConfigError::new(
                    Code::InvalidValue,
                    format!("server.listen `{}` is not an address: {e}", s.get_ref()),
                    span(s),
                    "expected host:port, e.g. 127.0.0.1:8080",
                ));
                SocketAddr::from(([127, 0, 0, 1], 8080))
            }
        },
        None => DEFAULT_LISTEN.parse().unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8080))),
    };
    let max_body_bytes = raw.server.max_body_bytes.as_ref().map_or(DEFAULT_MAX_BODY, |s| *s.get_ref());
    let admin_token = raw.server.admin_token.as_ref().and_then(|s| cx.secret(s, "server.admin_token"));
    let server = ServerConfig { listen, max_body_bytes, admin_token };
    let store = StoreConfig {
        url: raw.store.url.as_ref().map_or_else(|| DEFAULT_STORE_URL.to_string(), |s| s.get_ref().clone()),
    };

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
                Code::InvalidValue,
                format!("delivery.jitter must be in [0, 1), found {v}"),
                span(j),
                "a fraction, e.g. 0.2 for ±20 %",
            ));
        }
    }
    if let Some(s) = &d.lease {
        delivery.lease = cx.duration(s, "delivery.lease").unwrap_or(delivery.lease);
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
                Code::InvalidValue,
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
        if let Some(a) = validate_dingtalk_app(&mut cx, name, app) {
            dingtalk_apps.insert(name.get_ref().clone(), a);
        }
    }
    let app_names: Vec<String> = raw.dingtalk.apps.keys().map(|k| k.get_ref().clone()).collect();

    // [sources.*]
    let mut sources = BTreeMap::new();
    for (name, src) in &raw.sources {
        if let Some(s) = validate_source(&mut cx, name, src, &app_names) {
            sources.insert(name.get_ref().clone(), s);
        }
    }

    // [destinations.*]
    let mut destinations = BTreeMap::new();
    for (name, dst) in &raw.destinations {
        if let Some(d) = validate_destination(&mut cx, name, dst, &app_names) {
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
                Code::InvalidValue,
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

    if !cx.errors.is_empty() {
        // Report in file order.
        cx.errors.sort_by_key(|e| e.span.as_ref().map_or(0, |s| s.start));
        return Err(ConfigErrors::new(path, text, cx.errors));
    }
    Ok(Config {
        server,
        store,
        delivery,
        sources,
        destinations,
        flows,
        dingtalk_apps,
        templates: Arc::new(cx.env),
        path: path.to_string(),
        text: Arc::from(text),
    })
}

fn validate_dingtalk_app(cx: &mut Ctx<'_>, name: &S<String>, app: &RawDingtalkApp) -> Option<DingtalkAppConfig> {
    let n = name.get_ref();
    let mut ok = true;
    if app.app_key.get_ref().trim().is_empty() {
        cx.push(ConfigError::new(
            Code::InvalidValue,
            format!("dingtalk.apps.{n}.app_key is empty"),
            span(&app.app_key),
            "the app's AppKey (ClientID), e.g. dingxxxxxxxxxxxxxxxx",
        ));
        ok = false;
    }
    let app_secret = cx.secret(&app.app_secret, &format!("dingtalk.apps.{n}.app_secret"));
    let region = match app.region.as_ref().map(|s| s.get_ref().as_str()) {
        None | Some("mainland") => DingtalkRegion::Mainland,
        Some("overseas") => DingtalkRegion::Overseas,
        Some(other) => {
            cx.push(ConfigError::new(
                Code::InvalidValue,
                format!("dingtalk.apps.{n}.region `{other}` is unknown"),
                app.region.as_ref().map(|s| s.span()),
                "`mainland` (dingtalk.com) or `overseas` (dingtalk.io)",
            ));
            ok = false;
            DingtalkRegion::Mainland
        }
    };
    let token_api = match app.token_api.as_ref().map(|s| s.get_ref().as_str()) {
        None | Some("new") => DingtalkTokenApi::New,
        Some("old") => DingtalkTokenApi::Old,
        Some(other) => {
            cx.push(ConfigError::new(
                Code::InvalidValue,
                format!("dingtalk.apps.{n}.token_api `{other}` is unknown"),
                app.token_api.as_ref().map(|s| s.span()),
                "`new` (v1.0/oauth2/accessToken) or `old` (gettoken)",
            ));
            ok = false;
            DingtalkTokenApi::New
        }
    };
    let qps_per_api = app.qps_per_api.as_ref().map_or(20, |s| *s.get_ref());
    if qps_per_api == 0 {
        cx.push(ConfigError::new(
            Code::InvalidValue,
            format!("dingtalk.apps.{n}.qps_per_api must be at least 1"),
            app.qps_per_api.as_ref().map(|s| s.span()),
            "DingTalk's standard edition allows 20 per app per API",
        ));
        ok = false;
    }
    let app_secret = app_secret?;
    ok.then(|| DingtalkAppConfig {
        name: n.clone(),
        app_key: app.app_key.get_ref().clone(),
        app_secret,
        agent_id: app.agent_id.as_ref().map(|s| *s.get_ref()),
        corp_id: app.corp_id.as_ref().map(|s| s.get_ref().clone()),
        region,
        token_api,
        qps_per_api,
        sync_directory: app.sync_directory.as_ref().is_none_or(|s| *s.get_ref()),
        base_url_override: None,
    })
}

/// Checks that `app` names a `[dingtalk.apps.*]` entry.
fn app_ref(
    cx: &mut Ctx<'_>,
    owner: &str,
    app: Option<&S<String>>,
    at: Range<usize>,
    apps: &[String],
) -> Option<String> {
    match app {
        Some(a) if apps.contains(a.get_ref()) => Some(a.get_ref().clone()),
        Some(a) => {
            let mut e = ConfigError::new(
                Code::InvalidValue,
                format!("{owner} uses unknown DingTalk app `{}`", a.get_ref()),
                span(a),
                format!("not defined under [dingtalk.apps]; known apps: {}", known_list(apps)),
            );
            if let Some(h) = suggest(a.get_ref(), apps) {
                e = e.with_help(h);
            }
            cx.push(e);
            None
        }
        None => {
            cx.push(ConfigError::new(
                Code::InvalidValue,
                format!("{owner} has no `app`"),
                Some(at),
                "needs app = \"<name of a [dingtalk.apps.NAME] table>\"",
            ));
            None
        }
    }
}

fn validate_source(cx: &mut Ctx<'_>, name: &S<String>, src: &RawSource, apps: &[String]) -> Option<SourceConfig> {
    let n = name.get_ref();
    match src.kind.get_ref().as_str() {
        "webhook" => {
            cx.unused_keys(
                &[
                    ("app", at(&src.app)),
                    ("mode", at(&src.mode)),
                    ("callback_token", at(&src.callback_token)),
                    ("callback_aes_key", at(&src.callback_aes_key)),
                ],
                &format!("a webhook source (`{n}`)"),
                "only `dingtalk` sources take it",
            );
        }
        "dingtalk" => return validate_dingtalk_source(cx, name, src, apps),
        other => {
            cx.push(ConfigError::new(
                Code::InvalidValue,
                format!("source `{n}` has unknown type `{other}`"),
                span(&src.kind),
                "known source types: webhook, dingtalk",
            ));
            return None;
        }
    }
    let mut ok = true;
    let mut secrets = Vec::new();
    match &src.secret {
        Some(s) => {
            if s.get_ref().0.is_empty() {
                cx.push(invalid_secret(&format!("sources.{n}.secret"), "the list of secrets is empty", s.span()));
                ok = false;
            }
            for r in &s.get_ref().0 {
                match secret_ref(r, s.span()) {
                    Ok(r) => secrets.push(r),
                    Err(msg) => {
                        cx.push(invalid_secret(&format!("sources.{n}.secret"), &msg, s.span()));
                        ok = false;
                    }
                }
            }
        }
        None => {
            cx.push(
                ConfigError::new(
                    Code::InvalidValue,
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
                    Code::InvalidValue,
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
    apps: &[String],
) -> Option<SourceConfig> {
    let n = name.get_ref();
    let mut ok = !cx.unused_keys(
        &[("secret", at(&src.secret)), ("tolerance", at(&src.tolerance)), ("entity_id", at(&src.entity_id))],
        &format!("a dingtalk source (`{n}`)"),
        "dingtalk sources are authenticated by the app (Stream) or by callback_token + callback_aes_key (HTTP)",
    );
    let app = app_ref(cx, &format!("source `{n}`"), src.app.as_ref(), name.span(), apps);
    let inbound = match src.mode.as_ref().map(|s| s.get_ref().as_str()) {
        None | Some("stream") => {
            if cx.unused_keys(
                &[("callback_token", at(&src.callback_token)), ("callback_aes_key", at(&src.callback_aes_key))],
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
                        Code::InvalidValue,
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
            match (token, aes_key) {
                (Some(token), Some(aes_key)) => Some(DingtalkInbound::Http { token, aes_key }),
                _ => None,
            }
        }
        Some(other) => {
            cx.push(ConfigError::new(
                Code::InvalidValue,
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

fn pointer_error(what: &str, s: &S<String>) -> ConfigError {
    ConfigError::new(
        Code::InvalidValue,
        format!("{what} `{}` is not a JSON pointer", s.get_ref()),
        span(s),
        "a JSON pointer starts with `/`, e.g. /data/id",
    )
}

fn validate_destination(
    cx: &mut Ctx<'_>,
    name: &S<String>,
    dst: &RawDestination,
    apps: &[String],
) -> Option<DestinationConfig> {
    let n = name.get_ref();
    match dst.kind.get_ref().as_str() {
        "dingtalk_robot" => {
            cx.unused_keys(
                &[("app", at(&dst.app)), ("robot_code", at(&dst.robot_code))],
                &format!("a dingtalk_robot destination (`{n}`)"),
                "only `dingtalk_app` destinations take it",
            );
        }
        "dingtalk_app" => {
            cx.unused_keys(
                &[
                    ("access_token", at(&dst.access_token)),
                    ("secret", at(&dst.secret)),
                    ("base_url", at(&dst.base_url)),
                    ("per_minute", at(&dst.per_minute)),
                ],
                &format!("a dingtalk_app destination (`{n}`)"),
                "the app's credentials and hosts are set under [dingtalk.apps.NAME]",
            );
            let concurrency =
                dst.concurrency.as_ref().and_then(|s| cx.positive(s, &format!("destinations.{n}.concurrency")));
            let app = app_ref(cx, &format!("destination `{n}`"), dst.app.as_ref(), name.span(), apps)?;
            let robot_code = dst.robot_code.as_ref().map(|s| s.get_ref().clone());
            return Some(DestinationConfig {
                name: n.clone(),
                kind: DestinationKind::DingtalkApp(AppDestination { app, robot_code }),
                concurrency,
            });
        }
        other => {
            cx.push(ConfigError::new(
                Code::InvalidValue,
                format!("destination `{n}` has unknown type `{other}`"),
                span(&dst.kind),
                "known destination types: dingtalk_robot, dingtalk_app",
            ));
            return None;
        }
    }
    let access_token = match &dst.access_token {
        Some(s) => cx.secret(s, &format!("destinations.{n}.access_token")),
        None => {
            cx.push(ConfigError::new(
                Code::InvalidValue,
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
        if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
            cx.push(ConfigError::new(
                Code::InvalidValue,
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
    let source = on.source.get_ref().clone();
    if !source_names.contains(&source) {
        let mut e = ConfigError::new(
            Code::UnknownSource,
            format!("flow `{name}` listens to unknown source `{source}`"),
            span(&on.source),
            format!("not defined; known sources: {}", known_list(source_names)),
        );
        if let Some(h) = suggest(&source, source_names) {
            e = e.with_help(h);
        }
        cx.push(e);
    }
    // Field kinds of the source, when it is known and valid; otherwise skip field checks.
    let fields = sources.get(&source).map(SourceConfig::field_kinds);
    let entity = on.entity.as_ref().map(|e| e.get_ref().clone()).filter(|e| e != "*");
    let changes = on.change.as_ref().map(|list| {
        // Vendor-specific change names are carried verbatim (`model::ChangeKind::Other`), so
        // any snake_case name is allowed.
        for c in list {
            let ok = !c.get_ref().is_empty()
                && c.get_ref().chars().all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_');
            if !ok {
                cx.push(ConfigError::new(
                    Code::InvalidValue,
                    format!("flow `{name}` listens to change `{}`, which is not a snake_case name", c.get_ref()),
                    span(c),
                    "e.g. created, updated, deleted, status_changed",
                ));
            }
        }
        list.iter().map(|c| c.get_ref().clone()).collect::<Vec<_>>()
    });

    let when = f.when.as_ref().and_then(|w| {
        let what = format!("the condition of flow `{name}`");
        match cel::Program::compile(w.get_ref()) {
            Ok(program) => {
                if let Some(fields) = &fields {
                    for bad in check_cel(program.expression(), fields) {
                        cx.push(unknown_field(&what, &bad, w.span()));
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
    });

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
        let dest_type = dest_types.get(&dest).copied();
        if let Some(message) = validate_message(cx, &prefix, &name, &d.message, fields.as_ref(), dest_type) {
            deliver.push(DeliverySpec { destination: dest, ordering_key, message });
        }
    }
    if f.deliver.is_empty() {
        cx.push(ConfigError::new(
            Code::InvalidValue,
            format!("flow `{name}` has no [[flows.deliver]] entry"),
            span(&f.name),
            "delivers nowhere",
        ));
    }
    FlowConfig { name, source, entity, changes, when, deliver }
}

/// Message types per destination type.
const ROBOT_MESSAGES: [&str; 3] = ["markdown", "action_card", "text"];
const APP_MESSAGES: [&str; 6] = ["work_notice", "robot_message", "group_message", "card", "card_update", "approval"];

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
            Code::InvalidValue,
            format!("flow `{flow}` uses unknown message type `{kind}`"),
            span(&msg.kind),
            format!("known message types: {}, {}", ROBOT_MESSAGES.join(", "), APP_MESSAGES.join(", ")),
        ));
        return None;
    };
    let fits = match dest_type {
        Some("dingtalk_robot") => ROBOT_MESSAGES.contains(&kind),
        Some("dingtalk_app") => APP_MESSAGES.contains(&kind),
        _ => true, // unknown destination: already reported
    };
    if !fits {
        let (dest, known) = match dest_type {
            Some("dingtalk_robot") => ("dingtalk_robot", ROBOT_MESSAGES.join(", ")),
            _ => ("dingtalk_app", APP_MESSAGES.join(", ")),
        };
        cx.push(ConfigError::new(
            Code::InvalidValue,
            format!("flow `{flow}` sends a `{kind}` message to a {dest} destination, which cannot send it"),
            span(&msg.kind),
            format!("a {dest} destination sends: {known}"),
        ));
    }
    let sp = |v: &Option<S<String>>| v.as_ref().map(|s| s.span());
    let present: [(&str, Option<Range<usize>>); 20] = [
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
        ("params", msg.params.as_ref().map(|s| s.span())),
        ("private_params", msg.private_params.as_ref().map(|s| s.span())),
        ("private_to", sp(&msg.private_to)),
        ("callback", sp(&msg.callback)),
        ("callback_route_key", sp(&msg.callback_route_key)),
        ("process_code", sp(&msg.process_code)),
        ("originator", sp(&msg.originator)),
        ("dept_id", sp(&msg.dept_id)),
        ("approvers", sp(&msg.approvers)),
    ];
    let form_span = msg.form.as_ref().map(|s| s.span());
    for (key, at) in present.into_iter().chain([("form", form_span)]) {
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
                    Code::InvalidValue,
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
                    "not a template: it names a DingTalk template or process",
                ));
                None
            }
            None => {
                cx.push(ConfigError::new(
                    Code::InvalidValue,
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
                            Code::InvalidValue,
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
                    Code::InvalidValue,
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
                    Code::InvalidValue,
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
                        Code::InvalidValue,
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
                        Code::InvalidValue,
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
                    Code::InvalidValue,
                    format!("the card_update message of flow `{flow}` needs `params` or `private_params`"),
                    Some(m.span()),
                    "the card parameters to change",
                ));
            }
            if private_params.is_empty() != private_to.is_none() {
                cx.push(ConfigError::new(
                    Code::InvalidValue,
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
        _ => None,
    }
}
