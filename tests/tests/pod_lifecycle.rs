//! Restart safety and bad input on one node (root; issue 8 deliverable 5 and "Bad input"):
//! the agent is killed with SIGKILL while pods run, pods are created and deleted (gracefully
//! and by force) while it is down, and after its restart no running container was restarted,
//! the pods created meanwhile run, the deleted ones are gone, and once every pod is deleted no
//! network namespace, IP, cgroup, mount or veth is left. Then pods with a missing image, a
//! command not in the image, a missing ConfigMap volume and runAsNonRoot over a root image show
//! kubelet's reasons, while a healthy pod on the same node keeps serving.

use keel_tests::cluster::{Cluster, ClusterSpec, MASTER};
use keel_tests::images::WELCOME_PAGE;
use keel_tests::kubectl::Kubectl;
use keel_tests::poll;
use keel_tests::registry::curl;
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

fn pod(k: &Kubectl, name: &str) -> Option<Value> {
    let out = k.run(&["get", "pod", name, "-o", "json"]);
    out.ok
        .then(|| serde_json::from_str(&out.stdout).ok())
        .flatten()
}

fn running(k: &Kubectl, name: &str) -> Option<Value> {
    pod(k, name).filter(|p| {
        p["status"]["phase"] == "Running" && p["status"]["containerStatuses"][0]["ready"] == true
    })
}

