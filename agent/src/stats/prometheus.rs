//! Prometheus text format (exposition format 0.0.4) of a sample: `/metrics/cadvisor` with
//! cAdvisor's metric names and the kubelet's labels (`container`, `id`, `image`, `name`,
//! `namespace`, `pod`; pod-level cgroups have an empty `container`, the node's root cgroup
//! `id="/"`), and `/metrics/resource`, the small set metrics-server scrapes.

use super::registry::escape;
use super::sample::{CgroupSample, Interface, Sample};
use std::fmt::Write;

const NS: f64 = 1e9;

/// One cgroup with its label set already rendered (`a="b",c="d"`).
struct Entity<'a> {
    labels: String,
    stats: &'a CgroupSample,
    start: Option<i64>,
}

type Getter = fn(&CgroupSample) -> Option<f64>;

/// name, help, type, getter, extra labels.
const CGROUP_METRICS: &[(&str, &str, &str, Getter, &str)] = &[
    (
        "container_cpu_usage_seconds_total",
        "Cumulative cpu time consumed in seconds.",
        "counter",
        |s| s.cpu.as_ref().map(|c| c.usage_ns as f64 / NS),
        "cpu=\"total\",",
    ),
    (
        "container_cpu_user_seconds_total",
        "Cumulative user cpu time consumed in seconds.",
        "counter",
        |s| s.cpu.as_ref()?.user_ns.map(|v| v as f64 / NS),
        "",
    ),
    (
        "container_cpu_system_seconds_total",
        "Cumulative system cpu time consumed in seconds.",
        "counter",
        |s| s.cpu.as_ref()?.system_ns.map(|v| v as f64 / NS),
        "",
    ),
    (
        "container_cpu_cfs_periods_total",
        "Number of elapsed enforcement period intervals.",
        "counter",
        |s| s.cpu.as_ref()?.periods.filter(|p| *p > 0).map(|v| v as f64),
        "",
    ),
    (
        "container_cpu_cfs_throttled_periods_total",
        "Number of throttled period intervals.",
        "counter",
        |s| {
            s.cpu
                .as_ref()
                .filter(|c| c.periods.unwrap_or(0) > 0)?
                .throttled_periods
                .map(|v| v as f64)
        },
        "",
    ),
    (
        "container_cpu_cfs_throttled_seconds_total",
        "Total time duration the container has been throttled.",
        "counter",
        |s| {
            s.cpu
                .as_ref()
                .filter(|c| c.periods.unwrap_or(0) > 0)?
                .throttled_ns
                .map(|v| v as f64 / NS)
        },
        "",
    ),
    (
        "container_memory_usage_bytes",
        "Current memory usage in bytes, including all memory regardless of when it was accessed",
        "gauge",
        |s| s.memory.as_ref().map(|m| m.usage as f64),
        "",
    ),
    (
        "container_memory_working_set_bytes",
        "Current working set in bytes.",
        "gauge",
        |s| s.memory.as_ref().map(|m| m.working_set as f64),
        "",
    ),
    (
        "container_memory_rss",
        "Size of RSS in bytes.",
        "gauge",
        |s| s.memory.as_ref()?.rss.map(|v| v as f64),
        "",
    ),
    (
        "container_memory_cache",
        "Number of bytes of page cache memory.",
        "gauge",
        |s| s.memory.as_ref()?.cache.map(|v| v as f64),
        "",
    ),
    (
        "container_memory_mapped_file",
        "Size of memory mapped files in bytes.",
        "gauge",
        |s| s.memory.as_ref()?.mapped_file.map(|v| v as f64),
        "",
    ),
    (
        "container_memory_swap",
        "Container swap usage in bytes.",
        "gauge",
        |s| s.memory.as_ref()?.swap.map(|v| v as f64),
        "",
    ),
    (
        "container_memory_max_usage_bytes",
        "Maximum memory usage recorded in bytes",
        "gauge",
        |s| s.memory.as_ref()?.max_usage.map(|v| v as f64),
        "",
    ),
    (
        "container_memory_failcnt",
        "Number of memory usage hits limits",
        "counter",
        |s| s.memory.as_ref()?.failcnt.map(|v| v as f64),
        "",
    ),
    (
        "container_oom_events_total",
        "Count of out of memory events observed for the container",
        "counter",
        |s| s.memory.as_ref()?.oom_kills.map(|v| v as f64),
        "",
    ),
    (
        "container_spec_memory_limit_bytes",
        "Memory limit for the container.",
        "gauge",
        |s| s.memory.as_ref().map(|m| m.limit.unwrap_or(0) as f64),
        "",
    ),
    (
        "container_processes",
        "Number of processes running inside the container.",
        "gauge",
        |s| s.processes.map(|v| v as f64),
        "",
    ),
];

