//! `/stats/summary` in the kubelet's JSON shape (k8s.io/kubelet/pkg/apis/stats/v1alpha1
//! types.go): every value field optional and left out when unknown. `only_cpu_and_memory`
//! (metrics-server's query) keeps just the CPU and memory parts.

use super::sample::{CgroupSample, Cpu, FsUsage, Interface, Memory, NodeSample, PodSample, Sample};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value, json};

fn ts(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn put(m: &mut Map<String, Value>, k: &str, v: Option<impl Into<Value>>) {
    if let Some(v) = v {
        m.insert(k.to_string(), v.into());
    }
}

fn cpu(c: &Cpu, time: &str) -> Value {
    let mut m = Map::new();
    m.insert("time".into(), time.into());
    put(&mut m, "usageNanoCores", c.usage_nano_cores);
    m.insert("usageCoreNanoSeconds".into(), c.usage_ns.into());
    Value::Object(m)
}

fn memory(mem: &Memory, time: &str) -> Value {
    let mut m = Map::new();
    m.insert("time".into(), time.into());
    put(
        &mut m,
        "availableBytes",
        mem.limit.map(|l| l.saturating_sub(mem.working_set)),
    );
    m.insert("usageBytes".into(), mem.usage.into());
    m.insert("workingSetBytes".into(), mem.working_set.into());
    put(&mut m, "rssBytes", mem.rss);
    put(&mut m, "pageFaults", mem.page_faults);
    put(&mut m, "majorPageFaults", mem.major_page_faults);
    Value::Object(m)
}

/// A folder's usage, with capacity and availability from the filesystem holding it.
fn fs(u: &FsUsage, holder: Option<&FsUsage>, time: &str) -> Value {
    let mut m = Map::new();
    m.insert("time".into(), time.into());
    put(
        &mut m,
        "availableBytes",
        u.available_bytes.or(holder.and_then(|h| h.available_bytes)),
    );
    put(
        &mut m,
        "capacityBytes",
        u.capacity_bytes.or(holder.and_then(|h| h.capacity_bytes)),
    );
    m.insert("usedBytes".into(), u.used_bytes.into());
    put(
        &mut m,
        "inodesFree",
        u.inodes_free.or(holder.and_then(|h| h.inodes_free)),
    );
    put(&mut m, "inodes", u.inodes.or(holder.and_then(|h| h.inodes)));
    m.insert("inodesUsed".into(), u.inodes_used.into());
    Value::Object(m)
}

fn interface(i: &Interface) -> Value {
    json!({
        "name": i.name,
        "rxBytes": i.rx_bytes,
        "rxErrors": i.rx_errors,
        "txBytes": i.tx_bytes,
        "txErrors": i.tx_errors,
    })
}

fn network(ifs: &[Interface], time: &str) -> Value {
    // The default interface is eth0 (kubelet's network.DefaultInterfaceName) when present.
    let default = ifs.iter().find(|i| i.name == "eth0").or(ifs.first());
    let mut v = match default {
        Some(d) => interface(d),
        None => json!({}),
    };
    if let Some(m) = v.as_object_mut() {
        m.insert("time".into(), time.into());
        m.insert(
            "interfaces".into(),
            Value::Array(ifs.iter().map(interface).collect()),
        );
    }
    v
}

fn cgroup_parts(m: &mut Map<String, Value>, s: &CgroupSample, time: &str) {
    if let Some(c) = &s.cpu {
        m.insert("cpu".into(), cpu(c, time));
    }
    if let Some(mem) = &s.memory {
        m.insert("memory".into(), memory(mem, time));
    }
}

fn node(n: &NodeSample, time: &str, only_cpu_mem: bool) -> Value {
    let mut m = Map::new();
    m.insert("nodeName".into(), n.name.clone().into());
    put(&mut m, "startTime", n.start_time.as_ref().map(ts));
    m.insert("cpu".into(), cpu(&n.cpu, time));
    let mem = &n.memory;
    m.insert(
        "memory".into(),
        json!({
            "time": time,
            "availableBytes": mem.available,
            "usageBytes": mem.usage,
            "workingSetBytes": mem.working_set,
            "rssBytes": mem.rss,
            "pageFaults": mem.page_faults,
            "majorPageFaults": mem.major_page_faults,
        }),
    );
    if let Some(Value::Object(o)) = m.get_mut("memory") {
        o.retain(|_, v| !v.is_null());
    }
    if only_cpu_mem {
        return Value::Object(m);
    }
    m.insert("network".into(), network(&n.network, time));
    if let Some(f) = &n.fs {
        m.insert("fs".into(), fs(f, None, time));
    }
    if let Some(f) = &n.image_fs {
        m.insert("runtime".into(), json!({ "imageFs": fs(f, None, time) }));
    }
    let mut rl = Map::new();
    rl.insert("time".into(), time.into());
    put(&mut rl, "maxpid", n.max_pid);
    put(&mut rl, "curproc", n.cur_proc);
    m.insert("rlimit".into(), Value::Object(rl));
    Value::Object(m)
}

fn pod(p: &PodSample, n: &NodeSample, time: &str, only_cpu_mem: bool) -> Value {
    let mut m = Map::new();
    m.insert(
        "podRef".into(),
        json!({"name": p.name, "namespace": p.namespace, "uid": p.uid}),
    );
    put(&mut m, "startTime", p.start_time.as_ref().map(ts));
    let mut ephemeral = FsUsage::default();
    let containers: Vec<Value> = p
        .containers
        .iter()
        .map(|c| {
            let mut cm = Map::new();
            cm.insert("name".into(), c.name.clone().into());
            put(&mut cm, "startTime", c.start_time.as_ref().map(ts));
            cgroup_parts(&mut cm, &c.stats, time);
            if !only_cpu_mem {
                for (key, usage, holder) in
                    [("rootfs", &c.rootfs, &n.image_fs), ("logs", &c.logs, &n.fs)]
                {
                    if let Some(u) = usage {
                        ephemeral.used_bytes += u.used_bytes;
                        ephemeral.inodes_used += u.inodes_used;
                        cm.insert(key.into(), fs(u, holder.as_ref(), time));
                    }
                }
            }
            Value::Object(cm)
        })
        .collect();
    m.insert("containers".into(), Value::Array(containers));
    cgroup_parts(&mut m, &p.stats, time);
    if only_cpu_mem {
        return Value::Object(m);
    }
    if let Some(ifs) = &p.network {
        m.insert("network".into(), network(ifs, time));
    }
    if !p.volumes.is_empty() {
        let vols: Vec<Value> = p
            .volumes
            .iter()
            .map(|(name, u)| {
                ephemeral.used_bytes += u.used_bytes;
                ephemeral.inodes_used += u.inodes_used;
                let mut v = fs(u, n.fs.as_ref(), time);
                if let Some(o) = v.as_object_mut() {
                    o.insert("name".into(), name.clone().into());
                }
                v
            })
            .collect();
        m.insert("volume".into(), Value::Array(vols));
    }
    m.insert(
        "ephemeral-storage".into(),
        fs(&ephemeral, n.fs.as_ref(), time),
    );
    if let Some(count) = p.stats.processes {
        m.insert("process_stats".into(), json!({ "process_count": count }));
    }
    Value::Object(m)
}

/// The whole summary document.
pub fn render(s: &Sample, only_cpu_and_memory: bool) -> Value {
    let time = ts(&s.time);
    json!({
        "node": node(&s.node, &time, only_cpu_and_memory),
        "pods": s.pods.iter().map(|p| pod(p, &s.node, &time, only_cpu_and_memory)).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::sample::{CgroupSample, ContainerSample, NodeMemory};

    fn sample() -> Sample {
        let mem = |ws, limit| Memory {
            usage: ws + 10,
            working_set: ws,
            limit,
            ..Default::default()
        };
        Sample {
            time: DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default(),
            node: NodeSample {
                name: "n1".into(),
                memory: NodeMemory {
                    total: 1000,
                    available: 400,
                    working_set: 600,
                    ..Default::default()
                },
                fs: Some(FsUsage {
                    capacity_bytes: Some(100),
                    available_bytes: Some(40),
                    ..Default::default()
                }),
                ..Default::default()
            },
            pods: vec![PodSample {
                namespace: "default".into(),
                name: "web".into(),
                uid: "u1".into(),
                stats: CgroupSample {
                    cpu: Some(Cpu {
                        usage_ns: 5,
                        usage_nano_cores: Some(7),
                        ..Default::default()
                    }),
                    memory: Some(mem(50, None)),
                    processes: Some(2),
                },
                volumes: vec![(
                    "data".into(),
                    FsUsage {
                        used_bytes: 3,
                        inodes_used: 1,
                        ..Default::default()
                    },
                )],
                containers: vec![ContainerSample {
                    name: "app".into(),
                    stats: CgroupSample {
                        memory: Some(mem(40, Some(100))),
                        ..Default::default()
                    },
                    logs: Some(FsUsage {
                        used_bytes: 4,
                        inodes_used: 2,
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    #[test]
    fn kubelet_shape_with_optional_fields_left_out() {
        let doc = render(&sample(), false);
        let p = &doc["pods"][0];
        assert_eq!(
            p["podRef"],
            json!({"name": "web", "namespace": "default", "uid": "u1"})
        );
        assert_eq!(p["cpu"]["usageNanoCores"], 7);
        assert_eq!(p["cpu"]["time"], "2027-01-15T08:00:00Z");
        // No limit on the pod: no availableBytes; the container's limit gives 100 - 40.
        assert!(p["memory"].get("availableBytes").is_none());
        assert_eq!(p["containers"][0]["memory"]["availableBytes"], 60);
        assert!(p["containers"][0].get("cpu").is_none());
        // Logs on nodefs: capacity and availability from it; ephemeral storage sums all.
        assert_eq!(p["containers"][0]["logs"]["capacityBytes"], 100);
        assert_eq!(p["volume"][0]["name"], "data");
        assert_eq!(p["ephemeral-storage"]["usedBytes"], 7);
        assert_eq!(p["process_stats"]["process_count"], 2);
        assert_eq!(doc["node"]["memory"]["availableBytes"], 400);
        assert_eq!(doc["node"]["fs"]["availableBytes"], 40);
    }

    #[test]
    fn only_cpu_and_memory() {
        let doc = render(&sample(), true);
        let p = &doc["pods"][0];
        assert!(p.get("volume").is_none() && p.get("ephemeral-storage").is_none());
        assert!(p["containers"][0].get("logs").is_none());
        assert!(doc["node"].get("fs").is_none());
        assert!(p.get("memory").is_some());
    }
}
