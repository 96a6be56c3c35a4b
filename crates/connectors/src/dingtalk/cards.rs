//! Interactive ("advanced") cards, reference §4: the `createAndDeliver` request, updates, HTTP
//! callback registration, the click a card callback carries and the card update R answered to it.
//!
//! Two DingTalk rules shape these types:
//! - every `cardParamMap` value is a string (§4.1): [`CardParams`] stores strings only and turns
//!   numbers, booleans, arrays and objects into JSON text on the way in;
//! - `outTrackId` is the caller's idempotency key for a card (§4.1). Sending the same
//!   `createAndDeliver` again must not make a second card: [`CardsClient::create_and_deliver`]
//!   treats an "outTrackId already exists" answer as success. DingTalk's own answer to a repeat is
//!   UNVERIFIED; the simulator answers an identical repeat with the original result (HTTP 200),
//!   and the client also accepts the error codes listed in [`ALREADY_EXISTS_CODES`].

use super::openapi::{Envelope, OpenApi};
use super::VENDOR;
use connect::DeliveryError;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Prefix of every `openSpaceId` (§4.1).
pub const OPEN_SPACE_PREFIX: &str = "dtv1.card//";

/// `userIdType` 1: ids are org userids (the SDK default; cards may not show without it, §4.1).
pub const USER_ID_TYPE_USERID: i64 = 1;

/// New-API `code`s that mean "a card with this outTrackId already exists". UNVERIFIED names:
/// DingTalk's answer to a repeated create is not documented, so these are the plausible spellings.
pub const ALREADY_EXISTS_CODES: &[&str] =
    &["param.outTrackIdExist", "param.outTrackIdExists", "param.outTrackIdAlreadyExist", "param.outTrackIdDuplicate"];

/// The variables of a card (`cardParamMap`): a map whose values are all strings (§4.1).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CardParams(BTreeMap<String, String>);

impl CardParams {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets a text value as is.
    pub fn text(mut self, key: &str, value: impl Into<String>) -> Self {
        self.0.insert(key.to_owned(), value.into());
        self
    }

    /// Sets any JSON value: strings as is, everything else as its JSON text (`12800`, `true`,
    /// `["a","b"]`), which is how DingTalk templates expect non-string variables.
    pub fn value(mut self, key: &str, value: Value) -> Self {
        self.insert_value(key, value);
        self
    }

    /// Sets a serialisable value with the rule of [`CardParams::value`].
    pub fn json<T: Serialize + ?Sized>(self, key: &str, value: &T) -> Result<Self, serde_json::Error> {
        Ok(self.value(key, serde_json::to_value(value)?))
    }

    pub fn insert_value(&mut self, key: &str, value: Value) {
        self.0.insert(key.to_owned(), stringify(value));
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn as_map(&self) -> &BTreeMap<String, String> {
        &self.0
    }

    pub fn into_map(self) -> BTreeMap<String, String> {
        self.0
    }

    /// Every entry of a JSON object, stringified per [`CardParams::value`].
    pub fn from_object(object: Map<String, Value>) -> Self {
        Self(object.into_iter().map(|(k, v)| (k, stringify(v))).collect())
    }

    /// The map as received, refusing any value that is not a JSON string: what DingTalk itself
    /// checks on create and update. Err names the offending key.
    pub fn from_strict(value: &Value) -> Result<Self, CardParamsError> {
        let Value::Object(object) = value else {
            return Err(CardParamsError::NotAnObject);
        };
        let mut params = BTreeMap::new();
        for (key, value) in object {
            match value {
                Value::String(text) => {
                    params.insert(key.clone(), text.clone());
                }
                other => return Err(CardParamsError::NotAString { key: key.clone(), kind: json_kind(other) }),
            }
        }
        Ok(Self(params))
    }
}

/// Why a `cardParamMap` breaks DingTalk's rule that every value is a string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CardParamsError {
    #[error("cardParamMap must be a JSON object")]
    NotAnObject,
    /// `kind` is the JSON kind found, with its article ("a number").
    #[error("cardParamMap value `{key}` is {kind}, not a string; serialise it as JSON text")]
    NotAString { key: String, kind: &'static str },
}

impl From<BTreeMap<String, String>> for CardParams {
    fn from(map: BTreeMap<String, String>) -> Self {
        Self(map)
    }
}

impl<'de> Deserialize<'de> for CardParams {
    /// Lenient: a non-string value is kept as its JSON text, so a reader never fails on a peer
    /// that forgot the string rule (the simulator checks the rule separately).
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let object = Option::<Map<String, Value>>::deserialize(d)?.unwrap_or_default();
        Ok(Self::from_object(object))
    }
}

