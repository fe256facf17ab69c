//! `ipMasq`: one nat chain per attachment, `CNI-<hash(network, containerID)>`, holding
//! `-d <pod subnet> -j ACCEPT` and `! -d <multicast> -j MASQUERADE`, jumped to from
//! POSTROUTING for the pod's source address (the reference plugin's layout). Rules go in with
//! one `iptables-restore --noflush` batch per family, which works with both iptables-nft and
//! iptables-legacy. Teardown is keyed on the chain name, not on addresses read from the pod,
//! so it also works after the pod namespace is gone or the rules were partly flushed.

use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use super::chain_name;
use crate::spec::error::FIREWALL_FAILURE;
use crate::spec::{Attachment, CniError, IpNet};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

impl Family {
    fn of(ip: IpAddr) -> Family {
        if ip.is_ipv4() { Family::V4 } else { Family::V6 }
    }
    fn restore(self) -> &'static str {
        if self == Family::V4 {
            "iptables-restore"
        } else {
            "ip6tables-restore"
        }
    }
    fn save(self) -> &'static str {
        if self == Family::V4 {
            "iptables-save"
        } else {
            "ip6tables-save"
        }
    }
    fn multicast(self) -> &'static str {
        if self == Family::V4 {
            "224.0.0.0/4"
        } else {
            "ff00::/8"
        }
    }
    fn host_prefix(self) -> u8 {
        if self == Family::V4 { 32 } else { 128 }
    }
}

/// `PATH` (as the runtime passed it) plus the usual sbin directories.
fn find_tool(name: &str) -> Result<PathBuf, CniError> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            CniError::new(
                FIREWALL_FAILURE,
                format!("ipMasq needs {name}, which is not in PATH"),
            )
            .with_details("install iptables (apt-get install iptables) or set ipMasq to false")
        })
}

fn run(tool: &str, args: &[&str], input: Option<&str>) -> Result<(bool, String, String), CniError> {
    let bin = find_tool(tool)?;
    let fail =
        |e: std::io::Error| CniError::new(FIREWALL_FAILURE, format!("run {}: {e}", bin.display()));
    let mut child = Command::new(&bin)
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(fail)?;
    if let (Some(text), Some(mut si)) = (input, child.stdin.take()) {
        si.write_all(text.as_bytes()).map_err(fail)?;
    }
    let out = child.wait_with_output().map_err(fail)?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).trim().to_string(),
    ))
}

fn restore(fam: Family, batch: &str) -> Result<(bool, String), CniError> {
    let (ok, _, err) = run(fam.restore(), &["-w", "5", "--noflush"], Some(batch))?;
    Ok((ok, err))
}

fn comment(network: &str, id: &str) -> String {
    format!("\"name: \\\"{network}\\\" id: \\\"{id}\\\"\"")
}

/// Installs the chain and the POSTROUTING jump for each pod address.
pub fn setup(network: &str, id: &str, addrs: &[IpNet]) -> Result<(), CniError> {
    let chain = chain_name(network, id);
    let c = comment(network, id);
    for fam in [Family::V4, Family::V6] {
        let mine: Vec<&IpNet> = addrs.iter().filter(|a| Family::of(a.addr) == fam).collect();
        if mine.is_empty() {
            continue;
        }
        let mut b = format!("*nat\n:{chain} - [0:0]\n");
        for a in &mine {
            b += &format!(
                "-A {chain} -d {} -m comment --comment {c} -j ACCEPT\n",
                a.truncated()
            );
        }
        b += &format!(
            "-A {chain} ! -d {} -m comment --comment {c} -j MASQUERADE\n",
            fam.multicast()
        );
        for a in &mine {
            b += &format!(
                "-A POSTROUTING -s {}/{} -m comment --comment {c} -j {chain}\n",
                a.addr,
                fam.host_prefix()
            );
        }
        b += "COMMIT\n";
        let (ok, err) = restore(fam, &b)?;
        if !ok {
            return Err(CniError::new(
                FIREWALL_FAILURE,
                format!("install masquerade chain {chain}"),
            )
            .with_details(err));
        }
    }
    Ok(())
}

/// The `-D`/`-F`/`-X` lines that remove `chain` and every rule jumping to it, from the
/// current `*-save -t nat` text; empty when nothing is left.
fn teardown_batch(save: &str, chain: &str) -> String {
    let jump = format!(" -j {chain}");
    let mut lines: Vec<String> = save
        .lines()
        .filter(|l| {
            l.starts_with("-A ") && l.ends_with(&jump) && !l.starts_with(&format!("-A {chain} "))
        })
        .map(|l| format!("-D {}", &l[3..]))
        .collect();
    if save.lines().any(|l| l.starts_with(&format!(":{chain} "))) {
        lines.push(format!("-F {chain}"));
        lines.push(format!("-X {chain}"));
    }
    if lines.is_empty() {
        String::new()
    } else {
        format!("*nat\n{}\nCOMMIT\n", lines.join("\n"))
    }
}

