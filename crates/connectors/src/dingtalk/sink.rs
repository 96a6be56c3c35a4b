//! The custom robot sink: paced, signed `POST {base_url}/robot/send`.

use super::auth::robot_sign;
use super::client::{robot_http_client, RobotMessage};
use super::errors::classify_robot_response;
use super::VENDOR;
use async_trait::async_trait;
use connect::http::{read_body_capped, HttpClient, Outbound};
use connect::ratelimit::RollingWindow;
use connect::retry_after::parse_retry_after;
use connect::{Clock, Delivery, DeliveryError, Idempotency, Pacing, Receipt, Sink};
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;

/// Mainland DingTalk's old-API host; the overseas build uses `https://oapi.dingtalk.io`.
pub const DEFAULT_BASE_URL: &str = "https://oapi.dingtalk.com";
/// DingTalk's documented robot limit: 20 messages per minute per robot.
pub const DEFAULT_PER_MINUTE: u32 = 20;
/// DingTalk's window is 60 s, counted by arrival at DingTalk. Our pacing counts by send time,
/// so a 1 s margin keeps network jitter from landing the 21st message inside DingTalk's window
/// (100 messages still finish by 4 min 4 s: 5 windows of 20).
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(61);
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest answer read from DingTalk; robot answers are a few dozen bytes.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Settings of one custom robot destination.
#[derive(Debug, Clone)]
pub struct RobotSettings {
    /// Scheme and host, no path: `https://oapi.dingtalk.com` (default) or a simulator URL.
    pub base_url: String,
    /// The webhook's `access_token` (64 hex chars).
    pub access_token: SecretString,
    /// The signing secret (`SEC…`) when the robot's security setting is "加签".
    pub secret: Option<SecretString>,
    /// Messages allowed per `window` (DingTalk: 20 per 60 s). 0 disables pacing (benchmarks).
    pub per_minute: u32,
    /// The pacing window: DingTalk's 60 s plus a jitter margin ([`DEFAULT_WINDOW`]); shorter
    /// only in tests against a scaled-down simulator.
    pub window: Duration,
    /// Overall timeout of one request.
    pub timeout: Duration,
    /// Private hosts the robot may be reached at and extra TLS trust (public hosts only by
    /// default; a simulator on 127.0.0.1 must be listed).
    pub outbound: Outbound,
}

impl RobotSettings {
    /// Defaults for everything but the token: DingTalk's host, 20 per 61 s, 10 s timeout,
    /// no signing.
    pub fn new(access_token: SecretString) -> Self {
        Self {
            base_url: DEFAULT_BASE_URL.to_owned(),
            access_token,
            secret: None,
            per_minute: DEFAULT_PER_MINUTE,
            window: DEFAULT_WINDOW,
            timeout: DEFAULT_TIMEOUT,
            outbound: Outbound::default(),
        }
    }

    /// Checks the settings without any I/O.
    pub fn validate(&self) -> Result<(), DeliveryError> {
        let invalid = |detail: String| DeliveryError::Rejected {
            vendor: VENDOR,
            detail: format!("robot settings are invalid: {detail}"),
        };
        let url = url::Url::parse(&self.base_url)
            .map_err(|err| invalid(format!("base_url `{}` is not a URL ({err})", self.base_url)))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(invalid(format!("base_url `{}` must be http(s)://host", self.base_url)));
        }
        if url.query().is_some() || !url.path().trim_end_matches('/').is_empty() {
            return Err(invalid(format!(
                "base_url `{}` must have no path or query; `/robot/send` is added",
                self.base_url
            )));
        }
        let token = self.access_token.expose_secret();
        if token.trim().is_empty() {
            return Err(invalid("access_token is empty; copy it from the robot's webhook URL".to_owned()));
        }
        if token.contains(['?', '&', '=', ' ']) {
            return Err(invalid(
                "access_token looks like a URL fragment; give only the value after `access_token=`".to_owned(),
            ));
        }
        if self.secret.as_ref().is_some_and(|s| s.expose_secret().trim().is_empty()) {
            return Err(invalid("secret is empty; remove it or give the robot's SEC… secret".to_owned()));
        }
        if self.timeout.is_zero() {
            return Err(invalid("timeout must be greater than zero".to_owned()));
        }
        if self.per_minute > 0 && self.window.is_zero() {
            return Err(invalid("window must be greater than zero when per_minute is set".to_owned()));
        }
        Ok(())
    }
}

/// Sends robot messages to one custom group robot. The outbox paces its attempts by
/// [`Sink::pacing`] (20 per 61 s per robot, counted across every gateway instance in the store),
/// so DingTalk's 130101 block is never triggered by us. A 130101 anyway (another sender on the
/// same robot) blocks the sink for [`super::errors::ROBOT_THROTTLE_PENALTY`]: until then it
/// refuses locally, without a request.
#[derive(Debug)]
pub struct RobotSink {
    settings: RobotSettings,
    /// `{base_url}/robot/send`, without the query: safe to log.
    endpoint: String,
    endpoint_url: url::Url,
    http: HttpClient,
    /// Holds the vendor's blocks only; the rolling window itself is the outbox's (see
    /// [`Sink::pacing`]).
    limiter: RollingWindow,
    /// The robot's identity in the pacing ledger: a digest of its token, never the token.
    pacing_key: String,
    clock: Arc<dyn Clock>,
}