fn container_id(p: &Value) -> String {
    p["status"]["containerStatuses"][0]["containerID"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// The waiting reason of the pod's first container, once it is `want`.
fn waiting_reason(k: &Kubectl, name: &str, want: &[&str]) -> Option<(String, String)> {
    let p = pod(k, name)?;
    let w = &p["status"]["containerStatuses"][0]["state"]["waiting"];
    let reason = w["reason"].as_str()?.to_string();
    want.contains(&reason.as_str()).then(|| {
        (
            reason,
            w["message"].as_str().unwrap_or_default().to_string(),
        )
    })
}

fn events_of(k: &Kubectl, name: &str) -> String {
    k.run(&[
        "get",
        "events",
        "--field-selector",
        &format!("involvedObject.name={name}"),
        "-o",
        "custom-columns=REASON:.reason,MESSAGE:.message",
    ])
    .stdout
}

fn sigkill_agent(root: &Path) {
    let pattern = format!("keel-agent .*--root-dir {}", root.display());
    let out = std::process::Command::new("pkill")
        .args(["-KILL", "-f", &pattern])
        .status()
        .expect("pkill (procps)");
    assert!(out.success(), "no agent process matched {pattern}");
}

/// Entries of `dir` (empty when it does not exist).
fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Pod cgroup folders (`pod<uid>`) left anywhere below /sys/fs/cgroup/*/keel/<node>.
fn pod_cgroups(node: &str) -> Vec<String> {
    let mut left = Vec::new();
    let mut stack: Vec<std::path::PathBuf> = entries(Path::new("/sys/fs/cgroup"))
        .into_iter()
        .map(|c| Path::new("/sys/fs/cgroup").join(c).join("keel").join(node))
        .collect();
    while let Some(d) = stack.pop() {
        for e in entries(&d) {
            let p = d.join(&e);
            if p.is_dir() {
                if e.starts_with("pod") {
                    left.push(p.display().to_string());
                }
                stack.push(p);
            }
        }
    }
    left
}

const MISSING_CONFIGMAP: &str = r#"apiVersion: v1
kind: Pod
metadata: {name: nocm}
spec:
  containers:
  - name: web
    image: nginx:1.14
    volumeMounts: [{name: cfg, mountPath: /cfg}]
  volumes:
  - name: cfg
    configMap: {name: missing}
"#;

const NON_ROOT: &str = r#"apiVersion: v1
kind: Pod
metadata: {name: nonroot}
spec:
  securityContext: {runAsNonRoot: true}
  containers:
  - name: web
    image: nginx:1.14
"#;

#[test]
fn agent_restart_and_bad_input() {
    let mut c = Cluster::start("podlife", ClusterSpec::one_node());
    let k = c.kubectl();
    let root = c.agent(MASTER).root.clone();
    let ns = c.lab.machine(MASTER).ns.name.clone();
    for name in ["keep", "gone", "forced"] {
        k.ok(&["run", name, "--image=nginx:1.14", "--port", "80"]);
    }
    let keep = poll("keep Running", Duration::from_secs(120), || {
        running(&k, "keep")
    });
    for name in ["gone", "forced"] {
        poll(&format!("{name} Running"), Duration::from_secs(120), || {
            running(&k, name)
        });
    }
    let forced_uid = pod(&k, "forced").expect("forced")["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let keep_id = container_id(&keep);

    // Crash the agent; change the pods while it is down.
    sigkill_agent(&root);
    k.ok(&["delete", "pod", "gone", "--wait=false"]);
    k.ok(&["delete", "pod", "forced", "--force", "--grace-period=0"]);
    k.ok(&["run", "new", "--image=nginx:1.14", "--port", "80"]);
    c.restart_agent(MASTER);

    poll(
        "new Running after the restart",
        Duration::from_secs(120),
        || running(&k, "new"),
    );
    poll(
        "gone removed after the restart",
        Duration::from_secs(120),
        || pod(&k, "gone").is_none().then_some(()),
    );
    poll(
        "forced pod's folder removed",
        Duration::from_secs(60),
        || (!root.join("pods").join(&forced_uid).exists()).then_some(()),
    );
    let keep = running(&k, "keep").expect("keep still Running after the agent restart");
    assert_eq!(
        container_id(&keep),
        keep_id,
        "the agent's restart must not restart a running container"
    );
    assert_eq!(keep["status"]["containerStatuses"][0]["restartCount"], 0);
    let ip = keep["status"]["podIP"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let page = curl(&ns, &["-s", "-m", "5", &format!("http://{ip}/")]);
    assert_eq!(
        page.as_deref(),
        Some(WELCOME_PAGE),
        "keep serves after the restart"
    );

    // Bad input: each pod says what is wrong; the node keeps serving `keep`.
    k.ok(&["run", "noimage", "--image=nginx:no-such-tag"]);
    k.ok(&[
        "run",
        "nocmd",
        "--image=nginx:1.14",
        "--command",
        "--",
        "/bin/no-such-command",
    ]);
    for (file, text) in [("nocm.yaml", MISSING_CONFIGMAP), ("nonroot.yaml", NON_ROOT)] {
        let path = c.lab.path(file);
        std::fs::write(&path, text).expect("write manifest");
        k.ok(&["apply", "-f", &path.to_string_lossy()]);
    }
    let (_, msg) = poll("noimage: ErrImagePull", Duration::from_secs(90), || {
        waiting_reason(&k, "noimage", &["ErrImagePull", "ImagePullBackOff"])
    });
    assert!(
        msg.contains("no-such-tag") || msg.contains("Back-off pulling image"),
        "the pull error names the image: {msg}"
    );
    let (_, msg) = poll("nocmd: RunContainerError", Duration::from_secs(90), || {
        waiting_reason(&k, "nocmd", &["RunContainerError", "CrashLoopBackOff"])
    });
    assert!(
        msg.contains("no-such-command") || msg.contains("back-off"),
        "the start error names the command: {msg}"
    );
    poll("nocm: FailedMount event", Duration::from_secs(90), || {
        let ev = events_of(&k, "nocm");
        (ev.contains("FailedMount") && ev.contains("configmap \"missing\" not found")).then_some(())
    });
    let nocm = pod(&k, "nocm").expect("nocm");
    assert_eq!(
        nocm["status"]["phase"], "Pending",
        "nocm waits for its volume"
    );
    let (_, msg) = poll(
        "nonroot: CreateContainerConfigError",
        Duration::from_secs(90),
        || waiting_reason(&k, "nonroot", &["CreateContainerConfigError"]),
    );
    assert!(msg.contains("runAsNonRoot"), "names runAsNonRoot: {msg}");
    let page = curl(&ns, &["-s", "-m", "5", &format!("http://{ip}/")]);
    assert_eq!(
        page.as_deref(),
        Some(WELCOME_PAGE),
        "keep serves beside the bad pods"
    );

    // Delete everything: nothing may be left on the node.
    k.ok(&[
        "delete",
        "pods",
        "--all",
        "--grace-period=1",
        "--wait=false",
    ]);
    poll("every pod removed", Duration::from_secs(120), || {
        let out = k.run(&["get", "pods", "-o", "name"]);
        (out.ok && out.stdout.trim().is_empty()).then_some(())
    });
    let mut last = String::new();
    poll(
        "no pod state left on the node",
        Duration::from_secs(30),
        || {
            let pods = entries(&root.join("pods"));
            let netns = entries(&Path::new("/run/keel").join(MASTER).join("netns"));
            let attach: Vec<String> = entries(&root.join("cni").join("attachments"));
            let cgroups = pod_cgroups(MASTER);
            let mounts: Vec<String> = std::fs::read_to_string("/proc/mounts")
                .unwrap_or_default()
                .lines()
                .filter(|l| l.contains(&*root.to_string_lossy()))
                .map(str::to_string)
                .collect();
            // Pod veths only: the lab's own link to its bridge is eth1.
            let links: String = c
                .run_in(MASTER, "ip", &["-o", "link", "show", "type", "veth"])
                .stdout
                .lines()
                .filter(|l| !l.contains(" eth1@"))
                .collect();
            let leftovers = (
                pods.clone(),
                netns.clone(),
                attach.clone(),
                cgroups.clone(),
                mounts.clone(),
                links.clone(),
            );
            if pods.is_empty()
                && netns.is_empty()
                && attach.is_empty()
                && cgroups.is_empty()
                && mounts.is_empty()
                && links.trim().is_empty()
            {
                Some(())
            } else {
                let now = format!("{leftovers:?}");
                if now != last {
                    eprintln!("left (pods, netns, attachments, cgroups, mounts, veths): {now}");
                    last = now;
                }
                None
            }
        },
    );
}
