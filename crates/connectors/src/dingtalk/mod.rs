//! DingTalk connector. This round: the custom group robot (群自定义机器人) webhook — signing,
//! message bodies, the sink, error classification and a faithful simulator
//! (`shared/reference/dingtalk.md` §2, §8).

pub mod auth;
pub mod client;
pub mod errors;
pub mod sim;
pub mod sink;

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
