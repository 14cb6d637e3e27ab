//! The pod worker: runs the pods bound to this node as real containers. For each pod it
//! makes the network sandbox (CNI), the volumes, `/etc/hosts` and `/etc/resolv.conf`, runs
//! init containers in order and then the containers through the shim-owned runtime, restarts
//! them per `restartPolicy` with upstream's back-off, reports status, and on deletion stops
//! everything (stop signal, grace period, SIGKILL), removes what it made and deletes the pod.
//! As upstream's kubelet, a pod is synced on events — its watch, a relist of the node's
//! containers every second (started, exited), probe verdicts, its ConfigMaps and Secrets —
//! every second while it is on its way, and once a minute when settled.
//! Every fact lives in the kernel or on disk, so a restarted agent picks up where it was.

use crate::podstatus::{pod_status, ContainerObservation, ContainerState};
pub use crate::probes::ProbeManager;
use crate::spec;
use berth_images::ImageStore;
use berth_net::{NetworkConfig, Sandbox};
use berth_runtime::{
    ContainerManager, ContainerSpec, ContainerStatus, LogConfig, MountSpec, NetworkNamespace,
    Resources, Rootfs,
};
use chrono::{DateTime, SecondsFormat, Utc};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Container, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::ResourceExt;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Errors of one pod sync (the pod is synced again shortly).
#[derive(Debug, thiserror::Error)]
pub enum PodError {
    #[error("failed to {what} for pod {pod}: {why}")]
    Sync {
        what: &'static str,
        pod: String,
        why: String,
    },
}

/// What the pod worker runs pods with.
pub struct PodRuntime {
    pub client: kube::Client,
    pub node_name: String,
    pub node_ip: Option<String>,
    pub images: ImageStore,
    pub network: NetworkConfig,
    /// The node's cluster DNS server, for pods' resolv.conf (`None`: the host's resolvers).
    pub cluster_dns: Option<crate::dns::ClusterDns>,
    pub containers: ContainerManager,
    /// `<data-dir>/pods`: per-pod volumes and generated files.
    pub pods_dir: PathBuf,
    /// Where container logs go (`/var/log/pods` upstream).
    pub logs_dir: PathBuf,
    /// Containers that failed to start, for the back-off between attempts.
    pub start_failures: StartFailures,
    /// The probe workers of running containers and their verdicts (started, ready).
    pub prober: ProbeManager,
    /// Image ids of the images containers run.
    pub image_ids: ImageIds,
    /// Image pulls in progress and the back-off of failed ones.
    pub image_pulls: crate::images::ImagePulls,
    /// The ConfigMaps and Secrets pods use (one shared watch) and what volumes hold.
    pub sources: crate::sources::Sources,
    /// When deleted pods' containers are stopped (endpoint-first termination).
    pub termination: crate::deregistration::TerminationConfig,
}

/// What a pod's containers mount: volume name → host path, and the `/etc` files' directory.
pub struct Prepared {
    volumes: HashMap<String, crate::volumes::PodVolume>,
    etc: PathBuf,
}

/// Image reference → image id, learned when containers start (resolving re-reads and
/// re-hashes the manifest, too much for every status sync).
#[derive(Debug, Default)]
pub struct ImageIds(pub(crate) std::sync::Mutex<HashMap<String, String>>);

/// Per pod container (`<uid>/<name>`): failed starts so far, the last one's time, and what
/// it reported. Kept in memory like upstream's back-off: a restarted agent just retries.
#[derive(Debug, Default)]
pub struct StartFailures(std::sync::Mutex<HashMap<String, StartFailure>>);

/// Failed starts so far, when the last one was, and what it reported.
type StartFailure = (u32, DateTime<Utc>, ContainerState);

impl StartFailures {
    fn get(&self, key: &str) -> Option<StartFailure> {
        self.0.lock().ok().and_then(|m| m.get(key).cloned())
    }

    fn record(&self, key: &str, state: ContainerState) {
        if let Ok(mut m) = self.0.lock() {
            let n = m.get(key).map_or(0, |e| e.0) + 1;
            m.insert(key.to_string(), (n, Utc::now(), state));
        }
    }

    fn clear(&self, key: &str) {
        if let Ok(mut m) = self.0.lock() {
            m.remove(key);
        }
    }
}

