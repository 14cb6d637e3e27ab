//! Container lifecycle hooks and killing a container as upstream's kubelet does.
//!
//! `postStart` (exec, httpGet, sleep) runs right after the container starts; the container
//! is not reported `Running` until it completes, and if it fails the container is killed
//! (`FailedPostStartHook` event) and restarted per the restart policy (`PostStartHookError`).
//! Killing a container (pod deletion, failed liveness/startup probe, failed postStart) records
//! `Killing`, runs its `preStop` hook within the grace period (`FailedPreStopHook` on
//! failure), then sends the stop signal with what is left of the grace period (at least 2 s
//! after a hook, as upstream), then SIGKILL. httpGet hooks go to the pod IP unless they name a
//! host; any HTTP response counts as done, as upstream.

use crate::pods::{blocking, stop_signal, PodRuntime};
use crate::podstatus::ContainerState;
use crate::probes::{exec_command, truncate, HttpGet};
use berth_runtime::{ContainerError, ContainerStatus};
use k8s_openapi::api::core::v1::{Container, LifecycleHandler, Pod};
use kube::ResourceExt;
use std::time::{Duration, Instant};

/// What a container gets after its preStop hook, however long the hook took.
const MINIMUM_GRACE: Duration = Duration::from_secs(2);

/// The pod as the kubelet names it in messages: `name_namespace(uid)`.
fn pod_label(pod: &Pod) -> String {
    format!(
        "{}_{}({})",
        pod.name_any(),
        pod.namespace().unwrap_or_default(),
        pod.uid().unwrap_or_default()
    )
}

impl PodRuntime {
    /// Runs one hook handler against container `id`; the error is the kubelet's message.
    /// `timeout` bounds exec and httpGet handlers (none for postStart, as upstream).
    async fn run_hook(
        &self,
        pod: &Pod,
        c: &Container,
        handler: &LifecycleHandler,
        id: &str,
        pod_ip: &str,
        timeout: Option<Duration>,
    ) -> Result<(), String> {
        let who = format!("for Container {:?} in Pod {:?}", c.name, pod_label(pod));
        if let Some(e) = &handler.exec {
            let args = exec_command(c, e.command.as_deref().unwrap_or_default());
            let shown = format!("[{}]", args.join(" "));
            let containers = self.containers.clone();
            let (id, a) = (id.to_string(), args.clone());
            let limit = timeout.unwrap_or(Duration::MAX);
            let (error, output) =
                match blocking(move || containers.exec_output(&id, &a, limit)).await {
                    Ok(Ok(out)) if out.exit_code == 0 => return Ok(()),
                    Ok(Ok(out)) => {
                        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
                        let mut all = out.stdout;
                        all.extend_from_slice(&out.stderr);
                        (
                            format!(
                                "command '{}' exited with {}: {stderr}",
                                args.join(" "),
                                out.exit_code
                            ),
                            String::from_utf8_lossy(&all).to_string(),
                        )
                    }
                    Ok(Err(ContainerError::ExecTimedOut { .. })) => (
                        format!("command {:?} timed out", args.join(" ")),
                        String::new(),
                    ),
                    Ok(Err(e)) => (e.to_string(), String::new()),
                    Err(e) => (e, String::new()),
                };
            return Err(truncate(&format!(
                "Exec lifecycle hook ({shown}) {who} failed - error: {error}, message: {output:?}"
            )));
        }
        if let Some(h) = &handler.http_get {
            let path = h.path.clone().unwrap_or_default();
            let fail =
                |e: String| format!("HTTP lifecycle hook ({path}) {who} failed - error: {e}");
            let get = HttpGet::from_action(c, h, pod_ip, "kube-lifecycle/1.33").map_err(fail)?;
            // Any response will do: upstream does not look at the status code.
            return get
                .send(timeout.unwrap_or(Duration::MAX))
                .await
                .map(|_| ())
                .map_err(|e| truncate(&fail(e)));
        }
        if let Some(s) = &handler.sleep {
            tokio::time::sleep(Duration::from_secs(s.seconds.max(0) as u64)).await;
            return Ok(());
        }
        Err(format!(
            "Cannot run handler: invalid handler: {}",
            if handler.tcp_socket.is_some() {
                "tcpSocket is not supported in lifecycle hooks"
            } else {
                "no action given"
            }
        ))
    }

