//! The Job controller: runs a Job's pods to completion (NonIndexed and Indexed completion
//! modes, parallelism, completions), recreates failed pods with upstream's back-off until
//! `backoffLimit`, applies `podFailurePolicy`, `activeDeadlineSeconds` and `suspend`, reports
//! the status and the `SuccessCriteriaMet`/`Complete` and `FailureTarget`/`Failed`
//! conditions, and deletes finished Jobs after `ttlSecondsAfterFinished` (upstream's TTL
//! controller). Succeeded and failed pods are counted from the pods themselves (kept, as
//! upstream keeps them), not through job-tracking finalizers.

use crate::cache::{Cache, Change, Informer};
use crate::pods::{self, Events, Expectations};
use crate::queue::{is_conflict, key, run_workers, Queue, ReconcileError, Requeue};
use k8s_openapi::api::batch::v1::{
    Job, JobCondition, JobStatus, PodFailurePolicy, UncountedTerminatedPods,
};
use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, ObjectFieldSelector, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::chrono::{DateTime, Utc};
use kube::api::{Api, DeleteParams, PostParams, Preconditions, PropagationPolicy};
use kube::{Resource, ResourceExt};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The annotation and label holding an Indexed Job pod's index.
pub const COMPLETION_INDEX: &str = "batch.kubernetes.io/job-completion-index";
/// The first delay before recreating a failed pod; it doubles per failure.
pub const BACKOFF_BASE: Duration = Duration::from_secs(10);
/// The longest delay before recreating a failed pod.
pub const BACKOFF_MAX: Duration = Duration::from_secs(360);

/// Errors of one reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to {what} for Job {key}: {source}")]
    Api {
        what: &'static str,
        key: String,
        source: kube::Error,
    },
    #[error("failed to encode Job {0}: {1}")]
    Encode(String, serde_json::Error),
}

impl ReconcileError for Error {
    fn is_conflict(&self) -> bool {
        matches!(self, Error::Api { source, .. } if is_conflict(source))
    }
}

/// The controller's state.
pub struct Controller {
    cache: Arc<Cache>,
    jobs: Arc<Informer<Job>>,
    pods: Arc<Informer<Pod>>,
    queue: Arc<Queue<String>>,
    expectations: Arc<Expectations>,
    events: Events,
}

fn split(key: &str) -> (&str, &str) {
    key.split_once('/').unwrap_or(("", key))
}

/// Registers the controller's informers on `cache`.
pub fn new(cache: &Arc<Cache>) -> Arc<Controller> {
    let c = Arc::new(Controller {
        cache: cache.clone(),
        jobs: cache.informer(),
        pods: cache.informer(),
        queue: Queue::new(),
        expectations: Arc::new(Expectations::default()),
        events: Events::new(cache.client().clone(), "job-controller"),
    });
    let (q, exp) = (c.queue.clone(), c.expectations.clone());
    c.jobs.subscribe(move |change| {
        let j = change.object();
        let k = key(&j.namespace().unwrap_or_default(), &j.name_any());
        if let Change::Deleted(_) = change {
            exp.forget(&k);
        }
        q.add(k);
    });
    let (q, exp) = (c.queue.clone(), c.expectations.clone());
    c.pods.subscribe(move |change| {
        let pod = change.object();
        let Some(k) = pods::controller_key::<Job>(&pod.metadata) else {
            return;
        };
        if let Change::Applied { old: None, .. } = change {
            exp.creation_observed(&k);
        }
        q.add(k);
    });
    c
}

/// Runs the controller until `stop` turns true.
pub async fn run(c: Arc<Controller>, stop: watch::Receiver<bool>) {
    c.jobs.wait_synced().await;
    c.pods.wait_synced().await;
    let queue = c.queue.clone();
    run_workers(
        "job",
        queue,
        4,
        move |k: String| c.clone().reconcile(k),
        stop,
    )
    .await;
}

fn phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

/// The index of an Indexed Job's pod, from its annotation (or label).
pub fn pod_index(p: &Pod) -> Option<i32> {
    p.annotations()
        .get(COMPLETION_INDEX)
        .or_else(|| p.labels().get(COMPLETION_INDEX))
        .and_then(|v| v.parse().ok())
}

