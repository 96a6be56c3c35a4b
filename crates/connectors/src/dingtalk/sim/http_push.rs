//! Simulator side of HTTP event subscription (reference §6, §10 item 9): DingTalk pushing
//! encrypted events to a subscriber's callback URL, and card clicks in HTTP callback mode (§4.2).
//!
//! A push counts as delivered only when the subscriber answers HTTP 200 with the §6.3 JSON
//! (keys exactly `msg_signature`, `timeStamp`, `nonce`, `encrypt`) whose signature verifies and
//! whose `encrypt` decrypts, with the same keys, to exactly `success`. Anything else is a failed
//! push (DingTalk logs a wrong reply as errcode 71009) and is retried on a short schedule; the
//! real platform's retry schedule is UNVERIFIED. Every attempt is re-encrypted and re-signed
//! with a fresh nonce and timestamp, as a new push would be.

use crate::dingtalk::crypto::{random_alnum, CallbackCrypto, CryptoError};
use connect::http::{read_body_capped, redact_url};
use connect::{Clock, SystemClock};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use url::Url;

/// DingTalk waits at most 1500 ms for the `check_url` answer (§6.4); the same bound is used for
/// every push so a slow subscriber fails here as it would there.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(1500);
pub const DEFAULT_ATTEMPTS: u32 = 3;
/// Delay before the 2nd and 3rd attempt.
pub const DEFAULT_BACKOFF: [Duration; 2] = [Duration::from_millis(200), Duration::from_secs(1)];
/// A `success` reply is ~200 bytes; anything near this is not a DingTalk reply.
const MAX_REPLY_BYTES: usize = 64 * 1024;
const NONCE_LEN: usize = 16;
/// Unexpected decrypted replies are quoted up to this many characters.
const QUOTED_REPLY_CHARS: usize = 64;

/// A subscriber: its callback URL and the three values from its event-subscription settings.
#[derive(Clone, PartialEq, Eq)]
pub struct CallbackTarget {
    pub url: String,
    pub token: String,
    pub encoding_aes_key: String,
    /// AppKey (internal app), CorpId (legacy registration) or SuiteKey (third-party app).
    pub owner_key: String,
}

// Token and AES key are credentials; the URL may carry a query secret.
impl std::fmt::Debug for CallbackTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let url = Url::parse(&self.url).map(|u| redact_url(&u)).unwrap_or_else(|_| "[unparsable]".to_owned());
        f.debug_struct("CallbackTarget")
            .field("url", &url)
            .field("token", &"[redacted]")
            .field("encoding_aes_key", &"[redacted]")
            .field("owner_key", &self.owner_key)
            .finish()
    }
}

/// Timeout and retry schedule of an [`HttpPusher`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushSettings {
    /// Per request, connect to last reply byte.
    pub timeout: Duration,
    /// Total attempts, at least 1.
    pub attempts: u32,
    /// `backoff[i]` is the wait before attempt `i + 2`; the last entry repeats, empty = no wait.
    pub backoff: Vec<Duration>,
}

impl Default for PushSettings {
    fn default() -> Self {
        Self { timeout: DEFAULT_TIMEOUT, attempts: DEFAULT_ATTEMPTS, backoff: DEFAULT_BACKOFF.to_vec() }
    }
}

/// A delivered push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PushOutcome {
    /// Attempts used, 1 when the first one was answered correctly.
    pub attempts: u32,
}

