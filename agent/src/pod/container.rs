//! One container instance: pull its image, mount its rootfs, write its OCI bundle, create and
//! start it through keel-shim (`StartJob`), wait for its exit, and stop it gracefully
//! (preStop, the image's STOPSIGNAL or SIGTERM, SIGKILL at the deadline).

use super::record::{ContainerRecord, PodRecord};
use super::worker::Msg;
use super::{Ctx, bundle, now_ms};
use k8s_openapi::api::core::v1::{Container, Pod};
use keel_shim::proto::ExitStatus;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// A container instance the worker tracks.
#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    pub id: String,
    pub restart: u32,
    pub started_at: i64,
    pub exit: Option<ExitStatus>,
    pub image: String,
    pub image_id: String,
    pub stop_signal: i32,
}

impl Instance {
    pub fn from_record(r: &ContainerRecord) -> Instance {
        Instance {
            id: r.id.clone(),
            restart: r.restart_count,
            started_at: super::shim::rfc3339_ms(&r.created_at).unwrap_or_else(now_ms),
            exit: None,
            image: r.image.clone(),
            image_id: r.image_id.clone(),
            stop_signal: r.stop_signal,
        }
    }
}

/// The container named `name` in the pod (init or app).
pub fn find(pod: &Pod, name: &str) -> Option<Container> {
    let spec = pod.spec.as_ref()?;
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .find(|c| c.name == name)
        .cloned()
}

pub fn terminated(id: &str, exit: &ExitStatus) -> super::status::Terminated {
    let finished = super::shim::rfc3339_ms(&exit.finished_at).unwrap_or_else(now_ms);
    super::status::Terminated {
        id: id.to_string(),
        code: exit.code,
        signal: exit.signal,
        reason: super::status::exit_reason(exit.code, exit.oom_killed).into(),
        started_at: exit
            .started_at
            .as_deref()
            .and_then(super::shim::rfc3339_ms)
            .unwrap_or(finished),
        finished_at: finished,
    }
}

/// The exit of a container whose supervisor vanished without recording one (host reboot).
pub fn lost_exit(started_at: i64) -> ExitStatus {
    ExitStatus {
        code: 255,
        signal: None,
        oom_killed: false,
        finished_at: super::status::rfc3339(now_ms()),
        started_at: Some(super::status::rfc3339(started_at)),
    }
}

/// Waits for `id`'s exit in the background and reports it to the worker.
pub fn spawn_wait(ctx: Arc<Ctx>, id: String, tx: mpsc::Sender<Msg>) {
    tokio::spawn(async move {
        let exit = match ctx.shim.wait(&id).await {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(container = %id, error = %e, "waiting for a container");
                lost_exit(now_ms())
            }
        };
        let _ = tx.send(Msg::Exited { id, exit }).await;
    });
}

/// Graceful stop: preStop, stop signal, SIGKILL when `deadline` (Unix ms) passes.
pub async fn stop(
    ctx: Arc<Ctx>,
    pod: Arc<Pod>,
    inst: Instance,
    spec: Option<Container>,
    ip: Option<String>,
    deadline: i64,
) {
    let left = |d: i64| std::time::Duration::from_millis((d - now_ms()).max(0) as u64);
    if let Some(c) = &spec
        && let Some(handler) = c.lifecycle.as_ref().and_then(|l| l.pre_stop.clone())
    {
        let hook = super::probes::run_handler(
            &ctx,
            &pod,
            c,
            &inst.id,
            ip.as_deref(),
            &handler,
            keel_probe::FAILED_PRE_STOP_HOOK,
        );
        let _ = tokio::time::timeout(left(deadline), hook).await;
    }
    if let Err(e) = ctx.shim.kill(&inst.id, inst.stop_signal, false).await {
        tracing::debug!(container = %inst.id, error = %e, "stop signal");
    }
    if tokio::time::timeout(left(deadline), ctx.shim.wait(&inst.id))
        .await
        .is_err()
        && let Err(e) = ctx.shim.kill(&inst.id, 9, true).await
    {
        tracing::debug!(container = %inst.id, error = %e, "SIGKILL");
    }
}

fn new_id() -> String {
    let bytes: [u8; 32] = rand::random();
    hex::encode(bytes)
}

