//! Endpoint-first termination end to end (root): the service proxy publishes what it has
//! programmed on its Lease; a deleted pod's endpoint turns terminating and every proxy has
//! programmed that before the container gets its stop signal; under a steady request loop
//! through the ClusterIP, deleting one of the pods fails no request; a live proxy that lags
//! holds the stop signal back until the deregistration timeout, a dead one does not; and with
//! `--pod-termination upstream` the stop signal comes at once.

mod common;

use common::pods::{http_get, leftovers, PodCluster, ProxyGuard};
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::chrono::{DateTime, SecondsFormat, Utc};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, ResourceExt};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

const NODE: &str = "term-node";
const ANNOTATION: &str = "berth.dev/endpointslices-programmed";
/// The deregistration timeout the test's server runs with.
const TIMEOUT_SECONDS: u64 = 6;

/// A pod whose shell records when its stop signal arrives (a file in `shared`), then stops
/// accepting connections and lets the ones in flight finish, as a well-behaved server does.
fn pod(name: &str, shared: &Path) -> String {
    let shared = shared.display();
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}, labels: {{app: web}}}}
spec:
  nodeName: {NODE}
  terminationGracePeriodSeconds: 30
  containers:
  - name: web
    image: busybox:latest
    command: ["sh", "-c", "httpd -f -p 8080 -h /etc & pid=$!; trap 'touch /shared/{name}.term; kill $pid; sleep 1; exit 0' TERM; wait"]
    ports: [{{name: http, containerPort: 8080}}]
    volumeMounts: [{{name: shared, mountPath: /shared}}]
  volumes: [{{name: shared, hostPath: {{path: {shared}}}}}]
---
"#
    )
}

/// When the pod's container got its stop signal (the file's modification time).
fn term_time(shared: &Path, name: &str) -> Option<SystemTime> {
    std::fs::metadata(shared.join(format!("{name}.term")))
        .and_then(|m| m.modified())
        .ok()
}