/// What was wrong with one attempt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyProblem {
    #[error("no answer: {0}")]
    Transport(String),
    #[error("HTTP status {0}, expected 200")]
    Status(u16),
    #[error("reply is not JSON ({0}); it must be the encrypted `success` object, not plain text")]
    NotJson(String),
    #[error("reply lacks the string field `{0}` (keys must be exactly msg_signature, timeStamp, nonce, encrypt)")]
    MissingField(&'static str),
    #[error("reply signature does not verify ({0})")]
    Signature(#[source] CryptoError),
    #[error("reply `encrypt` does not decrypt with the subscription's keys ({0})")]
    Decrypt(#[source] CryptoError),
    #[error("reply decrypts to {0:?} instead of \"success\"")]
    NotSuccess(String),
}

/// A push or card callback that did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("callback target is misconfigured: {0}")]
    Target(#[source] CryptoError),
    #[error("callback URL is not a valid absolute http(s) URL ({0})")]
    Url(String),
    #[error("could not build the simulator's HTTP client ({0})")]
    Client(String),
    #[error(
        "push to {url} failed after {attempts} attempt(s), last: {last}; DingTalk treats this as a failed \
         delivery (errcode 71009 when the reply is not the encrypted `success`)"
    )]
    GaveUp { url: String, attempts: u32, last: ReplyProblem },
    #[error("card callback to {url} failed: {problem}")]
    CardCallback { url: String, problem: ReplyProblem },
}

/// Pushes events to subscribers the way DingTalk does.
#[derive(Debug, Clone)]
pub struct HttpPusher {
    client: reqwest::Client,
    settings: PushSettings,
    clock: Arc<dyn Clock>,
}

impl HttpPusher {
    pub fn new(settings: PushSettings) -> Result<Self, PushError> {
        let client = reqwest::Client::builder()
            .use_rustls_tls()
            .timeout(settings.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| PushError::Client(error_chain(&e)))?;
        Ok(Self { client, settings, clock: Arc::new(SystemClock) })
    }

    /// Timestamps come from `clock` (the simulator's clock), in milliseconds.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    pub fn settings(&self) -> &PushSettings {
        &self.settings
    }

    /// Encrypts `plaintext` (an event object with `EventType`), POSTs it to the target and
    /// checks the reply, retrying per [`PushSettings`].
    pub async fn push_event(&self, target: &CallbackTarget, plaintext: &Value) -> Result<PushOutcome, PushError> {
        let crypto = CallbackCrypto::new(&target.token, &target.encoding_aes_key, &target.owner_key)
            .map_err(PushError::Target)?;
        let base = parse_url(&target.url)?;
        let shown = redact_url(&base);
        let text = plaintext.to_string();
        let event_type = plaintext.get("EventType").and_then(Value::as_str).unwrap_or("");
        let attempts = self.settings.attempts.max(1);
        let mut attempt = 1;
        loop {
            match self.attempt(&crypto, &base, &text).await {
                Ok(()) => {
                    tracing::debug!(url = %shown, event_type, attempt, "callback push delivered");
                    return Ok(PushOutcome { attempts: attempt });
                }
                Err(problem) if attempt >= attempts => {
                    tracing::warn!(url = %shown, event_type, attempt, %problem, "callback push given up");
                    return Err(PushError::GaveUp { url: shown, attempts: attempt, last: problem });
                }
                Err(problem) => {
                    tracing::info!(url = %shown, event_type, attempt, %problem, "callback push failed, will retry");
                    tokio::time::sleep(self.backoff_before(attempt + 1)).await;
                    attempt += 1;
                }
            }
        }
    }

    /// Card action in HTTP callback mode (§4.2, wire format UNVERIFIED). Choice: POST the same
    /// JSON object Stream mode carries in `data`, unsigned, once (a click is interactive, so no
    /// retry), and read the reply as the card update R, bare or wrapped as `{"response": R}`.
    /// An empty body, `null` or `{"response": null}` means "no change" (`None`).
    pub async fn post_card_callback(&self, url: &str, body: &Value) -> Result<Option<Value>, PushError> {
        let url = parse_url(url)?;
        let shown = redact_url(&url);
        let fail = |problem| PushError::CardCallback { url: shown.clone(), problem };
        let resp = self.client.post(url.clone()).json(body).send().await.map_err(|e| fail(transport(e)))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(fail(ReplyProblem::Status(status.as_u16())));
        }
        let bytes =
            read_body_capped(resp, MAX_REPLY_BYTES).await.map_err(|e| fail(ReplyProblem::Transport(e.to_string())))?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        let reply: Value = serde_json::from_slice(&bytes).map_err(|e| fail(ReplyProblem::NotJson(e.to_string())))?;
        let update = match reply {
            Value::Object(mut map) if map.contains_key("response") => map.remove("response").unwrap_or(Value::Null),
            other => other,
        };
        Ok((!update.is_null()).then_some(update))
    }

    async fn attempt(&self, crypto: &CallbackCrypto, base: &Url, text: &str) -> Result<(), ReplyProblem> {
        let timestamp = self.clock.now_millis().to_string();
        let nonce = random_alnum(NONCE_LEN);
        let encrypt = crypto.encrypt(text);
        let signature = crypto.signature(&timestamp, &nonce, &encrypt);
        let mut url = base.clone();
        url.query_pairs_mut()
            .append_pair("msg_signature", &signature)
            .append_pair("timestamp", &timestamp)
            .append_pair("nonce", &nonce);
        let resp = self.client.post(url).json(&json!({ "encrypt": encrypt })).send().await.map_err(transport)?;
        let status = resp.status();
        if status != reqwest::StatusCode::OK {
            return Err(ReplyProblem::Status(status.as_u16()));
        }
        let bytes =
            read_body_capped(resp, MAX_REPLY_BYTES).await.map_err(|e| ReplyProblem::Transport(e.to_string()))?;
        check_success_reply(crypto, &bytes)
    }

    fn backoff_before(&self, attempt: u32) -> Duration {
        let index = attempt.saturating_sub(2) as usize;
        let backoff = &self.settings.backoff;
        backoff.get(index).or(backoff.last()).copied().unwrap_or(Duration::ZERO)
    }
}

