//! DingTalk connector (`shared/reference/dingtalk.md`): the custom group robot webhook, access
//! tokens, the OpenAPI client (messages, work notifications, interactive cards, OA approvals,
//! directory), inbound events over encrypted HTTP callbacks and over Stream mode, and a
//! faithful stateful simulator of all of it.

pub mod app_sink;
pub mod auth;
pub mod callback;
pub mod cards;
pub mod client;
pub mod config;
pub mod crypto;
pub mod directory;
pub mod errors;
pub mod markdown;
pub mod messages;
pub mod openapi;
pub mod sim;
pub mod sink;
pub mod source;
pub mod stream;
pub mod token;
pub mod workflow;

/// What unit tests of several DingTalk files share.
#[cfg(test)]
pub(crate) mod test_support {
    /// The body the official SDK sent for `method path` (`openapi/sdk_wire_requests.json`).
    pub(crate) fn sdk_request_body(method: &str, path: &str) -> serde_json::Value {
        let wire = fixtures::read_json("dingtalk/openapi/sdk_wire_requests.json");
        let requests = wire["requests"].as_array().cloned().unwrap_or_default();
        let request = requests
            .into_iter()
            .find(|r| r["path"] == path && r["method"] == method)
            .unwrap_or_else(|| panic!("no SDK capture of {method} {path}"));
        request["body"].clone()
    }
}

pub use auth::{robot_sign, robot_signature_base64};
pub use client::{
    ActionButton, ActionCardButtons, ActionCardContent, At, FeedCardContent, FeedLink, LinkContent, MarkdownContent,
    RobotMessage, RobotMessageError, TextContent,
};
pub use errors::{classify_robot_response, ROBOT_THROTTLE_PENALTY};
pub use sim::{DingTalkSim, RecordedMessage, SimRobot};
pub use sink::{RobotSettings, RobotSink};

/// Vendor label used in errors and logs.
pub const VENDOR: &str = "DingTalk";

#[cfg(test)]
mod tests;
