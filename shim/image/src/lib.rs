//! keel-image: OCI image pull, content store, layer unpacking and container rootfs.

pub mod cli;
