//! keel-image: OCI image pull, content store, layer unpacking and container rootfs.
//!
//! - [`reference`]: Docker-style reference normalisation.
//! - [`registry`]: k3s `registries.yaml` (mirrors, auth, TLS).
//! - [`pull`]: fetch and verify manifests and blobs (async, tokio).
//! - [`store`]: blobs, unpacked layers, image records, leases on disk.
//! - [`unpack`]: layer tar -> directory with overlayfs whiteouts, contained.

pub mod cli;
pub mod gc;
pub mod import;
pub mod pull;
pub mod reference;
pub mod registry;
pub mod rootfs;
pub mod spec;
pub mod store;
pub mod unpack;