    /// Runs the postStart hook of the just-started container `id`, if it has one. On failure
    /// the container is killed and the state to report is returned (`PostStartHookError`).
    pub(crate) async fn post_start(
        &self,
        pod: &Pod,
        c: &Container,
        id: &str,
        pod_ip: &str,
    ) -> Result<(), ContainerState> {
        let Some(handler) = c.lifecycle.as_ref().and_then(|l| l.post_start.as_ref()) else {
            return Ok(());
        };
        let Err(message) = self.run_hook(pod, c, handler, id, pod_ip, None).await else {
            return Ok(());
        };
        tracing::info!(pod = %pod.name_any(), container = %c.name, "{message}");
        self.record(pod, &c.name, "Warning", "FailedPostStartHook", &message)
            .await;
        let grace = pod
            .spec
            .as_ref()
            .and_then(|s| s.termination_grace_period_seconds)
            .unwrap_or(30)
            .max(0) as u64;
        self.kill_container(
            pod,
            c,
            id,
            pod_ip,
            Duration::from_secs(grace),
            Some("FailedPostStartHook"),
        )
        .await;
        Err(ContainerState::Waiting {
            reason: "PostStartHookError".into(),
            message: Some(message),
        })
    }

    /// The signal that stops container `c`: its `lifecycle.stopSignal`, else its image's
    /// STOPSIGNAL, else SIGTERM.
    async fn stop_signal_of(&self, c: &Container) -> i32 {
        if let Some(s) = c.lifecycle.as_ref().and_then(|l| l.stop_signal.as_deref()) {
            return stop_signal(Some(s));
        }
        let images = self.images.clone();
        let image = c.image.clone().unwrap_or_default();
        match blocking(move || images.resolve(&image)).await {
            Ok(Ok(Some(img))) => stop_signal(img.config.stop_signal.as_deref()),
            _ => libc::SIGTERM,
        }
    }

    /// Kills running container `id` of `c`: the `Killing` event (when `message` is given),
    /// the preStop hook within `grace`, then the stop signal with the rest of `grace`, then
    /// SIGKILL. Returns how the container ended.
    pub(crate) async fn kill_container(
        &self,
        pod: &Pod,
        c: &Container,
        id: &str,
        pod_ip: &str,
        grace: Duration,
        message: Option<&str>,
    ) -> Option<ContainerStatus> {
        if let Some(message) = message {
            self.record(pod, &c.name, "Normal", "Killing", message)
                .await;
        }
        let mut grace = grace;
        let pre_stop = c.lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref());
        if let (Some(handler), false) = (pre_stop, grace.is_zero()) {
            let started = Instant::now();
            let hook = self.run_hook(pod, c, handler, id, pod_ip, Some(grace));
            match tokio::time::timeout(grace, hook).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::info!(pod = %pod.name_any(), container = %c.name, "{e}");
                    // Not the hook's message: it may carry secrets (as upstream).
                    self.record(
                        pod,
                        &c.name,
                        "Warning",
                        "FailedPreStopHook",
                        "PreStopHook failed",
                    )
                    .await;
                }
                Err(_) => {
                    tracing::info!(pod = %pod.name_any(), container = %c.name, "preStop hook did not complete within the grace period");
                }
            }
            // Whole seconds, as upstream counts them.
            let spent = Duration::from_secs(started.elapsed().as_secs());
            grace = grace.saturating_sub(spent).max(MINIMUM_GRACE);
        }
        let signal = self.stop_signal_of(c).await;
        let containers = self.containers.clone();
        let id = id.to_string();
        blocking(move || containers.stop(&id, signal, grace))
            .await
            .ok()
            .and_then(Result::ok)
    }

    /// Stops a deleted pod's running containers, each at once and on its own: preStop hook,
    /// stop signal, SIGKILL, within `grace` (the `Killing` events are the caller's).
    pub(crate) async fn stop_for_deletion(&self, pod: &Pod, grace: Duration) {
        let uid = pod.uid().unwrap_or_default();
        self.prober.forget_pod(&uid);
        let Some(spec) = &pod.spec else {
            return;
        };
        let pod_ip = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .unwrap_or_default();
        let containers = self.containers.clone();
        let prefix = format!("{uid}-");
        let ids: Vec<String> = blocking(move || {
            containers
                .list()
                .into_iter()
                .filter(|id| id.starts_with(&prefix))
                .filter(|id| matches!(containers.status(id), Ok(ContainerStatus::Running { .. })))
                .collect()
        })
        .await
        .unwrap_or_default();
        let all: Vec<&Container> = spec
            .init_containers
            .iter()
            .flatten()
            .chain(spec.containers.iter())
            .collect();
        let kills = ids.iter().filter_map(|id| {
            // Ids are `<uid>-<container>-<attempt>`.
            let name = id
                .strip_prefix(&format!("{uid}-"))?
                .rsplit_once('-')
                .map(|(n, _)| n)?;
            let c = all.iter().find(|c| c.name == name)?;
            Some(self.kill_container(pod, c, id, &pod_ip, grace, None))
        });
        futures::future::join_all(kills).await;
    }
}
