//! Container root filesystems: an overlayfs of the image's unpacked layers (read-only lower dirs,
//! top layer first) plus a per-container upper and work dir, mounted on create and removed on
//! delete. A lease file written before the mount keeps GC away from the layers in use.
//! Source: kernel Documentation/filesystems/overlayfs.rst ("Multiple lower layers").

use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};

use crate::store::{self, ImageRecord, Lease, Store, StoreError};

/// Why a rootfs could not be mounted or removed.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "container id {id:?} is invalid: use 1-128 characters from [A-Za-z0-9_.-], not starting with '.'"
    )]
    BadId { id: String },
    #[error("container {id} already has a rootfs; delete it first")]
    Exists { id: String },
    #[error("image {name} is not in the store; pull or import it first")]
    NoImage { name: String },
    #[error(
        "image {name} has {layers} layers: the overlay mount options exceed one page; flatten the image"
    )]
    TooManyLayers { name: String, layers: usize },
    #[error(
        "mount overlay for container {id} on {target}: {errno}; is the overlay module loaded (modprobe overlay)?"
    )]
    Mount {
        id: String,
        target: PathBuf,
        errno: nix::Error,
    },
    #[error("unmount rootfs of container {id} at {target}: {errno}")]
    Unmount {
        id: String,
        target: PathBuf,
        errno: nix::Error,
    },
}

pub type Result<T> = std::result::Result<T, RootfsError>;

/// A mounted container root filesystem.
#[derive(Debug, Clone)]
pub struct Rootfs {
    pub container_id: String,
    /// The merged directory (the container's `/`).
    pub path: PathBuf,
    pub image: ImageRecord,
}

fn check_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(RootfsError::BadId { id: id.to_string() })
    }
}

/// Mounts a rootfs for container `id` from image `name` (a normalised reference) at `target`,
/// or at `<root>/containers/<id>/rootfs` when `target` is `None`.
pub fn mount(store: &Store, id: &str, name: &str, target: Option<&Path>) -> Result<Rootfs> {
    check_id(id)?;
    let dir = store.container_dir(id);
    let mountpoint = target
        .map(Path::to_path_buf)
        .unwrap_or_else(|| dir.join("rootfs"));
    let image = {
        let _lock = store.lock()?;
        let image = store.image(name)?.ok_or_else(|| RootfsError::NoImage {
            name: name.to_string(),
        })?;
        if dir.exists() {
            return Err(RootfsError::Exists { id: id.to_string() });
        }
        for sub in ["upper", "work"] {
            let p = dir.join(sub);
            std::fs::create_dir_all(&p).map_err(store::io_err("create directory", &p))?;
        }
        let lease = Lease {
            container_id: id.to_string(),
            image: image.name.clone(),
            layers: image.diff_ids.clone(),
            mountpoint: mountpoint.clone(),
        };
        let lease_path = dir.join("lease.json");
        store::write_json(&lease_path, &lease, store).inspect_err(|_| store::remove_path(&dir))?;
        // Same critical section: GC orders by last use. A failed update only skews GC order.
        if let Err(e) = store.touch_image_locked(&image) {
            tracing::warn!(image = %image.name, error = %e, "could not record image use");
        }
        image
    };
    let result = mount_overlay(store, id, &image, &dir, &mountpoint);
    if result.is_err() {
        store::remove_path(&dir);
    }
    result.map(|()| Rootfs {
        container_id: id.to_string(),
        path: mountpoint,
        image,
    })
}

fn mount_overlay(
    store: &Store,
    id: &str,
    image: &ImageRecord,
    dir: &Path,
    mountpoint: &Path,
) -> Result<()> {
    std::fs::create_dir_all(mountpoint).map_err(store::io_err("create directory", mountpoint))?;
    let mut lower = Vec::with_capacity(image.layers.len());
    for layer in image.diff_ids.iter().rev() {
        lower.push(store.layer_dir(layer)?.display().to_string());
    }
    if lower.is_empty() {
        // overlayfs needs a lower dir; an image without layers gets an empty one.
        let empty = dir.join("empty");
        std::fs::create_dir_all(&empty).map_err(store::io_err("create directory", &empty))?;
        lower.push(empty.display().to_string());
    }
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        dir.join("upper").display(),
        dir.join("work").display()
    );
    // The whole option string must fit in one page (mount(2) copies at most PAGE_SIZE).
    if options.len() >= 4096 {
        return Err(RootfsError::TooManyLayers {
            name: image.name.clone(),
            layers: image.layers.len(),
        });
    }
    nix::mount::mount(
        Some("overlay"),
        mountpoint,
        Some("overlay"),
        MsFlags::empty(),
        Some(options.as_str()),
    )
    .map_err(|errno| RootfsError::Mount {
        id: id.to_string(),
        target: mountpoint.to_path_buf(),
        errno,
    })
}

/// Unmounts and removes container `id`'s rootfs, upper dir and lease. Idempotent.
pub fn remove(store: &Store, id: &str) -> Result<()> {
    check_id(id)?;
    let dir = store.container_dir(id);
    let lease_path = dir.join("lease.json");
    let mountpoint = if lease_path.is_file() {
        store::read_json::<Lease>(&lease_path)?.mountpoint
    } else {
        dir.join("rootfs")
    };
    match nix::mount::umount2(&mountpoint, MntFlags::MNT_DETACH) {
        // EINVAL: not a mount point (already unmounted); ENOENT: gone.
        Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => {}
        Err(errno) => {
            return Err(RootfsError::Unmount {
                id: id.to_string(),
                target: mountpoint,
                errno,
            });
        }
    }
    if !mountpoint.starts_with(&dir) {
        let _ = std::fs::remove_dir(&mountpoint);
    }
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(store::io_err("remove container directory", &dir))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked() {
        for bad in ["", ".x", "a/b", "..", &"x".repeat(129)] {
            assert!(
                matches!(check_id(bad), Err(RootfsError::BadId { .. })),
                "{bad}"
            );
        }
        check_id("abc-1.2_3").expect("valid");
    }

    #[test]
    fn unknown_image_leaves_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let err = mount(&store, "c1", "docker.io/library/none:1", None).expect_err("no image");
        assert!(matches!(err, RootfsError::NoImage { .. }));
        assert!(!dir.path().join("containers/c1").exists());
    }
}
