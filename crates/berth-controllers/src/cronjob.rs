//! The CronJob controller: creates a Job `<cronjob>-<minutes since epoch>` at each scheduled
//! time (in `timeZone`), honouring `concurrencyPolicy`, `startingDeadlineSeconds` (and
//! upstream's too-many-missed-start-times warning), `suspend` and the history limits, keeps
//! `status.active`, `lastScheduleTime` and `lastSuccessfulTime`, and requeues itself exactly
//! at the next scheduled time.

use crate::cache::{Cache, Informer};
use crate::pods::{self, Events};
use crate::queue::{is_conflict, key, run_workers, Queue, ReconcileError, Requeue};
use crate::schedule::{Schedule, Zone};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::chrono::{DateTime, Duration as ChronoDuration, Utc};
use kube::api::{Api, DeleteParams, PostParams, PropagationPolicy};
use kube::{Resource, ResourceExt};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The annotation with the time a Job was scheduled for.
pub const SCHEDULED_TIMESTAMP: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";
/// More missed start times than this get upstream's TooManyMissedTimes warning.
pub const MAX_MISSED: usize = 100;

/// Errors of one reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to {what} for CronJob {key}: {source}")]
    Api {
        what: &'static str,
        key: String,
        source: kube::Error,
    },
    #[error("failed to encode CronJob {0}: {1}")]
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
    cronjobs: Arc<Informer<CronJob>>,
    jobs: Arc<Informer<Job>>,
    queue: Arc<Queue<String>>,
    events: Events,
}

fn split(key: &str) -> (&str, &str) {
    key.split_once('/').unwrap_or(("", key))
}

/// Registers the controller's informers on `cache`.
pub fn new(cache: &Arc<Cache>) -> Arc<Controller> {
    let c = Arc::new(Controller {
        cache: cache.clone(),
        cronjobs: cache.informer(),
        jobs: cache.informer(),
        queue: Queue::new(),
        events: Events::new(cache.client().clone(), "cronjob-controller"),
    });
    let q = c.queue.clone();
    c.cronjobs.subscribe(move |change| {
        let cj = change.object();
        q.add(key(&cj.namespace().unwrap_or_default(), &cj.name_any()));
    });
    let q = c.queue.clone();
    c.jobs.subscribe(move |change| {
        let j = change.object();
        if let Some(r) = pods::controller_of(&j.metadata) {
            if r.kind == "CronJob" && r.api_version == "batch/v1" {
                q.add(key(&j.namespace().unwrap_or_default(), &r.name));
            }
        }
    });
    c
}

/// Runs the controller until `stop` turns true.
pub async fn run(c: Arc<Controller>, stop: watch::Receiver<bool>) {
    c.cronjobs.wait_synced().await;
    c.jobs.wait_synced().await;
    let queue = c.queue.clone();
    run_workers(
        "cronjob",
        queue,
        2,
        move |k: String| c.clone().reconcile(k),
        stop,
    )
    .await;
}

fn finished_type(j: &Job) -> Option<&str> {
    j.status
        .as_ref()?
        .conditions
        .iter()
        .flatten()
        .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        .map(|c| c.type_.as_str())
}

/// The Job name for a scheduled time: `<cronjob>-<minutes since the epoch>`.
pub fn job_name(cronjob: &str, scheduled: DateTime<Utc>) -> String {
    format!("{cronjob}-{}", scheduled.timestamp() / 60)
}

/// The latest missed start time to run now (`None` if none is due), how many were missed,
/// and the next scheduled time after `now`.
pub fn due(
    schedule: &Schedule,
    zone: &Zone,
    cj: &CronJob,
    now: DateTime<Utc>,
) -> (Option<DateTime<Utc>>, usize, Option<DateTime<Utc>>) {
    let mut earliest = cj
        .status
        .as_ref()
        .and_then(|s| s.last_schedule_time.as_ref())
        .or(cj.metadata.creation_timestamp.as_ref())
        .map(|t| t.0)
        .unwrap_or(now);
    let deadline = cj.spec.as_ref().and_then(|s| s.starting_deadline_seconds);
    if let Some(d) = deadline {
        earliest = earliest.max(now - ChronoDuration::seconds(d));
    }
    let (last, count) = schedule.missed(earliest, now, zone);
    (last, count, schedule.next_after(now, zone))
}

impl Controller {
    fn api_err(what: &'static str, key: &str) -> impl FnOnce(kube::Error) -> Error {
        let key = key.to_string();
        move |source| Error::Api { what, key, source }
    }

