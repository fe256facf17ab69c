//! One tokio task per pod: it owns the pod's lifecycle state, feeds `lifecycle::step` with
//! what the runtime reports, runs the actions it returns (through `sandbox` and `container`),
//! and patches `pods/<name>/status` whenever the status it would write changes. Slow actions
//! (pulls, creates, stops) run in their own tasks and report back as messages, so a pull never
//! delays the pod's other containers or its deletion.

use super::container::{self, Instance};
use super::lifecycle::{
    self, Action, Container, Desired, Memory, Observed, RestartPolicy, Sandbox, State,
};
use super::record::PodRecord;
use super::sandbox;
use super::status::{self, ContainerView, Terminated};
use super::{Ctx, now_ms};
use k8s_openapi::api::core::v1::Pod;
use keel_shim::proto::ExitStatus;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// What a worker hears about.
#[derive(Debug)]
pub enum Msg {
    /// The API object changed (spec, deletion timestamp).
    Pod(Arc<Pod>),
    /// The API object is gone (force deletion or removed while the agent was down).
    Gone,
    Started {
        name: String,
        inst: Instance,
    },
    StartFailed {
        name: String,
        reason: String,
        message: String,
        at: i64,
    },
    Exited {
        id: String,
        exit: ExitStatus,
    },
    /// A probe changed a container's readiness or startup state, or liveness failed.
    Probe {
        id: String,
        kind: ProbeKind,
        ok: bool,
        /// Liveness or startup failed: the Killing event's message.
        restart: Option<String>,
    },
    /// The eviction manager evicts the pod: kill it within `grace_ms`, then report it Failed
    /// with reason `Evicted` and `message`; `done` fires once its sandbox is gone.
    Evict {
        message: String,
        grace_ms: i64,
        done: tokio::sync::oneshot::Sender<()>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeKind {
    Readiness,
    Startup,
    Liveness,
}

pub struct Worker {
    ctx: Arc<Ctx>,
    uid: String,
    pod: Arc<Pod>,
    gone: bool,
    state: State,
    mem: Memory,
    sandbox: Sandbox,
    ips: Vec<String>,
    current: BTreeMap<String, Instance>,
    last: BTreeMap<String, Terminated>,
    failures: BTreeMap<String, (String, String, i64)>,
    starting: BTreeSet<String>,
    stopping: BTreeSet<String>,
    ready: BTreeMap<String, bool>,
    started: BTreeMap<String, bool>,
    requeue: Option<i64>,
    start_time: String,
    last_status: Value,
    record: Arc<Mutex<PodRecord>>,
    tx: mpsc::Sender<Msg>,
    /// Tells start jobs to abandon their pulls (the pod is being deleted).
    cancel: tokio::sync::watch::Sender<bool>,
    /// Probe runners of each container's current instance.
    probes: BTreeMap<String, tokio::task::AbortHandle>,
    /// Evicted (or refused) by this node.
    evicted: Option<Eviction>,
    /// Tells the eviction manager the evicted pod is cleaned up.
    evict_done: Option<tokio::sync::oneshot::Sender<()>>,
}

/// This node's eviction of the pod: by the eviction manager, or refused at admission.
#[derive(Debug, Clone)]
struct Eviction {
    /// `status.message`.
    message: String,
    grace_ms: i64,
    /// The DisruptionTarget condition's message (evictions, not refusals).
    disruption: Option<String>,
}

fn desired(pod: &Pod, gone: bool) -> Desired {
    let spec = pod.spec.clone().unwrap_or_default();
    let names = |cs: &[k8s_openapi::api::core::v1::Container]| {
        cs.iter().map(|c| c.name.clone()).collect::<Vec<_>>()
    };
    let restart_policy = match spec.restart_policy.as_deref() {
        Some("Never") => RestartPolicy::Never,
        Some("OnFailure") => RestartPolicy::OnFailure,
        _ => RestartPolicy::Always,
    };
    let deletion_grace = if gone {
        Some(0)
    } else {
        pod.metadata.deletion_timestamp.as_ref().map(|_| {
            let secs = pod
                .metadata
                .deletion_grace_period_seconds
                .or(spec.termination_grace_period_seconds)
                .unwrap_or(30);
            secs.max(0) * 1000
        })
    };
    Desired {
        init_containers: names(spec.init_containers.as_deref().unwrap_or_default()),
        containers: names(&spec.containers),
        restart_policy,
        deletion_grace,
        evicted: None,
    }
}

/// `<name>_<namespace>(<uid>)`, kubelet's way of naming a pod in messages.
pub fn pod_label(pod: &Pod) -> String {
    format!(
        "{}_{}({})",
        pod.metadata.name.as_deref().unwrap_or_default(),
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.uid.as_deref().unwrap_or_default()
    )
}

impl Worker {
    /// A worker for `pod`, resuming from `record` when the agent restarted.
    /// `gone`: the API object no longer exists (tear down without writing status).
    pub async fn spawn(
        ctx: Arc<Ctx>,
        pod: Arc<Pod>,
        record: Option<PodRecord>,
        gone: bool,
    ) -> mpsc::Sender<Msg> {
        let (tx, rx) = mpsc::channel(64);
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let start_time = pod
            .status
            .as_ref()
            .and_then(|s| s.start_time.as_ref())
            .map(|t| t.0.to_string())
            .unwrap_or_else(|| status::rfc3339(now_ms()));
        let fresh = record.is_none();
        // Evicted before an agent restart: finish the eviction, never restart its containers.
        let mut evicted = pod.status.as_ref().and_then(|s| {
            (s.phase.as_deref() == Some("Failed") && s.reason.as_deref() == Some("Evicted")).then(
                || Eviction {
                    message: s.message.clone().unwrap_or_default(),
                    grace_ms: 0,
                    disruption: s
                        .conditions
                        .iter()
                        .flatten()
                        .find(|c| c.type_ == "DisruptionTarget")
                        .map(|c| c.message.clone().unwrap_or_default()),
                },
            )
        });
        // Admission (kubelet's eviction admit handler): a node under pressure refuses a pod it
        // has not started yet.
        if fresh && !gone && evicted.is_none() && pod.metadata.deletion_timestamp.is_none() {
            let conditions = ctx.pressure.borrow().conditions.clone();
            if let Err(why) = super::evict::admit(&pod, &conditions) {
                tracing::warn!(pod = %pod_label(&pod), reason = %why, "refusing the pod");
                ctx.events.warning(&pod, "Evicted", why.clone());
                evicted = Some(Eviction {
                    message: format!("Pod was rejected: {why}"),
                    grace_ms: 0,
                    disruption: None,
                });
            }
        }
        let record = record.unwrap_or_else(|| PodRecord {
            namespace: pod
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into()),
            name: pod.metadata.name.clone().unwrap_or_default(),
            uid: uid.clone(),
            ..Default::default()
        });
        let mut w = Worker {
            ctx,
            uid,
            pod,
            gone,
            state: State::Setup,
            mem: Memory::default(),
            sandbox: Sandbox::Absent,
            ips: record.ips.clone(),
            current: BTreeMap::new(),
            last: BTreeMap::new(),
            failures: BTreeMap::new(),
            starting: BTreeSet::new(),
            stopping: BTreeSet::new(),
            ready: BTreeMap::new(),
            started: BTreeMap::new(),
            requeue: None,
            start_time,
            last_status: Value::Null,
            record: Arc::new(Mutex::new(record)),
            tx: tx.clone(),
            probes: BTreeMap::new(),
            cancel: tokio::sync::watch::Sender::new(false),
            evicted,
            evict_done: None,
        };
        if !fresh {
            w.adopt().await;
        }
        tokio::spawn(w.run(rx));
        tx
    }

    /// Rebuilds the picture from the pod's record and the supervisors (agent restart).
    async fn adopt(&mut self) {
        let rec = self.record.lock().map(|r| r.clone()).unwrap_or_default();
        if rec.netns.as_ref().is_some_and(|p| p.exists()) || rec.host_network || !rec.ips.is_empty()
        {
            self.sandbox = Sandbox::Ready;
        }
        let mut names: BTreeSet<&str> = BTreeSet::new();
        for c in &rec.containers {
            names.insert(&c.name);
        }
        for name in names {
            let Some(latest) = rec.container(name, false) else {
                continue;
            };
            if let Some(prev) = rec.container(name, true)
                && let Some(exit) = self.ctx.shim.exit_status(&prev.id).await
            {
                self.last
                    .insert(name.to_string(), container::terminated(&prev.id, &exit));
            }
            let mut inst = Instance::from_record(latest);
            if self.ctx.shim.running(&latest.id).await {
                container::spawn_wait(self.ctx.clone(), latest.id.clone(), self.tx.clone());
            } else {
                inst.exit = Some(
                    self.ctx
                        .shim
                        .exit_status(&latest.id)
                        .await
                        .unwrap_or_else(|| container::lost_exit(inst.started_at)),
                );
            }
            self.mem
                .restarts
                .insert(name.to_string(), latest.restart_count);
            self.current.insert(name.to_string(), inst);
        }
        let want = desired(&self.pod, false);
        let any_app = want.containers.iter().any(|n| self.current.contains_key(n));
        self.state = if any_app {
            State::Running
        } else if self.sandbox == Sandbox::Ready && !want.init_containers.is_empty() {
            State::Init(0)
        } else {
            State::Setup
        };
        let live: Vec<(String, Instance)> = self
            .current
            .iter()
            .filter(|(_, i)| i.exit.is_none())
            .map(|(n, i)| (n.clone(), i.clone()))
            .collect();
        for (name, inst) in live {
            self.ready.insert(name.clone(), true);
            self.started.insert(name.clone(), true);
            self.start_probes(&name, inst);
        }
        tracing::info!(pod = %pod_label(&self.pod), containers = self.current.len(), "re-adopted pod from disk");
    }

    /// What the API asks for, with this node's eviction.
    fn want(&self) -> Desired {
        let mut want = desired(&self.pod, self.gone);
        want.evicted = self.evicted.as_ref().map(|e| e.grace_ms);
        want
    }

    /// Offers the pod to the eviction manager while it runs; withdraws it once it is deleted,
    /// finished or evicted.
    fn offer_for_eviction(&self) {
        let running = matches!(self.state, State::Setup | State::Init(_) | State::Running);
        if running
            && self.evicted.is_none()
            && !self.gone
            && self.pod.metadata.deletion_timestamp.is_none()
        {
            self.ctx
                .live
                .set(&self.uid, self.pod.clone(), self.tx.clone());
        } else {
            self.ctx.live.remove(&self.uid);
        }
    }

    fn observe(&self) -> Observed {
        let want = self.want();
        let mut containers = BTreeMap::new();
        for name in want.init_containers.iter().chain(&want.containers) {
            let c = if self.starting.contains(name) {
                Container::Pulling
            } else if let Some((reason, message, at)) = self.failures.get(name) {
                Container::Failed {
                    reason: reason.clone(),
                    message: message.clone(),
                    at: *at,
                }
            } else if let Some(inst) = self.current.get(name) {
                match &inst.exit {
                    None => Container::Running {
                        started_at: inst.started_at,
                    },
                    Some(e) => Container::Exited {
                        code: e.code,
                        oom: e.oom_killed,
                        started_at: inst.started_at,
                        finished_at: super::shim::rfc3339_ms(&e.finished_at)
                            .unwrap_or(inst.started_at),
                    },
                }
            } else {
                Container::Absent
            };
            containers.insert(name.clone(), c);
        }
        Observed {
            now: now_ms(),
            sandbox: self.sandbox.clone(),
            containers,
        }
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Msg>) {
        loop {
            let want = self.want();
            let mut again = true;
            while again {
                again = false;
                let seen = self.observe();
                let (next, actions) = lifecycle::step(&self.state, &mut self.mem, &want, &seen);
                self.state = next;
                self.requeue = None;
                for a in actions {
                    again |= self.act(a).await;
                }
            }
            if self.state == State::Removed {
                self.ctx.live.remove(&self.uid);
                self.finish().await;
                return;
            }
            self.offer_for_eviction();
            if matches!(self.state, State::Finished(_))
                && let Some(done) = self.evict_done.take()
            {
                let _ = done.send(());
            }
            self.publish(&want).await;
            let wake = self.requeue.map(|t| {
                tokio::time::Instant::now()
                    + std::time::Duration::from_millis((t - now_ms()).max(0) as u64 + 5)
            });
            let msg = match wake {
                Some(at) => tokio::select! {
                    m = rx.recv() => m,
                    _ = tokio::time::sleep_until(at) => continue,
                },
                None => rx.recv().await,
            };
            let Some(msg) = msg else {
                // The sync loop went away (agent shutting down): leave containers running.
                self.ctx.live.remove(&self.uid);
                self.abort_probes();
                return;
            };
            self.handle(msg);
            while let Ok(m) = rx.try_recv() {
                self.handle(m);
            }
        }
    }

    fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Pod(p) => self.pod = p,
            Msg::Gone => self.gone = true,
            Msg::Started { name, inst } => {
                self.starting.remove(&name);
                self.failures.remove(&name);
                if let Some(old) = self.current.remove(&name)
                    && let Some(exit) = &old.exit
                {
                    self.last
                        .insert(name.clone(), container::terminated(&old.id, exit));
                }
                let spec = container::find(&self.pod, &name);
                let has = |f: fn(&k8s_openapi::api::core::v1::Container) -> bool| {
                    spec.as_ref().is_some_and(f)
                };
                self.ready
                    .insert(name.clone(), !has(|c| c.readiness_probe.is_some()));
                self.started
                    .insert(name.clone(), !has(|c| c.startup_probe.is_some()));
                self.start_probes(&name, inst.clone());
                self.current.insert(name, inst);
            }
            Msg::StartFailed {
                name,
                reason,
                message,
                at,
            } => {
                self.starting.remove(&name);
                self.failures.insert(name, (reason, message, at));
            }
            Msg::Exited { id, exit } => {
                for (name, inst) in self.current.iter_mut() {
                    if inst.id == id && inst.exit.is_none() {
                        inst.exit = Some(exit.clone());
                        if let Some(p) = self.probes.remove(name) {
                            p.abort();
                        }
                        self.ready.insert(name.clone(), false);
                    }
                }
                self.stopping.remove(&id);
            }
            Msg::Probe {
                id,
                kind,
                ok,
                restart,
            } => {
                let Some((name, inst)) = self.current.iter().find(|(_, i)| i.id == id) else {
                    return;
                };
                if inst.exit.is_some() {
                    return;
                }
                let name = name.clone();
                match kind {
                    ProbeKind::Readiness => {
                        self.ready.insert(name.clone(), ok);
                    }
                    ProbeKind::Startup => {
                        self.started.insert(name.clone(), ok);
                    }
                    ProbeKind::Liveness => {}
                }
                if let Some(why) = restart {
                    let deadline = now_ms() + self.grace_ms();
                    self.stop(&name, deadline, Some(why));
                }
            }
            Msg::Evict {
                message,
                grace_ms,
                done,
            } => {
                if self.evicted.is_none()
                    && !self.gone
                    && self.pod.metadata.deletion_timestamp.is_none()
                {
                    self.ctx
                        .events
                        .warning(&self.pod, "Evicted", message.clone());
                    self.ctx.live.remove(&self.uid);
                    self.evicted = Some(Eviction {
                        disruption: Some(message.clone()),
                        message,
                        grace_ms,
                    });
                    self.evict_done = Some(done);
                }
            }
        }
    }

    fn grace_ms(&self) -> i64 {
        self.pod
            .spec
            .as_ref()
            .and_then(|s| s.termination_grace_period_seconds)
            .unwrap_or(30)
            .max(0)
            * 1000
    }

    fn start_probes(&mut self, name: &str, inst: Instance) {
        let Some(spec) = container::find(&self.pod, name) else {
            return;
        };
        let ip = self.ips.first().cloned();
        if let Some(old) = self.probes.remove(name) {
            old.abort();
        }
        let pod = self.pod.clone();
        if let Some(h) = super::probes::spawn(
            self.ctx.clone(),
            pod,
            &spec,
            inst.id,
            inst.started_at,
            ip,
            self.tx.clone(),
        ) {
            self.probes.insert(name.to_string(), h);
        }
    }

    fn abort_probes(&mut self) {
        for (_, p) in std::mem::take(&mut self.probes) {
            p.abort();
        }
    }

    /// Stops the current instance of `name` by `deadline`; `why` replaces kubelet's default
    /// Killing message (a failed probe says so).
    fn stop(&mut self, name: &str, deadline: i64, why: Option<String>) {
        let Some(inst) = self.current.get(name) else {
            return;
        };
        if inst.exit.is_some() || !self.stopping.insert(inst.id.clone()) {
            return;
        }
        // A stopping container is not probed any more (no liveness restart mid-termination).
        if let Some(p) = self.probes.remove(name) {
            p.abort();
        }
        let spec = container::find(&self.pod, name);
        let message = why.unwrap_or_else(|| format!("Stopping container {name}"));
        self.ctx.events.normal(&self.pod, "Killing", message);
        let ip = self.ips.first().cloned();
        tokio::spawn(container::stop(
            self.ctx.clone(),
            self.pod.clone(),
            inst.clone(),
            spec,
            ip,
            deadline,
        ));
    }

    /// Runs one action; true when it changed what `observe` reports right away.
    async fn act(&mut self, a: Action) -> bool {
        match a {
            Action::CreateSandbox => {
                match sandbox::create(&self.ctx, &self.pod, &self.record).await {
                    Ok(ips) => {
                        self.ips = ips;
                        self.sandbox = Sandbox::Ready;
                    }
                    Err(e) => {
                        self.ctx
                            .events
                            .warning(&self.pod, e.reason(), e.to_string());
                        self.sandbox = Sandbox::Failed {
                            message: e.to_string(),
                        };
                    }
                }
                true
            }
            Action::StartContainer(name) => {
                if self.starting.insert(name.clone()) {
                    self.failures.remove(&name);
                    // Restarts counted so far number the new instance (and its log file).
                    let restart = self.mem.restarts.get(&name).copied().unwrap_or(0);
                    let job = container::StartJob {
                        ctx: self.ctx.clone(),
                        pod: self.pod.clone(),
                        name,
                        restart,
                        ips: self.ips.clone(),
                        record: self.record.clone(),
                        tx: self.tx.clone(),
                        cancel: self.cancel.subscribe(),
                    };
                    tokio::spawn(job.run());
                }
                false
            }
            Action::StopContainer { name, deadline } => {
                if self.starting.contains(&name) {
                    self.cancel.send_replace(true);
                }
                self.stop(&name, deadline, None);
                false
            }
            Action::RemoveSandbox => {
                self.abort_probes();
                sandbox::remove(&self.ctx, &self.pod, &self.record).await;
                self.sandbox = Sandbox::Absent;
                true
            }
            Action::RequeueAt(t) => {
                self.requeue = Some(self.requeue.map_or(t, |r| r.min(t)));
                false
            }
        }
    }

    async fn publish(&mut self, want: &Desired) {
        if self.gone {
            return;
        }
        let seen = self.observe();
        let mut views = BTreeMap::new();
        for name in want.init_containers.iter().chain(&want.containers) {
            let spec = container::find(&self.pod, name);
            let inst = self.current.get(name);
            views.insert(
                name.clone(),
                ContainerView {
                    image: inst
                        .map(|i| i.image.clone())
                        .or_else(|| spec.and_then(|c| c.image))
                        .unwrap_or_default(),
                    image_id: inst.map(|i| i.image_id.clone()).unwrap_or_default(),
                    id: inst.map(|i| i.id.clone()),
                    last: self.last.get(name).cloned(),
                    ready: self.ready.get(name).copied().unwrap_or(false),
                    started: self.started.get(name).copied().unwrap_or(false),
                },
            );
        }
        let previous = self
            .pod
            .status
            .as_ref()
            .and_then(|s| serde_json::to_value(&s.conditions).ok())
            .unwrap_or(Value::Null);
        let qos = super::qos_class(&self.pod).to_string();
        let label = pod_label(&self.pod);
        let host_ip = self.ctx.node_ip.to_string();
        let st = status::build(&status::Snapshot {
            state: &self.state,
            want,
            seen: &seen,
            mem: &self.mem,
            views: &views,
            pod_ips: &self.ips,
            host_ip: &host_ip,
            qos: &qos,
            start_time: &self.start_time,
            previous: &previous,
            pod_label: &label,
            evicted: self.evicted.as_ref().map(|e| status::Evicted {
                message: &e.message,
                disruption: e.disruption.as_deref(),
            }),
        });
        if strip_times(&st) == strip_times(&self.last_status) {
            return;
        }
        let api: kube::Api<Pod> = kube::Api::namespaced(
            self.ctx.client.clone(),
            self.pod.metadata.namespace.as_deref().unwrap_or("default"),
        );
        let name = self.pod.metadata.name.clone().unwrap_or_default();
        let patch = kube::api::Patch::Merge(json!({"status": st}));
        match api
            .patch_status(&name, &kube::api::PatchParams::default(), &patch)
            .await
        {
            Ok(_) => self.last_status = st,
            Err(e) => {
                tracing::warn!(pod = %label, error = %e, "patching pod status");
                // Try again soon.
                self.requeue = Some(now_ms() + 1000);
            }
        }
    }

    /// The sandbox is gone: let the API server remove the object.
    async fn finish(&mut self) {
        self.abort_probes();
        if self.gone {
            return;
        }
        let api: kube::Api<Pod> = kube::Api::namespaced(
            self.ctx.client.clone(),
            self.pod.metadata.namespace.as_deref().unwrap_or("default"),
        );
        let name = self.pod.metadata.name.clone().unwrap_or_default();
        let dp = kube::api::DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(kube::api::Preconditions {
                uid: Some(self.uid.clone()),
                resource_version: None,
            }),
            ..Default::default()
        };
        if let Err(e) = api.delete(&name, &dp).await {
            tracing::debug!(pod = %pod_label(&self.pod), error = %e, "final delete");
        }
    }
}

/// Status without the fields that change on every build, for change detection.
fn strip_times(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(cs) = v.get_mut("conditions").and_then(Value::as_array_mut) {
        for c in cs {
            if let Some(o) = c.as_object_mut() {
                o.remove("lastTransitionTime");
            }
        }
    }
    v
}
