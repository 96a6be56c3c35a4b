//! DingTalk simulator, interactive card part (reference §4, §10 item 7).
//!
//! Routes (new API, authorised by `Org::authorize_new` under the names `card.*`):
//! - `POST /v1.0/card/instances` create → `{success, result:<outTrackId>}`
//! - `POST /v1.0/card/instances/deliver` → `{success, result:[deliverResults]}` (shape UNVERIFIED)
//! - `POST /v1.0/card/instances/createAndDeliver` → `{success, result{outTrackId, deliverResults}}`
//! - `PUT  /v1.0/card/instances` update → `{success, result:true}`
//! - `POST /v1.0/card/callbacks/register` → `{success, result{callbackUrl, apiSecret}}`
//!
//! Validation answers HTTP 400 `{code, message, requestid}` with the documented `param.*` codes
//! (`param.cardTemplateIdEmpty`, `param.outTrackIdEmpty`, `param.userIdNotExist`,
//! `param.openSpaceModelInvalid`) and, where DingTalk's code is not documented, names of the
//! simulator's own (`param.cardParamMapInvalid` for a non-string value, `param.openSpaceIdInvalid`
//! for an unknown group or a malformed `openSpaceId`, `param.robotCodeInvalid`,
//! `param.outTrackIdNotExist`, `param.outTrackIdConflict`, `param.callbackUrlInvalid`).
//!
//! `outTrackId` is idempotent: the same create again (same app, same body) answers exactly as the
//! first time and makes no second card; reusing the id for a different body is
//! `param.outTrackIdConflict` (real DingTalk's answers to both are UNVERIFIED).
//!
//! Update semantics (§4.1): `cardUpdateOptions.updateCardDataByKey` merges the given keys into the
//! card data, otherwise the given map replaces it; `updatePrivateDataByKey` does the same per user.
//! Options absent = false. A click's answer R (§4.2) is applied the same way, its
//! `userPrivateData` to the clicker.

use super::events::{CardCallbackRoute, EventRouter};
use super::org::Org;
use crate::dingtalk::cards::{
    parse_open_space_id, CardInstance, CardParams, CardUpdate, CardUpdateOptions, ImGroupDeliverModel,
    ImRobotDeliverModel, OpenSpace, OpenSpaceModel, USER_ID_TYPE_USERID,
};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use connect::Clock;
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// Changes kept per card; older ones are dropped.
pub const HISTORY_PER_CARD: usize = 200;

type ParamMap = BTreeMap<String, String>;

/// A refused card call: HTTP 400 with a `param.*` code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardApiError {
    pub code: &'static str,
    pub message: String,
}

impl CardApiError {
    fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }
}

impl IntoResponse for CardApiError {
    fn into_response(self) -> Response {
        let requestid = uuid::Uuid::new_v4().hyphenated().to_string().to_uppercase();
        let body = json!({ "code": self.code, "message": self.message, "requestid": requestid });
        (StatusCode::BAD_REQUEST, Json(body)).into_response()
    }
}

/// A simulated click could not be completed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClickError {
    #[error("no card with outTrackId `{0}`")]
    UnknownCard(String),
    #[error("user `{0}` does not exist in the organisation or has left")]
    UnknownUser(String),
    #[error(
        "user `{user}` cannot see card `{out_track_id}`: not a (recipient) member of its group, not its robot chat"
    )]
    NotVisible { out_track_id: String, user: String },
    #[error("card `{0}` has no callback route (callbackType unset, or HTTP without callbackRouteKey)")]
    NoCallback(String),
    #[error("click params must be a JSON object")]
    BadParams,
    #[error("the card callback failed: {0}")]
    Callback(String),
    #[error("the subscriber answered an invalid card update: {0}")]
    BadUpdate(String),
}

/// Where a card was delivered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum CardSpace {
    /// A group; `recipients` empty = every member sees it.
    Group { open_conversation_id: String, recipients: Vec<String>, at_user_ids: BTreeMap<String, String> },
    /// The 1:1 chat of the app's robot with this user.
    Robot { user_id: String },
}

impl CardSpace {
    fn same_place(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Group { open_conversation_id: a, .. }, Self::Group { open_conversation_id: b, .. }) => a == b,
            (Self::Robot { user_id: a }, Self::Robot { user_id: b }) => a == b,
            _ => false,
        }
    }

    fn deliver_result(&self, carrier_id: &str) -> Value {
        let (space_type, space_id) = match self {
            Self::Group { open_conversation_id, .. } => ("IM_GROUP", open_conversation_id),
            Self::Robot { user_id } => ("IM_ROBOT", user_id),
        };
        json!({ "spaceType": space_type, "spaceId": space_id, "success": true, "errorMsg": "", "carrierId": carrier_id })
    }
}