fn stringify(value: Value) -> String {
    match value {
        Value::String(text) => text,
        other => other.to_string(),
    }
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// `{"cardParamMap": {…}}`, the shape of `cardData`, each `privateData` entry and the parts of R.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CardData {
    #[serde(default)]
    pub card_param_map: CardParams,
}

impl From<CardParams> for CardData {
    fn from(card_param_map: CardParams) -> Self {
        Self { card_param_map }
    }
}

/// Where a card's button clicks go (§4.1 `callbackType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum CallbackType {
    /// Over the app's Stream connection, topic `/v1.0/card/instances/callback` (preferred).
    Stream,
    /// POSTed to the URL registered for `callbackRouteKey`.
    Http,
}

/// Chat-list notification settings of a space model.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CardNotification {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alert_content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notification_off: Option<bool>,
}

/// `imGroupOpenSpaceModel` / `imRobotOpenSpaceModel` (same fields).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OpenSpaceModel {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub support_forward: Option<bool>,
    /// Text shown in the chat list, keyed `ZH_CN`, `EN_US`, ….
    #[serde(rename = "lastMessageI18n", skip_serializing_if = "Option::is_none")]
    pub last_message_i18n: Option<BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notification: Option<CardNotification>,
}

/// `imGroupOpenDeliverModel`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImGroupDeliverModel {
    pub robot_code: String,
    /// userid → display name (`"@ALL": "@ALL"` mentions everyone).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub at_user_ids: BTreeMap<String, String>,
    /// Only these users see the card; empty = the whole group.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recipients: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension: Option<BTreeMap<String, String>>,
}

/// `imRobotOpenDeliverModel`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImRobotDeliverModel {
    /// Always `IM_ROBOT`.
    pub space_type: String,
    pub robot_code: String,
}

/// One space a card lives in (the parts of an `openSpaceId`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpenSpace {
    /// A group chat, by `openConversationId`.
    Group(String),
    /// The 1:1 chat between the app's robot and this userid.
    Robot(String),
}

impl OpenSpace {
    /// `IM_GROUP.<cid>` / `IM_ROBOT.<userId>`.
    pub fn part(&self) -> String {
        match self {
            Self::Group(cid) => format!("IM_GROUP.{cid}"),
            Self::Robot(user) => format!("IM_ROBOT.{user}"),
        }
    }
}

/// `dtv1.card//IM_GROUP.<cid>`.
pub fn group_space_id(open_conversation_id: &str) -> String {
    format!("{OPEN_SPACE_PREFIX}{}", OpenSpace::Group(open_conversation_id.to_owned()).part())
}

/// `dtv1.card//IM_ROBOT.<userId>`.
pub fn robot_space_id(user_id: &str) -> String {
    format!("{OPEN_SPACE_PREFIX}{}", OpenSpace::Robot(user_id.to_owned()).part())
}

/// What is wrong with an `openSpaceId` (`dtv1.card//<SPACE_TYPE>.<id>;…`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenSpaceIdError {
    #[error("openSpaceId `{0}` does not start with `{OPEN_SPACE_PREFIX}`")]
    NoPrefix(String),
    #[error("openSpaceId part `{0}` is not `<SPACE_TYPE>.<id>`")]
    NotTypeAndId(String),
    #[error("openSpaceId part `{0}` has an empty id")]
    EmptyId(String),
    /// Space types other than `IM_GROUP` / `IM_ROBOT` are refused because their ids are UNVERIFIED.
    #[error("openSpaceId space type `{0}` is not supported (IM_GROUP, IM_ROBOT)")]
    UnsupportedSpaceType(String),
    #[error("openSpaceId `{0}` names no space")]
    NoSpace(String),
}

/// Splits an `openSpaceId` into its spaces (`;`-separated, §4.1; the separator is UNVERIFIED).
pub fn parse_open_space_id(open_space_id: &str) -> Result<Vec<OpenSpace>, OpenSpaceIdError> {
    let Some(rest) = open_space_id.strip_prefix(OPEN_SPACE_PREFIX) else {
        return Err(OpenSpaceIdError::NoPrefix(open_space_id.to_owned()));
    };
    let mut spaces = Vec::new();
    for part in rest.split(';').filter(|p| !p.is_empty()) {
        let Some((kind, id)) = part.split_once('.') else {
            return Err(OpenSpaceIdError::NotTypeAndId(part.to_owned()));
        };
        if id.is_empty() {
            return Err(OpenSpaceIdError::EmptyId(part.to_owned()));
        }
        spaces.push(match kind {
            "IM_GROUP" => OpenSpace::Group(id.to_owned()),
            "IM_ROBOT" => OpenSpace::Robot(id.to_owned()),
            other => return Err(OpenSpaceIdError::UnsupportedSpaceType(other.to_owned())),
        });
    }
    if spaces.is_empty() {
        return Err(OpenSpaceIdError::NoSpace(open_space_id.to_owned()));
    }
    Ok(spaces)
}

