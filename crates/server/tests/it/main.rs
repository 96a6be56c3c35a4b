//! Intake over real HTTP against an in-process gateway on a temporary SQLite store:
//! signatures (R17), replays (R18), size and shape (R19).

mod admin;
mod approvals;
mod crm;
mod dingtalk;
mod erp;
mod intake;
mod layering;
mod limits;
mod routes;