/// Deletes a pod without waiting; returns when the deletion was asked for and how long the
/// container took to get its stop signal from then.
fn delete_and_time_term(c: &common::Cluster, shared: &Path, name: &str) -> Duration {
    let asked = SystemTime::now();
    c.kubectl(&["delete", "pod", name, "--wait=false"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(t) = term_time(shared, name) {
            return t.duration_since(asked).unwrap_or_default();
        }
        assert!(
            Instant::now() < deadline,
            "{name} never got its stop signal"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Keeps every version of the watched objects (in the order the watch delivered them).
fn record<K>(
    rt: &tokio::runtime::Runtime,
    api: Api<K>,
    config: watcher::Config,
) -> Arc<Mutex<Vec<K>>>
where
    K: kube::Resource
        + Clone
        + std::fmt::Debug
        + k8s_openapi::serde::de::DeserializeOwned
        + Send
        + 'static,
{
    let seen = Arc::new(Mutex::new(Vec::new()));
    let out = seen.clone();
    rt.spawn(async move {
        let mut events = watcher(api, config)
            .default_backoff()
            .applied_objects()
            .boxed();
        while let Some(e) = events.next().await {
            if let Ok(obj) = e {
                out.lock().expect("lock").push(obj);
            }
        }
    });
    seen
}

/// Runs `during` 1.5 s into 5 s of requests through `web` from 16 clients, one new connection
/// per request; the requests that succeeded and failed, and the errors.
fn under_load(web: SocketAddr, during: impl FnOnce()) -> (usize, usize, Vec<String>) {
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let errors = Arc::new(Mutex::new(Vec::new()));
    let until = Instant::now() + Duration::from_secs(5);
    let load: Vec<_> = (0..16)
        .map(|_| {
            let (ok, failed, errors) = (ok.clone(), failed.clone(), errors.clone());
            std::thread::spawn(move || {
                while Instant::now() < until {
                    match http_get(web, "/hostname") {
                        Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            let now = k8s_openapi::chrono::Utc::now();
                            errors.lock().expect("lock").push(format!("{e} at {now}"));
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    during();
    for t in load {
        t.join().expect("load thread");
    }
    let errors = errors.lock().expect("lock").clone();
    (
        ok.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
        errors,
    )
}

/// A Lease as a service proxy on `node` would publish it, renewed `renewed_ago` ago.
fn proxy_lease(node: &str, programmed: u64, renewed_ago: Duration) -> String {
    let renewed = Utc::now() - k8s_openapi::chrono::Duration::from_std(renewed_ago).expect("age");
    format!(
        r#"
apiVersion: coordination.k8s.io/v1
kind: Lease
metadata:
  name: berth-proxy-{node}
  namespace: kube-node-lease
  labels: {{berth.dev/service-proxy: {node}}}
  annotations: {{{ANNOTATION}: "{programmed}"}}
spec:
  holderIdentity: {node}
  leaseDurationSeconds: 40
  renewTime: "{}"
"#,
        renewed.to_rfc3339_opts(SecondsFormat::Micros, true)
    )
}

fn annotation(lease: &Lease) -> Option<u64> {
    lease.annotations().get(ANNOTATION)?.parse().ok()
}

#[test]
fn pods_leave_the_service_proxies_before_they_stop() {
    if !berth_node::host::is_root() {
        eprintln!("skipped: the service proxy needs root");
        return;
    }
    let n = std::process::id() % 200 + 20;
    let service_cidr = format!("10.183.{}.0/24", n + 1);
    let bridge = format!("btterm{n}");
    let _guard = ProxyGuard {
        table: format!("berth-{bridge}"),
        service_cidr: service_cidr.clone(),
    };
    let shared_dir = tempfile::tempdir().expect("tempdir");
    let shared = shared_dir.path();
    let timeout = format!("{TIMEOUT_SECONDS}s");
    let Some(mut pc) = PodCluster::start_with_args(
        NODE,
        183,
        "btterm",
        "crun",
        &[
            "--service-cidr",
            &service_cidr,
            "--endpoint-deregistration-timeout",
            &timeout,
        ],
    ) else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let client = rt.block_on(pc.c.client());
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let pods = ["web-a", "web-b", "web-c", "web-d", "web-e"];
    let mut manifest: String = pods.iter().map(|p| pod(p, shared)).collect();
    manifest.push_str(
        "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  selector: {app: web}\n  ports: [{name: http, port: 80, targetPort: http}]\n",
    );
    let c = &pc.c;
    c.kubectl_stdin(&["apply", "-f", "-"], &manifest);
    c.eventually("five endpoints ready", Duration::from_secs(90), || {
        let out = c.kubectl(&[
            "get",
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=web",
            "-o",
            "jsonpath={.items[*].endpoints[*].conditions.ready}",
        ]);
        out.split_whitespace().filter(|r| *r == "true").count() == 5
    });
    let uids: Vec<String> = pods
        .iter()
        .map(|p| {
            c.kubectl(&["get", "pod", p, "-o", "jsonpath={.metadata.uid}"])
                .trim()
                .to_string()
        })
        .collect();

    // (a) The proxy's Lease says it has programmed the slice as it is now.
    let slice_rv: u64 = c
        .kubectl(&[
            "get",
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=web",
            "-o",
            "jsonpath={.items[0].metadata.resourceVersion}",
        ])
        .trim()
        .parse()
        .expect("slice resourceVersion");
    let lease_name = format!("berth-proxy-{NODE}");
    c.eventually(
        "the proxy's Lease reaches the slice",
        Duration::from_secs(20),
        || {
            rt.block_on(leases.get_opt(&lease_name))
                .ok()
                .flatten()
                .and_then(|l| annotation(&l))
                .is_some_and(|p| p >= slice_rv)
        },
    );
    let lease = rt.block_on(leases.get(&lease_name)).expect("proxy lease");
    let spec = lease.spec.clone().expect("lease spec");
    assert_eq!(spec.holder_identity.as_deref(), Some(NODE));
    assert_eq!(spec.lease_duration_seconds, Some(40));
    assert_eq!(
        lease
            .labels()
            .get("berth.dev/service-proxy")
            .map(String::as_str),
        Some(NODE)
    );

    // (b, c) Deleting one pod under a steady request loop through the ClusterIP (a new
    // connection per request, 16 in flight): no request fails, and the proxy had programmed
    // the endpoint's termination before the container got its stop signal.
    let cluster_ip: std::net::Ipv4Addr = c
        .kubectl(&["get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}"])
        .trim()
        .parse()
        .expect("cluster IP");
    let web = SocketAddr::from((cluster_ip, 80));
    c.eventually("the ClusterIP answers", Duration::from_secs(20), || {
        http_get(web, "/hostname").is_ok()
    });
    let slice_versions = record(
        &rt,
        slices.clone(),
        watcher::Config::default().labels("kubernetes.io/service-name=web"),
    );
    let lease_versions = record(
        &rt,
        leases.clone(),
        watcher::Config::default().fields(&format!("metadata.name={lease_name}")),
    );
    let mut waited = Duration::ZERO;
    let (ok, failed, errors) = under_load(web, || {
        waited = delete_and_time_term(c, shared, "web-a");
    });
    println!(
        "load while deleting web-a: {ok} requests, {failed} failed; stop signal after {waited:?}"
    );
    assert!(ok > 100, "the load ran ({ok} requests)");
    assert_eq!(failed, 0, "failed requests: {errors:?}");
    let terminating_rv = slice_versions
        .lock()
        .expect("lock")
        .iter()
        .find(|s| {
            s.endpoints.iter().any(|e| {
                e.target_ref.as_ref().and_then(|r| r.name.as_deref()) == Some("web-a")
                    && e.conditions.as_ref().and_then(|c| c.terminating) == Some(true)
            })
        })
        .and_then(|s| s.resource_version())
        .and_then(|rv| rv.parse::<u64>().ok())
        .expect("web-a's endpoint turned terminating");
    let programmed_at: DateTime<Utc> = lease_versions
        .lock()
        .expect("lock")
        .iter()
        .find(|l| annotation(l).is_some_and(|p| p >= terminating_rv))
        .and_then(|l| l.spec.as_ref()?.renew_time.as_ref().map(|t| t.0))
        .expect("the proxy's Lease reached the terminating slice");
    let term_at: DateTime<Utc> = term_time(shared, "web-a")
        .expect("web-a's stop signal")
        .into();
    println!(
        "web-a terminating at resourceVersion {terminating_rv}; programmed at {programmed_at}, stop signal at {term_at}"
    );
    assert!(
        programmed_at < term_at,
        "the proxy programmed the termination ({programmed_at}) before the stop signal ({term_at})"
    );

    // A live proxy that never programs the change holds the stop signal back until the
    // deregistration timeout; a dead one (its Lease ran out) holds nobody up.
    c.kubectl_stdin(
        &["apply", "-f", "-"],
        &proxy_lease("ghost", 0, Duration::ZERO),
    );
    let lagging = delete_and_time_term(c, shared, "web-c");
    println!("with a lagging proxy: stop signal after {lagging:?}");
    assert!(
        lagging >= Duration::from_secs(TIMEOUT_SECONDS - 1) && lagging < Duration::from_secs(20),
        "a lagging proxy holds the stop signal until the timeout ({lagging:?})"
    );
    c.kubectl_stdin(
        &["apply", "-f", "-"],
        &proxy_lease("ghost", 0, Duration::from_secs(3600)),
    );
    let dead = delete_and_time_term(c, shared, "web-d");
    println!("with a dead proxy: stop signal after {dead:?}");
    assert!(
        dead < Duration::from_secs(TIMEOUT_SECONDS - 2),
        "a dead proxy's Lease is ignored ({dead:?})"
    );

    // (d) Upstream's behaviour: the stop signal comes at once, whatever the proxies say.
    let before = rt.block_on(leases.get(&lease_name)).expect("proxy lease");
    pc.args
        .extend(["--pod-termination".to_string(), "upstream".to_string()]);
    pc.restart();
    let c = &pc.c;
    let client = rt.block_on(c.client());
    let leases: Api<Lease> = Api::namespaced(client, "kube-node-lease");
    c.eventually(
        "the restarted proxy publishes its Lease",
        Duration::from_secs(20),
        || {
            rt.block_on(leases.get_opt(&lease_name))
                .ok()
                .flatten()
                .is_some_and(|l| l.uid() != before.uid())
        },
    );
    c.eventually("the ClusterIP answers", Duration::from_secs(20), || {
        http_get(web, "/hostname").is_ok()
    });
    c.kubectl_stdin(
        &["apply", "-f", "-"],
        &proxy_lease("ghost", 0, Duration::ZERO),
    );
    let mut upstream = Duration::ZERO;
    // Failures are racy here (the stop signal races the proxies): printed, not asserted.
    let (ok, failed, _) = under_load(web, || {
        upstream = delete_and_time_term(c, shared, "web-e");
    });
    println!("upstream mode with a lagging proxy: stop signal after {upstream:?}; load: {ok} requests, {failed} failed");
    assert!(
        upstream < Duration::from_secs(TIMEOUT_SECONDS - 2),
        "upstream mode does not wait ({upstream:?})"
    );

    // Everything the pods had goes with them.
    c.kubectl(&["delete", "pods", "--all", "--wait=false"]);
    c.eventually("every pod is gone", Duration::from_secs(60), || {
        c.kubectl(&["get", "pods", "-o", "name"]).trim().is_empty()
    });
    // The proxy kept up all along: the Service, now without endpoints, refuses at once.
    c.eventually(
        "the Service without endpoints refuses",
        Duration::from_secs(10),
        || {
            matches!(
                TcpStream::connect_timeout(&web, Duration::from_secs(2)),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused
            )
        },
    );
    c.eventually("nothing is left behind", Duration::from_secs(20), || {
        leftovers(c.dir.path(), &pc.bridge, &uids).is_empty()
    });
    drop(rt);
}