/// A signal's number from an image's STOPSIGNAL (`SIGQUIT`, `QUIT` or `3`); SIGTERM if unset
/// or unknown.
pub fn stop_signal(name: Option<&str>) -> i32 {
    let Some(name) = name.map(str::trim).filter(|n| !n.is_empty()) else {
        return libc::SIGTERM;
    };
    if let Ok(n) = name.parse::<i32>() {
        return n;
    }
    let bare = name.trim_start_matches("SIG");
    match bare {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        "WINCH" => libc::SIGWINCH,
        "STOP" => libc::SIGSTOP,
        _ => libc::SIGTERM,
    }
}

pub(crate) fn err(what: &'static str, pod: &str, why: impl std::fmt::Display) -> PodError {
    PodError::Sync {
        what,
        pod: pod.to_string(),
        why: why.to_string(),
    }
}

pub(crate) fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Runs `f` on a blocking thread (runtime, CNI and image work block).
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| format!("worker thread failed: {e}"))
}

/// A container's runtime id for one attempt: unique per pod, container and restart.
fn container_id(pod_uid: &str, name: &str, attempt: u32) -> String {
    format!("{pod_uid}-{name}-{attempt}")
}

/// The attempts of one container that exist on this node, oldest first.
fn attempts(all: &[String], pod_uid: &str, name: &str) -> Vec<u32> {
    let prefix = format!("{pod_uid}-{name}-");
    let mut v: Vec<u32> = all
        .iter()
        .filter_map(|id| id.strip_prefix(&prefix)?.parse().ok())
        .collect();
    v.sort_unstable();
    v
}

/// How soon a container whose config (ConfigMaps, Secrets, volumes) was missing is retried.
const CONFIG_RETRY: Duration = Duration::from_secs(5);

/// Upstream's crash back-off: 10 s doubling per restart, capped at 5 minutes.
fn backoff(restarts: u32) -> Duration {
    Duration::from_secs((10u64 << restarts.min(5)).min(300))
}

/// A whole-second duration as Go prints it (`10s`, `1m20s`, `5m0s`), as upstream's messages.
fn go_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s < 60 {
        format!("{s}s")
    } else {
        format!("{}m{}s", s / 60, s % 60)
    }
}

fn observed(status: &ContainerStatus) -> ContainerState {
    match status {
        ContainerStatus::Running { started_at, .. } => ContainerState::Running {
            started_at: time(*started_at),
        },
        ContainerStatus::Exited {
            code,
            signal,
            oom_killed,
            started_at,
            finished_at,
        } => ContainerState::Terminated {
            exit_code: *code,
            signal: *signal,
            reason: if *oom_killed {
                "OOMKilled".into()
            } else if *code == 0 {
                "Completed".into()
            } else {
                "Error".into()
            },
            message: None,
            started_at: started_at.map(time),
            finished_at: time(*finished_at),
        },
        ContainerStatus::Unknown { reason } => ContainerState::Waiting {
            reason: "Unknown".into(),
            message: Some(reason.clone()),
        },
    }
}

impl PodRuntime {
    pub(crate) fn pod_dir(&self, uid: &str) -> PathBuf {
        self.pods_dir.join(uid)
    }

    /// The volumes and `/etc` files a pod's containers mount.
    async fn prepare(&self, pod: &Pod, pod_ip: &str) -> Result<Prepared, String> {
        let volumes = self.volumes(pod).await.map_err(|e| e.to_string())?;
        let etc = self
            .etc_files(pod, pod_ip)
            .map_err(|e| err("write /etc files", &pod.name_any(), e).to_string())?;
        Ok(Prepared { volumes, etc })
    }

