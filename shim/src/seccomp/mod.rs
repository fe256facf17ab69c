//! OCI `linux.seccomp` profiles compiled to classic BPF with `seccompiler`.
//!
//! seccompiler builds filters with ONE match action and ONE mismatch action, while an OCI
//! profile gives every rule its own action. The kernel runs every installed filter and keeps
//! the most restrictive verdict (seccomp(2), "return values" precedence), so a profile becomes
//! a small stack of filters:
//! * filter 0: `defaultAction` for every syscall not named in the profile (named ones pass,
//!   `SCMP_ACT_ALLOW` rules with their argument conditions);
//! * one filter per other action: that action for its syscalls, allow for the rest.
//!
//! Unknown syscall names are skipped, as runc does (profiles list syscalls of newer kernels
//! and other architectures). `SCMP_ACT_NOTIFY` is refused with a clear error.

mod syscalls;

use crate::error::{Error, Result};
use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction, LinuxSeccompOperator};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};
use std::collections::BTreeMap;

/// Number of the syscall called `name` on x86_64.
pub fn syscall_number(name: &str) -> Option<i64> {
    syscalls::SYSCALLS
        .binary_search_by(|(n, _)| n.cmp(&name))
        .ok()
        .map(|i| syscalls::SYSCALLS[i].1)
}

fn action(a: LinuxSeccompAction, errno: Option<u32>) -> Result<SeccompAction> {
    Ok(match a {
        LinuxSeccompAction::ScmpActAllow => SeccompAction::Allow,
        LinuxSeccompAction::ScmpActErrno => {
            SeccompAction::Errno(errno.unwrap_or(libc::EPERM as u32))
        }
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            SeccompAction::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => SeccompAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => SeccompAction::Trap,
        LinuxSeccompAction::ScmpActTrace => SeccompAction::Trace(errno.unwrap_or(0)),
        LinuxSeccompAction::ScmpActLog => SeccompAction::Log,
        LinuxSeccompAction::ScmpActNotify => {
            return Err(Error::Seccomp(
                "SCMP_ACT_NOTIFY is not supported by keel-shim; use SCMP_ACT_ERRNO".into(),
            ));
        }
    })
}

/// Sortable key for grouping rules by action.
fn key(a: &SeccompAction) -> u64 {
    match a {
        SeccompAction::Allow => 0,
        SeccompAction::Errno(e) => (1 << 32) | u64::from(*e),
        SeccompAction::KillThread => 2 << 32,
        SeccompAction::KillProcess => 3 << 32,
        SeccompAction::Log => 4 << 32,
        SeccompAction::Trace(t) => (5 << 32) | u64::from(*t),
        SeccompAction::Trap => 6 << 32,
    }
}

/// A syscall's rule chain; `None` = unconditional.
type Chains = BTreeMap<i64, Option<Vec<SeccompRule>>>;

fn add(chains: &mut Chains, nr: i64, rule: Option<SeccompRule>) {
    match (chains.get_mut(&nr), rule) {
        (Some(None), _) => {}
        (Some(slot), None) => *slot = None,
        (Some(Some(v)), Some(r)) => v.push(r),
        (None, r) => {
            chains.insert(nr, r.map(|r| vec![r]));
        }
    }
}

fn build(chains: Chains, mismatch: SeccompAction, on_match: SeccompAction) -> Result<BpfProgram> {
    let rules = chains
        .into_iter()
        .map(|(nr, c)| (nr, c.unwrap_or_default()))
        .collect();
    let filter = SeccompFilter::new(rules, mismatch, on_match, TargetArch::x86_64)
        .map_err(|e| Error::Seccomp(e.to_string()))?;
    filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| Error::Seccomp(e.to_string()))
}

