//! Benchmark: CPU time of one stats housekeeping pass over N containers (default 100, in N/2
//! pods of two containers, each pod with one sleeping busybox process so its network counters
//! are read too). Creates real cgroups under `/keel-stats-bench-<pid>` and removes them.
//!
//! `cargo run --release -p keel-agent --example stats_bench -- [containers] [passes]` (root).

use keel_agent::stats::cgroup::Hierarchy;
use keel_agent::stats::collect::{Collector, Sources};
use nix::sys::resource::{UsageWho, getrusage};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// (user, system) CPU time of this thread.
fn times() -> (Duration, Duration) {
    getrusage(UsageWho::RUSAGE_THREAD)
        .map(|r| {
            let us = |t: nix::sys::time::TimeVal| {
                Duration::from_micros((t.tv_sec() * 1_000_000 + t.tv_usec()) as u64)
            };
            (us(r.user_time()), us(r.system_time()))
        })
        .unwrap_or_default()
}

fn cpu_time() -> Duration {
    let (u, s) = times();
    u + s
}

struct Cleanup {
    dirs: Vec<std::path::PathBuf>,
    children: Vec<Child>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for d in self.dirs.iter().rev() {
            for _ in 0..100 {
                if !d.exists() || std::fs::remove_dir(d).is_ok() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let containers: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(100);
    let passes: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(200);
    let cgroot = Path::new("/sys/fs/cgroup");
    let h = Hierarchy::detect(cgroot);
    let controllers: &[&str] = match h {
        Hierarchy::V2 { .. } => &[""],
        Hierarchy::V1 { .. } => &["cpu", "cpuacct", "memory", "pids"],
    };
    let top = format!("/keel-stats-bench-{}", std::process::id());
    let root = tempfile::tempdir()?;
    let mut guard = Cleanup {
        dirs: Vec::new(),
        children: Vec::new(),
    };
    let mk = |cg: &str, guard: &mut Cleanup| -> anyhow::Result<()> {
        for c in controllers {
            let d = h.dir(c, cg);
            std::fs::create_dir_all(&d)?;
            if matches!(h, Hierarchy::V2 { .. })
                && let Some(p) = d.parent()
            {
                let _ = std::fs::write(p.join("cgroup.subtree_control"), "+cpu +memory +pids");
            }
            guard.dirs.push(d);
        }
        Ok(())
    };
    mk(&top, &mut guard)?;
    let pods = containers.div_ceil(2);
    for p in 0..pods {
        let uid = format!("00000000-0000-4000-8000-{p:012}");
        let pod_cg = format!("{top}/pod{uid}");
        mk(&pod_cg, &mut guard)?;
        let mut cs = Vec::new();
        for c in 0..2.min(containers - 2 * p) {
            let cg = format!("{pod_cg}/c{c}");
            mk(&cg, &mut guard)?;
            if c == 0 {
                let procs: Vec<String> = controllers
                    .iter()
                    .map(|k| h.dir(k, &cg).join("cgroup.procs").display().to_string())
                    .collect();
                let script = format!(
                    "for f in {}; do echo $$ > $f; done; exec busybox sleep 100000",
                    procs.join(" ")
                );
                guard.children.push(
                    Command::new("busybox")
                        .args(["sh", "-c", &script])
                        .stdin(Stdio::null())
                        .spawn()?,
                );
            }
            cs.push(serde_json::json!({
                "name": format!("c{c}"), "id": format!("{:032x}{:032x}", p, c), "restartCount": 0,
                "image": "busybox", "logPath": root.path().join(format!("pods/{uid}/logs/c{c}/0.log")),
                "cgroup": cg, "stateDir": "/nonexistent", "createdAt": "2026-11-27T08:00:00Z",
            }));
        }
        let dir = root.path().join("pods").join(&uid);
        std::fs::create_dir_all(&dir)?;
        let rec = serde_json::json!({"namespace": "bench", "name": format!("pod-{p}"), "uid": uid, "cgroup": pod_cg, "containers": cs});
        std::fs::write(dir.join("record.json"), rec.to_string())?;
    }
    // Let every process reach its cgroup before measuring.
    std::thread::sleep(Duration::from_millis(500));
    let mut sources = Sources::for_root(root.path());
    sources.cgroup_root = cgroot.to_path_buf();
    let mut collector = Collector::new(sources, "bench", Duration::from_secs(3600));
    let first = collector.collect(); // includes the du walks
    let with_net = first.pods.iter().filter(|p| p.network.is_some()).count();
    let measured: usize = first.pods.iter().map(|p| p.containers.len()).sum();
    let (u0, s0) = times();
    let mut cpu = Vec::with_capacity(passes);
    let mut wall = Vec::with_capacity(passes);
    for _ in 0..passes {
        let (c0, w0) = (cpu_time(), Instant::now());
        let s = collector.collect();
        cpu.push(cpu_time() - c0);
        wall.push(w0.elapsed());
        std::hint::black_box(s);
    }
    let (u1, s1) = times();
    cpu.sort();
    wall.sort();
    let mean = |v: &[Duration]| v.iter().sum::<Duration>() / v.len().max(1) as u32;
    println!(
        "cgroup {:?}: {} pods, {measured} containers, {with_net} pods with network counters, {passes} passes",
        matches!(h, Hierarchy::V2 { .. })
            .then_some("v2")
            .unwrap_or("v1"),
        first.pods.len()
    );
    println!(
        "cpu per pass: mean {:.3} ms, median {:.3} ms, p95 {:.3} ms",
        mean(&cpu).as_secs_f64() * 1e3,
        cpu[passes / 2].as_secs_f64() * 1e3,
        cpu[passes * 95 / 100].as_secs_f64() * 1e3
    );
    println!(
        "of which user {:.3} ms, system {:.3} ms per pass (mean)",
        (u1 - u0).as_secs_f64() * 1e3 / passes as f64,
        (s1 - s0).as_secs_f64() * 1e3 / passes as f64
    );
    println!(
        "wall per pass: mean {:.3} ms, median {:.3} ms",
        mean(&wall).as_secs_f64() * 1e3,
        wall[passes / 2].as_secs_f64() * 1e3
    );
    // Resident memory of this process with the collector's state for all those pods (the
    // agent's stats share of RSS, plus the benchmark's own small footprint).
    let rss = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:").map(|v| v.trim().to_string()))
        })
        .unwrap_or_default();
    println!("process RSS after the passes: {rss}");
    drop(guard);
    Ok(())
}