/// The body of `POST /v1.0/card/instances/createAndDeliver` (§4.1). Build it with
/// [`CardInstance::to_group`] or [`CardInstance::to_robot_chat`] and the `with_*` methods.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CardInstance {
    pub card_template_id: String,
    pub out_track_id: String,
    #[serde(default)]
    pub card_data: CardData,
    /// userid → that user's overrides.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub private_data: BTreeMap<String, CardData>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_type: Option<CallbackType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_route_key: Option<String>,
    /// Absent on a plain create (`POST /v1.0/card/instances`), which delivers nowhere.
    #[serde(default)]
    pub open_space_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub im_group_open_space_model: Option<OpenSpaceModel>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub im_group_open_deliver_model: Option<ImGroupDeliverModel>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub im_robot_open_space_model: Option<OpenSpaceModel>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub im_robot_open_deliver_model: Option<ImRobotDeliverModel>,
    #[serde(default = "default_user_id_type")]
    pub user_id_type: i64,
}

fn default_user_id_type() -> i64 {
    USER_ID_TYPE_USERID
}

impl CardInstance {
    /// A card for a group chat, delivered by `robot_code`. Forwarding is off: approval cards
    /// must not leave the group they were meant for.
    pub fn to_group(
        card_template_id: &str,
        out_track_id: &str,
        open_conversation_id: &str,
        robot_code: &str,
        params: CardParams,
    ) -> Self {
        Self {
            card_template_id: card_template_id.to_owned(),
            out_track_id: out_track_id.to_owned(),
            card_data: params.into(),
            private_data: BTreeMap::new(),
            callback_type: None,
            callback_route_key: None,
            open_space_id: group_space_id(open_conversation_id),
            im_group_open_space_model: Some(OpenSpaceModel { support_forward: Some(false), ..Default::default() }),
            im_group_open_deliver_model: Some(ImGroupDeliverModel {
                robot_code: robot_code.to_owned(),
                ..Default::default()
            }),
            im_robot_open_space_model: None,
            im_robot_open_deliver_model: None,
            user_id_type: USER_ID_TYPE_USERID,
        }
    }

    /// A card in the 1:1 chat between the robot `robot_code` and `user_id`.
    pub fn to_robot_chat(
        card_template_id: &str,
        out_track_id: &str,
        user_id: &str,
        robot_code: &str,
        params: CardParams,
    ) -> Self {
        Self {
            card_template_id: card_template_id.to_owned(),
            out_track_id: out_track_id.to_owned(),
            card_data: params.into(),
            private_data: BTreeMap::new(),
            callback_type: None,
            callback_route_key: None,
            open_space_id: robot_space_id(user_id),
            im_group_open_space_model: None,
            im_group_open_deliver_model: None,
            im_robot_open_space_model: Some(OpenSpaceModel { support_forward: Some(false), ..Default::default() }),
            im_robot_open_deliver_model: Some(ImRobotDeliverModel {
                space_type: "IM_ROBOT".to_owned(),
                robot_code: robot_code.to_owned(),
            }),
            user_id_type: USER_ID_TYPE_USERID,
        }
    }

    /// Overrides only `user_id` sees (e.g. `canApprove: "true"` for the approver).
    pub fn with_private(mut self, user_id: &str, params: CardParams) -> Self {
        self.private_data.insert(user_id.to_owned(), params.into());
        self
    }

    /// Clicks come back over Stream (§4.2; recommended).
    pub fn with_stream_callback(mut self) -> Self {
        self.callback_type = Some(CallbackType::Stream);
        self.callback_route_key = None;
        self
    }

    /// Clicks are POSTed to the URL registered for `route_key` ([`CardsClient::register_callback`]).
    pub fn with_http_callback(mut self, route_key: &str) -> Self {
        self.callback_type = Some(CallbackType::Http);
        self.callback_route_key = Some(route_key.to_owned());
        self
    }

