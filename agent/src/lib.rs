//! keel-agent: the node agent (the kubelet equivalent). Not built yet; see the join and pods issues.
#![forbid(unsafe_code)]
