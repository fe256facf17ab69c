//! Image garbage collection: when the store's filesystem is fuller than the high threshold,
//! remove images no container uses, least recently used first, until usage is below the low
//! threshold. Same policy and defaults as kubelet's image GC (imageGCHighThresholdPercent 85,
//! imageGCLowThresholdPercent 80; kubelet docs "Garbage collection of unused containers and images").

use std::path::Path;

use crate::store::{Result, Store, StoreError};

/// The thresholds, in percent of the filesystem holding the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub high_percent: u8,
    pub low_percent: u8,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            high_percent: 85,
            low_percent: 80,
        }
    }
}

/// Capacity and available bytes of the filesystem at a path (a seam for tests).
pub trait DiskUsage {
    fn capacity_and_available(&self, path: &Path) -> std::io::Result<(u64, u64)>;
}

/// The real filesystem, via statvfs(3).
pub struct StatvfsUsage;

impl DiskUsage for StatvfsUsage {
    fn capacity_and_available(&self, path: &Path) -> std::io::Result<(u64, u64)> {
        let s = nix::sys::statvfs::statvfs(path).map_err(std::io::Error::from)?;
        let frag = s.fragment_size();
        Ok((s.blocks() * frag, s.blocks_available() * frag))
    }
}

/// What a collection did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub usage_before: u64,
    pub removed: Vec<String>,
    pub freed: u64,
}

/// Runs one collection with `policy`.
pub fn collect(store: &Store, policy: Policy, disk: &dyn DiskUsage) -> Result<Report> {
    let (capacity, available) = disk
        .capacity_and_available(store.root())
        .map_err(|source| StoreError::Io {
            op: "statvfs",
            path: store.root().to_path_buf(),
            source,
        })?;
    let capacity = capacity.max(1);
    let used = capacity.saturating_sub(available);
    let mut report = Report {
        usage_before: used * 100 / capacity,
        ..Report::default()
    };
    if report.usage_before < u64::from(policy.high_percent) {
        return Ok(report);
    }
    let target = used.saturating_sub(capacity * u64::from(policy.low_percent) / 100);
    // Garbage first: it costs no image.
    report.freed += store.remove_unreferenced()?;
    for name in unused_by_age(store)? {
        if report.freed >= target {
            break;
        }
        match store.remove_image(&name) {
            Ok(_) => report.removed.push(name),
            // A container started using it meanwhile: keep it.
            Err(StoreError::InUse { .. }) | Err(StoreError::NoImage { .. }) => continue,
            Err(e) => return Err(e),
        }
        report.freed += store.remove_unreferenced()?;
    }
    Ok(report)
}

/// Image names no container lease refers to, least recently used first.
fn unused_by_age(store: &Store) -> Result<Vec<String>> {
    let leased: std::collections::BTreeSet<String> =
        store.leases()?.into_iter().map(|l| l.image).collect();
    let mut images: Vec<_> = store
        .images()?
        .into_iter()
        .filter(|i| !leased.contains(&i.name))
        .collect();
    images.sort_by_key(|i| (i.last_used, i.created_at));
    Ok(images.into_iter().map(|i| i.name).collect())
}

/// Removes every image no container uses (`image prune --all`); returns their names.
pub fn remove_unused_images(store: &Store) -> Result<Vec<String>> {
    let mut removed = Vec::new();
    for name in unused_by_age(store)? {
        match store.remove_image(&name) {
            Ok(_) => removed.push(name),
            Err(StoreError::InUse { .. }) | Err(StoreError::NoImage { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{ImageRecord, LayerRecord, Lease};
    use std::cell::Cell;

    /// A disk whose usage drops by what the store frees.
    struct FakeDisk<'a> {
        store: &'a Store,
        capacity: u64,
        other: u64,
        calls: Cell<u32>,
    }

    impl DiskUsage for FakeDisk<'_> {
        fn capacity_and_available(&self, _: &Path) -> std::io::Result<(u64, u64)> {
            self.calls.set(self.calls.get() + 1);
            let u = self.store.usage().map_err(std::io::Error::other)?;
            Ok((self.capacity, self.capacity - self.other - u.layer_bytes))
        }
    }

    fn add_image(store: &Store, name: &str, last_used: u64, size: u64) -> String {
        let layer = store
            .write_blob(name.as_bytes(), None, "layer")
            .expect("blob");
        let tmp = store.tmp_path("layer");
        std::fs::create_dir(&tmp).expect("mkdir");
        store
            .commit_layer(
                &tmp,
                &LayerRecord {
                    blob_digest: layer.clone(),
                    diff_id: layer.clone(),
                    disk_usage: size,
                },
            )
            .expect("layer");
        let m = store
            .write_blob(format!("m{name}").as_bytes(), None, "m")
            .expect("m");
        store
            .put_image(&ImageRecord {
                name: name.into(),
                manifest_digest: m.clone(),
                index_digest: None,
                config_digest: m,
                layers: vec![layer.clone()],
                diff_ids: vec![layer.clone()],
                size,
                created_at: 0,
                last_used,
            })
            .expect("put");
        layer
    }

    #[test]
    fn removes_oldest_unused_until_low_threshold() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        add_image(&store, "old", 1, 100);
        add_image(&store, "mid", 2, 100);
        let used_layer = add_image(&store, "in-use", 0, 100);
        add_image(&store, "new", 3, 100);
        let cdir = dir.path().join("containers/c1");
        std::fs::create_dir_all(&cdir).expect("mkdir");
        let lease = Lease {
            container_id: "c1".into(),
            image: "in-use".into(),
            layers: vec![used_layer],
            mountpoint: cdir.join("rootfs"),
        };
        std::fs::write(
            cdir.join("lease.json"),
            serde_json::to_vec(&lease).expect("json"),
        )
        .expect("lease");
        // 1000 bytes disk, 480 used by others + 400 by layers = 88% > 85%; low 80% = 800.
        let disk = FakeDisk {
            store: &store,
            capacity: 1000,
            other: 480,
            calls: Cell::new(0),
        };
        let report = collect(&store, Policy::default(), &disk).expect("gc");
        assert_eq!(report.usage_before, 88);
        assert_eq!(report.removed, vec!["old".to_string()]);
        assert!(report.freed >= 100, "{report:?}");
        let second = collect(&store, Policy::default(), &disk).expect("gc");
        assert!(second.removed.is_empty(), "below high threshold now");
        let names: Vec<String> = store
            .images()
            .expect("ls")
            .into_iter()
            .map(|i| i.name)
            .collect();
        assert_eq!(names, vec!["in-use", "mid", "new"]);
        assert_eq!(
            remove_unused_images(&store).expect("prune"),
            vec!["mid", "new"]
        );
    }
}