    /// @-mentions `user_id` (shown as `nick`) in a group delivery; no effect on a robot chat.
    pub fn with_at(mut self, user_id: &str, nick: &str) -> Self {
        if let Some(model) = self.im_group_open_deliver_model.as_mut() {
            model.at_user_ids.insert(user_id.to_owned(), nick.to_owned());
        }
        self
    }

    /// Only these group members see the card; no effect on a robot chat.
    pub fn with_recipients<S: AsRef<str>>(mut self, user_ids: &[S]) -> Self {
        if let Some(model) = self.im_group_open_deliver_model.as_mut() {
            model.recipients = user_ids.iter().map(|u| u.as_ref().to_owned()).collect();
        }
        self
    }

    /// Whether the card may be forwarded from its chat.
    pub fn with_support_forward(mut self, allowed: bool) -> Self {
        for model in
            [self.im_group_open_space_model.as_mut(), self.im_robot_open_space_model.as_mut()].into_iter().flatten()
        {
            model.support_forward = Some(allowed);
        }
        self
    }

    /// Chat-list preview text in Chinese and English (`lastMessageI18n`).
    pub fn with_last_message(mut self, zh_cn: &str, en_us: &str) -> Self {
        let texts = BTreeMap::from([("ZH_CN".to_owned(), zh_cn.to_owned()), ("EN_US".to_owned(), en_us.to_owned())]);
        for model in
            [self.im_group_open_space_model.as_mut(), self.im_robot_open_space_model.as_mut()].into_iter().flatten()
        {
            model.last_message_i18n = Some(texts.clone());
        }
        self
    }
}

/// One space's outcome in a `createAndDeliver` answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DeliverResult {
    pub space_type: String,
    pub space_id: String,
    pub success: bool,
    pub error_msg: String,
    pub carrier_id: String,
}

/// `result` of a `createAndDeliver` answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CreateAndDeliverResult {
    pub out_track_id: String,
    pub deliver_results: Vec<DeliverResult>,
    /// Set by the client (never on the wire) when DingTalk answered "already exists": the card
    /// was created by an earlier attempt and `deliver_results` is empty.
    #[serde(skip)]
    pub already_existed: bool,
}

/// `cardUpdateOptions`: merge by key (true) or replace the whole map (false, the default).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CardUpdateOptions {
    pub update_card_data_by_key: bool,
    pub update_private_data_by_key: bool,
}

impl CardUpdateOptions {
    pub fn by_key() -> Self {
        Self { update_card_data_by_key: true, update_private_data_by_key: true }
    }
}

/// The body of `PUT /v1.0/card/instances` (§4.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CardInstanceUpdate {
    pub out_track_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub card_data: Option<CardData>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub private_data: BTreeMap<String, CardData>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub card_update_options: Option<CardUpdateOptions>,
    #[serde(default = "default_user_id_type")]
    pub user_id_type: i64,
}

impl CardInstanceUpdate {
    /// `card_params` (if any) for everyone, `private_params` per userid; `update_by_key` merges
    /// the given keys into what the card shows instead of replacing the maps.
    pub fn new(
        out_track_id: &str,
        card_params: Option<CardParams>,
        private_params: BTreeMap<String, CardParams>,
        update_by_key: bool,
    ) -> Self {
        Self {
            out_track_id: out_track_id.to_owned(),
            card_data: card_params.map(CardData::from),
            private_data: private_params.into_iter().map(|(user, params)| (user, params.into())).collect(),
            card_update_options: Some(CardUpdateOptions {
                update_card_data_by_key: update_by_key,
                update_private_data_by_key: update_by_key,
            }),
            user_id_type: USER_ID_TYPE_USERID,
        }
    }
}

/// The card update R (§4.2): what a callback subscriber answers to a click, applied by DingTalk
/// at once. Every part is optional; `CardUpdate::default()` means "no change".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CardUpdate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub card_data: Option<CardData>,
    /// For the user who clicked only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_private_data: Option<CardData>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub card_update_options: Option<CardUpdateOptions>,
}

impl CardUpdate {
    /// Merges `params` into the shared card data and `private` into the clicker's data (by key,
    /// so the rest of the card stays as it is).
    pub fn merge(params: CardParams, private: Option<CardParams>) -> Self {
        Self {
            card_data: Some(params.into()),
            user_private_data: private.map(CardData::from),
            card_update_options: Some(CardUpdateOptions::by_key()),
        }
    }

    /// The Stream ACK `data` object for this update: `{"response": R}` (§4.2).
    pub fn to_ack_data(&self) -> Value {
        serde_json::json!({ "response": self })
    }

