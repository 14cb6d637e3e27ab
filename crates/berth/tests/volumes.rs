//! Volumes and env sources as running pods see them (root): configMap (items, modes),
//! secret, downwardAPI and projected volumes served by busybox httpd from the pod IP, envFrom
//! and downward env; live updates of ConfigMaps, Secrets, labels and annotations reaching the
//! running container within seconds (subPath mounts keep what they saw); a memory emptyDir as
//! a tmpfs that goes with the pod; missing ConfigMaps as upstream reports them.

mod common;

use common::pods::{leftovers, PodCluster};
use common::Cluster;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

const MANIFEST: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: app-config}
data: {greeting: "hello v1", color: blue}
---
apiVersion: v1
kind: Secret
metadata: {name: app-secret}
data: {password: czNjcmV0}
---
apiVersion: v1
kind: Pod
metadata:
  name: vols
  labels: {app: vols, tier: frontend}
  annotations: {note: "first \"quoted\""}
spec:
  nodeName: vol-node
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: busybox:latest
    command: ["sh", "-c", "echo \"ENV CFG=$CFG_greeting PASS=$password MEM=$MEM CPU=$CPU TIER=$TIER IPS=$IPS\"; grep ' /scratch ' /proc/mounts; exec httpd -f -p 8080 -h /srv"]
    resources:
      limits: {memory: 64Mi, cpu: 250m}
    envFrom:
    - {prefix: CFG_, configMapRef: {name: app-config}}
    - secretRef: {name: app-secret}
    - configMapRef: {name: not-there, optional: true}
    env:
    - {name: MEM, valueFrom: {resourceFieldRef: {resource: limits.memory, divisor: 1Mi}}}
    - {name: CPU, valueFrom: {resourceFieldRef: {resource: limits.cpu, divisor: 1m}}}
    - {name: TIER, valueFrom: {fieldRef: {fieldPath: "metadata.labels['tier']"}}}
    - {name: IPS, valueFrom: {fieldRef: {fieldPath: status.podIPs}}}
    volumeMounts:
    - {name: config, mountPath: /srv/cm}
    - {name: secret, mountPath: /srv/secret}
    - {name: info, mountPath: /srv/info}
    - {name: proj, mountPath: /srv/proj}
    - {name: config, mountPath: /srv/pinned.txt, subPath: greeting}
    - {name: scratch, mountPath: /scratch}
  volumes:
  - name: config
    configMap:
      name: app-config
      defaultMode: 0640
      items: [{key: greeting, path: conf/greeting.txt, mode: 0600}, {key: greeting, path: greeting}, {key: color, path: color}]
  - name: secret
    secret: {secretName: app-secret}
  - name: info
    downwardAPI:
      items:
      - {path: labels, fieldRef: {fieldPath: metadata.labels}}
      - {path: annotations, fieldRef: {fieldPath: metadata.annotations}}
      - {path: mem, resourceFieldRef: {containerName: web, resource: limits.memory, divisor: 1Mi}}
      - {path: cpu, resourceFieldRef: {containerName: web, resource: limits.cpu, divisor: 1m}}
  - name: proj
    projected:
      sources:
      - configMap: {name: app-config, items: [{key: greeting, path: greeting}]}
      - secret: {name: app-secret, items: [{key: password, path: secret/password}]}
      - downwardAPI: {items: [{path: tier, fieldRef: {fieldPath: "metadata.labels['tier']"}}]}
  - name: scratch
    emptyDir: {medium: Memory, sizeLimit: 16Mi}
---
apiVersion: v1
kind: Pod
metadata: {name: waiter}
spec:
  nodeName: vol-node
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox:latest
    command: ["sh", "-c", "echo MODE=$MODE; sleep 3600"]
    env: [{name: MODE, valueFrom: {configMapKeyRef: {name: late-config, key: mode}}}]
---
apiVersion: v1
kind: Pod
metadata: {name: nomount}
spec:
  nodeName: vol-node
  terminationGracePeriodSeconds: 1
  containers:
  - {name: c, image: busybox:latest, command: ["sleep", "3600"], volumeMounts: [{name: cfg, mountPath: /cfg}]}
  volumes: [{name: cfg, configMap: {name: nope}}]
"#;

fn curl(ip: &str, path: &str) -> String {
    let out = std::process::Command::new("curl")
        .args(["-s", "-m", "3", &format!("http://{ip}:8080{path}")])
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The container log's lines (CRI format, the message after `stdout F `).
fn log_lines(uid: &str, pod: &str, container: &str) -> Vec<String> {
    let path = format!("/var/log/pods/default_{pod}_{uid}/{container}/0.log");
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(" stdout F ").map(|(_, m)| m.to_string()))
        .collect()
}

/// Waits until `path` served by the pod reads `want`; returns how long that took.
fn served_within(c: &Cluster, ip: &str, path: &str, want: &str, limit: Duration) -> Duration {
    let start = Instant::now();
    c.eventually(&format!("{path} to read {want:?}"), limit, || {
        curl(ip, path) == want
    });
    start.elapsed()
}