/// When a pod finished: its containers' latest termination, else its last condition change.
fn finished_at(p: &Pod) -> Option<DateTime<Utc>> {
    let st = p.status.as_ref()?;
    let terminated = st
        .container_statuses
        .iter()
        .flatten()
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref())
        .map(|t| t.0)
        .max();
    terminated.or_else(|| {
        st.conditions
            .iter()
            .flatten()
            .filter_map(|c| c.last_transition_time.as_ref().map(|t| t.0))
            .max()
    })
}

/// Upstream's back-off before recreating pods after `failures` consecutive failures.
pub fn backoff(failures: u32) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    let shift = (failures - 1).min(16);
    BACKOFF_BASE.saturating_mul(1 << shift).min(BACKOFF_MAX)
}

/// The action of the first `podFailurePolicy` rule matching a failed pod, if any.
pub fn failure_policy_action<'a>(policy: &'a PodFailurePolicy, pod: &Pod) -> Option<&'a str> {
    let status = pod.status.as_ref();
    for rule in &policy.rules {
        if let Some(req) = &rule.on_exit_codes {
            let codes: Vec<i32> = status
                .into_iter()
                .flat_map(|s| s.container_statuses.iter().flatten())
                .filter(|c| req.container_name.as_ref().is_none_or(|n| *n == c.name))
                .filter_map(|c| c.state.as_ref()?.terminated.as_ref().map(|t| t.exit_code))
                .filter(|c| *c != 0)
                .collect();
            let hit = match req.operator.as_str() {
                "In" => codes.iter().any(|c| req.values.contains(c)),
                "NotIn" => codes.iter().any(|c| !req.values.contains(c)),
                _ => false,
            };
            if hit {
                return Some(&rule.action);
            }
        }
        if let Some(patterns) = &rule.on_pod_conditions {
            let hit = patterns.iter().any(|pat| {
                status
                    .into_iter()
                    .flat_map(|s| s.conditions.iter().flatten())
                    .any(|c| c.type_ == pat.type_ && c.status == pat.status)
            });
            if hit {
                return Some(&rule.action);
            }
        }
    }
    None
}

/// Indexes as upstream's compressed interval list ("0-2,5").
pub fn format_indexes(indexes: &BTreeSet<i32>) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut iter = indexes.iter().copied().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end += 1;
            iter.next();
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
    }
    parts.join(",")
}

fn has_condition(status: &JobStatus, type_: &str) -> bool {
    status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == type_ && c.status == "True")
}

fn condition_time(status: &JobStatus, type_: &str) -> Option<DateTime<Utc>> {
    status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == type_ && c.status == "True")
        .and_then(|c| c.last_transition_time.as_ref().map(|t| t.0))
}

/// Sets condition `type_` (replacing one of the same type), keeping its transition time when
/// nothing changed.
fn set_condition(
    status: &mut JobStatus,
    type_: &str,
    value: &str,
    reason: &str,
    message: &str,
    now: DateTime<Utc>,
) {
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    if let Some(c) = conditions.iter_mut().find(|c| c.type_ == type_) {
        let same = c.status == value
            && c.reason.as_deref() == Some(reason)
            && c.message.as_deref() == Some(message);
        if same {
            // Unchanged: no write (and no watch event feeding another reconcile).
            return;
        }
        if c.status != value {
            c.last_transition_time = Some(Time(now));
        }
        c.status = value.into();
        c.reason = Some(reason.into());
        c.message = Some(message.into());
        c.last_probe_time = Some(Time(now));
        return;
    }
    conditions.push(JobCondition {
        type_: type_.into(),
        status: value.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_probe_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    });
}

/// Whether a Job has finished (Complete or Failed).
pub fn is_finished(job: &Job) -> bool {
    job.status
        .as_ref()
        .is_some_and(|s| has_condition(s, "Complete") || has_condition(s, "Failed"))
}

