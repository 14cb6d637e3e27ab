//! A pod's status computed from what the node observed of its containers, with upstream's
//! rules: phase, conditions (PodScheduled, Initialized, ContainersReady, Ready) and
//! container statuses. Pure functions; the pod worker feeds them observations.

use serde_json::{json, Value};

/// What the node observed of one container.
#[derive(Debug, Clone, PartialEq)]
pub enum ContainerState {
    /// Not running yet, or waiting to restart: `ContainerCreating`, `CrashLoopBackOff`, ...
    Waiting {
        reason: String,
        message: Option<String>,
    },
    Running {
        started_at: String,
    },
    Terminated {
        exit_code: i32,
        signal: Option<i32>,
        /// `Completed`, `Error`, `OOMKilled`, `ContainerCannotRun`, ...
        reason: String,
        message: Option<String>,
        started_at: Option<String>,
        finished_at: String,
    },
}

/// One container's observed status.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerObservation {
    pub name: String,
    pub image: String,
    pub image_id: String,
    pub container_id: Option<String>,
    pub state: ContainerState,
    pub last_state: Option<ContainerState>,
    pub ready: bool,
    /// Whether its startup probe succeeded (true for a running container without one).
    pub started: bool,
    pub restart_count: i32,
}

impl ContainerState {
    fn to_json(&self) -> Value {
        match self {
            ContainerState::Waiting { reason, message } => {
                let mut w = json!({"reason": reason});
                if let Some(m) = message {
                    w["message"] = json!(m);
                }
                json!({"waiting": w})
            }
            ContainerState::Running { started_at } => json!({"running": {"startedAt": started_at}}),
            ContainerState::Terminated {
                exit_code,
                signal,
                reason,
                message,
                started_at,
                finished_at,
            } => {
                let mut t =
                    json!({"exitCode": exit_code, "reason": reason, "finishedAt": finished_at});
                if let Some(s) = signal {
                    t["signal"] = json!(s);
                }
                if let Some(m) = message {
                    t["message"] = json!(m);
                }
                if let Some(s) = started_at {
                    t["startedAt"] = json!(s);
                }
                json!({"terminated": t})
            }
        }
    }

    fn succeeded(&self) -> bool {
        matches!(self, ContainerState::Terminated { exit_code: 0, .. })
    }
}

impl ContainerObservation {
    fn to_json(&self) -> Value {
        let mut s = json!({
            "name": self.name,
            "image": self.image,
            "imageID": self.image_id,
            "ready": self.ready,
            "restartCount": self.restart_count,
            "started": self.started,
            "state": self.state.to_json(),
            "lastState": self.last_state.as_ref().map_or(json!({}), ContainerState::to_json),
        });
        if let Some(id) = &self.container_id {
            s["containerID"] = json!(id);
        }
        s
    }
}

/// Upstream's pod phase from the containers' states and the restart policy.
pub fn phase(
    restart_policy: &str,
    init: &[ContainerObservation],
    containers: &[ContainerObservation],
) -> &'static str {
    // An init container that failed for good fails the pod; one still to finish keeps it Pending.
    for c in init {
        if c.state.succeeded() {
            continue;
        }
        if restart_policy == "Never" && matches!(c.state, ContainerState::Terminated { .. }) {
            return "Failed";
        }
        return "Pending";
    }
    let (mut running, mut waiting, mut succeeded, mut failed) = (0, 0, 0, 0);
    for c in containers {
        match &c.state {
            ContainerState::Running { .. } => running += 1,
            ContainerState::Waiting { .. } => {
                // A container waiting to restart after it ran counts as stopped.
                match &c.last_state {
                    Some(last) if last.succeeded() => succeeded += 1,
                    Some(ContainerState::Terminated { .. }) => failed += 1,
                    _ => waiting += 1,
                }
            }
            ContainerState::Terminated { .. } if c.state.succeeded() => succeeded += 1,
            ContainerState::Terminated { .. } => failed += 1,
        }
    }
    let stopped = succeeded + failed;
    if waiting > 0 && running == 0 && stopped == 0 {
        return "Pending";
    }
    if waiting > 0 {
        return if restart_policy == "Always" {
            "Running"
        } else {
            "Pending"
        };
    }
    if running > 0 {
        return "Running";
    }
    if stopped > 0 {
        return match restart_policy {
            "Always" => "Running",
            "OnFailure" if failed > 0 => "Running",
            "Never" if failed > 0 => "Failed",
            _ => "Succeeded",
        };
    }
    "Pending"
}

fn condition(kind: &str, ok: bool, reason: Option<&str>, previous: &Value, now: &str) -> Value {
    let status = if ok { "True" } else { "False" };
    let transition = previous
        .get("conditions")
        .and_then(Value::as_array)
        .and_then(|cs| {
            cs.iter()
                .find(|c| c.get("type").and_then(Value::as_str) == Some(kind))
        })
        .filter(|c| c.get("status").and_then(Value::as_str) == Some(status))
        .and_then(|c| c.get("lastTransitionTime").cloned())
        .unwrap_or_else(|| json!(now));
    let mut c = json!({"type": kind, "status": status, "lastProbeTime": null, "lastTransitionTime": transition});
    if let Some(r) = reason.filter(|_| !ok) {
        c["reason"] = json!(r);
    }
    c
}

