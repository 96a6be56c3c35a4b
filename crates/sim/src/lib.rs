//! dingbridge sim
