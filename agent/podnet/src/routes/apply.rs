//! Makes the routes marked `proto 75` in the main table equal a desired list, with
//! `ip route replace` / `ip route del`. Routes without the mark are never touched, so the
//! operator's and the kernel's routes (and the bridge's connected route to our own podCIDR)
//! stay as they are.

use std::net::IpAddr;

use keel_cni::spec::IpNet;
use serde_json::Value;

use super::{Error, PROTO, Route, run_program};

/// Owned routes now in the kernel: (destination, gateway).
pub async fn owned() -> Result<Vec<(IpNet, Option<IpAddr>)>, Error> {
    let proto = PROTO.to_string();
    let mut out = Vec::new();
    for fam in ["-4", "-6"] {
        let args = ["-j", fam, "route", "show", "proto", proto.as_str()];
        let text = run_program("ip", "iproute2", &args, None).await?;
        let bad = |reason: String| Error::Output {
            command: format!("ip {}", args.join(" ")),
            reason,
        };
        let v: Value = serde_json::from_str(text.trim()).map_err(|e| bad(e.to_string()))?;
        for r in v.as_array().into_iter().flatten() {
            let dst = r["dst"].as_str().unwrap_or_default();
            // A host route prints without a prefix length.
            let dst = if dst.contains('/') {
                dst.to_string()
            } else if fam == "-4" {
                format!("{dst}/32")
            } else {
                format!("{dst}/128")
            };
            let net: IpNet = dst
                .parse()
                .map_err(|_| bad(format!("route destination {dst:?}")))?;
            let gw = r["gateway"].as_str().and_then(|g| g.parse().ok());
            out.push((net, gw));
        }
    }
    Ok(out)
}

/// Installs every route of `want` that is missing or different, and deletes owned routes not
/// in `want`. Keeps going past a failed change (e.g. a gateway not on any local subnet) and
/// reports how many failed.
pub async fn apply(want: &[Route]) -> Result<(), Error> {
    let have = owned().await?;
    let proto = PROTO.to_string();
    let mut changes: Vec<Vec<String>> = Vec::new();
    for r in want {
        if have.iter().any(|(d, g)| *d == r.dst && *g == Some(r.via)) {
            continue;
        }
        changes.push(
            [
                "route",
                "replace",
                &r.dst.to_string(),
                "via",
                &r.via.to_string(),
                "proto",
                &proto,
            ]
            .map(str::to_string)
            .to_vec(),
        );
    }
    for (dst, _) in &have {
        if !want.iter().any(|r| r.dst == *dst) {
            changes.push(
                ["route", "del", &dst.to_string(), "proto", &proto]
                    .map(str::to_string)
                    .to_vec(),
            );
        }
    }
    let total = changes.len();
    let mut failed = 0;
    let mut first = None;
    for c in changes {
        let args: Vec<&str> = c.iter().map(String::as_str).collect();
        match run_program("ip", "iproute2", &args, None).await {
            Ok(_) => tracing::info!(change = %args.join(" "), "pod route"),
            Err(e) => {
                failed += 1;
                tracing::warn!(error = %e, "pod route change failed");
                first.get_or_insert(e);
            }
        }
    }
    match first {
        None => Ok(()),
        Some(e) => Err(Error::Routes {
            failed,
            total,
            first: Box::new(e),
        }),
    }
}
