//! keel-proxy: the service proxy (kube-proxy's role) as a library the node agent links.