    /// R from what a subscriber answered: R itself, or R wrapped as `{"response": R}`; `null`
    /// and `{}` are "no change".
    pub fn from_answer(answer: &Value) -> Result<Self, serde_json::Error> {
        let inner = match answer {
            Value::Object(object) if object.len() == 1 && object.contains_key("response") => &object["response"],
            other => other,
        };
        if inner.is_null() {
            return Ok(Self::default());
        }
        serde_json::from_value(inner.clone())
    }
}

/// A card callback could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CardCallbackError {
    #[error("card callback data is not JSON: {0}")]
    NotJson(String),
    #[error("card callback data has no `{0}`; is this a card callback (topic /v1.0/card/instances/callback)?")]
    Missing(&'static str),
    #[error("card callback `content` is not the expected JSON string ({0})")]
    BadContent(String),
}

/// A button click or form submit, read from a card callback's `data` (§4.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CardClick {
    pub out_track_id: String,
    /// Who clicked; a userid when `user_id_type` is 1 (verify them before acting, §4.3).
    pub user_id: String,
    pub user_id_type: i64,
    pub corp_id: String,
    /// `actionCallback` for button clicks.
    pub callback_type: String,
    pub space_type: Option<String>,
    pub space_id: Option<String>,
    /// Component ids that fired.
    pub action_ids: Vec<String>,
    /// Button and form values declared in the template, as sent.
    pub params: Map<String, Value>,
    /// `extension`, a JSON string, kept as sent.
    pub extension: Option<String>,
}

impl CardClick {
    /// From the callback data as text (a Stream frame's `data`, an HTTP callback body).
    pub fn from_json(text: &str) -> Result<Self, CardCallbackError> {
        let data: Value = serde_json::from_str(text).map_err(|e| CardCallbackError::NotJson(e.to_string()))?;
        Self::from_data(&data)
    }

    /// From the decoded callback data.
    pub fn from_data(data: &Value) -> Result<Self, CardCallbackError> {
        let text = |key: &'static str| data.get(key).and_then(Value::as_str).map(str::to_owned);
        let out_track_id = text("outTrackId").ok_or(CardCallbackError::Missing("outTrackId"))?;
        let user_id = text("userId").ok_or(CardCallbackError::Missing("userId"))?;
        let user_id_type = match data.get("userIdType") {
            Some(Value::Number(n)) => n.as_i64().unwrap_or(USER_ID_TYPE_USERID),
            Some(Value::String(s)) => s.parse().unwrap_or(USER_ID_TYPE_USERID),
            _ => USER_ID_TYPE_USERID,
        };
        let (action_ids, params) = match data.get("content") {
            None | Some(Value::Null) => (Vec::new(), Map::new()),
            Some(Value::String(content)) if content.is_empty() => (Vec::new(), Map::new()),
            Some(Value::String(content)) => {
                let content: Value =
                    serde_json::from_str(content).map_err(|e| CardCallbackError::BadContent(e.to_string()))?;
                read_content(&content)?
            }
            // Tolerate an already-decoded object.
            Some(content @ Value::Object(_)) => read_content(content)?,
            Some(other) => return Err(CardCallbackError::BadContent(format!("content is {}", json_kind(other)))),
        };
        Ok(Self {
            out_track_id,
            user_id,
            user_id_type,
            corp_id: text("corpId").unwrap_or_default(),
            callback_type: text("type").unwrap_or_default(),
            space_type: text("spaceType"),
            space_id: text("spaceId"),
            action_ids,
            params,
            extension: text("extension"),
        })
    }

    /// A param as text: strings as is, other values as JSON text.
    pub fn param(&self, key: &str) -> Option<String> {
        self.params.get(key).cloned().map(stringify)
    }
}

fn read_content(content: &Value) -> Result<(Vec<String>, Map<String, Value>), CardCallbackError> {
    let private = content.get("cardPrivateData").unwrap_or(&Value::Null);
    let action_ids = match private.get("actionIds") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(ids)) => ids.iter().map(|id| stringify(id.clone())).collect(),
        Some(other) => return Err(CardCallbackError::BadContent(format!("actionIds is {}", json_kind(other)))),
    };
    let params = match private.get("params") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(params)) => params.clone(),
        Some(other) => return Err(CardCallbackError::BadContent(format!("params is {}", json_kind(other)))),
    };
    Ok((action_ids, params))
}

fn unsuccessful(api: &str) -> DeliveryError {
    DeliveryError::Rejected { vendor: VENDOR, detail: format!("{api}: DingTalk answered success=false") }
}