/// §6.3: a JSON object whose signature verifies and whose `encrypt` is exactly `success`.
fn check_success_reply(crypto: &CallbackCrypto, bytes: &[u8]) -> Result<(), ReplyProblem> {
    let reply: Value = serde_json::from_slice(bytes).map_err(|e| ReplyProblem::NotJson(e.to_string()))?;
    let field = |name: &'static str| reply.get(name).and_then(Value::as_str).ok_or(ReplyProblem::MissingField(name));
    let (signature, timestamp, nonce, encrypt) =
        (field("msg_signature")?, field("timeStamp")?, field("nonce")?, field("encrypt")?);
    crypto.verify_signature(signature, timestamp, nonce, encrypt).map_err(ReplyProblem::Signature)?;
    let plain = crypto.decrypt(encrypt).map_err(ReplyProblem::Decrypt)?;
    if plain == "success" {
        Ok(())
    } else {
        Err(ReplyProblem::NotSuccess(plain.chars().take(QUOTED_REPLY_CHARS).collect()))
    }
}

fn parse_url(url: &str) -> Result<Url, PushError> {
    let parsed = Url::parse(url).map_err(|e| PushError::Url(e.to_string()))?;
    match parsed.scheme() {
        "http" | "https" => Ok(parsed),
        other => Err(PushError::Url(format!("scheme {other:?} is not http or https"))),
    }
}

