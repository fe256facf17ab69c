//! The OCI lifecycle verbs, one file each (runtime-spec `runtime.md#operations`, runc CLI).
//! Guards: `start` only from `created`; `kill` only `created`/`running`/`paused`; `delete`
//! refuses a running container without `--force`.

pub mod create;
pub mod delete;
pub mod exec;
pub mod features;
pub mod kill;
pub mod pause;
pub mod run;
pub mod start;
pub mod state;

use crate::error::Error;
use crate::proto::Status;

/// A status error for `op`.
pub(crate) fn refuse(id: &str, status: Status, op: &str) -> Error {
    Error::Status {
        id: id.to_string(),
        status: format!("{status:?}").to_lowercase(),
        op: op.to_string(),
    }
}
