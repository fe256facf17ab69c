//! `keel-loopback`: the CNI loopback plugin binary.

fn main() -> std::process::ExitCode {
    keel_cni::skel::run(&keel_cni::loopback::Loopback)
}