fn bad_card(out_track_id: &str, detail: String) -> DeliveryError {
    DeliveryError::BadPayload { destination: format!("DingTalk card {out_track_id}"), detail }
}

/// Whether `err` is DingTalk saying the card already exists (see [`ALREADY_EXISTS_CODES`]). The
/// openapi layer puts the new-API `code` into the detail as `HTTP <status> <code>: <message>`.
fn is_already_exists(err: &DeliveryError) -> bool {
    match err {
        DeliveryError::Rejected { detail, .. } => {
            ALREADY_EXISTS_CODES.iter().any(|code| detail.contains(&format!(" {code}:")))
        }
        _ => false,
    }
}

/// The card calls of the new API on top of [`OpenApi`] (token, pacing, error classification).
#[derive(Debug, Clone)]
pub struct CardsClient {
    api: OpenApi,
}

impl CardsClient {
    pub fn new(api: OpenApi) -> Self {
        Self { api }
    }

    pub fn api(&self) -> &OpenApi {
        &self.api
    }

    /// `POST /v1.0/card/instances/createAndDeliver`. A repeat of an already created card is a
    /// success (`already_existed` set when DingTalk said so with an error code). Err when the
    /// card reached none of its spaces.
    pub async fn create_and_deliver(&self, card: &CardInstance) -> Result<CreateAndDeliverResult, DeliveryError> {
        if card.card_template_id.trim().is_empty() {
            return Err(bad_card(&card.out_track_id, "cardTemplateId is empty".to_owned()));
        }
        if card.out_track_id.trim().is_empty() {
            return Err(bad_card("(none)", "outTrackId is empty; use the ERP document id".to_owned()));
        }
        parse_open_space_id(&card.open_space_id).map_err(|e| bad_card(&card.out_track_id, e.to_string()))?;
        const API: &str = "POST /v1.0/card/instances/createAndDeliver";
        let answer: Result<Envelope<CreateAndDeliverResult>, _> =
            self.api.call_new(http::Method::POST, "/v1.0/card/instances/createAndDeliver", &[], Some(card)).await;
        let envelope = match answer {
            Ok(envelope) => envelope,
            Err(err) if is_already_exists(&err) => {
                tracing::info!(out_track_id = %card.out_track_id, "DingTalk says the card already exists; treating the create as done.");
                return Ok(CreateAndDeliverResult {
                    out_track_id: card.out_track_id.clone(),
                    deliver_results: Vec::new(),
                    already_existed: true,
                });
            }
            Err(err) => return Err(err),
        };
        if !envelope.succeeded() {
            return Err(unsuccessful(API));
        }
        let mut result = envelope.result.unwrap_or_default();
        if result.out_track_id.is_empty() {
            result.out_track_id = card.out_track_id.clone();
        }
        if !result.deliver_results.is_empty() && result.deliver_results.iter().all(|r| !r.success) {
            let reasons: Vec<String> = result
                .deliver_results
                .iter()
                .map(|r| format!("{} {}: {}", r.space_type, r.space_id, r.error_msg))
                .collect();
            return Err(DeliveryError::Rejected {
                vendor: VENDOR,
                detail: format!(
                    "{API}: card {} reached none of its spaces ({})",
                    card.out_track_id,
                    reasons.join("; ")
                ),
            });
        }
        Ok(result)
    }

    /// `PUT /v1.0/card/instances`: new values for everyone (`card_params`) and per userid
    /// (`private_params`); `update_by_key` merges them into what the card shows, otherwise the
    /// given maps replace the old ones.
    pub async fn update(
        &self,
        out_track_id: &str,
        card_params: Option<CardParams>,
        private_params: BTreeMap<String, CardParams>,
        update_by_key: bool,
    ) -> Result<(), DeliveryError> {
        self.update_instance(&CardInstanceUpdate::new(out_track_id, card_params, private_params, update_by_key)).await
    }

    /// `PUT /v1.0/card/instances` with a prepared body.
    pub async fn update_instance(&self, update: &CardInstanceUpdate) -> Result<(), DeliveryError> {
        if update.out_track_id.trim().is_empty() {
            return Err(bad_card("(none)", "outTrackId is empty".to_owned()));
        }
        let envelope: Envelope<Value> =
            self.api.call_new(http::Method::PUT, "/v1.0/card/instances", &[], Some(update)).await?;
        if !envelope.succeeded() || envelope.result == Some(Value::Bool(false)) {
            return Err(unsuccessful("PUT /v1.0/card/instances"));
        }
        Ok(())
    }