/// What the pods of a Job add up to.
#[derive(Debug, Default, PartialEq)]
pub struct Tally {
    pub active: usize,
    pub terminating: usize,
    pub ready: usize,
    pub succeeded: usize,
    /// Failed pods counted against backoffLimit (not ignored by the podFailurePolicy).
    pub failed: usize,
    /// Indexed Jobs: the indexes that succeeded (below completions).
    pub completed_indexes: BTreeSet<i32>,
    /// Indexes of active pods.
    pub active_indexes: BTreeSet<i32>,
    /// A pod matched a FailJob rule: its message.
    pub fail_job: Option<String>,
    /// Failures since the last success, and when the latest of them finished.
    pub recent_failures: u32,
    pub last_failure: Option<DateTime<Utc>>,
}

/// Adds up a Job's pods.
pub fn tally(job: &Job, owned: &[Arc<Pod>]) -> Tally {
    let spec = job.spec.clone().unwrap_or_default();
    let indexed = spec.completion_mode.as_deref() == Some("Indexed");
    let completions = spec.completions.unwrap_or(1);
    let mut t = Tally::default();
    let mut last_success: Option<DateTime<Utc>> = None;
    let mut failures: Vec<Option<DateTime<Utc>>> = Vec::new();
    for p in owned {
        match phase(p) {
            "Succeeded" => {
                t.succeeded += 1;
                last_success = last_success.max(finished_at(p));
                if indexed {
                    if let Some(i) = pod_index(p).filter(|i| (0..completions).contains(i)) {
                        t.completed_indexes.insert(i);
                    }
                }
            }
            "Failed" => {
                let action = spec
                    .pod_failure_policy
                    .as_ref()
                    .and_then(|pol| failure_policy_action(pol, p));
                match action {
                    Some("Ignore") => {}
                    Some("FailJob") => {
                        t.failed += 1;
                        failures.push(finished_at(p));
                        t.fail_job.get_or_insert_with(|| {
                            format!(
                                "Pod {}/{} failed with a podFailurePolicy FailJob rule",
                                p.namespace().unwrap_or_default(),
                                p.name_any()
                            )
                        });
                    }
                    _ => {
                        t.failed += 1;
                        failures.push(finished_at(p));
                    }
                }
            }
            _ if p.metadata.deletion_timestamp.is_some() => t.terminating += 1,
            _ => {
                t.active += 1;
                if pods::is_ready(p) {
                    t.ready += 1;
                }
                if let Some(i) = pod_index(p) {
                    t.active_indexes.insert(i);
                }
            }
        }
    }
    if indexed {
        t.succeeded = t.completed_indexes.len();
    }
    for f in failures {
        if last_success.is_none() || f > last_success {
            t.recent_failures += 1;
            t.last_failure = t.last_failure.max(f);
        }
    }
    t
}

/// The indexes an Indexed Job should start now: neither completed nor running.
pub fn missing_indexes(completions: i32, t: &Tally, room: usize) -> Vec<i32> {
    (0..completions)
        .filter(|i| !t.completed_indexes.contains(i) && !t.active_indexes.contains(i))
        .take(room)
        .collect()
}

impl Controller {
    fn api_err(what: &'static str, key: &str) -> impl FnOnce(kube::Error) -> Error {
        let key = key.to_string();
        move |source| Error::Api { what, key, source }
    }