/// One change of a card.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CardChange {
    pub time_ms: i64,
    /// `create`, `deliver`, `update` or `callback`.
    pub source: &'static str,
    /// The clicker, for `callback`.
    pub user_id: Option<String>,
    pub action_ids: Vec<String>,
    pub card_data: Option<ParamMap>,
    pub private_data: BTreeMap<String, ParamMap>,
    pub options: CardUpdateOptions,
}

/// A card as tests and the simulator page see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CardView {
    pub out_track_id: String,
    pub template_id: String,
    pub app_key: String,
    pub callback: Option<CardCallbackRoute>,
    pub spaces: Vec<CardSpace>,
    pub card_data: ParamMap,
    pub private_data: BTreeMap<String, ParamMap>,
    /// Whose view this is (`cards_for_user`, `click`); `None` for the shared view.
    pub viewer: Option<String>,
    /// What the viewer sees: the card data overlaid with the viewer's private data.
    pub params: ParamMap,
    pub history: Vec<CardChange>,
    pub created_ms: i64,
    pub updated_ms: i64,
}

#[derive(Debug, Clone)]
struct CardState {
    seq: u64,
    out_track_id: String,
    template_id: String,
    app_key: String,
    corp_id: String,
    callback: Option<CardCallbackRoute>,
    card_data: ParamMap,
    private_data: BTreeMap<String, ParamMap>,
    group_model: Option<OpenSpaceModel>,
    robot_model: Option<OpenSpaceModel>,
    /// (space, carrier id)
    spaces: Vec<(CardSpace, String)>,
    history: Vec<CardChange>,
    created_ms: i64,
    updated_ms: i64,
    /// The create body and its answer, to answer a repeat exactly like the first time.
    create_body: Value,
    create_answer: Value,
}

impl CardState {
    fn record(&mut self, change: CardChange) {
        self.updated_ms = change.time_ms;
        if self.history.len() >= HISTORY_PER_CARD {
            self.history.remove(0);
        }
        self.history.push(change);
    }

    fn view(&self, viewer: Option<&str>) -> CardView {
        let mut params = self.card_data.clone();
        if let Some(own) = viewer.and_then(|v| self.private_data.get(v)) {
            params.extend(own.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        CardView {
            out_track_id: self.out_track_id.clone(),
            template_id: self.template_id.clone(),
            app_key: self.app_key.clone(),
            callback: self.callback.clone(),
            spaces: self.spaces.iter().map(|(s, _)| s.clone()).collect(),
            card_data: self.card_data.clone(),
            private_data: self.private_data.clone(),
            viewer: viewer.map(str::to_owned),
            params,
            history: self.history.clone(),
            created_ms: self.created_ms,
            updated_ms: self.updated_ms,
        }
    }

    /// Applies new shared and per-user values, merging or replacing per `options`.
    fn apply(
        &mut self,
        card_data: Option<&ParamMap>,
        private: &BTreeMap<String, ParamMap>,
        options: CardUpdateOptions,
    ) {
        if let Some(data) = card_data {
            if options.update_card_data_by_key {
                self.card_data.extend(data.iter().map(|(k, v)| (k.clone(), v.clone())));
            } else {
                self.card_data = data.clone();
            }
        }
        for (user, data) in private {
            let own = self.private_data.entry(user.clone()).or_default();
            if options.update_private_data_by_key {
                own.extend(data.iter().map(|(k, v)| (k.clone(), v.clone())));
            } else {
                *own = data.clone();
            }
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    cards: BTreeMap<String, CardState>,
    next_seq: u64,
}

/// The interactive card part of the DingTalk simulator. Share it behind an `Arc`.
pub struct CardsSim {
    org: Arc<Org>,
    events: Arc<EventRouter>,
    clock: Arc<dyn Clock>,
    inner: Mutex<Inner>,
    carriers: AtomicU64,
}

impl std::fmt::Debug for CardsSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CardsSim").finish_non_exhaustive()
    }
}

/// The `cardParamMap` of a raw `{cardParamMap}` object, every value a string.
fn strict_params(data: Option<&Value>, what: &str) -> Result<Option<ParamMap>, CardApiError> {
    match data {
        None | Some(Value::Null) => Ok(None),
        Some(data) => {
            let map = data.get("cardParamMap").unwrap_or(&Value::Null);
            if map.is_null() {
                return Ok(Some(ParamMap::new()));
            }
            CardParams::from_strict(map)
                .map(|p| Some(p.into_map()))
                .map_err(|detail| CardApiError::new("param.cardParamMapInvalid", format!("{what}: {detail}")))
        }
    }
}

/// `privateData` / `userPrivateData` keyed by user: every value a string.
fn strict_private(data: Option<&Value>) -> Result<BTreeMap<String, ParamMap>, CardApiError> {
    let mut out = BTreeMap::new();
    match data {
        None | Some(Value::Null) => {}
        Some(Value::Object(users)) => {
            for (user, data) in users {
                let params = strict_params(Some(data), &format!("privateData.{user}"))?.unwrap_or_default();
                out.insert(user.clone(), params);
            }
        }
        Some(_) => return Err(CardApiError::new("param.cardParamMapInvalid", "privateData must be an object")),
    }
    Ok(out)
}

fn text_field<'a>(body: &'a Value, key: &str) -> &'a str {
    body.get(key).and_then(Value::as_str).unwrap_or("").trim()
}

