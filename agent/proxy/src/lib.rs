//! keel-proxy (being built).
