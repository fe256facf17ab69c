//! The node's service proxy and cluster DNS, started by `keel-agent run` (the services issue).
