//! `keel-bridge`.

use crate::skel::{Plugin, Request};
use crate::spec::{CniError, CniResult};

pub struct Bridge;

impl Plugin for Bridge {
    fn about(&self) -> &'static str {
        "keel-bridge"
    }
    fn add(&self, _req: &Request) -> Result<CniResult, CniError> {
        Err(CniError::new(999, "todo"))
    }
    fn del(&self, _req: &Request) -> Result<(), CniError> {
        Ok(())
    }
    fn check(&self, _req: &Request) -> Result<(), CniError> {
        Ok(())
    }
}