    async fn reconcile(self: Arc<Self>, k: String) -> Result<Requeue, Error> {
        let (ns, name) = split(&k);
        let Some(job) = self.jobs.get(ns, name) else {
            self.expectations.forget(&k);
            return Ok(None);
        };
        let now = Utc::now();
        let old = job.status.clone().unwrap_or_default();
        if is_finished(&job) {
            return self.ttl(&k, &job, &old, now).await;
        }
        if job.metadata.deletion_timestamp.is_some() {
            return Ok(None);
        }
        let spec = job.spec.clone().unwrap_or_default();
        let uid = job.metadata.uid.clone().unwrap_or_default();
        let owned: Vec<Arc<Pod>> = self
            .pods
            .list_namespace(ns)
            .into_iter()
            .filter(|p| pods::controller_of(&p.metadata).is_some_and(|r| r.uid == uid))
            .collect();
        let satisfied = self.expectations.satisfied(&k);
        let t = tally(&job, &owned);
        let indexed = spec.completion_mode.as_deref() == Some("Indexed");
        let parallelism = usize::try_from(spec.parallelism.unwrap_or(1).max(0)).unwrap_or(0);
        let backoff_limit = usize::try_from(spec.backoff_limit.unwrap_or(6).max(0)).unwrap_or(0);
        let suspended = spec.suspend == Some(true);
        let reference = job.object_ref(&());
        let mut status = old.clone();
        let mut requeue: Requeue = None;
        if status.start_time.is_none() && !suspended {
            status.start_time = Some(Time(now));
        }

        // Finished? (the target conditions first, as upstream 1.31+)
        let complete = match spec.completions {
            Some(c) => t.succeeded >= usize::try_from(c.max(0)).unwrap_or(0),
            None => t.succeeded > 0 && t.active == 0,
        };
        let deadline = spec.active_deadline_seconds.and_then(|s| {
            let start = status.start_time.as_ref()?.0;
            Some(start + k8s_openapi::chrono::Duration::seconds(s))
        });
        let failure = if has_condition(&old, "FailureTarget") {
            old.conditions
                .iter()
                .flatten()
                .find(|c| c.type_ == "FailureTarget")
                .map(|c| {
                    (
                        c.reason.clone().unwrap_or_default(),
                        c.message.clone().unwrap_or_default(),
                    )
                })
        } else if let Some(m) = &t.fail_job {
            Some(("PodFailurePolicy".to_string(), m.clone()))
        } else if t.failed > backoff_limit {
            Some((
                "BackoffLimitExceeded".to_string(),
                "Job has reached the specified backoff limit".to_string(),
            ))
        } else if deadline.is_some_and(|d| d <= now) && !suspended {
            Some((
                "DeadlineExceeded".to_string(),
                "Job was active longer than specified deadline".to_string(),
            ))
        } else {
            None
        };

        let pod_api: Api<Pod> = Api::namespaced(self.cache.client().clone(), ns);
        if let Some((reason, message)) = &failure {
            set_condition(&mut status, "FailureTarget", "True", reason, message, now);
            self.delete_active(&owned, &pod_api, &reference).await;
            if t.active == 0 && t.terminating == 0 {
                set_condition(&mut status, "Failed", "True", reason, message, now);
                self.events
                    .warning(&reference, reason, message.clone())
                    .await;
            }
        } else if complete || has_condition(&old, "SuccessCriteriaMet") {
            let (reason, message) = (
                "CompletionsReached",
                "Reached expected number of succeeded pods",
            );
            set_condition(
                &mut status,
                "SuccessCriteriaMet",
                "True",
                reason,
                message,
                now,
            );
            self.delete_active(&owned, &pod_api, &reference).await;
            if t.active == 0 && t.terminating == 0 {
                set_condition(&mut status, "Complete", "True", reason, message, now);
                status.completion_time = Some(Time(now));
                self.events
                    .normal(&reference, "Completed", "Job completed".into())
                    .await;
            }
        } else if suspended {
            self.delete_active(&owned, &pod_api, &reference).await;
            if !has_condition(&old, "Suspended") {
                set_condition(
                    &mut status,
                    "Suspended",
                    "True",
                    "JobSuspended",
                    "Job suspended",
                    now,
                );
                self.events
                    .normal(&reference, "Suspended", "Job suspended".into())
                    .await;
            }
        } else {
            if has_condition(&old, "Suspended") {
                set_condition(
                    &mut status,
                    "Suspended",
                    "False",
                    "JobResumed",
                    "Job resumed",
                    now,
                );
                status.start_time = Some(Time(now));
                self.events
                    .normal(&reference, "Resumed", "Job resumed".into())
                    .await;
            }
            if let Some(d) = deadline {
                requeue = (d - now).to_std().ok();
            }
            // Back-off after failures before starting replacements.
            let wait = t
                .last_failure
                .map(|f| f + backoff(t.recent_failures))
                .and_then(|at| (at - now).to_std().ok())
                .filter(|d| !d.is_zero());
            if let Some(w) = wait {
                requeue = Some(requeue.map_or(w, |r| r.min(w)));
            } else if satisfied {
                self.start_pods(&k, &job, &t, parallelism, indexed).await?;
            }
        }

        status.active = Some(i32::try_from(t.active).unwrap_or(i32::MAX));
        status.ready = Some(i32::try_from(t.ready).unwrap_or(i32::MAX));
        status.terminating = Some(i32::try_from(t.terminating).unwrap_or(i32::MAX));
        status.succeeded = Some(i32::try_from(t.succeeded).unwrap_or(i32::MAX));
        status.failed = Some(i32::try_from(t.failed).unwrap_or(i32::MAX));
        if indexed {
            status.completed_indexes = Some(format_indexes(&t.completed_indexes));
        }
        status.uncounted_terminated_pods = (!has_condition(&status, "Complete")
            && !has_condition(&status, "Failed"))
        .then(UncountedTerminatedPods::default);
        if old != status {
            self.write_status(&k, &job, status).await?;
        }
        Ok(requeue.map(|d| d + Duration::from_millis(100)))
    }

