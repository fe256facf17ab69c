//! `keel-bridge`: the CNI bridge plugin binary.

fn main() -> std::process::ExitCode {
    keel_cni::skel::run(&keel_cni::bridge::Bridge)
}