    /// Starts one attempt of a container.
    #[allow(clippy::too_many_arguments)]
    async fn start_container(
        &self,
        pod: &Pod,
        c: &Container,
        attempt: u32,
        netns: &Option<PathBuf>,
        pod_ip: &str,
        prepared: &tokio::sync::OnceCell<Prepared>,
    ) -> Result<(), ContainerState> {
        let waiting = |reason: &str, message: String| ContainerState::Waiting {
            reason: reason.into(),
            message: Some(message),
        };
        let Prepared { volumes, etc } = prepared
            .get_or_try_init(|| self.prepare(pod, pod_ip))
            .await
            // Volumes that cannot be set up keep the pod ContainerCreating, as upstream.
            .map_err(|e| waiting("ContainerCreating", e))?;
        let (image, layers) = self.image_for(pod, c).await?;
        let cfg = &image.config;
        let env = self
            .env(pod, c, &cfg.env, pod_ip)
            .await
            .map_err(|e| waiting("CreateContainerConfigError", e.to_string()))?;
        let known: HashMap<String, String> = env.iter().cloned().collect();
        let args = spec::command_line(
            c.command.as_deref(),
            c.args.as_deref(),
            &cfg.entrypoint,
            &cfg.cmd,
            &known,
        );
        if args.is_empty() {
            return Err(waiting(
                "CreateContainerConfigError",
                "no command specified".into(),
            ));
        }
        let uid = pod.uid().unwrap_or_default();
        let ns = pod.namespace().unwrap_or_default();
        let id = container_id(&uid, &c.name, attempt);
        let log = self
            .logs_dir
            .join(format!("{ns}_{}_{uid}", pod.name_any()))
            .join(&c.name)
            .join(format!("{attempt}.log"));
        let mut spec = ContainerSpec::new(
            id,
            Rootfs::Overlay { lowerdirs: layers },
            args,
            LogConfig {
                path: log,
                max_size: 10 << 20,
                max_files: 5,
            },
        );
        spec.env = env;
        spec.working_dir = c
            .working_dir
            .clone()
            .or_else(|| cfg.working_dir.clone())
            .filter(|w| !w.is_empty());
        // spec.hostname wins over the pod name (an Indexed Job's pods are `<job>-<index>`).
        spec.hostname = Some(
            pod.spec
                .as_ref()
                .and_then(|s| s.hostname.clone())
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| pod.name_any()),
        );
        // `kubectl attach` and `kubectl run -it` reach these through the shim.
        spec.stdin = c.stdin.unwrap_or(false);
        spec.stdin_once = c.stdin_once.unwrap_or(false);
        spec.tty = c.tty.unwrap_or(false);
        spec.network = match netns {
            Some(p) => NetworkNamespace::Path(p.clone()),
            None => NetworkNamespace::Host,
        };
        spec.cgroup_parent = format!("/berth/pod{uid}");
        let sc = c.security_context.clone().unwrap_or_default();
        let psc = pod
            .spec
            .as_ref()
            .and_then(|s| s.security_context.clone())
            .unwrap_or_default();
        if let Some(u) = sc.run_as_user.or(psc.run_as_user) {
            spec.uid = u as u32;
        }
        if let Some(g) = sc.run_as_group.or(psc.run_as_group) {
            spec.gid = g as u32;
        }
        spec.security.privileged = sc.privileged.unwrap_or(false);
        spec.security.read_only_root_filesystem = sc.read_only_root_filesystem.unwrap_or(false);
        spec.security.no_new_privileges = sc.allow_privilege_escalation == Some(false);
        if let Some(caps) = &sc.capabilities {
            spec.security.capabilities.add = caps.add.clone().unwrap_or_default();
            spec.security.capabilities.drop = caps.drop.clone().unwrap_or_default();
        }
        let res = c.resources.clone().unwrap_or_default();
        let get =
            |m: &Option<
                std::collections::BTreeMap<
                    String,
                    k8s_openapi::apimachinery::pkg::api::resource::Quantity,
                >,
            >,
             k: &str| { m.as_ref().and_then(|m| m.get(k)).map(|q| q.0.clone()) };
        let (shares, quota, period) = spec::cpu(
            get(&res.requests, "cpu").as_deref(),
            get(&res.limits, "cpu").as_deref(),
        );
        spec.resources = Resources {
            cpu_shares: shares,
            cpu_quota: quota,
            cpu_period: period,
            memory_limit: get(&res.limits, "memory")
                .as_deref()
                .and_then(spec::quantity)
                .map(|b| b as i64),
            pids_limit: None,
        };
        for (file, dest) in [
            ("hosts", "/etc/hosts"),
            ("resolv.conf", "/etc/resolv.conf"),
            ("hostname", "/etc/hostname"),
        ] {
            spec.mounts.push(MountSpec::Bind {
                source: etc.join(file),
                destination: dest.into(),
                read_only: false,
            });
        }
        let mounts = self
            .volume_mounts(pod, c, volumes, &spec.env)
            .await
            .map_err(|e| waiting("CreateContainerConfigError", e.to_string()))?;
        spec.mounts.extend(mounts);
        let containers = self.containers.clone();
        match blocking(move || containers.start(&spec)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(ContainerState::Terminated {
                exit_code: 128,
                signal: None,
                reason: "ContainerCannotRun".into(),
                message: Some(e.to_string()),
                started_at: None,
                finished_at: now(),
            }),
            Err(e) => Err(waiting("CreateContainerError", e)),
        }
    }

    /// Syncs one container: observes its newest attempt, restarts it when due. Returns the
    /// observation and whether it finished successfully (for init containers).
    #[allow(clippy::too_many_arguments)]
    async fn sync_container(
        &self,
        pod: &Pod,
        c: &Container,
        all_ids: &[String],
        restart_policy: &str,
        netns: &Option<PathBuf>,
        pod_ip: &str,
        prepared: &tokio::sync::OnceCell<Prepared>,
        start: bool,
    ) -> ContainerObservation {
        let uid = pod.uid().unwrap_or_default();
        let tries = attempts(all_ids, &uid, &c.name);
        let image = c.image.clone().unwrap_or_default();
        let mut obs = ContainerObservation {
            name: c.name.clone(),
            image: image.clone(),
            image_id: String::new(),
            container_id: None,
            state: ContainerState::Waiting {
                reason: "ContainerCreating".into(),
                message: None,
            },
            last_state: None,
            ready: false,
            started: false,
            restart_count: tries.len().saturating_sub(1) as i32,
        };
        let latest = tries.last().copied();
        let status = match latest {
            Some(a) => {
                let containers = self.containers.clone();
                let id = container_id(&uid, &c.name, a);
                blocking(move || containers.status(&id))
                    .await
                    .ok()
                    .and_then(Result::ok)
            }
            None => None,
        };
        if let (Some(a), Some(s)) = (latest, &status) {
            obs.container_id = Some(format!("crun://{}", container_id(&uid, &c.name, a)));
            obs.state = observed(s);
            if tries.len() > 1 {
                let prev = tries[tries.len() - 2];
                let containers = self.containers.clone();
                let id = container_id(&uid, &c.name, prev);
                if let Ok(Ok(p)) = blocking(move || containers.status(&id)).await {
                    obs.last_state = Some(observed(&p));
                }
            }
        }
        if let Some(id) = self
            .image_ids
            .0
            .lock()
            .ok()
            .and_then(|ids| ids.get(&image).cloned())
        {
            obs.image_id = id;
        }
        let restart = match &status {
            None => start,
            Some(ContainerStatus::Exited {
                code, finished_at, ..
            }) => {
                let wants = match restart_policy {
                    "Always" => true,
                    "OnFailure" => *code != 0,
                    _ => false,
                };
                if wants && start {
                    let due = *finished_at
                        + chrono::Duration::from_std(backoff(obs.restart_count as u32))
                            .unwrap_or_default();
                    if Utc::now() < due && latest.is_some() {
                        obs.last_state = Some(obs.state.clone());
                        obs.state = self.crash_loop_back_off(pod, c, obs.restart_count).await;
                        false
                    } else {
                        true
                    }
                } else {
                    false
                }
            }
            _ => false,
        };
        // A container that failed to start waits out its back-off before the next try.
        let key = format!("{uid}/{}", c.name);
        let mut restart = restart;
        if let Some((n, at, state)) = self.start_failures.get(&key) {
            // Missing ConfigMaps/Secrets and volumes are retried at a steady pace (as upstream,
            // which has no crash back-off for them); failed runs back off.
            let delay = match &state {
                ContainerState::Waiting { reason, .. }
                    if reason == "CreateContainerConfigError" || reason == "ContainerCreating" =>
                {
                    CONFIG_RETRY
                }
                _ => backoff(n.saturating_sub(1)),
            };
            let due = at + chrono::Duration::from_std(delay).unwrap_or_default();
            if restart && Utc::now() < due {
                restart = false;
                obs.state = state;
            }
        }
        if restart {
            let attempt = latest.map_or(0, |a| a + 1);
            let previous = obs.state.clone();
            match self
                .start_container(pod, c, attempt, netns, pod_ip, prepared)
                .await
            {
                Ok(()) => {
                    if latest.is_some() {
                        obs.last_state = Some(previous);
                        obs.restart_count += 1;
                    }
                    obs.container_id =
                        Some(format!("crun://{}", container_id(&uid, &c.name, attempt)));
                    obs.state = ContainerState::Running { started_at: now() };
                    self.start_failures.clear(&key);
                    // The image's events (`Pulled`, ...) were recorded when it was found.
                    for (reason, message) in [
                        ("Created", format!("Created container {}", c.name)),
                        ("Started", format!("Started container {}", c.name)),
                    ] {
                        self.record(pod, &c.name, "Normal", reason, &message).await;
                    }
                }
                // The image's events and pull back-off are kept by `images`.
                Err(state) if crate::images::is_image_state(&state) => obs.state = state,
                Err(state) => {
                    // Reported as waiting with the cause, as upstream's RunContainerError.
                    let waiting = match state {
                        ContainerState::Terminated { message, .. } => ContainerState::Waiting {
                            reason: "RunContainerError".into(),
                            message,
                        },
                        other => other,
                    };
                    if let ContainerState::Waiting { reason, message } = &waiting {
                        let text = message.clone().unwrap_or_else(|| reason.clone());
                        let event = if reason == "ContainerCreating" {
                            "FailedMount"
                        } else {
                            "Failed"
                        };
                        self.record(pod, &c.name, "Warning", event, &text).await;
                    }
                    self.start_failures.record(&key, waiting.clone());
                    obs.state = waiting;
                }
            }
        }
        // A container that just started runs its postStart hook before it counts as running.
        if restart && matches!(obs.state, ContainerState::Running { .. }) {
            if let Some(id) = obs.container_id.clone() {
                let id = id.trim_start_matches("crun://");
                if let Err(state) = self.post_start(pod, c, id, pod_ip).await {
                    self.start_failures.record(&key, state.clone());
                    obs.state = state;
                }
            }
        }
        // Its probes say when a running container is started and ready (at once without
        // probes), as upstream.
        if let (ContainerState::Running { started_at }, Some(id)) = (&obs.state, &obs.container_id)
        {
            let id = id.trim_start_matches("crun://");
            (obs.started, obs.ready) = self.prober.observe(pod, c, id, started_at, pod_ip);
        }
        obs
    }

    /// A container waiting out its crash back-off: upstream's `CrashLoopBackOff` state, and
    /// its `BackOff` event once per back-off period (repeats count onto the first event).
    async fn crash_loop_back_off(
        &self,
        pod: &Pod,
        c: &Container,
        restart_count: i32,
    ) -> ContainerState {
        // As upstream's `format.Pod`: `<name>_<namespace>(<uid>)`.
        let pod_desc = format!(
            "{}_{}({})",
            pod.name_any(),
            pod.namespace().unwrap_or_default(),
            pod.uid().unwrap_or_default()
        );
        let delay = backoff(restart_count.max(0) as u32);
        // The status the API has for this container already shows this back-off period:
        // its event is recorded.
        let reported = pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|cs| cs.iter().find(|s| s.name == c.name))
            .is_some_and(|s| {
                s.restart_count == restart_count
                    && s.state
                        .as_ref()
                        .and_then(|st| st.waiting.as_ref())
                        .is_some_and(|w| w.reason.as_deref() == Some("CrashLoopBackOff"))
            });
        if !reported {
            let message = format!(
                "Back-off restarting failed container {} in pod {pod_desc}",
                c.name
            );
            self.record(pod, &c.name, "Warning", "BackOff", &message)
                .await;
        }
        ContainerState::Waiting {
            reason: "CrashLoopBackOff".into(),
            message: Some(format!(
                "back-off {} restarting failed container={} pod={pod_desc}",
                go_duration(delay),
                c.name
            )),
        }
    }

    /// Stops and removes everything of a pod, then deletes it from the API.
    async fn terminate(&self, pod: &Pod) -> Result<(), PodError> {
        let name = pod.name_any();
        let uid = pod.uid().unwrap_or_default();
        let grace = Duration::from_secs(
            pod.metadata
                .deletion_grace_period_seconds
                .unwrap_or(30)
                .max(0) as u64,
        );
        // Endpoint-first termination: the service proxies stop sending new connections
        // before anything stops; the wait counts inside the grace period.
        let waited = self.wait_for_deregistration(pod, grace).await;
        let grace = grace.saturating_sub(waited);
        let containers = self.containers.clone();
        let network = self.network.clone();
        let pod_dir = self.pod_dir(&uid);
        let host_network = pod
            .spec
            .as_ref()
            .and_then(|s| s.host_network)
            .unwrap_or(false);
        if let Some(spec) = &pod.spec {
            for c in &spec.containers {
                let message = format!("Stopping container {}", c.name);
                self.record(pod, &c.name, "Normal", "Killing", &message)
                    .await;
            }
        }
        // Each running container runs its preStop hook and gets its stop signal within the
        // grace period, all at once; what is left is stopped below.
        self.stop_for_deletion(pod, grace).await;
        let uid2 = uid.clone();
        let logs_dir = self.logs_dir.clone();
        let images = self.images.clone();
        let container_images: Vec<(String, String)> = pod
            .spec
            .iter()
            .flat_map(|spec| {
                spec.init_containers
                    .iter()
                    .flatten()
                    .chain(spec.containers.iter())
            })
            .map(|c| (c.name.clone(), c.image.clone().unwrap_or_default()))
            .collect();
        blocking(move || -> Result<(), String> {
            // Each container stops with its image's STOPSIGNAL (nginx: SIGQUIT), else SIGTERM.
            let signals: HashMap<String, i32> = container_images
                .into_iter()
                .map(|(name, image)| {
                    let sig = match images.resolve(&image) {
                        Ok(Some(img)) => stop_signal(img.config.stop_signal.as_deref()),
                        _ => libc::SIGTERM,
                    };
                    (name, sig)
                })
                .collect();
            let prefix = format!("{uid2}-");
            let ids: Vec<String> = containers
                .list()
                .into_iter()
                .filter(|id| id.starts_with(&prefix))
                .collect();
            // Stop them together, so the grace period is the pod's, not per container.
            let handles: Vec<_> = ids
                .iter()
                .map(|id| {
                    let containers = containers.clone();
                    let id = id.clone();
                    // Ids are `<uid>-<container>-<attempt>`.
                    let name = id
                        .get(37..)
                        .and_then(|r| r.rsplit_once('-'))
                        .map(|(n, _)| n.to_string())
                        .unwrap_or_default();
                    let signal = signals.get(&name).copied().unwrap_or(libc::SIGTERM);
                    std::thread::spawn(move || containers.stop(&id, signal, grace))
                })
                .collect();
            for h in handles {
                let _ = h.join();
            }
            for id in &ids {
                containers.remove(id).map_err(|e| e.to_string())?;
            }
            let _ = berth_runtime::cgroup::remove_cgroup(
                &format!("/berth/pod{uid2}"),
                containers.cgroup_mode(),
            );
            if !host_network {
                Sandbox::destroy(&network, &uid2).map_err(|e| e.to_string())?;
            }
            // Volume mounts (tmpfs, subPaths) go before the directory.
            crate::mounts::remove_pod_dir(&pod_dir).map_err(|e| e.to_string())?;
            crate::cleanup::remove_logs(&logs_dir, &uid2);
            Ok(())
        })
        .await
        .map_err(|e| err("stop", &name, e))?
        .map_err(|e| err("stop", &name, e))?;
        self.sources.forget_pods(|u| u != uid);
        let api: Api<Pod> =
            Api::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default());
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(uid),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(&name, &dp).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
            Err(e) => Err(err("delete", &name, e)),
        }
    }

    /// Brings one pod's containers to its spec and reports its status.
    async fn sync(&self, pod: &Pod) -> Result<Action, PodError> {
        if pod.metadata.deletion_timestamp.is_some() {
            self.terminate(pod).await?;
            return Ok(Action::await_change());
        }
        let name = pod.name_any();
        let uid = pod.uid().unwrap_or_default();
        let Some(spec) = &pod.spec else {
            return Ok(Action::await_change());
        };
        let phase = pod
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default();
        let restart_policy = spec
            .restart_policy
            .clone()
            .unwrap_or_else(|| "Always".into());
        let host_network = spec.host_network.unwrap_or(false);
        // The sandbox: the pod's network namespace, wired by CNI.
        let (netns, pod_ip) = if host_network {
            (
                None,
                self.node_ip.clone().unwrap_or_else(|| "127.0.0.1".into()),
            )
        } else {
            let ports: Vec<berth_net::PortMapping> = spec
                .containers
                .iter()
                .flat_map(|c| c.ports.clone().unwrap_or_default())
                .filter_map(|p| {
                    let host_port = u16::try_from(p.host_port?).ok().filter(|h| *h > 0)?;
                    Some(berth_net::PortMapping {
                        host_port,
                        container_port: u16::try_from(p.container_port).ok()?,
                        protocol: match p.protocol.as_deref() {
                            Some("UDP") => berth_net::Protocol::Udp,
                            Some("SCTP") => berth_net::Protocol::Sctp,
                            _ => berth_net::Protocol::Tcp,
                        },
                        host_ip: None,
                    })
                })
                .collect();
            let network = self.network.clone();
            let u = uid.clone();
            let info = blocking(move || Sandbox::create(&network, &u, &ports))
                .await
                .map_err(|e| err("create the pod sandbox", &name, e))?
                .map_err(|e| err("create the pod sandbox", &name, e))?;
            (Some(info.netns_path), info.ip.to_string())
        };
        // Volumes and /etc files are made when a container is about to start, not on every
        // status sync.
        let prepared = tokio::sync::OnceCell::new();
        let containers = self.containers.clone();
        let all_ids = blocking(move || containers.list())
            .await
            .map_err(|e| err("list containers", &name, e))?;
        let terminal = phase == "Succeeded" || phase == "Failed";
        // Init containers in order; the containers once they all succeeded.
        let mut init_obs = Vec::new();
        let mut initialized = true;
        for c in spec.init_containers.clone().unwrap_or_default() {
            let start = initialized && !terminal;
            let o = self
                .sync_container(
                    pod,
                    &c,
                    &all_ids,
                    if restart_policy == "Never" {
                        "Never"
                    } else {
                        "OnFailure"
                    },
                    &netns,
                    &pod_ip,
                    &prepared,
                    start,
                )
                .await;
            let done = matches!(o.state, ContainerState::Terminated { exit_code: 0, .. });
            initialized &= done;
            init_obs.push(o);
        }
        let mut obs = Vec::new();
        for c in &spec.containers {
            obs.push(
                self.sync_container(
                    pod,
                    c,
                    &all_ids,
                    &restart_policy,
                    &netns,
                    &pod_ip,
                    &prepared,
                    initialized && !terminal,
                )
                .await,
            );
        }
        // Running pods' configMap, secret, downwardAPI and projected volumes follow their
        // sources: refreshed when one changed, no volume work otherwise.
        if self.sources.take_stale(pod) {
            self.refresh_volumes(pod).await;
        }
        let previous = pod
            .status
            .as_ref()
            .and_then(|s| serde_json::to_value(s).ok())
            .unwrap_or(json!({}));
        let status = pod_status(
            &restart_policy,
            &init_obs,
            &obs,
            &previous,
            Some(&pod_ip),
            self.node_ip.as_deref(),
            &now(),
        );
        if !same_status(&previous, &status) {
            let api: Api<Pod> =
                Api::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default());
            api.patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": status})),
            )
            .await
            .map_err(|e| err("report the status", &name, e))?;
        }
        // A pod whose containers all run (or that finished) changes only on events: the
        // relist sees its containers exit, the prober its verdicts, the watches its spec and
        // sources; it is synced again at the resync period. Anything on its way (starting,
        // pulling, backing off, initializing) is looked at again in a second.
        let all_running = obs
            .iter()
            .all(|o| matches!(o.state, ContainerState::Running { .. }));
        let settled = terminal || (initialized && all_running);
        Ok(Action::requeue(if settled {
            RESYNC_PERIOD
        } else {
            Duration::from_secs(1)
        }))
    }
}

