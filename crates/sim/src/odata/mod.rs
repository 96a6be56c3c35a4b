//! The OData chassis the OData simulators share (SAP Gateway v2, Dataverse and Business Central
//! v4): what the protocol fixes, so each simulator keeps only its vendor's rows, formats and
//! error bodies.
//!
//! - [`resource`]: `Set`, `Set(key)` and `Set(key)/Navigation` paths and key predicates,
//! - [`query`]: the system query options both simulators read (`$filter`, `$select`,
//!   `$expand`, `$top`, `$skip`, `$skiptoken`, `$orderby`, `$inlinecount`/`$count`) and row
//!   ordering,
//! - [`filter`]: the `$filter` grammar (a `winnow` parser), evaluated against JSON rows,
//! - [`paging`]: server-driven paging windows, next links and `Prefer: odata.maxpagesize`,
//! - [`etag`]: weak ETags and the `If-Match` / `If-None-Match` decisions (412, 428),
//! - [`batch`]: running a `$batch` request through the simulator's own handler, change sets
//!   all-or-nothing, and building the multipart answer (wire format from `connect::odata::batch`).

pub mod batch;
pub mod etag;
pub mod filter;
pub mod paging;
pub mod query;
pub mod resource;

pub use batch::{answer_batch, embedded_response, request_body, request_headers, BatchAnswer, BatchHandler};
pub use etag::{if_match, if_none_match_any, weak_etag, IfMatch};
pub use filter::{date_millis, Dialect, Filter, FilterError};
pub use paging::{max_page_size, next_link, prefers, PageWindow};
pub use query::{compare_rows, compare_values, OrderKey, QueryOptions};
pub use resource::{key_values, KeyValue, ResourcePath};