/// Removes the attachment's chain and jumps. Fast path: one restore built from the known
/// addresses; when that does not apply (rules already gone, addresses unknown), read the
/// table and remove exactly what is there. Nothing left is success.
pub fn teardown(network: &str, id: &str, known: &[IpNet]) -> Result<(), CniError> {
    let chain = chain_name(network, id);
    let c = comment(network, id);
    // Known addresses name the families to clean; without them, look at both.
    let fams: Vec<Family> = [Family::V4, Family::V6]
        .into_iter()
        .filter(|f| known.is_empty() || known.iter().any(|a| Family::of(a.addr) == *f))
        .collect();
    for fam in fams {
        let mine: Vec<&IpNet> = known.iter().filter(|a| Family::of(a.addr) == fam).collect();
        if !mine.is_empty() {
            let mut b = String::from("*nat\n");
            for a in &mine {
                b += &format!(
                    "-D POSTROUTING -s {}/{} -m comment --comment {c} -j {chain}\n",
                    a.addr,
                    fam.host_prefix()
                );
            }
            b += &format!("-F {chain}\n-X {chain}\nCOMMIT\n");
            if restore(fam, &b)?.0 {
                continue;
            }
        }
        let (ok, save, err) = run(fam.save(), &["-t", "nat"], None)?;
        if !ok {
            return Err(CniError::new(
                FIREWALL_FAILURE,
                format!("read the nat table ({})", fam.save()),
            )
            .with_details(err));
        }
        let batch = teardown_batch(&save, &chain);
        if batch.is_empty() {
            continue;
        }
        let (ok, err) = restore(fam, &batch)?;
        if !ok {
            return Err(CniError::new(
                FIREWALL_FAILURE,
                format!("remove masquerade chain {chain}"),
            )
            .with_details(err));
        }
    }
    Ok(())
}

/// GC: removes the chains of this network's attachments that are not in `valid`. Chains are
/// found by their rules' comment, which carries the network name and container ID.
pub fn gc(network: &str, valid: &[Attachment]) -> Result<(), CniError> {
    let prefix = format!("--comment \"name: \\\"{network}\\\" id: \\\"");
    for fam in [Family::V4, Family::V6] {
        let (ok, save, err) = run(fam.save(), &["-t", "nat"], None)?;
        if !ok {
            return Err(CniError::new(
                FIREWALL_FAILURE,
                format!("read the nat table ({})", fam.save()),
            )
            .with_details(err));
        }
        let mut ids: Vec<String> = save
            .lines()
            .filter_map(|l| l.split_once(&prefix))
            .filter_map(|(_, rest)| rest.split_once("\\\"").map(|(id, _)| id.to_string()))
            .collect();
        ids.sort();
        ids.dedup();
        let mut batch = String::new();
        for id in ids
            .iter()
            .filter(|id| !valid.iter().any(|a| &a.container_id == *id))
        {
            let b = teardown_batch(&save, &chain_name(network, id));
            batch += b.trim_start_matches("*nat\n").trim_end_matches("COMMIT\n");
        }
        if !batch.is_empty() {
            let (ok, err) = restore(fam, &format!("*nat\n{batch}COMMIT\n"))?;
            if !ok {
                return Err(
                    CniError::new(FIREWALL_FAILURE, "remove stale masquerade chains")
                        .with_details(err),
                );
            }
        }
    }
    Ok(())
}

/// Whether the chain exists and POSTROUTING jumps to it (CHECK).
pub fn present(network: &str, id: &str, v4: bool) -> Result<bool, CniError> {
    let fam = if v4 { Family::V4 } else { Family::V6 };
    let chain = chain_name(network, id);
    let (_, save, _) = run(fam.save(), &["-t", "nat"], None)?;
    Ok(save.lines().any(|l| l.starts_with(&format!(":{chain} ")))
        && save
            .lines()
            .any(|l| l.starts_with("-A POSTROUTING ") && l.ends_with(&format!(" -j {chain}"))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_from_save() {
        let save = "*nat\n:POSTROUTING ACCEPT [0:0]\n:CNI-abc - [0:0]\n\
            -A POSTROUTING -s 10.0.0.2/32 -m comment --comment \"x\" -j CNI-abc\n\
            -A POSTROUTING -s 10.0.0.3/32 -j CNI-other\n\
            -A CNI-abc -d 10.0.0.0/16 -j ACCEPT\nCOMMIT\n";
        let b = teardown_batch(save, "CNI-abc");
        assert_eq!(
            b,
            "*nat\n-D POSTROUTING -s 10.0.0.2/32 -m comment --comment \"x\" -j CNI-abc\n-F CNI-abc\n-X CNI-abc\nCOMMIT\n"
        );
        assert!(teardown_batch("*nat\nCOMMIT\n", "CNI-abc").is_empty());
    }
}