fn parse_json(body: &[u8]) -> Result<Value, CardApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(value @ Value::Object(_)) => Ok(value),
        _ => Err(CardApiError::new("param.invalid", "the request body must be a JSON object")),
    }
}

impl CardsSim {
    pub fn new(org: Arc<Org>, events: Arc<EventRouter>, clock: Arc<dyn Clock>) -> Self {
        Self { org, events, clock, inner: Mutex::new(Inner::default()), carriers: AtomicU64::new(1) }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Cards are replaced whole under the lock, so a poisoned map is still consistent.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// No cards.
    pub fn reset(&self) {
        *self.lock() = Inner::default();
        self.carriers.store(1, Ordering::SeqCst);
    }

    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route("/v1.0/card/instances", post(create_handler).put(update_handler))
            .route("/v1.0/card/instances/deliver", post(deliver_handler))
            .route("/v1.0/card/instances/createAndDeliver", post(create_and_deliver_handler))
            .route("/v1.0/card/callbacks/register", post(register_handler))
            .with_state(self)
    }

    /// The shared view of a card.
    pub fn card(&self, out_track_id: &str) -> Option<CardView> {
        self.lock().cards.get(out_track_id).map(|c| c.view(None))
    }

    /// Every card, oldest first.
    pub fn cards(&self) -> Vec<CardView> {
        let inner = self.lock();
        let mut cards: Vec<&CardState> = inner.cards.values().collect();
        cards.sort_by_key(|c| c.seq);
        cards.into_iter().map(|c| c.view(None)).collect()
    }

    /// Cards `userid` can see (their groups, their robot chat), oldest first, each with the
    /// user's effective params.
    pub fn cards_for_user(&self, userid: &str) -> Vec<CardView> {
        let mut cards: Vec<CardState> = self.lock().cards.values().cloned().collect();
        cards.sort_by_key(|c| c.seq);
        cards.into_iter().filter(|c| self.visible_space(c, userid).is_some()).map(|c| c.view(Some(userid))).collect()
    }

