//! keel-agent entry point: parses flags and maps errors to exit codes.
#![forbid(unsafe_code)]

fn main() {
    eprintln!("keel-agent: not implemented yet (see the join issue)");
    std::process::exit(2);
}
