//! keel-dns: the cluster DNS server (CoreDNS's role) as a library the node agent links.
