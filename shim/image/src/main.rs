//! `keel-image`: the same commands as `keel-shim image ...`, as a standalone binary for tests,
//! benchmarks and air-gapped preloading before keel-shim is installed.

fn main() {
    std::process::exit(keel_image::cli::main(std::env::args().skip(1).collect()));
}
