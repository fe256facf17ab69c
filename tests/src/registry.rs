//! Debian's `docker-registry` (distribution 2.x) on plain HTTP port 5000 inside a lab machine,
//! storing under the lab's folder, with the walkthrough's images pushed to it by skopeo from
//! inside that machine; and the k3s-style `registries.yaml` that makes `docker.io` and
//! `hub.test.com` pull from it. Stopped on drop (its storage goes with the lab folder).

use crate::images;
use crate::lab::{Lab, LabProcess, netns_command};
use std::path::PathBuf;
use std::time::Duration;

pub const PORT: u16 = 5000;

/// The registry hosts the walkthrough names and that the mirror config sends here.
pub const MIRRORED: &[&str] = &["docker.io", "hub.test.com"];

pub struct Registry {
    /// `192.168.56.5:5000`: how the lab's machines reach it.
    pub address: String,
    pub ns: String,
    pub data: PathBuf,
    pub process: LabProcess,
}

impl Registry {
    /// Starts docker-registry in lab machine `machine` (which must exist).
    pub fn start(lab: &Lab, machine: &str) -> Registry {
        images::need("docker-registry", "docker-registry");
        let m = lab.machine(machine);
        let data = lab.path("registry-data");
        std::fs::create_dir_all(&data).expect("registry storage folder");
        let config = lab.path("registry.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog: {{level: error, formatter: text}}\nstorage: {{filesystem: {{rootdirectory: {}}}, delete: {{enabled: true}}}}\nhttp: {{addr: \"0.0.0.0:{PORT}\"}}\n",
                data.display()
            ),
        )
        .expect("registry config");
        let mut cmd = m.ns.command("docker-registry");
        cmd.arg("serve").arg(&config);
        let mut process = LabProcess::spawn(cmd, lab.path("registry.log"));
        let address = format!("{}:{PORT}", m.ip);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        // `GET /v2/` from inside the registry's machine answers 200.
        let v2 = format!("http://127.0.0.1:{PORT}/v2/");
        while curl(&m.ns.name, &["-sf", "-o", "/dev/null", &v2]).is_none() {
            assert!(
                process.is_running(),
                "docker-registry exited:\n{}",
                process.log_text()
            );
            assert!(
                std::time::Instant::now() < deadline,
                "docker-registry did not answer on {address} within 30 s:\n{}",
                process.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Registry {
            address,
            ns: m.ns.name.clone(),
            data,
            process,
        }
    }

    /// Pushes every image of `images::PUSHES` (built on first use) with skopeo.
    pub fn push_test_images(&self) {
        images::need("skopeo", "skopeo");
        let layout = images::layout();
        for (tag, dest) in images::PUSHES {
            let out = netns_command(&self.ns, "skopeo")
                .args(["copy", "--quiet", "--dest-tls-verify=false"])
                .arg(format!("oci:{}:{tag}", layout.display()))
                .arg(format!("docker://127.0.0.1:{PORT}/{dest}"))
                .output()
                .expect("run skopeo");
            assert!(
                out.status.success(),
                "skopeo copy {tag} -> {dest} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    /// The tags of `repository` the registry lists.
    pub fn tags(&self, repository: &str) -> Vec<String> {
        let url = format!("http://127.0.0.1:{PORT}/v2/{repository}/tags/list");
        let body = curl(&self.ns, &["-sf", &url]).unwrap_or_default();
        serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["tags"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|t| t.as_str().map(str::to_string))
            .collect()
    }

    /// A k3s `registries.yaml` mirroring every host of `MIRRORED` to this registry over
    /// plain HTTP.
    pub fn registries_yaml(&self) -> String {
        let mut s = String::from("mirrors:\n");
        for host in MIRRORED {
            s += &format!(
                "  \"{host}\":\n    endpoint:\n      - \"http://{}\"\n",
                self.address
            );
        }
        s
    }
}

/// curl run inside network namespace `ns`; its stdout when it succeeded.
pub fn curl(ns: &str, args: &[&str]) -> Option<String> {
    images::need("curl", "curl");
    let out = netns_command(ns, "curl").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}
