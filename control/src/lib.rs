//! keel-control: the control plane. `store` is the MVCC log behind the `Backend` trait,
//! `apiserver` speaks the Kubernetes REST API over HTTPS, `pki` makes the cluster's
//! certificates and kubeconfigs, `tokens` the kubeadm-style bootstrap tokens.
#![forbid(unsafe_code)]

pub mod store;
