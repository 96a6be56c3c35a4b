//! End-to-end tests of the `dingbridge` binary: real processes, real HTTP, real stores.

mod cli_misc;
mod common;
mod crash;
mod crashpoints;
mod demo;
mod dlq;
mod drain;
mod two_instances;
