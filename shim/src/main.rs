//! keel-shim entry point.

fn main() {
    eprintln!("keel-shim: not implemented yet");
    std::process::exit(2);
}
