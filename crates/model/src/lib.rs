//! dingbridge model