/// How often the node's containers are listed to notice their state changes (upstream's
/// PLEG relist period): the shims write exits to disk, nothing pushes them.
const RELIST_PERIOD: Duration = Duration::from_secs(1);

/// How often a settled pod is synced without an event (upstream's kubelet `syncFrequency`).
const RESYNC_PERIOD: Duration = Duration::from_secs(60);

/// Upstream's pod lifecycle event generator, relisting: once per [`RELIST_PERIOD`] it reads
/// every container's state (files and `/proc`, no runtime call) and sends the pods whose
/// containers changed (started, exited, appeared, went) to the pod worker.
async fn relist(
    runtime: Arc<PodRuntime>,
    pods: kube::runtime::reflector::Store<Pod>,
    changed: futures::channel::mpsc::UnboundedSender<ObjectRef<Pod>>,
) {
    let mut seen: HashMap<String, &'static str> = HashMap::new();
    let mut tick = tokio::time::interval(RELIST_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let containers = runtime.containers.clone();
        let Ok(now) = blocking(move || {
            containers
                .list()
                .into_iter()
                .map(|id| {
                    let state = match containers.status(&id) {
                        Ok(ContainerStatus::Running { .. }) => "running",
                        Ok(ContainerStatus::Exited { .. }) => "exited",
                        Ok(ContainerStatus::Unknown { .. }) => "unknown",
                        Err(_) => "unreadable",
                    };
                    (id, state)
                })
                .collect::<HashMap<String, &'static str>>()
        })
        .await
        else {
            continue;
        };
        // Container ids are `<pod uid>-<container>-<attempt>`.
        let uid_of = |id: &str| id.get(..36).map(str::to_string);
        let mut uids: std::collections::HashSet<String> = now
            .iter()
            .filter(|(id, state)| seen.get(*id) != Some(*state))
            .filter_map(|(id, _)| uid_of(id))
            .collect();
        uids.extend(
            seen.keys()
                .filter(|id| !now.contains_key(*id))
                .filter_map(|id| uid_of(id)),
        );
        seen = now;
        if uids.is_empty() {
            continue;
        }
        for pod in pods.state() {
            if pod.uid().is_some_and(|u| uids.contains(&u)) {
                let _ = changed.unbounded_send(ObjectRef::from_obj(pod.as_ref()));
            }
        }
    }
}