/// Deletes the test's pods if it fails midway, so their containers and mounts go before the
/// server stops.
struct DeletePodsOnFailure<'a>(&'a Cluster);

impl Drop for DeletePodsOnFailure<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = self.0.kubectl_output(
                &[
                    "delete",
                    "pods",
                    "--all",
                    "--grace-period=1",
                    "--timeout=60s",
                ],
                None,
            );
        }
    }
}

fn waiting(c: &Cluster, pod: &str) -> String {
    c.kubectl(&[
        "get",
        "pod",
        pod,
        "-o",
        "jsonpath={.status.containerStatuses[0].state.waiting.reason}: {.status.containerStatuses[0].state.waiting.message}",
    ])
}

#[test]
fn volumes_and_env_sources_reach_running_pods() {
    let Some(pc) = PodCluster::start("vol-node", 195, "btvol", "crun") else {
        return;
    };
    let (c, bridge) = (&pc.c, &pc.bridge);
    let _guard = DeletePodsOnFailure(c);
    // `create`, not `apply`: no last-applied annotation in the annotations file.
    c.kubectl_stdin(&["create", "-f", "-"], MANIFEST);
    let ip = {
        let mut ip = String::new();
        c.eventually("vols to be Running", Duration::from_secs(40), || {
            ip = c.kubectl(&[
                "get",
                "pod",
                "vols",
                "-o",
                "jsonpath={.status.phase} {.status.podIP}",
            ]);
            ip.starts_with("Running ") && ip.len() > 8
        });
        ip.trim_start_matches("Running ").to_string()
    };
    let uid = c.kubectl(&["get", "pod", "vols", "-o", "jsonpath={.metadata.uid}"]);
    c.eventually(
        "httpd to serve the volumes",
        Duration::from_secs(20),
        || curl(&ip, "/cm/conf/greeting.txt") == "hello v1",
    );

    // configMap: items with paths and modes (defaultMode for the others).
    assert_eq!(curl(&ip, "/cm/greeting"), "hello v1");
    assert_eq!(curl(&ip, "/cm/color"), "blue");
    let vol = c.dir.path().join("pods").join(&uid).join("volumes");
    let mode = |p: &str| {
        std::fs::metadata(vol.join(p))
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or(0)
    };
    assert_eq!(mode("config/conf/greeting.txt"), 0o600);
    assert_eq!(mode("config/color"), 0o640);
    assert_eq!(mode("secret/password"), 0o644);
    assert_eq!(
        std::fs::read_link(vol.join("config/color")).expect("a key is a symlink"),
        std::path::Path::new("..data/color")
    );
    // secret, downwardAPI and projected.
    assert_eq!(curl(&ip, "/secret/password"), "s3cret");
    assert_eq!(curl(&ip, "/info/labels"), "app=\"vols\"\ntier=\"frontend\"");
    assert_eq!(
        curl(&ip, "/info/annotations"),
        "note=\"first \\\"quoted\\\"\""
    );
    assert_eq!(curl(&ip, "/info/mem"), "64");
    assert_eq!(curl(&ip, "/info/cpu"), "250");
    assert_eq!(curl(&ip, "/proj/greeting"), "hello v1");
    assert_eq!(curl(&ip, "/proj/secret/password"), "s3cret");
    assert_eq!(curl(&ip, "/proj/tier"), "frontend");
    assert_eq!(curl(&ip, "/pinned.txt"), "hello v1");
    // Secret and projected volumes live on a tmpfs on the host, as upstream.
    let host_mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    for v in ["secret", "proj", "scratch"] {
        let p = vol.join(v).display().to_string();
        assert!(
            host_mounts
                .lines()
                .any(|l| l.contains(&format!(" {p} ")) && l.contains(" - tmpfs ")),
            "{v} is a tmpfs on the host"
        );
    }
    // env: envFrom with a prefix, secretRef, downward fields and resources.
    c.eventually(
        "the container to print its env",
        Duration::from_secs(10),
        || {
            log_lines(&uid, "vols", "web")
                .iter()
                .any(|l| l.starts_with("ENV "))
        },
    );
    let lines = log_lines(&uid, "vols", "web");
    let env_line = lines
        .iter()
        .find(|l| l.starts_with("ENV "))
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        env_line,
        format!("ENV CFG=hello v1 PASS=s3cret MEM=64 CPU=250 TIER=frontend IPS={ip}")
    );
    // A memory emptyDir is a tmpfs in the container, sized by sizeLimit.
    let scratch = lines
        .iter()
        .find(|l| l.contains(" /scratch "))
        .cloned()
        .unwrap_or_default();
    assert!(
        scratch.starts_with("tmpfs /scratch tmpfs") && scratch.contains("size=16384k"),
        "scratch mount in the container: {scratch:?} (log: {lines:?})"
    );

    // Live updates: a changed ConfigMap reaches the running container within seconds, in
    // the plain and the projected volume; the subPath file keeps what it saw.
    c.kubectl_stdin(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: app-config}\ndata: {greeting: \"hello v2\", color: green}\n",
    );
    let took = served_within(
        c,
        &ip,
        "/cm/conf/greeting.txt",
        "hello v2",
        Duration::from_secs(10),
    );
    eprintln!("configMap update reached the container in {took:?}");
    assert!(
        took < Duration::from_secs(5),
        "configMap update took {took:?}"
    );
    assert_eq!(curl(&ip, "/cm/color"), "green");
    served_within(c, &ip, "/proj/greeting", "hello v2", Duration::from_secs(5));
    assert_eq!(
        curl(&ip, "/pinned.txt"),
        "hello v1",
        "subPath mounts are not updated"
    );
    // A changed Secret.
    c.kubectl_stdin(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Secret\nmetadata: {name: app-secret}\ndata: {password: bjN3}\n",
    );
    let took = served_within(c, &ip, "/secret/password", "n3w", Duration::from_secs(10));
    eprintln!("secret update reached the container in {took:?}");
    assert!(took < Duration::from_secs(5), "secret update took {took:?}");
    served_within(
        c,
        &ip,
        "/proj/secret/password",
        "n3w",
        Duration::from_secs(5),
    );
    // Labels and annotations.
    c.kubectl(&["label", "pod", "vols", "tier=backend", "--overwrite"]);
    let took = served_within(
        c,
        &ip,
        "/info/labels",
        "app=\"vols\"\ntier=\"backend\"",
        Duration::from_secs(10),
    );
    eprintln!("label update reached the container in {took:?}");
    assert!(took < Duration::from_secs(5), "label update took {took:?}");
    served_within(c, &ip, "/proj/tier", "backend", Duration::from_secs(5));
    c.kubectl(&["annotate", "pod", "vols", "extra=x\ty", "--overwrite"]);
    served_within(
        c,
        &ip,
        "/info/annotations",
        "extra=\"x\\ty\"\nnote=\"first \\\"quoted\\\"\"",
        Duration::from_secs(5),
    );
    // Exactly one timestamped directory per volume remains.
    let ts_dirs = std::fs::read_dir(vol.join("config"))
        .expect("config volume")
        .flatten()
        .filter(|e| {
            let n = e.file_name().to_string_lossy().to_string();
            n.starts_with("..") && n != "..data"
        })
        .count();
    assert_eq!(ts_dirs, 1, "old content is removed after the swap");

    // A missing ConfigMap: upstream's message as CreateContainerConfigError, then a missing
    // key, then the pod starts once the key exists.
    c.eventually(
        "waiter to report the missing ConfigMap",
        Duration::from_secs(20),
        || {
            waiting(c, "waiter")
                == "CreateContainerConfigError: configmap \"late-config\" not found"
        },
    );
    c.kubectl_stdin(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: late-config}\ndata: {other: x}\n",
    );
    c.eventually(
        "waiter to report the missing key",
        Duration::from_secs(20),
        || {
            waiting(c, "waiter")
                == "CreateContainerConfigError: couldn't find key mode in ConfigMap default/late-config"
        },
    );
    c.kubectl_stdin(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: late-config}\ndata: {mode: fast}\n",
    );
    c.eventually("waiter to start", Duration::from_secs(20), || {
        c.kubectl(&["get", "pod", "waiter", "-o", "jsonpath={.status.phase}"]) == "Running"
    });
    let waiter_uid = c.kubectl(&["get", "pod", "waiter", "-o", "jsonpath={.metadata.uid}"]);
    c.eventually("waiter to print its env", Duration::from_secs(10), || {
        log_lines(&waiter_uid, "waiter", "c").contains(&"MODE=fast".to_string())
    });
    // A missing ConfigMap volume keeps the pod ContainerCreating with a FailedMount event.
    c.eventually(
        "nomount to wait for its volume",
        Duration::from_secs(20),
        || waiting(c, "nomount").starts_with("ContainerCreating"),
    );
    let described = c.kubectl(&["describe", "pod", "nomount"]);
    assert!(
        described.contains("FailedMount")
            && described.contains(
                "MountVolume.SetUp failed for volume \"cfg\" : configmap \"nope\" not found"
            ),
        "FailedMount event:\n{described}"
    );

    // Deleting the pods removes the tmpfs mounts and everything else.
    let nomount_uid = c.kubectl(&["get", "pod", "nomount", "-o", "jsonpath={.metadata.uid}"]);
    c.kubectl(&[
        "delete",
        "pod",
        "vols",
        "waiter",
        "nomount",
        "--grace-period=1",
    ]);
    let uids = vec![uid, waiter_uid, nomount_uid];
    c.eventually("nothing to be left", Duration::from_secs(30), || {
        leftovers(c.dir.path(), bridge, &uids).is_empty()
    });
}