    async fn reconcile(self: Arc<Self>, k: String) -> Result<Requeue, Error> {
        let (ns, name) = split(&k);
        let Some(cj) = self.cronjobs.get(ns, name) else {
            return Ok(None);
        };
        if cj.metadata.deletion_timestamp.is_some() {
            return Ok(None);
        }
        let now = Utc::now();
        let spec = cj.spec.clone().unwrap_or_default();
        let uid = cj.metadata.uid.clone().unwrap_or_default();
        let reference = cj.object_ref(&());
        let old = cj.status.clone().unwrap_or_default();
        let mut status = old.clone();
        let jobs_api: Api<Job> = Api::namespaced(self.cache.client().clone(), ns);
        let mut owned: Vec<Arc<Job>> = self
            .jobs
            .list_namespace(ns)
            .into_iter()
            .filter(|j| pods::controller_of(&j.metadata).is_some_and(|r| r.uid == uid))
            .collect();

        // Active Jobs, and the finished ones seen for the first time.
        let mut active: Vec<ObjectReference> = Vec::new();
        for j in &owned {
            match finished_type(j) {
                None if j.metadata.deletion_timestamp.is_none() => active.push(job_ref(j)),
                None => {}
                Some(kind) => {
                    let was_active = old.active.iter().flatten().any(|r| r.uid == j.metadata.uid);
                    if was_active {
                        self.events
                            .normal(
                                &reference,
                                "SawCompletedJob",
                                format!("Saw completed job: {}, condition: {kind}", j.name_any()),
                            )
                            .await;
                    }
                    if kind == "Complete" {
                        let done = j.status.as_ref().and_then(|s| s.completion_time.clone());
                        if done.as_ref().map(|t| t.0)
                            > status.last_successful_time.as_ref().map(|t| t.0)
                        {
                            status.last_successful_time = done;
                        }
                    }
                }
            }
        }
        active.sort_by(|a, b| a.name.cmp(&b.name));
        status.active = (!active.is_empty()).then_some(active);

        // History limits.
        for (kind, limit) in [
            ("Complete", spec.successful_jobs_history_limit.unwrap_or(3)),
            ("Failed", spec.failed_jobs_history_limit.unwrap_or(1)),
        ] {
            let mut finished: Vec<&Arc<Job>> = owned
                .iter()
                .filter(|j| {
                    finished_type(j) == Some(kind) && j.metadata.deletion_timestamp.is_none()
                })
                .collect();
            let keep = usize::try_from(limit.max(0)).unwrap_or(0);
            if finished.len() <= keep {
                continue;
            }
            finished.sort_by_key(|j| {
                j.status
                    .as_ref()
                    .and_then(|s| s.start_time.as_ref().map(|t| t.0))
                    .or(j.metadata.creation_timestamp.as_ref().map(|t| t.0))
            });
            let n = finished.len() - keep;
            for j in &finished[..n] {
                self.delete_job(&jobs_api, j, &reference, &k).await?;
            }
        }

        let mut requeue = None;
        if spec.suspend != Some(true) {
            let result = match (
                Schedule::parse(&spec.schedule),
                Zone::load(spec.time_zone.as_deref()),
            ) {
                (Ok(s), Ok(z)) => Ok((s, z)),
                (Err(e), _) => Err(("UnparseableSchedule", e.to_string())),
                (_, Err(e)) => Err(("UnknownTimeZone", e.to_string())),
            };
            match result {
                Err((reason, message)) => {
                    self.events.warning(&reference, reason, message).await;
                }
                Ok((schedule, zone)) => {
                    let (scheduled, missed, next) = due(&schedule, &zone, &cj, now);
                    requeue = next
                        .and_then(|n| (n - now).to_std().ok())
                        .map(|d| d + Duration::from_millis(100));
                    if missed > MAX_MISSED {
                        self.events
                            .warning(
                                &reference,
                                "TooManyMissedTimes",
                                format!("too many missed start times: {missed}. Set or decrease .spec.startingDeadlineSeconds or check clock skew"),
                            )
                            .await;
                    }
                    if let Some(t) = scheduled {
                        let name = job_name(&cj.name_any(), t);
                        let exists = owned.iter().any(|j| j.name_any() == name);
                        let too_late = spec
                            .starting_deadline_seconds
                            .is_some_and(|d| t + ChronoDuration::seconds(d) < now);
                        let busy = status.active.as_ref().is_some_and(|a| !a.is_empty());
                        let policy = spec.concurrency_policy.as_deref().unwrap_or("Allow");
                        if exists || too_late {
                            if too_late && !exists {
                                self.events
                                    .warning(
                                        &reference,
                                        "MissSchedule",
                                        format!(
                                            "Missed scheduled time to start a job: {}",
                                            zone.rfc3339(t)
                                        ),
                                    )
                                    .await;
                            }
                        } else if busy && policy == "Forbid" {
                            self.events
                                .normal(
                                    &reference,
                                    "JobAlreadyActive",
                                    "Not starting job because prior execution is running and concurrency policy is Forbid".into(),
                                )
                                .await;
                        } else {
                            if busy && policy == "Replace" {
                                for j in owned.iter().filter(|j| finished_type(j).is_none()) {
                                    self.delete_job(&jobs_api, j, &reference, &k).await?;
                                }
                                status.active = None;
                            }
                            let created =
                                self.create_job(&jobs_api, &cj, t, &zone, &name, &k).await?;
                            self.events
                                .normal(
                                    &reference,
                                    "SuccessfulCreate",
                                    format!("Created job {name}"),
                                )
                                .await;
                            status
                                .active
                                .get_or_insert_with(Vec::new)
                                .push(job_ref(&created));
                            owned.push(Arc::new(created));
                            status.last_schedule_time = Some(Time(t));
                        }
                    }
                }
            }
        }

        if old != status {
            let mut updated = (*cj).clone();
            updated.status = Some(status);
            updated.metadata.managed_fields = None;
            let body = serde_json::to_vec(&updated).map_err(|e| Error::Encode(k.clone(), e))?;
            let api: Api<CronJob> = Api::namespaced(self.cache.client().clone(), ns);
            match api.replace_status(name, &PostParams::default(), body).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => return Ok(None),
                Err(e) => return Err(Self::api_err("update the status", &k)(e)),
            }
        }
        Ok(requeue)
    }

    async fn create_job(
        &self,
        api: &Api<Job>,
        cj: &CronJob,
        scheduled: DateTime<Utc>,
        zone: &Zone,
        name: &str,
        k: &str,
    ) -> Result<Job, Error> {
        let template = cj
            .spec
            .as_ref()
            .map(|s| s.job_template.clone())
            .unwrap_or_default();
        let tm = template.metadata.unwrap_or_default();
        let mut annotations = tm.annotations.unwrap_or_default();
        annotations.insert(SCHEDULED_TIMESTAMP.into(), zone.rfc3339(scheduled));
        let job = Job {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                namespace: cj.namespace(),
                labels: tm.labels,
                annotations: Some(annotations),
                owner_references: Some(vec![pods::controller_ref(cj)]),
                ..Default::default()
            },
            spec: template.spec,
            status: None,
        };
        match api.create(&PostParams::default(), &job).await {
            Ok(j) => Ok(j),
            // Created by an earlier pass whose status update was lost.
            Err(kube::Error::Api(e)) if e.code == 409 => api
                .get(name)
                .await
                .map_err(Self::api_err("get the existing Job", k)),
            Err(e) => {
                self.events
                    .warning(
                        &cj.object_ref(&()),
                        "FailedCreate",
                        format!("Error creating job: {e}"),
                    )
                    .await;
                Err(Self::api_err("create a Job", k)(e))
            }
        }
    }

    async fn delete_job(
        &self,
        api: &Api<Job>,
        j: &Job,
        reference: &ObjectReference,
        k: &str,
    ) -> Result<(), Error> {
        let dp = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            ..Default::default()
        };
        match api.delete(&j.name_any(), &dp).await {
            Ok(_) => {
                self.events
                    .normal(
                        reference,
                        "SuccessfulDelete",
                        format!("Deleted job {}", j.name_any()),
                    )
                    .await;
                Ok(())
            }
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(Self::api_err("delete a Job", k)(e)),
        }
    }
}