    async fn write_status(&self, k: &str, job: &Job, status: JobStatus) -> Result<(), Error> {
        let (ns, name) = split(k);
        let mut updated = job.clone();
        updated.status = Some(status);
        updated.metadata.managed_fields = None;
        let body = serde_json::to_vec(&updated).map_err(|e| Error::Encode(k.to_string(), e))?;
        let api: Api<Job> = Api::namespaced(self.cache.client().clone(), ns);
        match api.replace_status(name, &PostParams::default(), body).await {
            Ok(_) | Err(kube::Error::Api(kube::core::ErrorResponse { code: 404, .. })) => Ok(()),
            Err(e) => Err(Self::api_err("update the status", k)(e)),
        }
    }

    /// Deletes the Job's running pods (a finished or suspended Job keeps none).
    async fn delete_active(
        &self,
        owned: &[Arc<Pod>],
        api: &Api<Pod>,
        reference: &k8s_openapi::api::core::v1::ObjectReference,
    ) {
        for p in owned {
            if matches!(phase(p), "Succeeded" | "Failed") || p.metadata.deletion_timestamp.is_some()
            {
                continue;
            }
            let dp = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: p.metadata.uid.clone(),
                    resource_version: None,
                }),
                ..Default::default()
            };
            match api.delete(&p.name_any(), &dp).await {
                Ok(_) => {
                    self.events
                        .normal(
                            reference,
                            "SuccessfulDelete",
                            format!("Deleted pod: {}", p.name_any()),
                        )
                        .await
                }
                Err(e) => tracing::debug!("failed to delete pod {}: {e}", p.name_any()),
            }
        }
    }

    async fn start_pods(
        &self,
        k: &str,
        job: &Arc<Job>,
        t: &Tally,
        parallelism: usize,
        indexed: bool,
    ) -> Result<(), Error> {
        let spec = job.spec.clone().unwrap_or_default();
        let room = parallelism.saturating_sub(t.active);
        let indexes: Vec<Option<i32>> = if indexed {
            missing_indexes(spec.completions.unwrap_or(1), t, room)
                .into_iter()
                .map(Some)
                .collect()
        } else {
            let remaining = match spec.completions {
                Some(c) => usize::try_from(c.max(0))
                    .unwrap_or(0)
                    .saturating_sub(t.succeeded + t.active),
                None if t.succeeded > 0 => 0,
                None => parallelism.saturating_sub(t.active),
            };
            vec![None; room.min(remaining)]
        };
        if indexes.is_empty() {
            return Ok(());
        }
        let ns = job.namespace().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.cache.client().clone(), &ns);
        let reference = job.object_ref(&());
        self.expectations.expect_creations(k, indexes.len());
        let mut failure = None;
        for index in indexes {
            let pod = job_pod(job, index);
            match api.create(&PostParams::default(), &pod).await {
                Ok(p) => {
                    self.events
                        .normal(
                            &reference,
                            "SuccessfulCreate",
                            format!("Created pod: {}", p.name_any()),
                        )
                        .await
                }
                Err(e) => {
                    self.expectations.creation_observed(k);
                    self.events
                        .warning(&reference, "FailedCreate", format!("Error creating: {e}"))
                        .await;
                    failure.get_or_insert(e);
                }
            }
        }
        match failure {
            Some(e) => Err(Self::api_err("create a pod", k)(e)),
            None => Ok(()),
        }
    }

    /// Deletes a finished Job once `ttlSecondsAfterFinished` has passed (upstream's TTL
    /// controller, with foreground deletion).
    async fn ttl(
        &self,
        k: &str,
        job: &Job,
        status: &JobStatus,
        now: DateTime<Utc>,
    ) -> Result<Requeue, Error> {
        let Some(ttl) = job.spec.as_ref().and_then(|s| s.ttl_seconds_after_finished) else {
            return Ok(None);
        };
        if job.metadata.deletion_timestamp.is_some() {
            return Ok(None);
        }
        let finished = status
            .completion_time
            .as_ref()
            .map(|t| t.0)
            .or_else(|| condition_time(status, "Failed"))
            .or_else(|| condition_time(status, "Complete"))
            .unwrap_or(now);
        let expires = finished + k8s_openapi::chrono::Duration::seconds(i64::from(ttl));
        if let Ok(left) = (expires - now).to_std() {
            if !left.is_zero() {
                return Ok(Some(left + Duration::from_millis(100)));
            }
        }
        let (ns, name) = split(k);
        let api: Api<Job> = Api::namespaced(self.cache.client().clone(), ns);
        let dp = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Foreground),
            preconditions: Some(Preconditions {
                uid: job.metadata.uid.clone(),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(name, &dp).await {
            Ok(_)
            | Err(kube::Error::Api(kube::core::ErrorResponse {
                code: 404 | 409, ..
            })) => Ok(None),
            Err(e) => Err(Self::api_err("delete the expired Job", k)(e)),
        }
    }
}

