//! The `keel-shim image ...` command line; `keel-shim` hands every argument after `image` here.
//! Builds a current-thread tokio runtime for the async pull; everything else is synchronous.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use clap::{Parser, Subcommand};

use crate::pull::{Progress, Puller};
use crate::reference::ImageRef;
use crate::registry::RegistriesConfig;
use crate::store::Store;

/// Default store root, under the agent's root dir (DESIGN.md: node-local state).
pub const DEFAULT_ROOT: &str = "/var/lib/keel/agent/images";

#[derive(Parser, Debug)]
#[command(
    name = "keel-shim image",
    about = "Pull, list, inspect, remove and import OCI images"
)]
struct Cli {
    /// Image store root directory (`--image-root` too: under `keel-shim image`, a `--root`
    /// before the subcommand is keel-shim's own state dir).
    #[arg(long, global = true, visible_alias = "image-root", default_value = DEFAULT_ROOT)]
    root: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Pull an image from a registry (or its configured mirrors).
    Pull {
        reference: String,
        /// Registry configuration in k3s registries.yaml form.
        #[arg(long)]
        registry_config: Option<PathBuf>,
        /// Layers downloaded at once.
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
    },
    /// List images in the store.
    Ls,
    /// Print an image's record and config as JSON.
    Inspect { reference: String },
    /// Remove an image name (its layers go at the next prune).
    Rm { reference: String },
    /// Import an OCI image-layout or `docker save` tarball (or every tarball in a directory).
    Import {
        path: PathBuf,
        /// Name for images whose archive carries only a tag or no name.
        #[arg(long)]
        name: Option<String>,
    },
    /// Remove blobs and layers no image uses; with --all also images no container uses.
    Prune {
        #[arg(long)]
        all: bool,
    },
    /// Mount a container rootfs (overlay of the image's layers) and, with --bundle, write an
    /// OCI bundle: BUNDLE/rootfs and BUNDLE/config.json for `keel-shim create`/`run`.
    Mount {
        id: String,
        reference: String,
        #[arg(long)]
        bundle: Option<PathBuf>,
        /// Replaces the image's Entrypoint (and drops its Cmd), like a pod's `command`.
        #[arg(long = "command")]
        command: Vec<String>,
        /// Replaces the image's Cmd, like a pod's `args`.
        #[arg(long = "arg", allow_hyphen_values = true)]
        args: Vec<String>,
        /// NAME=VALUE, overriding the image's variable of the same name.
        #[arg(long = "env")]
        env: Vec<String>,
    },
    /// Unmount and delete a container rootfs made by `mount`.
    Unmount { id: String },
    /// Garbage-collect when the store's filesystem is fuller than --high percent, down to --low.
    Gc {
        #[arg(long, default_value_t = 85)]
        high: u8,
        #[arg(long, default_value_t = 80)]
        low: u8,
    },
}

