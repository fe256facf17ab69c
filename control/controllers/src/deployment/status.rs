//! Deployment status and conditions (pkg/controller/deployment/sync.go and progress.go): the
//! replica counts summed over the ReplicaSets, `Available` (MinimumReplicasAvailable /
//! MinimumReplicasUnavailable) and `Progressing` (NewReplicaSetCreated, FoundNewReplicaSet,
//! ReplicaSetUpdated, NewReplicaSetAvailable, ProgressDeadlineExceeded, DeploymentPaused,
//! DeploymentResumed), which is what `kubectl rollout status` reads.

use k8s_openapi::api::apps::v1::{DeploymentCondition, DeploymentStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

/// What the status is computed from.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    pub generation: Option<i64>,
    pub replicas: i32,
    pub max_unavailable: i32,
    /// Per ReplicaSet (status.replicas, readyReplicas, availableReplicas); the new one first.
    pub new_rs: Option<(String, i32, i32, i32)>,
    pub old_rs: Vec<(i32, i32, i32)>,
    pub collision_count: Option<i32>,
    pub paused: bool,
    pub progress_deadline_seconds: Option<i32>,
    /// A Progressing reason this sync caused (NewReplicaSetCreated, FoundNewReplicaSet).
    pub event: Option<(&'static str, String)>,
}

fn set_condition(
    conds: &mut Vec<DeploymentCondition>,
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    now: Timestamp,
) {
    if let Some(c) = conds.iter_mut().find(|c| c.type_ == type_) {
        if c.status != status {
            c.last_transition_time = Some(Time(now));
        }
        if c.status != status
            || c.reason.as_deref() != Some(reason)
            || c.message.as_deref() != Some(message.as_str())
        {
            c.last_update_time = Some(Time(now));
        }
        c.status = status.to_string();
        c.reason = Some(reason.to_string());
        c.message = Some(message);
        return;
    }
    conds.push(DeploymentCondition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: Some(reason.to_string()),
        message: Some(message),
        last_transition_time: Some(Time(now)),
        last_update_time: Some(Time(now)),
    });
}

/// The new status from the old one, and when (seconds) to look again for a progress timeout.
pub fn compute(
    prev: &DeploymentStatus,
    i: &Inputs,
    now: Timestamp,
) -> (DeploymentStatus, Option<i64>) {
    let (new_name, new_replicas, new_ready, new_avail) = i.new_rs.clone().unwrap_or_default();
    let sum = |f: fn(&(i32, i32, i32)) -> i32| i.old_rs.iter().map(f).sum::<i32>();
    let replicas = new_replicas + sum(|r| r.0);
    let ready = new_ready + sum(|r| r.1);
    let available = new_avail + sum(|r| r.2);
    let mut st = DeploymentStatus {
        observed_generation: i.generation,
        replicas: Some(replicas),
        updated_replicas: Some(new_replicas),
        ready_replicas: Some(ready),
        available_replicas: Some(available),
        unavailable_replicas: Some((i.replicas - available).max(0)),
        collision_count: i.collision_count,
        conditions: None,
        terminating_replicas: None,
    };
    let mut conds = prev.conditions.clone().unwrap_or_default();
    if available >= i.replicas - i.max_unavailable {
        set_condition(
            &mut conds,
            "Available",
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.".into(),
            now,
        );
    } else {
        set_condition(
            &mut conds,
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.".into(),
            now,
        );
    }
    let mut recheck = None;
    let progressing = conds.iter().find(|c| c.type_ == "Progressing").cloned();
    if i.paused {
        set_condition(
            &mut conds,
            "Progressing",
            "Unknown",
            "DeploymentPaused",
            "Deployment is paused".into(),
            now,
        );
    } else if progressing.as_ref().and_then(|c| c.reason.as_deref()) == Some("DeploymentPaused") {
        set_condition(
            &mut conds,
            "Progressing",
            "Unknown",
            "DeploymentResumed",
            "Deployment is resumed".into(),
            now,
        );
    } else {
        let complete = new_replicas == i.replicas
            && replicas == i.replicas
            && available == i.replicas
            && i.new_rs.is_some();
        let prev_old_replicas = prev.replicas.unwrap_or(0) - prev.updated_replicas.unwrap_or(0);
        let moved = new_replicas > prev.updated_replicas.unwrap_or(0)
            || replicas - new_replicas < prev_old_replicas
            || ready > prev.ready_replicas.unwrap_or(0)
            || available > prev.available_replicas.unwrap_or(0);
        if let Some((reason, msg)) = &i.event {
            set_condition(&mut conds, "Progressing", "True", reason, msg.clone(), now);
        } else if complete {
            set_condition(
                &mut conds,
                "Progressing",
                "True",
                "NewReplicaSetAvailable",
                format!("ReplicaSet \"{new_name}\" has successfully progressed."),
                now,
            );
        } else if moved || progressing.is_none() {
            set_condition(
                &mut conds,
                "Progressing",
                "True",
                "ReplicaSetUpdated",
                format!("ReplicaSet \"{new_name}\" is progressing."),
                now,
            );
        } else if let (Some(deadline), Some(p)) =
            (i.progress_deadline_seconds, progressing.as_ref())
        {
            let since = p
                .last_update_time
                .as_ref()
                .map(|t| t.0.as_second())
                .unwrap_or(now.as_second());
            let due = since + i64::from(deadline);
            let reason = p.reason.as_deref().unwrap_or_default();
            if reason != "ProgressDeadlineExceeded" && reason != "NewReplicaSetAvailable" {
                if now.as_second() >= due {
                    set_condition(
                        &mut conds,
                        "Progressing",
                        "False",
                        "ProgressDeadlineExceeded",
                        format!("ReplicaSet \"{new_name}\" has timed out progressing."),
                        now,
                    );
                } else {
                    recheck = Some(due - now.as_second());
                }
            }
        }
        if !complete
            && recheck.is_none()
            && let (Some(deadline), Some(c)) = (
                i.progress_deadline_seconds,
                conds.iter().find(|c| c.type_ == "Progressing"),
            )
            && c.status == "True"
        {
            let since = c
                .last_update_time
                .as_ref()
                .map(|t| t.0.as_second())
                .unwrap_or(now.as_second());
            recheck = Some((since + i64::from(deadline) - now.as_second()).max(1));
        }
    }
    // Available first, then Progressing, in the order the real controller leaves them.
    conds.sort_by_key(|c| c.type_ != "Available");
    st.conditions = Some(conds);
    (st, recheck)
}

