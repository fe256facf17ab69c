//! `start`: run the user process of a `created` container (through its supervisor, which
//! holds init's start pipe and reports whether the exec succeeded).

use super::refuse;
use crate::error::{Error, Result};
use crate::proto::{self, Op, Reply, Request, Status};
use crate::state::Container;
use std::path::Path;
use std::time::Duration;

/// The `start` command.
pub fn start(root: &Path, id: &str) -> Result<()> {
    let c = Container::load(root, id)?;
    let status = c.status();
    if status != Status::Created {
        return Err(refuse(
            id,
            status,
            "start (only a created container can be started)",
        ));
    }
    let resp = proto::call(
        &c.socket(),
        &Request::new(Op::Start),
        Some(Duration::from_secs(30)),
    )
    .map_err(|e| Error::Supervisor {
        id: id.into(),
        reason: e.to_string(),
    })?;
    match resp.result {
        Reply::Ok => Ok(()),
        Reply::Error { message } => Err(Error::Reported(message)),
        other => Err(Error::Supervisor {
            id: id.into(),
            reason: format!("unexpected answer {other:?}"),
        }),
    }
}
