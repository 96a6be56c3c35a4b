//! DingTalk connector (`shared/reference/dingtalk.md`): the custom group robot webhook, access
//! tokens, the OpenAPI client (messages, work notifications, interactive cards, OA approvals,
//! directory), inbound events over encrypted HTTP callbacks and over Stream mode, and a
//! faithful stateful simulator of all of it.

pub mod app_sink;
pub mod auth;
pub mod callback;
pub mod cards;
pub mod client;
pub mod crypto;
pub mod directory;
pub mod errors;
pub mod messages;
pub mod openapi;
pub mod sim;
pub mod sink;
pub mod source;
pub mod stream;
pub mod token;
pub mod workflow;

#[cfg(test)]
mod tests;

pub use auth::{robot_sign, robot_signature_base64};
pub use client::{
    ActionButton, ActionCardButtons, ActionCardContent, At, FeedCardContent, FeedLink, LinkContent, MarkdownContent,
    RobotMessage, TextContent,
};
pub use errors::{classify_robot_response, ROBOT_THROTTLE_PENALTY};
pub use sim::{DingTalkSim, RecordedMessage, SimRobot};
pub use sink::{RobotSettings, RobotSink};

/// Vendor label used in errors and logs.
pub const VENDOR: &str = "DingTalk";
