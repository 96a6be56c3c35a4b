//! End-to-end tests of the `dingbridge` binary: real processes, real HTTP, real stores.

mod approvals_kill;
mod audit;
mod check_approvals;
mod cli_misc;
mod common;
mod crash;
mod crashpoints;
mod demo;
mod dlq;
mod drain;
mod long_chaos;
mod long_outage;
mod outage;
mod overload;
mod pacing_kill;
mod r9_timeouts;
mod secrets;
mod singletons;
mod two_instances;