/// A pod for `job` (with the completion index of an Indexed Job).
pub fn job_pod(job: &Job, index: Option<i32>) -> Pod {
    let spec = job.spec.clone().unwrap_or_default();
    let name = job.name_any();
    let prefix = match index {
        Some(i) => format!("{name}-{i}-"),
        None => format!("{name}-"),
    };
    let mut pod = pods::pod_from_template(
        &spec.template,
        &job.namespace().unwrap_or_default(),
        &prefix,
        pods::controller_ref(job),
    );
    if let Some(i) = index {
        pod.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(COMPLETION_INDEX.into(), i.to_string());
        pod.metadata
            .labels
            .get_or_insert_with(Default::default)
            .insert(COMPLETION_INDEX.into(), i.to_string());
        let env = EnvVar {
            name: "JOB_COMPLETION_INDEX".into(),
            value: None,
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    api_version: None,
                    field_path: format!("metadata.annotations['{COMPLETION_INDEX}']"),
                }),
                ..Default::default()
            }),
        };
        if let Some(ps) = pod.spec.as_mut() {
            if ps.hostname.is_none() {
                ps.hostname = Some(format!("{name}-{i}"));
            }
            let containers = ps
                .containers
                .iter_mut()
                .chain(ps.init_containers.iter_mut().flatten());
            for c in containers {
                let envs = c.env.get_or_insert_with(Vec::new);
                if !envs.iter().any(|e| e.name == env.name) {
                    envs.push(env.clone());
                }
            }
        }
    }
    pod
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::{
        JobSpec, PodFailurePolicyOnExitCodesRequirement, PodFailurePolicyRule,
    };
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateTerminated, ContainerStatus, PodStatus,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn pod(phase: &str, index: Option<i32>, exit: i32, secs_ago: i64) -> Arc<Pod> {
        let mut annotations = std::collections::BTreeMap::new();
        if let Some(i) = index {
            annotations.insert(COMPLETION_INDEX.to_string(), i.to_string());
        }
        Arc::new(Pod {
            metadata: ObjectMeta {
                name: Some(format!("p-{phase}-{index:?}-{secs_ago}")),
                annotations: Some(annotations),
                ..Default::default()
            },
            spec: None,
            status: Some(PodStatus {
                phase: Some(phase.into()),
                container_statuses: Some(vec![ContainerStatus {
                    name: "c".into(),
                    state: Some(ContainerState {
                        terminated: Some(ContainerStateTerminated {
                            exit_code: exit,
                            finished_at: Some(Time(
                                Utc::now() - k8s_openapi::chrono::Duration::seconds(secs_ago),
                            )),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        })
    }

    fn job(indexed: bool, completions: i32) -> Job {
        Job {
            spec: Some(JobSpec {
                completions: Some(completions),
                completion_mode: Some(if indexed { "Indexed" } else { "NonIndexed" }.into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn backoff_doubles_from_ten_seconds_up_to_six_minutes() {
        assert_eq!(backoff(0), Duration::ZERO);
        assert_eq!(backoff(1), Duration::from_secs(10));
        assert_eq!(backoff(2), Duration::from_secs(20));
        assert_eq!(backoff(4), Duration::from_secs(80));
        assert_eq!(backoff(6), Duration::from_secs(320));
        assert_eq!(backoff(7), Duration::from_secs(360));
        assert_eq!(backoff(60), Duration::from_secs(360));
    }

    #[test]
    fn indexed_bookkeeping_counts_each_index_once() {
        let j = job(true, 5);
        let pods = vec![
            pod("Succeeded", Some(0), 0, 5),
            pod("Succeeded", Some(0), 0, 4),
            pod("Succeeded", Some(2), 0, 3),
            pod("Succeeded", Some(3), 0, 3),
            pod("Succeeded", Some(9), 0, 3),
            pod("Running", Some(1), 0, 0),
        ];
        let t = tally(&j, &pods);
        assert_eq!(t.succeeded, 3);
        assert_eq!(format_indexes(&t.completed_indexes), "0,2-3");
        assert_eq!(missing_indexes(5, &t, 10), [4]);
        assert_eq!(
            format_indexes(&BTreeSet::from([0, 1, 2, 4, 6, 7])),
            "0-2,4,6-7"
        );
    }

    #[test]
    fn failures_count_since_the_last_success() {
        let j = job(false, 3);
        let pods = vec![
            pod("Failed", None, 1, 100),
            pod("Succeeded", None, 0, 50),
            pod("Failed", None, 1, 20),
            pod("Failed", None, 1, 10),
        ];
        let t = tally(&j, &pods);
        assert_eq!((t.succeeded, t.failed, t.recent_failures), (1, 3, 2));
        assert!(t.last_failure.is_some());
    }

    #[test]
    fn pod_failure_policy_ignores_and_fails() {
        let mut j = job(false, 1);
        let rule = |action: &str, codes: Vec<i32>| PodFailurePolicyRule {
            action: action.into(),
            on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement {
                container_name: None,
                operator: "In".into(),
                values: codes,
            }),
            on_pod_conditions: None,
        };
        if let Some(s) = j.spec.as_mut() {
            s.pod_failure_policy = Some(PodFailurePolicy {
                rules: vec![rule("Ignore", vec![3]), rule("FailJob", vec![42])],
            });
        }
        let t = tally(&j, &[pod("Failed", None, 3, 5), pod("Failed", None, 1, 5)]);
        assert_eq!(t.failed, 1);
        assert!(t.fail_job.is_none());
        let t = tally(&j, &[pod("Failed", None, 42, 5)]);
        assert!(t.fail_job.is_some());
    }

    #[test]
    fn indexed_pods_get_index_hostname_and_env() {
        let mut j = job(true, 3);
        j.metadata.name = Some("work".into());
        if let Some(s) = j.spec.as_mut() {
            s.template.spec = Some(k8s_openapi::api::core::v1::PodSpec {
                containers: vec![Default::default()],
                ..Default::default()
            });
        }
        let p = job_pod(&j, Some(2));
        assert_eq!(p.metadata.generate_name.as_deref(), Some("work-2-"));
        assert_eq!(
            p.annotations().get(COMPLETION_INDEX).map(String::as_str),
            Some("2")
        );
        let ps = p.spec.unwrap_or_default();
        assert_eq!(ps.hostname.as_deref(), Some("work-2"));
        assert_eq!(
            ps.containers[0].env.as_ref().map(|e| e[0].name.as_str()),
            Some("JOB_COMPLETION_INDEX")
        );
    }
}