impl RobotSink {
    pub fn new(settings: RobotSettings, clock: Arc<dyn Clock>) -> Result<Self, DeliveryError> {
        settings.validate()?;
        let endpoint = format!("{}/robot/send", settings.base_url.trim_end_matches('/'));
        let endpoint_url = url::Url::parse(&endpoint).map_err(|err| DeliveryError::Rejected {
            vendor: VENDOR,
            detail: format!("robot settings are invalid: `{endpoint}` is not a URL ({err})"),
        })?;
        let http = robot_http_client(settings.timeout, settings.outbound.clone())?;
        let digest = Sha256::digest(settings.access_token.expose_secret().as_bytes());
        let pacing_key = format!("dingtalk-robot:{}", hex::encode(&digest[..12]));
        Ok(Self { settings, endpoint, endpoint_url, http, limiter: RollingWindow::unlimited(), pacing_key, clock })
    }

    /// The webhook URL without its query (what logs and errors show).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The vendor's block, if one is in force (exposed for tests and metrics).
    pub fn limiter(&self) -> &RollingWindow {
        &self.limiter
    }

    /// The full URL, signed now. Contains the token: never log it (the shared client's errors
    /// show it through `redact_url`, without the query).
    fn signed_url(&self) -> url::Url {
        let token = utf8_percent_encode(self.settings.access_token.expose_secret(), NON_ALPHANUMERIC);
        let mut query = format!("access_token={token}");
        if let Some(secret) = &self.settings.secret {
            // Computed per request: a timestamp fixed at start-up fails after an hour.
            let timestamp = self.clock.now_millis();
            let sign = robot_sign(secret.expose_secret(), timestamp);
            query.push_str(&format!("&timestamp={timestamp}&sign={sign}"));
        }
        let mut url = self.endpoint_url.clone();
        // Already percent-encoded: `set_query` keeps `%2B` etc. as they are.
        url.set_query(Some(&query));
        url
    }
}

#[async_trait]
impl Sink for RobotSink {
    async fn deliver(&self, delivery: &Delivery) -> Result<Receipt, DeliveryError> {
        let message = RobotMessage::from_value(&delivery.payload).map_err(|e| DeliveryError::BadPayload {
            destination: delivery.destination.clone(),
            detail: e.to_string(),
        })?;
        let body = serde_json::to_vec(&message).map_err(|err| DeliveryError::BadPayload {
            destination: delivery.destination.clone(),
            detail: format!("cannot serialise the message: {err}"),
        })?;

        // Known blocked (a 130101 or 429 earlier): sending now would only extend the block.
        if let Err(retry_after) = self.limiter.try_acquire() {
            return Err(DeliveryError::Throttled {
                vendor: VENDOR,
                detail: "the robot is blocked after an earlier throttle answer; nothing sent".to_owned(),
                retry_after,
            });
        }
        tracing::debug!(
            event_id = %delivery.event_id,
            flow = %delivery.flow,
            destination = %delivery.destination,
            attempt = delivery.attempt,
            endpoint = %self.endpoint,
            msgtype = message.msgtype(),
            body_bytes = body.len(),
            "Sending DingTalk robot message."
        );
        let request = self
            .http
            .post(self.signed_url())
            .header(reqwest::header::CONTENT_TYPE, "application/json;charset=utf-8")
            .body(body);
        let response = self.http.send(request).await?;

        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, self.clock.now()));
        let answer = read_body_capped(response, MAX_ANSWER_BYTES).await?;
        match classify_robot_response(status, retry_after, &answer) {
            Ok(()) => Ok(Receipt { vendor_id: None, detail: Some("errcode 0: ok".to_owned()) }),
            Err(err) => {
                if let DeliveryError::Throttled { retry_after, .. } = &err {
                    // Nothing else may go out before the vendor's block ends (130101: about
                    // 10 minutes; 429: its Retry-After).
                    self.limiter.block_until(tokio::time::Instant::now() + *retry_after);
                }
                tracing::warn!(
                    event_id = %delivery.event_id,
                    flow = %delivery.flow,
                    destination = %delivery.destination,
                    attempt = delivery.attempt,
                    endpoint = %self.endpoint,
                    error = %err,
                    "DingTalk robot refused the message."
                );
                Err(err)
            }
        }
    }

    /// DingTalk counts a robot's messages per minute whoever sends them: one window per token.
    fn pacing(&self) -> Option<Pacing> {
        (self.settings.per_minute > 0).then(|| Pacing {
            key: self.pacing_key.clone(),
            max: self.settings.per_minute,
            window: self.settings.window,
        })
    }

    /// The custom robot has no dedupe field (reference §2): a send in flight at a crash may be
    /// repeated.
    fn idempotency(&self) -> Idempotency {
        Idempotency::None
    }

    /// Validates the settings only: a robot has no read endpoint, and any send would post a
    /// message into the group.
    async fn healthcheck(&self) -> Result<(), DeliveryError> {
        self.settings.validate()
    }
}
