//! dingbridge server
