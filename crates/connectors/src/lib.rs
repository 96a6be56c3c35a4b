//! dingbridge connectors