type NetGetter = fn(&Interface) -> u64;

const NET_METRICS: &[(&str, &str, NetGetter)] = &[
    (
        "container_network_receive_bytes_total",
        "Cumulative count of bytes received",
        |i| i.rx_bytes,
    ),
    (
        "container_network_receive_packets_total",
        "Cumulative count of packets received",
        |i| i.rx_packets,
    ),
    (
        "container_network_receive_packets_dropped_total",
        "Cumulative count of packets dropped while receiving",
        |i| i.rx_dropped,
    ),
    (
        "container_network_receive_errors_total",
        "Cumulative count of errors encountered while receiving",
        |i| i.rx_errors,
    ),
    (
        "container_network_transmit_bytes_total",
        "Cumulative count of bytes transmitted",
        |i| i.tx_bytes,
    ),
    (
        "container_network_transmit_packets_total",
        "Cumulative count of packets transmitted",
        |i| i.tx_packets,
    ),
    (
        "container_network_transmit_packets_dropped_total",
        "Cumulative count of packets dropped while transmitting",
        |i| i.tx_dropped,
    ),
    (
        "container_network_transmit_errors_total",
        "Cumulative count of errors encountered while transmitting",
        |i| i.tx_errors,
    ),
];

fn labels(
    container: &str,
    id: &str,
    image: &str,
    name: &str,
    namespace: &str,
    pod: &str,
) -> String {
    format!(
        "container=\"{}\",id=\"{}\",image=\"{}\",name=\"{}\",namespace=\"{}\",pod=\"{}\"",
        escape(container),
        escape(id),
        escape(image),
        escape(name),
        escape(namespace),
        escape(pod)
    )
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// `/metrics/cadvisor`.
pub fn cadvisor(s: &Sample) -> String {
    let mut out = String::with_capacity(64 * 1024);
    let node_stats = CgroupSample {
        cpu: Some(s.node.cpu.clone()),
        memory: None,
        processes: None,
    };
    let mut entities = vec![Entity {
        labels: labels("", "/", "", "", "", ""),
        stats: &node_stats,
        start: s.node.start_time.map(|t| t.timestamp()),
    }];
    for p in &s.pods {
        entities.push(Entity {
            labels: labels("", &p.cgroup, "", &p.cgroup, &p.namespace, &p.name),
            stats: &p.stats,
            start: p.start_time.map(|t| t.timestamp()),
        });
        for c in &p.containers {
            entities.push(Entity {
                labels: labels(&c.name, &c.cgroup, &c.image, &c.id, &p.namespace, &p.name),
                stats: &c.stats,
                start: c.start_time.map(|t| t.timestamp()),
            });
        }
    }
    for (name, help, kind, get, extra) in CGROUP_METRICS {
        header(&mut out, name, help, kind);
        for e in &entities {
            if let Some(v) = get(e.stats) {
                let _ = writeln!(out, "{name}{{{}{}}} {v}", extra, e.labels);
            }
        }
    }
    header(
        &mut out,
        "container_start_time_seconds",
        "Start time of the container since unix epoch in seconds.",
        "gauge",
    );
    for e in &entities {
        if let Some(t) = e.start {
            let _ = writeln!(out, "container_start_time_seconds{{{}}} {t}", e.labels);
        }
    }
    for (name, help, get) in NET_METRICS {
        header(&mut out, name, help, "counter");
        for p in &s.pods {
            let Some(ifs) = &p.network else { continue };
            let l = labels("", &p.cgroup, "", &p.cgroup, &p.namespace, &p.name);
            for i in ifs {
                let _ = writeln!(
                    out,
                    "{name}{{interface=\"{}\",{l}}} {}",
                    escape(&i.name),
                    get(i)
                );
            }
        }
    }
    header(
        &mut out,
        "container_fs_usage_bytes",
        "Number of bytes that are consumed by the container on this filesystem.",
        "gauge",
    );
    let mut inodes = String::new();
    for p in &s.pods {
        for c in &p.containers {
            let l = labels(&c.name, &c.cgroup, &c.image, &c.id, &p.namespace, &p.name);
            for (device, u) in [("rootfs", &c.rootfs), ("logs", &c.logs)] {
                if let Some(u) = u {
                    let _ = writeln!(
                        out,
                        "container_fs_usage_bytes{{device=\"{device}\",{l}}} {}",
                        u.used_bytes
                    );
                    let _ = writeln!(
                        inodes,
                        "container_fs_inodes_total{{device=\"{device}\",{l}}} {}",
                        u.inodes_used
                    );
                }
            }
        }
    }
    header(
        &mut out,
        "container_fs_inodes_total",
        "Number of inodes used by the container on this filesystem.",
        "gauge",
    );
    out.push_str(&inodes);
    header(
        &mut out,
        "machine_cpu_cores",
        "Number of logical CPU cores.",
        "gauge",
    );
    let _ = writeln!(out, "machine_cpu_cores {}", s.node.cores);
    header(
        &mut out,
        "machine_memory_bytes",
        "Amount of memory installed on the machine.",
        "gauge",
    );
    let _ = writeln!(out, "machine_memory_bytes {}", s.node.memory.total);
    out
}

/// `/metrics/resource` (kubelet's resource metrics endpoint, what metrics-server reads),
/// with millisecond timestamps as the kubelet writes them.
pub fn resource(s: &Sample) -> String {
    let mut out = String::with_capacity(8 * 1024);
    let ms = s.time.timestamp_millis();
    header(
        &mut out,
        "node_cpu_usage_seconds_total",
        "Cumulative cpu time consumed by the node in core-seconds",
        "counter",
    );
    let _ = writeln!(
        out,
        "node_cpu_usage_seconds_total {} {ms}",
        s.node.cpu.usage_ns as f64 / NS
    );
    header(
        &mut out,
        "node_memory_working_set_bytes",
        "Current working set of the node in bytes",
        "gauge",
    );
    let _ = writeln!(
        out,
        "node_memory_working_set_bytes {} {ms}",
        s.node.memory.working_set
    );
    let pod_l =
        |ns: &str, pod: &str| format!("namespace=\"{}\",pod=\"{}\"", escape(ns), escape(pod));
    type Get = fn(&CgroupSample) -> Option<f64>;
    let per: [(&str, &str, &str, Get); 2] = [
        (
            "cpu_usage_seconds_total",
            "Cumulative cpu time consumed by the {} in core-seconds",
            "counter",
            |s| s.cpu.as_ref().map(|c| c.usage_ns as f64 / NS),
        ),
        (
            "memory_working_set_bytes",
            "Current working set of the {} in bytes",
            "gauge",
            |s| s.memory.as_ref().map(|m| m.working_set as f64),
        ),
    ];
    for (suffix, help, kind, get) in per {
        let name = format!("container_{suffix}");
        header(&mut out, &name, &help.replace("{}", "container"), kind);
        for p in &s.pods {
            for c in &p.containers {
                if let Some(v) = get(&c.stats) {
                    let _ = writeln!(
                        out,
                        "{name}{{container=\"{}\",{}}} {v} {ms}",
                        escape(&c.name),
                        pod_l(&p.namespace, &p.name)
                    );
                }
            }
        }
        let name = format!("pod_{suffix}");
        header(&mut out, &name, &help.replace("{}", "pod"), kind);
        for p in &s.pods {
            if let Some(v) = get(&p.stats) {
                let _ = writeln!(out, "{name}{{{}}} {v} {ms}", pod_l(&p.namespace, &p.name));
            }
        }
    }
    header(
        &mut out,
        "container_start_time_seconds",
        "Start time of the container since unix epoch in seconds",
        "gauge",
    );
    for p in &s.pods {
        for c in &p.containers {
            if let Some(t) = c.start_time {
                let _ = writeln!(
                    out,
                    "container_start_time_seconds{{container=\"{}\",{}}} {} {ms}",
                    escape(&c.name),
                    pod_l(&p.namespace, &p.name),
                    t.timestamp()
                );
            }
        }
    }
    header(
        &mut out,
        "scrape_error",
        "1 if there was an error while getting container metrics, 0 otherwise",
        "gauge",
    );
    let _ = writeln!(out, "scrape_error 0");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::sample::{ContainerSample, Cpu, Memory, PodSample};

    fn sample() -> Sample {
        let stats = CgroupSample {
            cpu: Some(Cpu {
                usage_ns: 1_500_000_000,
                ..Default::default()
            }),
            memory: Some(Memory {
                usage: 300,
                working_set: 200,
                ..Default::default()
            }),
            processes: Some(1),
        };
        Sample {
            pods: vec![PodSample {
                namespace: "ns\"1".into(),
                name: "web".into(),
                cgroup: "/keel/n1/podu1".into(),
                stats: stats.clone(),
                network: Some(vec![Interface {
                    name: "eth0".into(),
                    rx_bytes: 42,
                    ..Default::default()
                }]),
                containers: vec![ContainerSample {
                    name: "app".into(),
                    id: "abc".into(),
                    image: "busybox".into(),
                    cgroup: "/keel/n1/podu1/abc".into(),
                    stats,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn parse(text: &str) -> prometheus_parse::Scrape {
        prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
            .expect("valid Prometheus text")
    }

    #[test]
    fn cadvisor_names_labels_and_escaping() {
        let s = parse(&cadvisor(&sample()));
        let find = |m: &str, container: &str| {
            s.samples
                .iter()
                .find(|x| x.metric == m && x.labels.get("container") == Some(container))
                .unwrap_or_else(|| panic!("{m} {container}"))
        };
        let cpu = find("container_cpu_usage_seconds_total", "app");
        assert!(matches!(cpu.value, prometheus_parse::Value::Counter(v) if v == 1.5));
        assert_eq!(cpu.labels.get("cpu"), Some("total"));
        // The quote is escaped (prometheus-parse keeps label escapes as written).
        assert_eq!(cpu.labels.get("namespace"), Some("ns\\\"1"));
        assert_eq!(cpu.labels.get("image"), Some("busybox"));
        assert_eq!(cpu.labels.get("name"), Some("abc"));
        let pod = find("container_memory_working_set_bytes", "");
        assert_eq!(pod.labels.get("id"), Some("/keel/n1/podu1"));
        let rx = find("container_network_receive_bytes_total", "");
        assert_eq!(rx.labels.get("interface"), Some("eth0"));
        // The node's root cgroup.
        assert!(s.samples.iter().any(|x| x.labels.get("id") == Some("/")));
    }

    #[test]
    fn resource_metrics_for_metrics_server() {
        let s = parse(&resource(&sample()));
        let names: std::collections::BTreeSet<&str> =
            s.samples.iter().map(|x| x.metric.as_str()).collect();
        for want in [
            "node_cpu_usage_seconds_total",
            "node_memory_working_set_bytes",
            "container_cpu_usage_seconds_total",
            "container_memory_working_set_bytes",
            "pod_cpu_usage_seconds_total",
            "pod_memory_working_set_bytes",
            "scrape_error",
        ] {
            assert!(names.contains(want), "{want} missing: {names:?}");
        }
    }
}
