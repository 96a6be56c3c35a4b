//! Custom robot wire format (reference §2.2) and the HTTP client the robot sink uses.
//!
//! [`RobotMessage`] serialises to exactly the bodies DingTalk expects (fixtures:
//! `robot_webhook/message_bodies.json`), including the vendor's inconsistent casing:
//! `link` uses `messageUrl`/`picUrl`, `feedCard` uses `messageURL`/`picURL`, `actionCard` uses
//! `singleURL`/`actionURL`.

use connect::http::{HttpClient, HttpSettings, Outbound};
use connect::DeliveryError;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// A custom robot message: `{"msgtype": "...", "<msgtype>": {...}, "at": {...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "msgtype")]
pub enum RobotMessage {
    #[serde(rename = "text")]
    Text {
        text: TextContent,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        at: Option<At>,
    },
    #[serde(rename = "markdown")]
    Markdown {
        markdown: MarkdownContent,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        at: Option<At>,
    },
    #[serde(rename = "link")]
    Link { link: LinkContent },
    #[serde(rename = "actionCard")]
    ActionCard {
        #[serde(rename = "actionCard")]
        action_card: ActionCardContent,
    },
    #[serde(rename = "feedCard")]
    FeedCard {
        #[serde(rename = "feedCard")]
        feed_card: FeedCardContent,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TextContent {
    pub content: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarkdownContent {
    /// Shown in the conversation list only.
    pub title: String,
    /// DingTalk's markdown subset.
    pub text: String,
}

/// @-mentions (`text` and `markdown` only). A mention pings only if `@<mobile>` / `@<userid>`
/// also appears in the content.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct At {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_mobiles: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_user_ids: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_at_all: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkContent {
    pub title: String,
    pub text: String,
    #[serde(rename = "messageUrl")]
    pub message_url: String,
    #[serde(rename = "picUrl", default, skip_serializing_if = "Option::is_none")]
    pub pic_url: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionCardContent {
    pub title: String,
    /// Markdown.
    pub text: String,
    /// `"0"` vertical, `"1"` horizontal.
    #[serde(rename = "btnOrientation", default, skip_serializing_if = "Option::is_none")]
    pub btn_orientation: Option<String>,
    #[serde(flatten)]
    pub buttons: ActionCardButtons,
}

/// Whole-card jump (one button) or per-button jump. Buttons only open URLs: a custom robot has
/// no callback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ActionCardButtons {
    Single {
        #[serde(rename = "singleTitle")]
        single_title: String,
        #[serde(rename = "singleURL")]
        single_url: String,
    },
    Multi {
        btns: Vec<ActionButton>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionButton {
    pub title: String,
    #[serde(rename = "actionURL")]
    pub action_url: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedCardContent {
    pub links: Vec<FeedLink>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedLink {
    pub title: String,
    #[serde(rename = "messageURL")]
    pub message_url: String,
    #[serde(rename = "picURL", default, skip_serializing_if = "Option::is_none")]
    pub pic_url: Option<String>,
}

const MSGTYPES: &str = "text, markdown, link, actionCard, feedCard";

/// What is wrong with a rendered robot message, in wire names, so a template author can fix it.
#[derive(Debug, thiserror::Error)]
pub enum RobotMessageError {
    #[error("a robot message must be a JSON object with `msgtype` ({MSGTYPES})")]
    NotAnObject,
    #[error("`msgtype` must be a string")]
    MsgtypeNotString,
    #[error("`msgtype` is missing; expected one of {MSGTYPES}")]
    MsgtypeMissing,
    #[error("unsupported msgtype `{0}`; expected one of {MSGTYPES}")]
    UnsupportedMsgtype(String),
    #[error(
        "actionCard needs either `singleTitle` + `singleURL` (whole-card jump) or \
         `btns: [{{title, actionURL}}]` (per-button jump)"
    )]
    ActionCardButtons,
    /// The message's fields do not have the shape its `msgtype` needs (serde's own words).
    #[error("{msgtype} message: {error}")]
    Shape { msgtype: String, error: serde_json::Error },
    #[error("`{0}` must not be empty")]
    Empty(String),
    #[error("`actionCard.btnOrientation` must be \"0\" (vertical) or \"1\" (horizontal), not {0:?}")]
    BtnOrientation(String),
    #[error("`actionCard.btns` must have at least one button")]
    NoButtons,
    #[error("`feedCard.links` must have at least one link")]
    NoLinks,
}

impl RobotMessage {
    pub fn text(content: impl Into<String>) -> Self {
        Self::Text { text: TextContent { content: content.into() }, at: None }
    }

    pub fn markdown(title: impl Into<String>, text: impl Into<String>) -> Self {
        Self::Markdown { markdown: MarkdownContent { title: title.into(), text: text.into() }, at: None }
    }

    pub fn link(
        title: impl Into<String>,
        text: impl Into<String>,
        message_url: impl Into<String>,
        pic_url: Option<String>,
    ) -> Self {
        Self::Link {
            link: LinkContent { title: title.into(), text: text.into(), message_url: message_url.into(), pic_url },
        }
    }

    /// Whole-card jump: one button opening `single_url`.
    pub fn action_card_single(
        title: impl Into<String>,
        text: impl Into<String>,
        single_title: impl Into<String>,
        single_url: impl Into<String>,
    ) -> Self {
        Self::ActionCard {
            action_card: ActionCardContent {
                title: title.into(),
                text: text.into(),
                btn_orientation: None,
                buttons: ActionCardButtons::Single { single_title: single_title.into(), single_url: single_url.into() },
            },
        }
    }

    /// Per-button jump; `horizontal` sets `btnOrientation` to `"1"`.
    pub fn action_card_buttons(
        title: impl Into<String>,
        text: impl Into<String>,
        btns: Vec<ActionButton>,
        horizontal: bool,
    ) -> Self {
        Self::ActionCard {
            action_card: ActionCardContent {
                title: title.into(),
                text: text.into(),
                btn_orientation: Some(if horizontal { "1" } else { "0" }.to_owned()),
                buttons: ActionCardButtons::Multi { btns },
            },
        }
    }

    pub fn feed_card(links: Vec<FeedLink>) -> Self {
        Self::FeedCard { feed_card: FeedCardContent { links } }
    }

    /// Sets the @-mentions of a `text` or `markdown` message; other message types do not render
    /// mentions (reference §2.2), so they are returned unchanged.
    #[must_use]
    pub fn with_at(self, at: At) -> Self {
        match self {
            Self::Text { text, .. } => Self::Text { text, at: Some(at) },
            Self::Markdown { markdown, .. } => Self::Markdown { markdown, at: Some(at) },
            other => other,
        }
    }

    /// The wire `msgtype`.
    pub fn msgtype(&self) -> &'static str {
        match self {
            Self::Text { .. } => "text",
            Self::Markdown { .. } => "markdown",
            Self::Link { .. } => "link",
            Self::ActionCard { .. } => "actionCard",
            Self::FeedCard { .. } => "feedCard",
        }
    }

    /// All human-readable text of the message (titles and bodies), newline-separated; what a
    /// keyword security check looks at.
    pub fn visible_text(&self) -> String {
        match self {
            Self::Text { text, .. } => text.content.clone(),
            Self::Markdown { markdown, .. } => format!("{}\n{}", markdown.title, markdown.text),
            Self::Link { link } => format!("{}\n{}", link.title, link.text),
            Self::ActionCard { action_card: c } => {
                let mut out = format!("{}\n{}", c.title, c.text);
                match &c.buttons {
                    ActionCardButtons::Single { single_title, .. } => {
                        out.push('\n');
                        out.push_str(single_title);
                    }
                    ActionCardButtons::Multi { btns } => {
                        for b in btns {
                            out.push('\n');
                            out.push_str(&b.title);
                        }
                    }
                }
                out
            }
            Self::FeedCard { feed_card } => {
                feed_card.links.iter().map(|l| l.title.as_str()).collect::<Vec<_>>().join("\n")
            }
        }
    }

    /// Parses and validates a rendered payload. The error says which field is wrong, in wire
    /// names, so a template author can fix it.
    pub fn from_value(value: &serde_json::Value) -> Result<Self, RobotMessageError> {
        let Some(object) = value.as_object() else {
            return Err(RobotMessageError::NotAnObject);
        };
        let msgtype = match object.get("msgtype") {
            Some(serde_json::Value::String(t)) => t.clone(),
            Some(_) => return Err(RobotMessageError::MsgtypeNotString),
            None => return Err(RobotMessageError::MsgtypeMissing),
        };
        let message: Self = serde_json::from_value(value.clone()).map_err(|error| {
            if msgtype == "actionCard" && error.to_string().contains("untagged") {
                RobotMessageError::ActionCardButtons
            } else if error.to_string().contains("unknown variant") {
                RobotMessageError::UnsupportedMsgtype(msgtype.clone())
            } else {
                RobotMessageError::Shape { msgtype: msgtype.clone(), error }
            }
        })?;
        message.validate()?;
        Ok(message)
    }

    /// Checks what serde cannot: required strings are non-empty, lists non-empty,
    /// `btnOrientation` is `"0"` or `"1"`.
    pub fn validate(&self) -> Result<(), RobotMessageError> {
        fn required(field: &str, value: &str) -> Result<(), RobotMessageError> {
            if value.trim().is_empty() {
                Err(RobotMessageError::Empty(field.to_owned()))
            } else {
                Ok(())
            }
        }
        match self {
            Self::Text { text, .. } => required("text.content", &text.content),
            Self::Markdown { markdown, .. } => {
                required("markdown.title", &markdown.title)?;
                required("markdown.text", &markdown.text)
            }
            Self::Link { link } => {
                required("link.title", &link.title)?;
                required("link.text", &link.text)?;
                required("link.messageUrl", &link.message_url)
            }
            Self::ActionCard { action_card: c } => {
                required("actionCard.title", &c.title)?;
                required("actionCard.text", &c.text)?;
                if let Some(o) = c.btn_orientation.as_deref() {
                    if o != "0" && o != "1" {
                        return Err(RobotMessageError::BtnOrientation(o.to_owned()));
                    }
                }
                match &c.buttons {
                    ActionCardButtons::Single { single_title, single_url } => {
                        required("actionCard.singleTitle", single_title)?;
                        required("actionCard.singleURL", single_url)
                    }
                    ActionCardButtons::Multi { btns } => {
                        if btns.is_empty() {
                            return Err(RobotMessageError::NoButtons);
                        }
                        for (i, b) in btns.iter().enumerate() {
                            required(&format!("actionCard.btns[{i}].title"), &b.title)?;
                            required(&format!("actionCard.btns[{i}].actionURL"), &b.action_url)?;
                        }
                        Ok(())
                    }
                }
            }
            Self::FeedCard { feed_card } => {
                if feed_card.links.is_empty() {
                    return Err(RobotMessageError::NoLinks);
                }
                for (i, l) in feed_card.links.iter().enumerate() {
                    required(&format!("feedCard.links[{i}].title"), &l.title)?;
                    required(&format!("feedCard.links[{i}].messageURL"), &l.message_url)?;
                }
                Ok(())
            }
        }
    }
}

/// The robot sink's HTTP client: the shared `connect::http::HttpClient` (no redirects — a
/// redirect means a wrong `base_url`, and following it would send the token elsewhere —,
/// rustls, no private addresses beyond `outbound`'s list, redacted errors) with the configured
/// overall timeout.
pub fn robot_http_client(timeout: Duration, outbound: Outbound) -> Result<HttpClient, DeliveryError> {
    let settings = HttpSettings {
        timeout,
        connect_timeout: timeout.min(HttpSettings::default().connect_timeout),
        outbound,
        ..HttpSettings::default()
    };
    HttpClient::new(settings).map_err(|err| DeliveryError::Transport {
        endpoint: "DingTalk robot webhook".to_owned(),
        reason: err.to_string(),
    })
}
