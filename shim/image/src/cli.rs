//! The `keel-shim image ...` command line; `keel-shim` hands every argument after `image` here.

/// Runs `keel-shim image <args>` and returns the process exit code.
pub fn main(args: Vec<String>) -> i32 {
    eprintln!("keel-shim image {}: not implemented yet", args.join(" "));
    2
}