    /// The first space of `card` where `userid` sees it.
    fn visible_space<'c>(&self, card: &'c CardState, userid: &str) -> Option<&'c CardSpace> {
        card.spaces.iter().map(|(s, _)| s).find(|space| match space {
            CardSpace::Robot { user_id } => user_id == userid,
            CardSpace::Group { open_conversation_id, recipients, .. } => {
                (recipients.is_empty() || recipients.iter().any(|r| r == userid))
                    && self
                        .org
                        .group(open_conversation_id)
                        .is_some_and(|g| g.member_userids.iter().any(|m| m == userid))
            }
        })
    }

    fn check_user(&self, userid: &str, role: &str) -> Result<(), CardApiError> {
        match self.org.user(userid) {
            Some(user) if user.active => Ok(()),
            _ => Err(CardApiError::new("param.userIdNotExist", format!("{role} `{userid}` does not exist"))),
        }
    }

    /// A new card from a create body (nothing delivered yet). Validates everything.
    fn new_card(&self, app_key: &str, corp_id: &str, body: &Value, now: i64) -> Result<CardState, CardApiError> {
        if text_field(body, "cardTemplateId").is_empty() {
            return Err(CardApiError::new("param.cardTemplateIdEmpty", "cardTemplateId is empty"));
        }
        if text_field(body, "outTrackId").is_empty() {
            return Err(CardApiError::new("param.outTrackIdEmpty", "outTrackId is empty"));
        }
        let card_data = strict_params(body.get("cardData"), "cardData")?.unwrap_or_default();
        let private_data = strict_private(body.get("privateData"))?;
        let request: CardInstance = serde_json::from_value(body.clone())
            .map_err(|err| CardApiError::new("param.invalid", format!("the request body is not valid: {err}")))?;
        if request.user_id_type != USER_ID_TYPE_USERID {
            return Err(CardApiError::new(
                "param.userIdTypeInvalid",
                format!("userIdType {} is not supported by the simulator; use 1 (userid)", request.user_id_type),
            ));
        }
        for user in private_data.keys() {
            self.check_user(user, "privateData user")?;
        }
        let callback = match (request.callback_type, request.callback_route_key.filter(|k| !k.is_empty())) {
            (Some(crate::dingtalk::cards::CallbackType::Stream), _) => Some(CardCallbackRoute::Stream),
            // Absent callbackType with a route key: HTTP (the assumed default, §4.1).
            (_, Some(route_key)) => Some(CardCallbackRoute::Http { route_key }),
            (_, None) => None,
        };
        let changes = CardChange {
            time_ms: now,
            source: "create",
            user_id: None,
            action_ids: Vec::new(),
            card_data: Some(card_data.clone()),
            private_data: private_data.clone(),
            options: CardUpdateOptions::default(),
        };
        let seq = {
            let mut inner = self.lock();
            inner.next_seq += 1;
            inner.next_seq
        };
        Ok(CardState {
            seq,
            out_track_id: request.out_track_id.trim().to_owned(),
            template_id: request.card_template_id,
            app_key: app_key.to_owned(),
            corp_id: corp_id.to_owned(),
            callback,
            card_data,
            private_data,
            group_model: request.im_group_open_space_model,
            robot_model: request.im_robot_open_space_model,
            spaces: Vec::new(),
            history: vec![changes],
            created_ms: now,
            updated_ms: now,
            create_body: body.clone(),
            create_answer: Value::Null,
        })
    }

    /// Delivers `card` to the spaces of a deliver (or createAndDeliver) body → `deliverResults`.
    fn deliver(
        &self,
        card: &mut CardState,
        robot_code: &str,
        body: &Value,
        now: i64,
    ) -> Result<Vec<Value>, CardApiError> {
        let open_space_id = text_field(body, "openSpaceId");
        if open_space_id.is_empty() {
            return Err(CardApiError::new("param.openSpaceIdInvalid", "openSpaceId is empty"));
        }
        let spaces = parse_open_space_id(open_space_id)
            .map_err(|e| CardApiError::new("param.openSpaceIdInvalid", e.to_string()))?;
        let model_error = |detail: String| CardApiError::new("param.openSpaceModelInvalid", detail);
        let deliver_model = |key: &str| body.get(key).filter(|v| !v.is_null()).cloned();
        let mut results = Vec::new();
        for space in spaces {
            let space = match space {
                OpenSpace::Group(cid) => {
                    if self.org.group(&cid).is_none() {
                        return Err(CardApiError::new(
                            "param.openSpaceIdInvalid",
                            format!("group `{cid}` does not exist (openConversationId)"),
                        ));
                    }
                    if card.group_model.is_none() {
                        return Err(model_error("IM_GROUP delivery needs imGroupOpenSpaceModel on create".to_owned()));
                    }
                    let Some(model) = deliver_model("imGroupOpenDeliverModel") else {
                        return Err(model_error("IM_GROUP delivery needs imGroupOpenDeliverModel".to_owned()));
                    };
                    let model: ImGroupDeliverModel = serde_json::from_value(model)
                        .map_err(|err| model_error(format!("imGroupOpenDeliverModel is not valid: {err}")))?;
                    if model.robot_code != robot_code {
                        return Err(CardApiError::new(
                            "param.robotCodeInvalid",
                            format!("robotCode `{}` is not this app's robot", model.robot_code),
                        ));
                    }
                    for user in model.recipients.iter().chain(model.at_user_ids.keys().filter(|u| *u != "@ALL")) {
                        self.check_user(user, "recipient / @ user")?;
                    }
                    CardSpace::Group {
                        open_conversation_id: cid,
                        recipients: model.recipients,
                        at_user_ids: model.at_user_ids,
                    }
                }
                OpenSpace::Robot(user_id) => {
                    self.check_user(&user_id, "IM_ROBOT user")?;
                    if card.robot_model.is_none() {
                        return Err(model_error("IM_ROBOT delivery needs imRobotOpenSpaceModel on create".to_owned()));
                    }
                    let Some(model) = deliver_model("imRobotOpenDeliverModel") else {
                        return Err(model_error("IM_ROBOT delivery needs imRobotOpenDeliverModel".to_owned()));
                    };
                    let model: ImRobotDeliverModel = serde_json::from_value(model)
                        .map_err(|err| model_error(format!("imRobotOpenDeliverModel is not valid: {err}")))?;
                    if model.space_type != "IM_ROBOT" {
                        return Err(model_error(format!(
                            "imRobotOpenDeliverModel.spaceType is `{}`, not IM_ROBOT",
                            model.space_type
                        )));
                    }
                    if model.robot_code != robot_code {
                        return Err(CardApiError::new(
                            "param.robotCodeInvalid",
                            format!("robotCode `{}` is not this app's robot", model.robot_code),
                        ));
                    }
                    CardSpace::Robot { user_id }
                }
            };
            // Delivering to the same place again keeps the first carrier (no second message).
            let carrier = match card.spaces.iter().position(|(s, _)| s.same_place(&space)) {
                Some(i) => {
                    card.spaces[i].0 = space.clone();
                    card.spaces[i].1.clone()
                }
                None => {
                    let carrier = format!("carrier-{}", self.carriers.fetch_add(1, Ordering::SeqCst));
                    card.spaces.push((space.clone(), carrier.clone()));
                    carrier
                }
            };
            results.push(space.deliver_result(&carrier));
        }
        card.record(CardChange {
            time_ms: now,
            source: "deliver",
            user_id: None,
            action_ids: Vec::new(),
            card_data: None,
            private_data: BTreeMap::new(),
            options: CardUpdateOptions::default(),
        });
        Ok(results)
    }

    /// Create (and, with `deliver`, deliver) for the app; answers a repeat like the first time.
    fn create(&self, app_key: &str, body: &Value, deliver: bool) -> Result<Value, CardApiError> {
        let Some(app) = self.org.app(app_key) else {
            return Err(CardApiError::new("param.invalid", format!("app `{app_key}` does not exist")));
        };
        let corp_id = if app.corp_id.is_empty() { self.events.corp_id().to_owned() } else { app.corp_id.clone() };
        let robot_code = if app.robot_code.is_empty() { app.app_key.clone() } else { app.robot_code.clone() };
        let out_track_id = text_field(body, "outTrackId").to_owned();
        if let Some(existing) = self.lock().cards.get(&out_track_id) {
            if existing.app_key == app_key && existing.create_body == *body {
                return Ok(existing.create_answer.clone());
            }
            if !out_track_id.is_empty() {
                return Err(CardApiError::new(
                    "param.outTrackIdConflict",
                    format!("outTrackId `{out_track_id}` is already used by another card; update it with PUT /v1.0/card/instances or choose a new outTrackId"),
                ));
            }
        }
        let now = self.clock.now_millis();
        let mut card = self.new_card(app_key, &corp_id, body, now)?;
        let answer = if deliver {
            let results = self.deliver(&mut card, &robot_code, body, now)?;
            json!({ "success": true, "result": { "outTrackId": card.out_track_id, "deliverResults": results } })
        } else {
            json!({ "success": true, "result": card.out_track_id })
        };
        card.create_answer = answer.clone();
        let mut inner = self.lock();
        // A concurrent identical create may have won the race; keep the first card.
        if let Some(existing) = inner.cards.get(&card.out_track_id) {
            return Ok(existing.create_answer.clone());
        }
        inner.cards.insert(card.out_track_id.clone(), card);
        Ok(answer)
    }

    fn existing(&self, app_key: &str, out_track_id: &str) -> Result<CardState, CardApiError> {
        if out_track_id.is_empty() {
            return Err(CardApiError::new("param.outTrackIdEmpty", "outTrackId is empty"));
        }
        self.lock().cards.get(out_track_id).filter(|c| c.app_key == app_key).cloned().ok_or_else(|| {
            CardApiError::new("param.outTrackIdNotExist", format!("no card with outTrackId `{out_track_id}`"))
        })
    }

    fn deliver_existing(&self, app_key: &str, body: &Value) -> Result<Value, CardApiError> {
        let robot_code = self
            .org
            .app(app_key)
            .map(|a| if a.robot_code.is_empty() { a.app_key } else { a.robot_code })
            .unwrap_or_default();
        let mut card = self.existing(app_key, text_field(body, "outTrackId"))?;
        let results = self.deliver(&mut card, &robot_code, body, self.clock.now_millis())?;
        self.store(card);
        Ok(json!({ "success": true, "result": results }))
    }

    /// Puts a changed card back unless it was removed meanwhile (a reset).
    fn store(&self, card: CardState) {
        let mut inner = self.lock();
        if let Some(slot) = inner.cards.get_mut(&card.out_track_id) {
            *slot = card;
        }
    }

    fn update(&self, app_key: &str, body: &Value) -> Result<Value, CardApiError> {
        let mut card = self.existing(app_key, text_field(body, "outTrackId"))?;
        let card_data = strict_params(body.get("cardData"), "cardData")?;
        let private = strict_private(body.get("privateData"))?;
        for user in private.keys() {
            self.check_user(user, "privateData user")?;
        }
        let options: CardUpdateOptions = match body.get("cardUpdateOptions") {
            None | Some(Value::Null) => CardUpdateOptions::default(),
            Some(options) => serde_json::from_value(options.clone())
                .map_err(|err| CardApiError::new("param.invalid", format!("cardUpdateOptions is not valid: {err}")))?,
        };
        card.apply(card_data.as_ref(), &private, options);
        card.record(CardChange {
            time_ms: self.clock.now_millis(),
            source: "update",
            user_id: None,
            action_ids: Vec::new(),
            card_data,
            private_data: private,
            options,
        });
        self.store(card);
        Ok(json!({ "success": true, "result": true }))
    }

    fn register(&self, app_key: &str, body: &Value) -> Result<Value, CardApiError> {
        let route_key = text_field(body, "callbackRouteKey");
        let url = text_field(body, "callbackUrl");
        if route_key.is_empty() {
            return Err(CardApiError::new("param.callbackRouteKeyEmpty", "callbackRouteKey is empty"));
        }
        match url::Url::parse(url) {
            Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => {}
            _ => {
                return Err(CardApiError::new(
                    "param.callbackUrlInvalid",
                    format!("callbackUrl `{url}` is not an http(s) URL"),
                ))
            }
        }
        let force = body.get("forceUpdate").and_then(Value::as_bool).unwrap_or(false);
        if let Some(existing) = self.events.card_route_url(app_key, route_key) {
            if existing != url && !force {
                return Err(CardApiError::new(
                    "param.callbackRouteKeyExist",
                    format!("callbackRouteKey `{route_key}` is registered to another URL; send forceUpdate=true to replace it"),
                ));
            }
        }
        let api_secret = text_field(body, "apiSecret");
        self.events.register_card_route(app_key, route_key, url, api_secret);
        Ok(json!({ "success": true, "result": { "callbackUrl": url, "apiSecret": api_secret } }))
    }

    /// `userid` clicks `action_id` on a card with `params` (the button/form values): the callback
    /// goes to the card's route exactly as DingTalk sends it (§4.2) and the subscriber's answer
    /// R is applied. Returns the card as the clicker now sees it.
    pub async fn click(
        &self,
        out_track_id: &str,
        userid: &str,
        action_id: &str,
        params: Value,
    ) -> Result<CardView, ClickError> {
        let params = match params {
            Value::Null => Value::Object(serde_json::Map::new()),
            object @ Value::Object(_) => object,
            _ => return Err(ClickError::BadParams),
        };
        if !self.org.user(userid).is_some_and(|u| u.active) {
            return Err(ClickError::UnknownUser(userid.to_owned()));
        }
        let card = self
            .lock()
            .cards
            .get(out_track_id)
            .cloned()
            .ok_or_else(|| ClickError::UnknownCard(out_track_id.to_owned()))?;
        let Some(space) = self.visible_space(&card, userid) else {
            return Err(ClickError::NotVisible { out_track_id: out_track_id.to_owned(), user: userid.to_owned() });
        };
        let Some(route) = card.callback.clone() else {
            return Err(ClickError::NoCallback(out_track_id.to_owned()));
        };
        // Group cards report `IM` + the group id (fixture); the robot-chat values are UNVERIFIED.
        let (space_type, space_id) = match space {
            CardSpace::Group { open_conversation_id, .. } => ("IM", open_conversation_id.clone()),
            CardSpace::Robot { user_id } => ("IM_ROBOT", user_id.clone()),
        };
        let content = json!({ "cardPrivateData": { "actionIds": [action_id], "params": params } });
        let data = json!({
            "extension": "{}",
            "corpId": card.corp_id,
            "type": "actionCallback",
            "userId": userid,
            "userIdType": USER_ID_TYPE_USERID,
            "spaceType": space_type,
            "spaceId": space_id,
            "outTrackId": out_track_id,
            "content": content.to_string(),
        });
        let answer = self
            .events
            .card_callback(&card.app_key, &route, data)
            .await
            .map_err(|e| ClickError::Callback(e.to_string()))?;
        let update = match &answer {
            None => CardUpdate::default(),
            Some(answer) => strict_update(answer)?,
        };
        let mut inner = self.lock();
        let Some(card) = inner.cards.get_mut(out_track_id) else {
            return Err(ClickError::UnknownCard(out_track_id.to_owned()));
        };
        let options = update.card_update_options.unwrap_or_default();
        let card_data = update.card_data.map(|d| d.card_param_map.into_map());
        let private: BTreeMap<String, ParamMap> = update
            .user_private_data
            .map(|d| BTreeMap::from([(userid.to_owned(), d.card_param_map.into_map())]))
            .unwrap_or_default();
        card.apply(card_data.as_ref(), &private, options);
        card.record(CardChange {
            time_ms: self.clock.now_millis(),
            source: "callback",
            user_id: Some(userid.to_owned()),
            action_ids: vec![action_id.to_owned()],
            card_data,
            private_data: private,
            options,
        });
        Ok(card.view(Some(userid)))
    }
}

