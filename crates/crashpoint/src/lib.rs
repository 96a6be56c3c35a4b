//! Named crash points for the crash tests (RELIABILITY.md §0): the process aborts exactly in a
//! classic loss/duplicate window, as a SIGKILL would.
//!
//! Without the `enabled` feature every call is an empty inline function. With it, the variable
//! `DINGBRIDGE_CRASHPOINT=<name>:<n>` makes the n-th hit of `<name>` abort the process (no
//! destructors, no flushes: the same as `kill -9` at that line).

/// After the intake commit returned, before the sender gets its 2xx.
pub const AFTER_INTAKE_COMMIT: &str = "intake.after_commit";
/// Inside the group-commit transaction: rows written, commit not yet issued.
pub const MID_GROUP_COMMIT: &str = "store.mid_group_commit";
/// After the vendor accepted a delivery, before the job is marked done.
pub const AFTER_DELIVERY: &str = "worker.after_delivery";
/// After one poll page and its cursor committed, before the next page is asked for.
pub const AFTER_POLL_PAGE_COMMIT: &str = "poll.after_page_commit";

/// Every crash point, for tests that iterate them.
pub const ALL: &[&str] = &[AFTER_INTAKE_COMMIT, MID_GROUP_COMMIT, AFTER_DELIVERY, AFTER_POLL_PAGE_COMMIT];

#[cfg(feature = "enabled")]
mod armed {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;

    static PLAN: OnceLock<Option<(String, u64)>> = OnceLock::new();
    static HITS: AtomicU64 = AtomicU64::new(0);

    fn plan() -> &'static Option<(String, u64)> {
        PLAN.get_or_init(|| {
            let spec = std::env::var("DINGBRIDGE_CRASHPOINT").ok()?;
            let (name, n) = spec.split_once(':').unwrap_or((spec.as_str(), "1"));
            Some((name.to_string(), n.parse().unwrap_or(1)))
        })
    }

    pub fn hit(name: &str) {
        if let Some((armed, n)) = plan() {
            if armed == name && HITS.fetch_add(1, Ordering::SeqCst) + 1 == *n {
                eprintln!("crash point {name} reached (hit {n}): aborting");
                std::process::abort();
            }
        }
    }
}

/// Mark a crash point. A no-op unless built with `enabled` and armed by the environment.
#[inline(always)]
pub fn hit(name: &str) {
    #[cfg(feature = "enabled")]
    armed::hit(name);
    #[cfg(not(feature = "enabled"))]
    let _ = name;
}