fn job_ref(j: &Job) -> ObjectReference {
    let mut r = j.object_ref(&());
    r.field_path = None;
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::{CronJobSpec, CronJobStatus};

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default()
    }

    fn cronjob(created: &str, last: Option<&str>, deadline: Option<i64>) -> CronJob {
        CronJob {
            metadata: ObjectMeta {
                creation_timestamp: Some(Time(at(created))),
                ..Default::default()
            },
            spec: Some(CronJobSpec {
                schedule: "*/1 * * * *".into(),
                starting_deadline_seconds: deadline,
                ..Default::default()
            }),
            status: Some(CronJobStatus {
                last_schedule_time: last.map(|l| Time(at(l))),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn runs_the_latest_missed_time_and_counts_the_rest() {
        let s = Schedule::parse("*/1 * * * *").ok();
        let Some(s) = s else { return };
        let z = Zone::utc();
        let now = at("2026-01-01T10:05:30Z");
        let (t, n, next) = due(&s, &z, &cronjob("2026-01-01T10:00:10Z", None, None), now);
        assert_eq!((t, n), (Some(at("2026-01-01T10:05:00Z")), 5));
        assert_eq!(next, Some(at("2026-01-01T10:06:00Z")));
        // Already ran at 10:05: nothing due.
        let (t, n, _) = due(
            &s,
            &z,
            &cronjob("2026-01-01T10:00:10Z", Some("2026-01-01T10:05:00Z"), None),
            now,
        );
        assert_eq!((t, n), (None, 0));
        // Two days down: more than 100 missed, unless startingDeadlineSeconds bounds the look-back.
        let cj = cronjob("2025-12-30T00:00:00Z", None, None);
        assert!(due(&s, &z, &cj, now).1 > MAX_MISSED);
        let cj = cronjob("2025-12-30T00:00:00Z", None, Some(200));
        assert_eq!(due(&s, &z, &cj, now).1, 3);
    }

    #[test]
    fn job_names_are_minutes_since_the_epoch() {
        assert_eq!(
            job_name("tick", at("2026-01-01T00:01:00Z")),
            "tick-29453761"
        );
    }
}
