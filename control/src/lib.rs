//! keel-control: the control plane. `store` is the MVCC log behind the `Backend` trait,
//! `apiserver` speaks the Kubernetes REST API over HTTPS, `pki` makes the cluster's
//! certificates and kubeconfigs, `tokens` the kubeadm-style bootstrap tokens, `system` the
//! objects the server keeps in place, `logs` the cluster log store and its endpoints, `cli` the
//! commands.
#![forbid(unsafe_code)]

pub mod apiserver;
pub mod cli;
pub mod config;
pub mod logs;
pub mod nodes;
pub mod pki;
pub mod store;
pub mod system;
pub mod tokens;
