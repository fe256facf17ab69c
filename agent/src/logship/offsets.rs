//! What the shipper remembers across restarts, in `<root>/logship/state.json`: each source's
//! read point (saved only after the lines before it were accepted by the store) and each pod's
//! labels. A missing or unreadable file starts from the beginning of every file on disk; the
//! store drops what it already has, so that costs bandwidth, not duplicates.

use super::tail::Offset;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct State {
    /// Source (`<pod uid>/<container>/<restart>`) to its read point.
    #[serde(default)]
    pub sources: BTreeMap<String, Offset>,
    /// Pod uid to the pod's labels (resolved once from the API).
    #[serde(default)]
    pub labels: BTreeMap<String, BTreeMap<String, String>>,
}

impl State {
    pub fn load(path: &Path) -> State {
        std::fs::read(path)
            .ok()
            .and_then(|d| serde_json::from_slice(&d).ok())
            .unwrap_or_default()
    }

    pub fn save(&self, path: &Path) -> Result<(), crate::state::StateError> {
        let data = serde_json::to_vec(self).unwrap_or_default();
        crate::state::write_atomic(path, &data, 0o600)
    }

    /// Forgets a pod (its folder was drained and removed).
    pub fn forget_pod(&mut self, uid: &str) {
        let prefix = format!("{uid}/");
        self.sources.retain(|k, _| !k.starts_with(&prefix));
        self.labels.remove(uid);
    }
}

/// The source key of a container instance's log.
pub fn source(uid: &str, container: &str, restart: u32) -> String {
    format!("{uid}/{container}/{restart}")
}

/// (pod uid, container, restart) of a source key.
pub fn parse_source(s: &str) -> Option<(&str, &str, u32)> {
    let mut it = s.splitn(3, '/');
    let uid = it.next()?;
    let container = it.next()?;
    let restart = it.next()?.parse().ok()?;
    Some((uid, container, restart))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_forget() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        assert_eq!(State::load(&path), State::default());
        let mut s = State::default();
        let at = Offset {
            inode: 7,
            offset: 100,
            base: 50,
        };
        s.sources.insert(source("u1", "web", 0), at);
        s.sources.insert(source("u2", "db", 3), at);
        s.labels
            .insert("u1".into(), BTreeMap::from([("app".into(), "web".into())]));
        s.save(&path).expect("save");
        let mut back = State::load(&path);
        assert_eq!(back, s);
        back.forget_pod("u1");
        assert_eq!(back.sources.len(), 1);
        assert!(back.labels.is_empty());
        assert_eq!(parse_source("u2/db/3"), Some(("u2", "db", 3)));
        assert_eq!(parse_source("u2/db"), None);
        std::fs::write(&path, "not json").expect("write");
        assert_eq!(State::load(&path), State::default());
    }
}
