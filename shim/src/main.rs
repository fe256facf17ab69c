//! keel-shim entry point: parse the command line, run it, map errors to one stderr line,
//! an optional `--log` record and a non-zero exit code.

fn main() {
    let args: Vec<String> = std::env::args().collect();
    std::process::exit(keel_shim::cli::main(args));
}
