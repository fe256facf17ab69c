//! `keel-bridge`: the CNI bridge plugin binary (and, with `--internal-delete-link`, the
//! helper DEL starts to finish a veth deletion).

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some(keel_cni::bridge::DELETE_LINK_ARG) {
        return keel_cni::bridge::delete_link_main(&args[1..]);
    }
    keel_cni::skel::run(&keel_cni::bridge::Bridge)
}