/// Compile a profile into the filters to install, in order.
pub fn compile(profile: &LinuxSeccomp) -> Result<Vec<BpfProgram>> {
    if !cfg!(target_arch = "x86_64") {
        return Err(Error::Seccomp(
            "keel-shim compiles seccomp profiles for x86_64 only".into(),
        ));
    }
    if profile.listener_path().is_some() {
        return Err(Error::Seccomp(
            "listenerPath (seccomp user notification) is not supported".into(),
        ));
    }
    let default = action(profile.default_action(), profile.default_errno_ret())?;
    let mut groups: BTreeMap<u64, (SeccompAction, Chains)> = BTreeMap::new();
    let mut named = Chains::new();
    for (i, sc) in profile.syscalls().iter().flatten().enumerate() {
        let act = action(sc.action(), sc.errno_ret().or(profile.default_errno_ret()))?;
        let mut conds = Vec::new();
        for a in sc.args().iter().flatten() {
            let idx = u8::try_from(a.index()).map_err(|_| {
                Error::Seccomp(format!("syscalls[{i}].args: index {} > 5", a.index()))
            })?;
            let op = match a.op() {
                LinuxSeccompOperator::ScmpCmpNe => SeccompCmpOp::Ne,
                LinuxSeccompOperator::ScmpCmpLt => SeccompCmpOp::Lt,
                LinuxSeccompOperator::ScmpCmpLe => SeccompCmpOp::Le,
                LinuxSeccompOperator::ScmpCmpEq => SeccompCmpOp::Eq,
                LinuxSeccompOperator::ScmpCmpGe => SeccompCmpOp::Ge,
                LinuxSeccompOperator::ScmpCmpGt => SeccompCmpOp::Gt,
                LinuxSeccompOperator::ScmpCmpMaskedEq => SeccompCmpOp::MaskedEq(a.value()),
            };
            let value = match a.op() {
                LinuxSeccompOperator::ScmpCmpMaskedEq => a.value_two().unwrap_or(0),
                _ => a.value(),
            };
            conds.push(
                SeccompCondition::new(idx, SeccompCmpArgLen::Qword, op, value)
                    .map_err(|e| Error::Seccomp(format!("syscalls[{i}].args: {e}")))?,
            );
        }
        let rule = if conds.is_empty() {
            None
        } else {
            Some(
                SeccompRule::new(conds)
                    .map_err(|e| Error::Seccomp(format!("syscalls[{i}]: {e}")))?,
            )
        };
        if sc.names().is_empty() {
            return Err(Error::Seccomp(format!("syscalls[{i}].names is empty")));
        }
        for name in sc.names() {
            let Some(nr) = syscall_number(name) else {
                continue;
            };
            if act == default {
                continue;
            }
            if act == SeccompAction::Allow {
                add(&mut named, nr, rule.clone());
            } else {
                add(&mut named, nr, None);
                let g = groups
                    .entry(key(&act))
                    .or_insert_with(|| (act.clone(), Chains::new()));
                add(&mut g.1, nr, rule.clone());
            }
        }
    }
    let mut out = Vec::new();
    if default != SeccompAction::Allow {
        out.push(build(named, default, SeccompAction::Allow)?);
    }
    for (_, (act, chains)) in groups {
        if act != SeccompAction::Allow && !chains.is_empty() {
            out.push(build(chains, SeccompAction::Allow, act)?);
        }
    }
    Ok(out)
}

/// Install compiled filters in the calling thread (needs no_new_privs or CAP_SYS_ADMIN).
pub fn install(filters: &[BpfProgram]) -> Result<()> {
    for f in filters {
        seccompiler::apply_filter(f).map_err(|e| Error::Seccomp(format!("install filter: {e}")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syscall_table_is_sorted_and_complete() {
        assert!(syscalls::SYSCALLS.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(syscall_number("read"), Some(0));
        assert_eq!(syscall_number("uname"), Some(63));
        assert_eq!(syscall_number("no_such_call"), None);
    }

    #[test]
    fn profile_compiles_to_stacked_filters() {
        let p: LinuxSeccomp = serde_json::from_str(
            r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[
                {"names":["read","write","exit_group","not_a_syscall"],"action":"SCMP_ACT_ALLOW"},
                {"names":["personality"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":8,"op":"SCMP_CMP_EQ"}]},
                {"names":["uname"],"action":"SCMP_ACT_KILL_PROCESS"}]}"#,
        )
        .expect("profile");
        let f = compile(&p).expect("compile");
        assert_eq!(f.len(), 2);
    }

    #[test]
    fn notify_is_refused() {
        let p: LinuxSeccomp = serde_json::from_str(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["uname"],"action":"SCMP_ACT_NOTIFY"}]}"#,
        )
        .expect("profile");
        assert!(compile(&p).is_err());
    }
}