/// R from a subscriber's answer, refusing non-string values as DingTalk would.
fn strict_update(answer: &Value) -> Result<CardUpdate, ClickError> {
    let inner = match answer {
        Value::Object(object) if object.len() == 1 && object.contains_key("response") => &object["response"],
        other => other,
    };
    let bad = |err: CardApiError| ClickError::BadUpdate(err.message);
    strict_params(inner.get("cardData"), "cardData").map_err(bad)?;
    strict_params(inner.get("userPrivateData"), "userPrivateData").map_err(bad)?;
    CardUpdate::from_answer(answer).map_err(|err| ClickError::BadUpdate(err.to_string()))
}

/// Authorises `api` and parses the body; then runs `f`.
fn handle(
    sim: &CardsSim,
    headers: &HeaderMap,
    api: &str,
    body: &[u8],
    f: impl FnOnce(&str, &Value) -> Result<Value, CardApiError>,
) -> Response {
    let app = match sim.org.authorize_new(headers, api) {
        Ok(app) => app,
        Err(resp) => return resp,
    };
    let result = parse_json(body).and_then(|body| f(&app.app_key, &body));
    match result {
        Ok(answer) => Json(answer).into_response(),
        Err(err) => err.into_response(),
    }
}

async fn create_handler(State(sim): State<Arc<CardsSim>>, headers: HeaderMap, body: Bytes) -> Response {
    handle(&sim, &headers, "card.create", &body, |app, body| sim.create(app, body, false))
}

async fn create_and_deliver_handler(State(sim): State<Arc<CardsSim>>, headers: HeaderMap, body: Bytes) -> Response {
    handle(&sim, &headers, "card.createAndDeliver", &body, |app, body| sim.create(app, body, true))
}

async fn deliver_handler(State(sim): State<Arc<CardsSim>>, headers: HeaderMap, body: Bytes) -> Response {
    handle(&sim, &headers, "card.deliver", &body, |app, body| sim.deliver_existing(app, body))
}

async fn update_handler(State(sim): State<Arc<CardsSim>>, headers: HeaderMap, body: Bytes) -> Response {
    handle(&sim, &headers, "card.update", &body, |app, body| sim.update(app, body))
}

async fn register_handler(State(sim): State<Arc<CardsSim>>, headers: HeaderMap, body: Bytes) -> Response {
    handle(&sim, &headers, "card.registerCallback", &body, |app, body| sim.register(app, body))
}

#[cfg(test)]
#[path = "cards_tests.rs"]
mod tests;
