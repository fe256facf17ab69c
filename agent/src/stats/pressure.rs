//! Node pressure: eviction signals from a sample, kubelet's default thresholds, and the order in
//! which pods are evicted.