/// The error without its URL (the query may carry secrets), with its causes.
fn transport(err: reqwest::Error) -> ReplyProblem {
    let kind = if err.is_timeout() { "timed out: " } else { "" };
    ReplyProblem::Transport(format!("{kind}{}", error_chain(&err.without_url())))
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dingtalk::callback::{open, success_reply, CallbackRequest};
    use axum::body::Bytes;
    use axum::extract::{RawQuery, State};
    use axum::http::StatusCode;
    use axum::response::{IntoResponse, Response};
    use axum::routing::post;
    use axum::{Json, Router};
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Mutex;
    use std::time::Instant;

    const TOKEN: &str = "dbToken2024";
    const AES_KEY: &str = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJ0123456";
    const OTHER_AES_KEY: &str = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFG";
    const OWNER: &str = "dingappkey0000000001";

    #[derive(Debug, Clone, Copy)]
    enum Mode {
        Correct,
        PlainSuccess,
        WrongKey,
        FailOnce,
        WrongFieldName,
        EncryptedOther,
        Status(u16),
    }

    struct Receiver {
        mode: Mode,
        crypto: CallbackCrypto,
        hits: AtomicU32,
        opened: Mutex<Vec<Value>>,
    }

    fn now_ms() -> i64 {
        jiff::Timestamp::now().as_millisecond()
    }

    async fn receive(State(rx): State<Arc<Receiver>>, RawQuery(query): RawQuery, body: Bytes) -> Response {
        let hit = rx.hits.fetch_add(1, Ordering::SeqCst) + 1;
        let req = CallbackRequest { query: query.as_deref().unwrap_or(""), body: &body };
        let event = match open(&rx.crypto, &req) {
            Ok(event) => event,
            Err(e) => {
                return (StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::BAD_REQUEST), e.to_string())
                    .into_response()
            }
        };
        rx.opened.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(event.payload);
        match rx.mode {
            Mode::Correct => Json(success_reply(&rx.crypto, now_ms())).into_response(),
            Mode::FailOnce if hit == 1 => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
            Mode::FailOnce => Json(success_reply(&rx.crypto, now_ms())).into_response(),
            Mode::PlainSuccess => "success".into_response(),
            Mode::WrongKey => {
                let wrong = CallbackCrypto::new(TOKEN, OTHER_AES_KEY, OWNER).expect("key");
                Json(success_reply(&wrong, now_ms())).into_response()
            }
            Mode::WrongFieldName => {
                let mut reply = success_reply(&rx.crypto, now_ms());
                if let Some(obj) = reply.as_object_mut() {
                    let ts = obj.remove("timeStamp").unwrap_or(Value::Null);
                    obj.insert("timestamp".into(), ts);
                }
                Json(reply).into_response()
            }
            Mode::EncryptedOther => {
                let encrypt = rx.crypto.encrypt("ok");
                let sig = rx.crypto.signature("1", "n", &encrypt);
                Json(json!({"msg_signature": sig, "timeStamp": "1", "nonce": "n", "encrypt": encrypt})).into_response()
            }
            Mode::Status(code) => StatusCode::from_u16(code).unwrap_or(StatusCode::IM_A_TEAPOT).into_response(),
        }
    }

    async fn spawn_router(app: Router) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        format!("http://{addr}")
    }

    async fn spawn_receiver(mode: Mode) -> (CallbackTarget, Arc<Receiver>) {
        let rx = Arc::new(Receiver {
            mode,
            crypto: CallbackCrypto::new(TOKEN, AES_KEY, OWNER).expect("key"),
            hits: AtomicU32::new(0),
            opened: Mutex::new(Vec::new()),
        });
        let base = spawn_router(Router::new().route("/dingtalk/callback", post(receive)).with_state(rx.clone())).await;
        let target = CallbackTarget {
            url: format!("{base}/dingtalk/callback?tenant=hk"),
            token: TOKEN.into(),
            encoding_aes_key: AES_KEY.into(),
            owner_key: OWNER.into(),
        };
        (target, rx)
    }

    fn fast_pusher(backoff_ms: u64) -> HttpPusher {
        HttpPusher::new(PushSettings {
            timeout: Duration::from_secs(5),
            attempts: 3,
            backoff: vec![Duration::from_millis(backoff_ms); 2],
        })
        .expect("client")
    }

    fn event() -> Value {
        fixtures::read_json("dingtalk/events/http_bpms_instance_change_finish_agree.json")
    }

    #[test]
    fn defaults_are_three_attempts_200ms_then_1s() {
        let settings = PushSettings::default();
        assert_eq!(settings.attempts, 3);
        assert_eq!(settings.backoff, vec![Duration::from_millis(200), Duration::from_secs(1)]);
        let pusher = HttpPusher::new(settings).expect("client");
        assert_eq!(pusher.backoff_before(2), Duration::from_millis(200));
        assert_eq!(pusher.backoff_before(3), Duration::from_secs(1));
        assert_eq!(pusher.backoff_before(7), Duration::from_secs(1), "last entry repeats");
    }

    #[tokio::test]
    async fn push_succeeds_first_time_and_delivers_the_payload() {
        let (target, rx) = spawn_receiver(Mode::Correct).await;
        let outcome = fast_pusher(10).push_event(&target, &event()).await.expect("delivered");
        assert_eq!(outcome, PushOutcome { attempts: 1 });
        assert_eq!(rx.hits.load(Ordering::SeqCst), 1);
        assert_eq!(*rx.opened.lock().expect("lock"), vec![event()]);
    }

    #[tokio::test]
    async fn check_url_push_succeeds() {
        let (target, rx) = spawn_receiver(Mode::Correct).await;
        let outcome = fast_pusher(10).push_event(&target, &json!({"EventType": "check_url"})).await.expect("ok");
        assert_eq!(outcome.attempts, 1);
        assert_eq!(rx.opened.lock().expect("lock")[0]["EventType"], "check_url");
    }

    #[tokio::test]
    async fn plain_success_reply_is_retried_then_fails() {
        let (target, rx) = spawn_receiver(Mode::PlainSuccess).await;
        let started = Instant::now();
        let err = fast_pusher(50).push_event(&target, &event()).await.expect_err("plain text is not a valid reply");
        assert!(started.elapsed() >= Duration::from_millis(100), "two backoffs of 50 ms were waited");
        assert_eq!(rx.hits.load(Ordering::SeqCst), 3);
        match &err {
            PushError::GaveUp { attempts: 3, last: ReplyProblem::NotJson(_), url } => {
                assert!(!url.contains("tenant"), "query is redacted: {url}");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(err.to_string().contains("71009"), "{err}");
    }

    #[tokio::test]
    async fn wrong_key_reply_is_retried_then_fails() {
        let (target, rx) = spawn_receiver(Mode::WrongKey).await;
        let err = fast_pusher(10).push_event(&target, &event()).await.expect_err("wrong key");
        assert_eq!(rx.hits.load(Ordering::SeqCst), 3);
        // Same token, so the signature verifies; decryption with the subscription's key fails.
        assert!(matches!(err, PushError::GaveUp { attempts: 3, last: ReplyProblem::Decrypt(_), .. }), "{err:?}");
    }

    #[tokio::test]
    async fn reply_with_wrong_field_name_or_other_text_fails() {
        let (target, _) = spawn_receiver(Mode::WrongFieldName).await;
        let err = fast_pusher(1).push_event(&target, &event()).await.expect_err("timestamp is not timeStamp");
        assert!(matches!(err, PushError::GaveUp { last: ReplyProblem::MissingField("timeStamp"), .. }), "{err:?}");

        let (target, _) = spawn_receiver(Mode::EncryptedOther).await;
        let err = fast_pusher(1).push_event(&target, &event()).await.expect_err("not success");
        assert!(
            matches!(&err, PushError::GaveUp { last: ReplyProblem::NotSuccess(text), .. } if text == "ok"),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn failing_once_then_answering_right_takes_two_attempts() {
        let (target, rx) = spawn_receiver(Mode::FailOnce).await;
        let outcome = fast_pusher(10).push_event(&target, &event()).await.expect("second attempt works");
        assert_eq!(outcome, PushOutcome { attempts: 2 });
        assert_eq!(rx.hits.load(Ordering::SeqCst), 2);
        let opened = rx.opened.lock().expect("lock");
        assert_eq!(opened.len(), 2, "each attempt was a valid, freshly signed push");
    }

    #[tokio::test]
    async fn receiver_refusing_with_status_is_reported() {
        let (target, _) = spawn_receiver(Mode::Status(404)).await;
        let pusher = HttpPusher::new(PushSettings { attempts: 1, ..PushSettings::default() }).expect("client");
        let err = pusher.push_event(&target, &event()).await.expect_err("404");
        assert!(matches!(err, PushError::GaveUp { attempts: 1, last: ReplyProblem::Status(404), .. }), "{err:?}");
    }

    #[tokio::test]
    async fn receiver_with_other_token_answers_401_and_push_fails() {
        let (mut target, rx) = spawn_receiver(Mode::Correct).await;
        target.token = "not-the-token".into();
        let err = fast_pusher(1).push_event(&target, &event()).await.expect_err("signature refused");
        assert!(matches!(err, PushError::GaveUp { last: ReplyProblem::Status(401), .. }), "{err:?}");
        assert!(rx.opened.lock().expect("lock").is_empty());
    }

    #[tokio::test]
    async fn unreachable_target_is_a_transport_failure() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        let target = CallbackTarget {
            url: format!("http://{addr}/cb"),
            token: TOKEN.into(),
            encoding_aes_key: AES_KEY.into(),
            owner_key: OWNER.into(),
        };
        let err = fast_pusher(1).push_event(&target, &event()).await.expect_err("nobody listens");
        assert!(matches!(err, PushError::GaveUp { attempts: 3, last: ReplyProblem::Transport(_), .. }), "{err:?}");
    }

    #[tokio::test]
    async fn misconfigured_target_fails_before_sending() {
        let target = CallbackTarget {
            url: "http://127.0.0.1:9/cb".into(),
            token: TOKEN.into(),
            encoding_aes_key: AES_KEY[..42].into(),
            owner_key: OWNER.into(),
        };
        let err = fast_pusher(1).push_event(&target, &event()).await.expect_err("42-char key");
        assert!(matches!(err, PushError::Target(CryptoError::InvalidAesKey { len: 42, .. })), "{err:?}");
        let target = CallbackTarget { url: "ftp://x/cb".into(), encoding_aes_key: AES_KEY.into(), ..target };
        assert!(matches!(fast_pusher(1).push_event(&target, &event()).await, Err(PushError::Url(_))));
        assert!(!format!("{target:?}").contains(AES_KEY));
    }

    async fn card_receiver(status: StatusCode, reply: &str) -> (String, Arc<Mutex<Vec<Value>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let store = seen.clone();
        let reply = reply.to_owned();
        let app = Router::new().route(
            "/card",
            post(move |Json(body): Json<Value>| {
                let (store, reply) = (store.clone(), reply.clone());
                async move {
                    store.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(body);
                    (status, reply)
                }
            }),
        );
        (format!("{}/card", spawn_router(app).await), seen)
    }

    fn card_fixture(name: &str) -> Value {
        fixtures::read_json(format!("dingtalk/events/{name}"))
    }

    #[tokio::test]
    async fn card_callback_accepts_wrapped_bare_and_empty_replies() {
        let request = card_fixture("card_callback_request.json")["raw"].clone();
        let update = card_fixture("card_callback_response.json")["response"].clone();
        let wrapped = json!({ "response": update }).to_string();
        let bare = update.to_string();
        let pusher = fast_pusher(1);

        let (url, seen) = card_receiver(StatusCode::OK, &wrapped).await;
        assert_eq!(pusher.post_card_callback(&url, &request).await.expect("wrapped"), Some(update.clone()));
        assert_eq!(*seen.lock().expect("lock"), vec![request.clone()], "the Stream data object is POSTed as is");

        let (url, _) = card_receiver(StatusCode::OK, &bare).await;
        assert_eq!(pusher.post_card_callback(&url, &request).await.expect("bare"), Some(update));

        for empty in ["", "null", r#"{"response":null}"#] {
            let (url, _) = card_receiver(StatusCode::OK, empty).await;
            assert_eq!(pusher.post_card_callback(&url, &request).await.expect("empty"), None, "{empty:?}");
        }
    }

    #[tokio::test]
    async fn card_callback_failures_are_reported_once() {
        let request = card_fixture("card_callback_request.json")["raw"].clone();
        let pusher = fast_pusher(1);
        let (url, seen) = card_receiver(StatusCode::INTERNAL_SERVER_ERROR, "{}").await;
        let err = pusher.post_card_callback(&url, &request).await.expect_err("500");
        assert!(matches!(err, PushError::CardCallback { problem: ReplyProblem::Status(500), .. }), "{err:?}");
        assert_eq!(seen.lock().expect("lock").len(), 1, "card callbacks are not retried");
        let (url, _) = card_receiver(StatusCode::OK, "approved!").await;
        let err = pusher.post_card_callback(&url, &request).await.expect_err("not json");
        assert!(matches!(err, PushError::CardCallback { problem: ReplyProblem::NotJson(_), .. }), "{err:?}");
    }
}