/// Runs `keel-shim image <args>` and returns the process exit code.
pub fn main(args: Vec<String>) -> i32 {
    let cli = match Cli::try_parse_from(std::iter::once("keel-shim image".to_string()).chain(args))
    {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    match run(cli) {
        Ok(()) => 0,
        Err(message) => {
            eprintln!("keel-shim image: {message}");
            1
        }
    }
}

fn run(cli: Cli) -> Result<(), String> {
    let store = Arc::new(Store::open(&cli.root).map_err(|e| e.to_string())?);
    match cli.command {
        Command::Pull {
            reference,
            registry_config,
            concurrency,
        } => pull(store, &reference, registry_config.as_deref(), concurrency),
        Command::Ls => {
            let images = store.images().map_err(|e| e.to_string())?;
            println!("{:<60} {:<20} {:>10}", "IMAGE", "MANIFEST", "SIZE");
            for i in images {
                let short = i.manifest_digest.get(7..19).unwrap_or("");
                println!("{:<60} {:<20} {:>10}", i.name, short, human(i.size));
            }
            Ok(())
        }
        Command::Inspect { reference } => {
            let name = normalise(&reference)?;
            let image = store
                .image(&name)
                .map_err(|e| e.to_string())?
                .ok_or_else(|| {
                    format!("image {name} is not in the store; pull or import it first")
                })?;
            let config: serde_json::Value = serde_json::from_slice(
                &store
                    .read_blob(&image.config_digest)
                    .map_err(|e| e.to_string())?,
            )
            .map_err(|e| format!("parse config of {name}: {e}"))?;
            let out = serde_json::json!({ "image": image, "config": config });
            println!(
                "{}",
                serde_json::to_string_pretty(&out).map_err(|e| e.to_string())?
            );
            Ok(())
        }
        Command::Rm { reference } => {
            let name = normalise(&reference)?;
            store.remove_image(&name).map_err(|e| e.to_string())?;
            let freed = store.remove_unreferenced().map_err(|e| e.to_string())?;
            println!("removed {name} ({} freed)", human(freed));
            Ok(())
        }
        Command::Import { path, name } => import(&store, &path, name.as_deref()),
        Command::Prune { all } => {
            let mut removed = Vec::new();
            if all {
                removed = crate::gc::remove_unused_images(&store).map_err(|e| e.to_string())?;
            }
            let freed = store.remove_unreferenced().map_err(|e| e.to_string())?;
            for r in &removed {
                println!("removed {r}");
            }
            println!("freed {}", human(freed));
            Ok(())
        }
        Command::Mount {
            id,
            reference,
            bundle,
            command,
            args,
            env,
        } => mount(
            &store,
            &id,
            &reference,
            bundle.as_deref(),
            command,
            args,
            env,
        ),
        Command::Unmount { id } => {
            crate::rootfs::remove(&store, &id).map_err(|e| e.to_string())?;
            println!("removed rootfs of {id}");
            Ok(())
        }
        Command::Gc { high, low } => {
            let policy = crate::gc::Policy {
                high_percent: high,
                low_percent: low,
            };
            let report = crate::gc::collect(&store, policy, &crate::gc::StatvfsUsage)
                .map_err(|e| e.to_string())?;
            println!(
                "usage {}% (high {high}%): removed {} image(s), freed {}",
                report.usage_before,
                report.removed.len(),
                human(report.freed)
            );
            Ok(())
        }
    }
}

fn mount(
    store: &Store,
    id: &str,
    reference: &str,
    bundle: Option<&Path>,
    command: Vec<String>,
    args: Vec<String>,
    env: Vec<String>,
) -> Result<(), String> {
    let name = normalise(reference)?;
    let mut vars = Vec::new();
    for e in env {
        let (k, v) = e
            .split_once('=')
            .ok_or_else(|| format!("--env {e:?}: use NAME=VALUE"))?;
        vars.push((k.to_string(), v.to_string()));
    }
    let target = bundle.map(|b| b.join("rootfs"));
    let start = std::time::Instant::now();
    let rootfs =
        crate::rootfs::mount(store, id, &name, target.as_deref()).map_err(|e| e.to_string())?;
    let elapsed = start.elapsed();
    if let Some(bundle) = bundle {
        let written = (|| {
            let config: oci_spec::image::ImageConfiguration = serde_json::from_slice(
                &store
                    .read_blob(&rootfs.image.config_digest)
                    .map_err(|e| e.to_string())?,
            )
            .map_err(|e| format!("parse config of {name}: {e}"))?;
            let overrides = crate::spec::Overrides {
                command,
                args,
                env: vars,
                ..Default::default()
            };
            let mut spec =
                crate::spec::build(&config, &rootfs.path, &overrides).map_err(|e| e.to_string())?;
            // Bundle-relative, as runc's `spec` writes it.
            if let Some(root) = spec.root_mut() {
                root.set_path(PathBuf::from("rootfs"));
            }
            let path = bundle.join("config.json");
            spec.save(&path)
                .map_err(|e| format!("write {}: {e}", path.display()))
        })();
        if let Err(e) = written {
            let _ = crate::rootfs::remove(store, id);
            return Err(e);
        }
    }
    println!(
        "mounted {id} from {name} at {} in {:.2} ms",
        rootfs.path.display(),
        elapsed.as_secs_f64() * 1000.0
    );
    Ok(())
}

fn normalise(reference: &str) -> Result<String, String> {
    ImageRef::parse(reference)
        .map(|r| r.to_string())
        .map_err(|e| e.to_string())
}

fn import(store: &Store, path: &Path, name: Option<&str>) -> Result<(), String> {
    let names = if path.is_dir() {
        crate::import::import_dir(store, path).map_err(|e| e.to_string())?
    } else {
        crate::import::import_archive(store, path, name).map_err(|e| e.to_string())?
    };
    for n in names {
        println!("imported {n}");
    }
    Ok(())
}

fn pull(
    store: Arc<Store>,
    reference: &str,
    registry_config: Option<&Path>,
    concurrency: usize,
) -> Result<(), String> {
    let config = match registry_config {
        Some(p) => RegistriesConfig::load(p).map_err(|e| e.to_string())?,
        None => RegistriesConfig::default(),
    };
    let tty = std::io::stderr().is_terminal();
    let total = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let (t, d) = (total.clone(), done.clone());
    let puller = Puller::new(store, config)
        .with_concurrency(concurrency)
        .with_progress(move |p| match p {
            Progress::Resolved {
                image,
                endpoint,
                layers,
                bytes,
            } => {
                t.store(bytes, Ordering::Relaxed);
                eprintln!(
                    "resolved {image} at {endpoint}: {layers} layer(s), {}",
                    human(bytes)
                );
            }
            Progress::Downloaded { bytes } => {
                let now = d.fetch_add(bytes, Ordering::Relaxed) + bytes;
                if tty {
                    let all = t.load(Ordering::Relaxed).max(1);
                    eprint!(
                        "\rdownloading {:>3}% {:>10} / {}",
                        now * 100 / all,
                        human(now),
                        human(all)
                    );
                    let _ = std::io::stderr().flush();
                }
            }
            Progress::LayerReady { digest, cached } => {
                if tty {
                    eprint!("\r\x1b[K");
                }
                eprintln!(
                    "layer {digest} {}",
                    if cached { "already present" } else { "ready" }
                );
            }
        });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("start runtime: {e}"))?;
    let start = std::time::Instant::now();
    let record = runtime
        .block_on(puller.pull(reference))
        .map_err(|e| e.to_string())?;
    println!(
        "pulled {} {} in {:.2}s",
        record.name,
        record.manifest_digest,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}