/// Creating and starting one instance of a container.
pub struct StartJob {
    pub ctx: Arc<Ctx>,
    pub pod: Arc<Pod>,
    pub name: String,
    pub restart: u32,
    pub ips: Vec<String>,
    pub record: Arc<Mutex<PodRecord>>,
    pub tx: mpsc::Sender<Msg>,
    /// Turns true when the pod is being deleted: an image pull still running is abandoned.
    pub cancel: tokio::sync::watch::Receiver<bool>,
}

/// A failed start: kubelet's reason and message.
pub struct StartError {
    pub reason: String,
    pub message: String,
}

fn fail(reason: &str, message: impl Into<String>) -> StartError {
    StartError {
        reason: reason.into(),
        message: message.into(),
    }
}

impl StartJob {
    pub async fn run(self) {
        let msg = match self.start().await {
            Ok(inst) => {
                spawn_wait(self.ctx.clone(), inst.id.clone(), self.tx.clone());
                Msg::Started {
                    name: self.name.clone(),
                    inst,
                }
            }
            Err(e) => {
                self.ctx
                    .events
                    .warning(&self.pod, "Failed", format!("Error: {}", e.message));
                Msg::StartFailed {
                    name: self.name.clone(),
                    reason: e.reason,
                    message: e.message,
                    at: now_ms(),
                }
            }
        };
        let _ = self.tx.send(msg).await;
    }

