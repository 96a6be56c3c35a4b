//! dingbridge engine
