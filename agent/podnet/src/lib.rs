//! keel-podnet: Pod sandboxes: network namespaces, CNI ADD/DEL, host-gw routes and masquerade.