    /// `POST /v1.0/card/callbacks/register`: clicks on cards created with
    /// `with_http_callback(route_key)` are POSTed to `url` (replacing an earlier registration).
    pub async fn register_callback(
        &self,
        route_key: &str,
        url: &str,
        api_secret: &secrecy::SecretString,
    ) -> Result<(), DeliveryError> {
        use secrecy::ExposeSecret;
        let body = serde_json::json!({
            "callbackRouteKey": route_key,
            "callbackUrl": url,
            "apiSecret": api_secret.expose_secret(),
            "forceUpdate": true,
        });
        let envelope: Envelope<Value> =
            self.api.call_new(http::Method::POST, "/v1.0/card/callbacks/register", &[], Some(&body)).await?;
        if !envelope.succeeded() {
            return Err(unsuccessful("POST /v1.0/card/callbacks/register"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fixture(name: &str) -> Value {
        fixtures::read_json(format!("dingtalk/{name}"))
    }

    fn captured_body(path: &str, method: &str) -> Value {
        crate::dingtalk::test_support::sdk_request_body(method, path)
    }

    #[test]
    fn card_params_make_every_value_a_string() {
        let params = CardParams::new()
            .text("title", "PO-1")
            .value("amount", json!(12800))
            .value("urgent", json!(true))
            .value("lines", json!([{"sku": "A", "qty": 2}]))
            .json("tags", &["a", "b"])
            .unwrap();
        let wire = serde_json::to_value(CardData::from(params)).unwrap();
        assert_eq!(
            wire,
            json!({"cardParamMap": {
                "title": "PO-1", "amount": "12800", "urgent": "true",
                "lines": "[{\"qty\":2,\"sku\":\"A\"}]", "tags": "[\"a\",\"b\"]"
            }})
        );
    }

    #[test]
    fn strict_params_name_the_non_string_key() {
        let err = CardParams::from_strict(&json!({"ok": "x", "amount": 5})).unwrap_err().to_string();
        assert!(err.contains("`amount`") && err.contains("a number"), "{err}");
        assert_eq!(CardParams::from_strict(&json!({"ok": "x"})).unwrap().get("ok"), Some("x"));
        assert!(CardParams::from_strict(&json!([])).is_err());
    }

    #[test]
    fn create_and_deliver_matches_the_sdk_capture() {
        let params = CardParams::new()
            .text("title", "Purchase Request PO-2024-0042")
            .text("amount", "HK$12,800")
            .text("status", "pending");
        let card = CardInstance::to_group(
            "00000000-0000-4000-8000-000000000abc.schema",
            "dingbridge-pr-PO-2024-0042-v1",
            "cidAbCdEfGhIjKlMnOpQrStUv==",
            "dingrobotcode0001",
            params,
        )
        .with_private("manager4711", CardParams::new().text("canApprove", "true"))
        .with_stream_callback()
        .with_at("manager4711", "Manager")
        .with_recipients(&["manager4711"]);
        let expected = captured_body("/v1.0/card/instances/createAndDeliver", "POST");
        assert_eq!(serde_json::to_value(&card).unwrap(), expected);
        // And it reads back to the same request.
        let back: CardInstance = serde_json::from_value(expected).unwrap();
        assert_eq!(back, card);
    }

    #[test]
    fn robot_chat_card_has_robot_models() {
        let card = CardInstance::to_robot_chat("tpl.schema", "t-1", "manager4711", "robot1", CardParams::new())
            .with_last_message("新審批", "New approval")
            .with_http_callback("erp");
        let wire = serde_json::to_value(&card).unwrap();
        assert_eq!(wire["openSpaceId"], "dtv1.card//IM_ROBOT.manager4711");
        assert_eq!(wire["imRobotOpenDeliverModel"], json!({"spaceType": "IM_ROBOT", "robotCode": "robot1"}));
        assert_eq!(wire["imRobotOpenSpaceModel"]["lastMessageI18n"]["EN_US"], "New approval");
        assert_eq!(wire["callbackType"], "HTTP");
        assert_eq!(wire["callbackRouteKey"], "erp");
        assert_eq!(wire["userIdType"], 1);
        assert!(wire.get("imGroupOpenDeliverModel").is_none());
    }

    #[test]
    fn open_space_ids_round_trip() {
        assert_eq!(group_space_id("cid1=="), "dtv1.card//IM_GROUP.cid1==");
        let spaces = parse_open_space_id("dtv1.card//IM_GROUP.cidA+/==;IM_ROBOT.user.x").unwrap();
        assert_eq!(spaces, vec![OpenSpace::Group("cidA+/==".into()), OpenSpace::Robot("user.x".into())]);
        assert!(parse_open_space_id("IM_GROUP.cid").is_err());
        assert!(parse_open_space_id("dtv1.card//ONE_BOX.x").is_err());
        assert!(parse_open_space_id("dtv1.card//IM_GROUP.").is_err());
        assert!(parse_open_space_id("dtv1.card//").is_err());
    }

    #[test]
    fn update_matches_the_sdk_capture() {
        let update = CardInstanceUpdate::new(
            "dingbridge-pr-PO-2024-0042-v1",
            Some(CardParams::new().text("status", "approved")),
            BTreeMap::new(),
            true,
        );
        assert_eq!(serde_json::to_value(&update).unwrap(), captured_body("/v1.0/card/instances", "PUT"));
    }

    #[test]
    fn click_from_the_stream_fixture() {
        let frame = fixture("stream/04_callback_card_action.json");
        let click = CardClick::from_json(frame["server_frame"]["data"].as_str().unwrap()).unwrap();
        assert_eq!(click.out_track_id, "dingbridge-pr-PO-2024-0042-v1");
        assert_eq!(click.user_id, "manager4711");
        assert_eq!(click.user_id_type, 1);
        assert_eq!(click.corp_id, "dingcorp0123456789abcdef");
        assert_eq!(click.callback_type, "actionCallback");
        assert_eq!(click.space_type.as_deref(), Some("IM"));
        assert_eq!(click.space_id.as_deref(), Some("cidAbCdEfGhIjKlMnOpQrStUv=="));
        assert_eq!(click.action_ids, vec!["approve"]);
        assert_eq!(click.param("poNumber").as_deref(), Some("PO-2024-0042"));
        assert_eq!(click.param("comment").as_deref(), Some("OK within budget"));
        assert_eq!(click.extension.as_deref(), Some("{}"));
    }

    #[test]
    fn click_from_the_http_fixture_matches_its_decoded_content() {
        let request = fixture("events/card_callback_request.json");
        let click = CardClick::from_data(&request["raw"]).unwrap();
        let decoded = &request["content_decoded"]["cardPrivateData"];
        assert_eq!(Value::from(click.action_ids.clone()), decoded["actionIds"]);
        assert_eq!(Value::Object(click.params.clone()), decoded["params"]);
    }

    #[test]
    fn click_errors_say_what_is_missing() {
        assert!(matches!(CardClick::from_json("nope"), Err(CardCallbackError::NotJson(_))));
        let err = CardClick::from_data(&json!({"userId": "u"})).unwrap_err();
        assert!(matches!(err, CardCallbackError::Missing("outTrackId")));
        let err = CardClick::from_data(&json!({"outTrackId": "t", "userId": "u", "content": "{bad"})).unwrap_err();
        assert!(matches!(err, CardCallbackError::BadContent(_)));
        let click = CardClick::from_data(&json!({"outTrackId": "t", "userId": "u"})).unwrap();
        assert!(click.action_ids.is_empty() && click.params.is_empty());
    }

    #[test]
    fn card_update_serialises_like_the_fixture() {
        let expected = fixture("events/card_callback_response.json")["response"].clone();
        let update = CardUpdate::merge(
            CardParams::new()
                .text("status", "approved")
                .text("approver", "manager4711")
                .text("decidedAt", "2026-01-01 12:30"),
            Some(CardParams::new().text("myAction", "approve")),
        );
        assert_eq!(serde_json::to_value(&update).unwrap(), expected);
        assert_eq!(update.to_ack_data(), json!({ "response": expected }));
    }

    #[test]
    fn card_update_reads_both_sdk_acks() {
        let frame = fixture("stream/04_callback_card_action.json");
        let python = CardUpdate::from_answer(&frame["ack_from_official_python_sdk_data_decoded"]).unwrap();
        assert_eq!(python.card_update_options, Some(CardUpdateOptions::by_key()));
        assert_eq!(python.user_private_data.unwrap().card_param_map.get("myAction"), Some("approve"));
        let node = CardUpdate::from_answer(&frame["ack_from_official_node_sdk_data_decoded"]).unwrap();
        assert_eq!(node.card_data.unwrap().card_param_map.get("status"), Some("approved"));
        assert_eq!(node.card_update_options, None);
        assert_eq!(CardUpdate::from_answer(&json!({"response": null})).unwrap(), CardUpdate::default());
        assert_eq!(CardUpdate::from_answer(&Value::Null).unwrap(), CardUpdate::default());
    }
}
