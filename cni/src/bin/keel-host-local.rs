//! `keel-host-local`: the CNI host-local IPAM plugin binary.

fn main() -> std::process::ExitCode {
    keel_cni::skel::run(&keel_cni::hostlocal::HostLocal)
}