/// Statuses equal but for heartbeat-like times that change on every sync.
fn same_status(a: &Value, b: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(cs) = v.get_mut("containerStatuses").and_then(Value::as_array_mut) {
            for c in cs {
                if let Some(w) = c.pointer_mut("/state/running") {
                    *w = json!({});
                }
            }
        }
        v
    };
    strip(a) == strip(b)
}

/// How often leftovers of deleted pods are looked for.
const ORPHAN_SCAN_INTERVAL: Duration = Duration::from_secs(5);

/// Runs the pod worker until `shutdown` resolves.
pub async fn run(
    runtime: PodRuntime,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let pods: Api<Pod> = Api::all(runtime.client.clone());
    let selector = format!("spec.nodeName={}", runtime.node_name);
    let runtime = Arc::new(runtime);
    runtime.prober.attach(&runtime);
    // Probe verdicts that change (readiness, startup) sync their pod at once.
    let wakeups = runtime.prober.wakeups();
    let sources = {
        let rt = runtime.clone();
        tokio::spawn(async move { rt.sources.watch(rt.client.clone()).await })
    };
    let controller = Controller::new(pods, watcher::Config::default().fields(&selector));
    let janitor = {
        let (rt, pods) = (runtime.clone(), controller.store());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(ORPHAN_SCAN_INTERVAL);
            loop {
                tick.tick().await;
                if let Err(e) = rt.cleanup_orphans(&pods).await {
                    tracing::warn!("{e}");
                }
            }
        })
    };
    // A ConfigMap or Secret that changed syncs the pods whose volumes read it, which
    // refresh those volumes.
    let source_changes = {
        let (rt, pods) = (runtime.clone(), controller.store());
        runtime.sources.changes().flat_map(move |change| {
            let due: Vec<ObjectRef<Pod>> = pods
                .state()
                .iter()
                .filter(|p| crate::volumes::mounts_source(p, &change))
                .map(|p| {
                    rt.sources.mark_stale(&p.uid().unwrap_or_default());
                    ObjectRef::from_obj(p.as_ref())
                })
                .collect();
            futures::stream::iter(due)
        })
    };
    // Containers that start or exit sync their pod.
    let (relisted_tx, relisted) = futures::channel::mpsc::unbounded();
    let relister = tokio::spawn(relist(runtime.clone(), controller.store(), relisted_tx));
    controller
        .reconcile_on(wakeups)
        .reconcile_on(source_changes)
        .reconcile_on(relisted)
        .graceful_shutdown_on(shutdown)
        .run(
            |pod: Arc<Pod>, rt: Arc<PodRuntime>| async move { rt.sync(&pod).await },
            |_pod, error: &PodError, _rt| {
                tracing::warn!("{error}");
                Action::requeue(Duration::from_secs(2))
            },
            runtime,
        )
        .for_each(|_| async {})
        .await;
    janitor.abort();
    relister.abort();
    sources.abort();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_signals_from_images() {
        assert_eq!(stop_signal(None), libc::SIGTERM);
        assert_eq!(stop_signal(Some("SIGQUIT")), libc::SIGQUIT);
        assert_eq!(stop_signal(Some("QUIT")), libc::SIGQUIT);
        assert_eq!(stop_signal(Some("9")), 9);
        assert_eq!(stop_signal(Some("SIGBOGUS")), libc::SIGTERM);
    }

    #[test]
    fn attempts_and_backoff() {
        let ids = vec![
            "u-app-0".to_string(),
            "u-app-2".to_string(),
            "u-app-1".to_string(),
            "u-side-0".to_string(),
            "v-app-0".to_string(),
        ];
        assert_eq!(attempts(&ids, "u", "app"), vec![0, 1, 2]);
        assert_eq!(attempts(&ids, "u", "side"), vec![0]);
        assert_eq!(backoff(0), Duration::from_secs(10));
        assert_eq!(backoff(3), Duration::from_secs(80));
        assert_eq!(backoff(10), Duration::from_secs(300));
        assert_eq!(go_duration(backoff(1)), "20s");
        assert_eq!(go_duration(backoff(3)), "1m20s");
        assert_eq!(go_duration(backoff(10)), "5m0s");
    }
}
