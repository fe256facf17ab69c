//! keel-cni: the CNI 1.x `keel-bridge` and `keel-host-local` plugins.
