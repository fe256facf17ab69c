//! keel-podspec: Pod spec -> OCI runtime spec, volumes, env, /etc files, QoS and pod cgroups.