/// Are two statuses the same apart from condition timestamps?
pub fn same(a: &DeploymentStatus, b: &DeploymentStatus) -> bool {
    let strip = |s: &DeploymentStatus| {
        let mut s = s.clone();
        for c in s.conditions.iter_mut().flatten() {
            c.last_update_time = None;
            c.last_transition_time = None;
        }
        s
    };
    strip(a) == strip(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(s: &DeploymentStatus, t: &str) -> (String, String) {
        let c = s
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == t)
            .expect("condition");
        (c.status.clone(), c.reason.clone().unwrap_or_default())
    }

    #[test]
    fn conditions_follow_the_rollout() {
        let now = Timestamp::from_second(10_000).expect("ts");
        let base = Inputs {
            generation: Some(2),
            replicas: 3,
            max_unavailable: 0,
            progress_deadline_seconds: Some(600),
            ..Default::default()
        };
        type Case = (
            &'static str,
            Inputs,
            DeploymentStatus,
            (&'static str, &'static str),
            (&'static str, &'static str),
        );
        let progressing_at = |t: i64, reason: &str| DeploymentStatus {
            replicas: Some(4),
            updated_replicas: Some(1),
            ready_replicas: Some(3),
            available_replicas: Some(3),
            conditions: Some(vec![DeploymentCondition {
                type_: "Progressing".into(),
                status: "True".into(),
                reason: Some(reason.into()),
                last_update_time: Some(Time(Timestamp::from_second(t).expect("ts"))),
                ..Default::default()
            }]),
            ..Default::default()
        };
        let cases: Vec<Case> = vec![
            (
                "created",
                Inputs {
                    new_rs: Some(("web-1".into(), 0, 0, 0)),
                    old_rs: vec![(3, 3, 3)],
                    event: Some((
                        "NewReplicaSetCreated",
                        "Created new replica set \"web-1\"".into(),
                    )),
                    ..base.clone()
                },
                DeploymentStatus::default(),
                ("True", "MinimumReplicasAvailable"),
                ("True", "NewReplicaSetCreated"),
            ),
            (
                "complete",
                Inputs {
                    new_rs: Some(("web-1".into(), 3, 3, 3)),
                    ..base.clone()
                },
                DeploymentStatus::default(),
                ("True", "MinimumReplicasAvailable"),
                ("True", "NewReplicaSetAvailable"),
            ),
            (
                "unavailable",
                Inputs {
                    new_rs: Some(("web-1".into(), 3, 0, 0)),
                    ..base.clone()
                },
                DeploymentStatus::default(),
                ("False", "MinimumReplicasUnavailable"),
                ("True", "ReplicaSetUpdated"),
            ),
            (
                "stuck past the deadline",
                Inputs {
                    new_rs: Some(("web-1".into(), 1, 0, 0)),
                    old_rs: vec![(3, 3, 3)],
                    ..base.clone()
                },
                progressing_at(9_000, "ReplicaSetUpdated"),
                ("True", "MinimumReplicasAvailable"),
                ("False", "ProgressDeadlineExceeded"),
            ),
            (
                "stuck within the deadline",
                Inputs {
                    new_rs: Some(("web-1".into(), 1, 0, 0)),
                    old_rs: vec![(3, 3, 3)],
                    ..base.clone()
                },
                progressing_at(9_900, "ReplicaSetUpdated"),
                ("True", "MinimumReplicasAvailable"),
                ("True", "ReplicaSetUpdated"),
            ),
            (
                "paused",
                Inputs {
                    paused: true,
                    new_rs: Some(("web-1".into(), 3, 3, 3)),
                    ..base.clone()
                },
                DeploymentStatus::default(),
                ("True", "MinimumReplicasAvailable"),
                ("Unknown", "DeploymentPaused"),
            ),
        ];
        for (name, inputs, prev, avail, prog) in cases {
            let (st, _) = compute(&prev, &inputs, now);
            let a = reason(&st, "Available");
            let p = reason(&st, "Progressing");
            assert_eq!((a.0.as_str(), a.1.as_str()), avail, "{name}: Available");
            assert_eq!((p.0.as_str(), p.1.as_str()), prog, "{name}: Progressing");
        }
    }

    #[test]
    fn counts_sum_over_replica_sets() {
        let i = Inputs {
            replicas: 3,
            new_rs: Some(("web-2".into(), 2, 1, 1)),
            old_rs: vec![(2, 2, 2), (0, 0, 0)],
            ..Default::default()
        };
        let (st, _) = compute(&DeploymentStatus::default(), &i, Timestamp::now());
        assert_eq!(
            (
                st.replicas,
                st.updated_replicas,
                st.ready_replicas,
                st.available_replicas,
                st.unavailable_replicas
            ),
            (Some(4), Some(2), Some(3), Some(3), Some(0))
        );
    }
}
