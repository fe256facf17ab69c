//! keel-tests: the cluster test harness (network namespaces as nodes, real binaries, real kubectl).