/// The pod's status: `previous` is the status the API has (transition times and start time
/// are kept), `pod_ip` the sandbox's address, `host_ip` the node's.
pub fn pod_status(
    restart_policy: &str,
    init: &[ContainerObservation],
    containers: &[ContainerObservation],
    previous: &Value,
    pod_ip: Option<&str>,
    host_ip: Option<&str>,
    now: &str,
) -> Value {
    let phase = phase(restart_policy, init, containers);
    let initialized = init.iter().all(|c| c.state.succeeded());
    let containers_ready = !containers.is_empty() && containers.iter().all(|c| c.ready);
    let terminal = phase == "Succeeded" || phase == "Failed";
    let ready_reason = if terminal {
        "PodCompleted"
    } else {
        "ContainersNotReady"
    };
    let mut status = json!({
        "phase": phase,
        "conditions": [
            condition("PodReadyToStartContainers", pod_ip.is_some() || !containers.is_empty(), None, previous, now),
            condition("Initialized", initialized, Some("ContainersNotInitialized"), previous, now),
            condition("Ready", containers_ready, Some(ready_reason), previous, now),
            condition("ContainersReady", containers_ready, Some(ready_reason), previous, now),
            condition("PodScheduled", true, None, previous, now),
        ],
        "startTime": previous.get("startTime").cloned().unwrap_or_else(|| json!(now)),
        "containerStatuses": containers.iter().map(ContainerObservation::to_json).collect::<Vec<_>>(),
    });
    if !init.is_empty() {
        status["initContainerStatuses"] = json!(init
            .iter()
            .map(ContainerObservation::to_json)
            .collect::<Vec<_>>());
    }
    if let Some(ip) = pod_ip {
        status["podIP"] = json!(ip);
        status["podIPs"] = json!([{"ip": ip}]);
    }
    if let Some(ip) = host_ip {
        status["hostIP"] = json!(ip);
        status["hostIPs"] = json!([{"ip": ip}]);
    }
    if let Some(qos) = previous.get("qosClass") {
        status["qosClass"] = qos.clone();
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(name: &str, state: ContainerState, ready: bool) -> ContainerObservation {
        let started = matches!(state, ContainerState::Running { .. });
        ContainerObservation {
            started,
            name: name.into(),
            image: "busybox:latest".into(),
            image_id: "sha256:abc".into(),
            container_id: Some(format!("crun://{name}")),
            state,
            last_state: None,
            ready,
            restart_count: 0,
        }
    }

    fn running() -> ContainerState {
        ContainerState::Running {
            started_at: "2026-01-01T00:00:00Z".into(),
        }
    }

    fn exited(code: i32) -> ContainerState {
        ContainerState::Terminated {
            exit_code: code,
            signal: None,
            reason: if code == 0 {
                "Completed".into()
            } else {
                "Error".into()
            },
            message: None,
            started_at: None,
            finished_at: "2026-01-01T00:00:01Z".into(),
        }
    }

    fn creating() -> ContainerState {
        ContainerState::Waiting {
            reason: "ContainerCreating".into(),
            message: None,
        }
    }

    #[test]
    fn phases_follow_upstream() {
        assert_eq!(
            phase("Always", &[], &[obs("a", creating(), false)]),
            "Pending"
        );
        assert_eq!(
            phase("Always", &[], &[obs("a", running(), true)]),
            "Running"
        );
        assert_eq!(
            phase("Never", &[], &[obs("a", exited(0), false)]),
            "Succeeded"
        );
        assert_eq!(phase("Never", &[], &[obs("a", exited(1), false)]), "Failed");
        assert_eq!(
            phase("OnFailure", &[], &[obs("a", exited(0), false)]),
            "Succeeded"
        );
        assert_eq!(
            phase("OnFailure", &[], &[obs("a", exited(2), false)]),
            "Running"
        );
        assert_eq!(
            phase("Always", &[], &[obs("a", exited(0), false)]),
            "Running"
        );
        let mut backoff = obs(
            "a",
            ContainerState::Waiting {
                reason: "CrashLoopBackOff".into(),
                message: None,
            },
            false,
        );
        backoff.last_state = Some(exited(1));
        assert_eq!(phase("Always", &[], &[backoff]), "Running");
        assert_eq!(
            phase(
                "Always",
                &[obs("i", running(), false)],
                &[obs("a", creating(), false)]
            ),
            "Pending"
        );
        assert_eq!(
            phase(
                "Never",
                &[obs("i", exited(1), false)],
                &[obs("a", creating(), false)]
            ),
            "Failed"
        );
        assert_eq!(
            phase(
                "Always",
                &[obs("i", exited(0), false)],
                &[obs("a", running(), true)]
            ),
            "Running"
        );
    }

    #[test]
    fn status_has_conditions_and_container_statuses() {
        let prev = json!({"qosClass": "BestEffort", "startTime": "2026-01-01T00:00:00Z"});
        let s = pod_status(
            "Always",
            &[],
            &[obs("a", running(), true)],
            &prev,
            Some("10.42.0.5"),
            Some("192.168.1.2"),
            "2026-01-01T00:00:09Z",
        );
        assert_eq!(s["phase"], "Running");
        assert_eq!(s["podIP"], "10.42.0.5");
        assert_eq!(s["startTime"], "2026-01-01T00:00:00Z");
        assert_eq!(s["qosClass"], "BestEffort");
        let ready = s["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
            .cloned();
        assert_eq!(ready.map(|c| c["status"].clone()), Some(json!("True")));
        assert_eq!(
            s["containerStatuses"][0]["state"]["running"]["startedAt"],
            "2026-01-01T00:00:00Z"
        );
        assert_eq!(s["containerStatuses"][0]["containerID"], "crun://a");
        let pod: Result<k8s_openapi::api::core::v1::PodStatus, _> = serde_json::from_value(s);
        assert!(pod.is_ok(), "a valid PodStatus: {pod:?}");
    }
}
