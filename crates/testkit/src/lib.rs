//! dingbridge testkit
