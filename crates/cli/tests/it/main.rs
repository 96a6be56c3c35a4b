//! End-to-end tests of the `dingbridge` binary: real processes, real HTTP, real stores.

mod common;
mod crash;
mod demo;
mod drain;
mod two_instances;
