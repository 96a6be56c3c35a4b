//! The store's one integration-test binary: the contract suite (run against SQLite and
//! Postgres), the audit tamper test (R16), the outbox model test (R15), two claimers on one
//! Postgres schema (R4-style), the group committers, task leases and retention.

extern crate dingbridge_store as store;

mod audit;
mod concurrency;
mod contract;
mod credential;
mod group;
mod harness;
mod model;
mod pacing;
mod perf;
mod renew;
mod singleton;
