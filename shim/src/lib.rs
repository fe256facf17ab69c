//! keel-shim: the runc-compatible OCI runtime and per-container supervisor.