    async fn start(&self) -> Result<Instance, StartError> {
        let ctx = &self.ctx;
        let spec = find(&self.pod, &self.name).ok_or_else(|| {
            fail(
                "CreateContainerConfigError",
                format!("container {} is not in the pod spec", self.name),
            )
        })?;
        let image = spec.image.clone().unwrap_or_default();
        let policy = super::images::effective_policy(&image, spec.image_pull_policy.as_deref());
        let refs = bundle::fetch_refs(ctx, &self.pod).await?;
        let auths = bundle::pull_auths(&refs, &self.pod);
        let name =
            super::images::Images::normalize(&image).map_err(|f| fail(f.reason, f.message))?;
        let present = policy != "Always" && ctx.images.present(&name).is_some();
        if present {
            ctx.events.normal(
                &self.pod,
                "Pulled",
                format!("Container image {image:?} already present on machine"),
            );
        } else {
            ctx.events
                .normal(&self.pod, "Pulling", format!("Pulling image {image:?}"));
        }
        let t0 = std::time::Instant::now();
        let mut cancel = self.cancel.clone();
        let (rec, pulled) = tokio::select! {
            r = ctx.images.ensure(&image, &policy, &auths) => r.map_err(|f| fail(f.reason, f.message))?,
            _ = cancel.wait_for(|c| *c) => {
                return Err(fail("ContainerCreating", format!("pull of {image:?} abandoned: the pod is being deleted")));
            }
        };
        if pulled {
            ctx.stats
                .registry()
                .image_pull
                .observe(t0.elapsed().as_secs_f64());
            ctx.events.normal(
                &self.pod,
                "Pulled",
                format!(
                    "Successfully pulled image {image:?} in {:.3}s",
                    t0.elapsed().as_secs_f64()
                ),
            );
        }
        let config = ctx
            .images
            .configuration(&rec)
            .map_err(|m| fail("CreateContainerConfigError", m))?;
        let id = new_id();
        let uid = self.pod.metadata.uid.clone().unwrap_or_default();
        let pod_dir = ctx.layout.pod_dir(&uid);
        let bundle_dir = pod_dir.join("bundles").join(&id);
        let rootfs = bundle_dir.join("rootfs");
        let store = ctx.images.store.clone();
        let (mid, mname, mroot) = (id.clone(), rec.name.clone(), rootfs.clone());
        let mounted = tokio::task::spawn_blocking(move || {
            keel_image::rootfs::mount(&store, &mid, &mname, Some(&mroot))
        })
        .await
        .map_err(|e| fail("CreateContainerError", e.to_string()))?;
        if let Err(e) = mounted {
            return Err(fail(
                "CreateContainerError",
                format!("mounting the rootfs: {e}"),
            ));
        }
        let log_path = pod_dir
            .join("logs")
            .join(&self.name)
            .join(format!("{}.log", self.restart));
        let undo = |ctx: &Arc<Ctx>, id: &str| {
            let store = ctx.images.store.clone();
            let id = id.to_string();
            let _ = keel_image::rootfs::remove(&store, &id);
        };
        let record = self.record.lock().map(|r| r.clone()).unwrap_or_default();
        let built = bundle::build(&bundle::Input {
            ctx,
            pod: &self.pod,
            container: &spec,
            image: &config,
            rootfs: &rootfs,
            id: &id,
            ips: &self.ips,
            refs: &refs,
            record: &record,
        });
        let (config_json, cgroup, stop_signal) = match built {
            Ok(b) => b,
            Err(e) => {
                undo(ctx, &id);
                return Err(e);
            }
        };
        let write = std::fs::create_dir_all(log_path.parent().unwrap_or(&pod_dir)).and_then(|()| {
            std::fs::write(
                bundle_dir.join("config.json"),
                serde_json::to_vec_pretty(&config_json).unwrap_or_default(),
            )
        });
        if let Err(e) = write {
            undo(ctx, &id);
            return Err(fail(
                "CreateContainerError",
                format!("writing the bundle {}: {e}", bundle_dir.display()),
            ));
        }
        let entry = ContainerRecord {
            name: self.name.clone(),
            id: id.clone(),
            init: self
                .pod
                .spec
                .as_ref()
                .and_then(|s| s.init_containers.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.name == self.name)),
            restart_count: self.restart,
            image: image.clone(),
            image_id: rec.manifest_digest.clone(),
            log_path: log_path.clone(),
            cgroup,
            state_dir: ctx.shim.state_dir(&id),
            created_at: super::status::rfc3339(now_ms()),
            stop_signal,
        };
        super::sandbox::save_record(ctx, &self.record, |r| {
            // Keep the current and the previous instance of each container on disk.
            let keep_from = self.restart.saturating_sub(1);
            let mut gone = Vec::new();
            r.containers.retain(|c| {
                let keep = c.name != self.name || c.restart_count >= keep_from;
                if !keep {
                    gone.push(c.clone());
                }
                keep
            });
            r.containers.push(entry.clone());
            for g in gone {
                let ctx = ctx.clone();
                tokio::spawn(async move { remove_instance(&ctx, &g).await });
            }
        });
        let created = ctx
            .shim
            .create(&super::shim::Create {
                id: &id,
                bundle: &bundle_dir,
                log: &log_path,
            })
            .await;
        let started_at = now_ms();
        let result = match created {
            Ok(()) => ctx.shim.start(&id).await,
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            let _ = ctx.shim.delete(&id).await;
            undo(ctx, &id);
            super::sandbox::save_record(ctx, &self.record, |r| r.containers.retain(|c| c.id != id));
            return Err(fail("RunContainerError", e.to_string()));
        }
        ctx.events.normal(
            &self.pod,
            "Created",
            format!("Created container {}", self.name),
        );
        let kind = if entry.init {
            "init_container"
        } else {
            "container"
        };
        ctx.stats.registry().started_containers.inc_with(kind);
        if self.restart > 0 {
            ctx.stats.registry().container_restarts.inc();
        }
        ctx.events.normal(
            &self.pod,
            "Started",
            format!("Started container {}", self.name),
        );
        Ok(Instance {
            id,
            restart: self.restart,
            started_at,
            exit: None,
            image,
            image_id: rec.manifest_digest,
            stop_signal,
        })
    }
}

/// Deletes an instance from the runtime and the image store (old restarts, pod removal).
pub async fn remove_instance(ctx: &Arc<Ctx>, c: &ContainerRecord) {
    if let Err(e) = ctx.shim.delete(&c.id).await {
        tracing::warn!(container = %c.id, error = %e, "deleting a container");
    }
    let store = ctx.images.store.clone();
    let id = c.id.clone();
    let _ = tokio::task::spawn_blocking(move || keel_image::rootfs::remove(&store, &id)).await;
    if let Some(pod_dir) = c
        .log_path
        .parent()
        .and_then(|p| p.parent())
        .and_then(|p| p.parent())
    {
        let _ = std::fs::remove_dir_all(pod_dir.join("bundles").join(&c.id));
    }
    let _ = std::fs::remove_file(&c.log_path);
    for n in 1..10 {
        let mut rotated: PathBuf = c.log_path.clone().into_os_string().into();
        rotated.as_mut_os_string().push(format!(".{n}"));
        if std::fs::remove_file(&rotated).is_err() {
            break;
        }
    }
}
