//! Pulling images from a registry (root): Debian's `docker-registry` started by the test on
//! 127.0.0.1 (one open, one behind htpasswd Basic auth, sharing storage), the busybox image
//! pushed to it with `skopeo`; then `berth images pull` with progress, pods whose images are
//! pulled (plain-HTTP endpoints from `registries.yaml`) with the kubelet's events, a missing
//! tag going ErrImagePull → ImagePullBackOff, and a private image pulled only with an
//! `imagePullSecrets` secret.

mod common;

use common::pods::{leftovers, PodCluster};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// bcrypt of "secret" (docker-registry's htpasswd wants bcrypt).
const HTPASSWD: &str = "puller:$2b$05$wsNrtphn3NfRm5dWYgEWPuVj1Z6ZpfcYZQdJW.dHIPVvVJbVkW3T6\n";

/// A `docker-registry` child process, killed (by its PID) when dropped.
struct Registry {
    child: Child,
    port: u16,
}

impl Registry {
    fn start(dir: &Path, storage: &Path, name: &str, htpasswd: bool) -> Registry {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let auth = if htpasswd {
            let file = dir.join(format!("{name}.htpasswd"));
            std::fs::write(&file, HTPASSWD).expect("htpasswd");
            format!(
                "auth:\n  htpasswd:\n    realm: berth-test\n    path: {}\n",
                file.display()
            )
        } else {
            String::new()
        };
        let config = dir.join(format!("{name}.yml"));
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: berth-test\n{auth}",
                storage.display()
            ),
        )
        .expect("registry config");
        let child = Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry (apt package docker-registry; scripts/setup.sh installs it)");
        let registry = Registry { child, port };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "docker-registry did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        registry
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn jsonpath(c: &common::Cluster, pod: &str, path: &str) -> String {
    c.kubectl(&["get", "pod", pod, "-o", &format!("jsonpath={path}")])
}

#[test]
fn pods_pull_their_images_from_a_registry() {
    if !berth_node::host::is_root() {
        eprintln!("skipped: running pods needs root");
        return;
    }
    let work = tempfile::tempdir().expect("temp dir");
    let storage = work.path().join("storage");
    std::fs::create_dir_all(&storage).expect("storage dir");
    let open = Registry::start(work.path(), &storage, "open", false);
    let private = Registry::start(work.path(), &storage, "private", true);

    // Push busybox with skopeo (an OCI archive, as `tools/busybox-image.sh` makes).
    let tar = work.path().join("busybox.tar");
    berth_images::testing::build_busybox_oci_tar(&tar, "busybox:latest").expect("busybox tar");
    let image = format!("{}/test/busybox:v1", open.host());
    let pushed = Command::new("skopeo")
        .args(["copy", "--quiet", "--dest-tls-verify=false"])
        .arg(format!("oci-archive:{}", tar.display()))
        .arg(format!("docker://{image}"))
        .output()
        .expect("skopeo (apt package skopeo; scripts/setup.sh installs it)");
    assert!(
        pushed.status.success(),
        "skopeo copy: {}",
        String::from_utf8_lossy(&pushed.stderr)
    );

    // Both registries are plain HTTP endpoints of themselves.
    let registries = format!(
        "mirrors:\n  \"{o}\":\n    endpoint: [\"http://{o}\"]\n  \"{p}\":\n    endpoint: [\"http://{p}\"]\n",
        o = open.host(),
        p = private.host()
    );

    // The CLI: progress per layer on stderr, the image id on stdout.
    let cli_dir = work.path().join("cli");
    std::fs::create_dir_all(&cli_dir).expect("cli dir");
    std::fs::write(cli_dir.join("registries.yaml"), &registries).expect("registries.yaml");
    let berth = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(args)
            .arg("--data-dir")
            .arg(&cli_dir)
            .output()
            .expect("berth")
    };
    let out = berth(&["images", "pull", &image]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    );
    assert!(out.status.success(), "berth images pull: {stderr}");
    assert!(stdout.trim().starts_with("sha256:"), "image id: {stdout}");
    assert!(
        stderr.contains("sha256:") && stderr.contains("iB / ") && stderr.contains(" done"),
        "progress per layer: {stderr}"
    );
    let listed = String::from_utf8_lossy(&berth(&["images", "ls"]).stdout).to_string();
    assert!(listed.contains(&image), "{listed}");
    let out = berth(&[
        "images",
        "pull",
        &format!("{}/test/busybox:v1", private.host()),
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(stderr.contains("401 Unauthorized"), "{stderr}");
    let out = berth(&[
        "images",
        "pull",
        &format!("{}/test/busybox:v1", private.host()),
        "--username",
        "puller",
        "--password",
        "secret",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A node without any image, and registries.yaml naming the plain-HTTP endpoints.
    let Some(pc) = PodCluster::start_prepared("pull-node", 197, "btpull", "crun", |dir| {
        std::fs::write(dir.join("registries.yaml"), &registries).expect("registries.yaml");
    }) else {
        return;
    };
    let c = &pc.c;
    let private_image = format!("{}/test/busybox:v1", private.host());
    let pod = |name: &str, image: &str, extra: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  nodeName: pull-node\n  terminationGracePeriodSeconds: 1\n{extra}  containers:\n  - name: c\n    image: {image}\n    command: [httpd, -f, -p, '8080', -h, /etc]\n---\n"
        )
    };
    c.kubectl_stdin(
        &["apply", "-f", "-"],
        &(pod("pulled", &image, "")
            + &pod("missing", &format!("{}/test/busybox:nope", open.host()), "")
            + &pod("denied", &private_image, "")),
    );
    c.eventually("pulled to be Running", Duration::from_secs(60), || {
        jsonpath(c, "pulled", "{.status.phase}") == "Running"
    });
    let ip = jsonpath(c, "pulled", "{.status.podIP}");
    let served = Command::new("curl")
        .args(["-s", "-m", "5", &format!("http://{ip}:8080/hostname")])
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&served.stdout).trim(), "pulled");
    let described = c.kubectl(&["describe", "pod", "pulled"]);
    assert!(
        described.contains(&format!("Pulling image \"{image}\""))
            && described.contains(&format!("Successfully pulled image \"{image}\" in "))
            && described.contains("Image size: "),
        "Pulling and Pulled events:\n{described}"
    );
    assert!(
        jsonpath(c, "pulled", "{.status.containerStatuses[0].imageID}").starts_with("sha256:"),
        "imageID"
    );
    c.eventually(
        "the node to list the pulled image",
        Duration::from_secs(90),
        || {
            c.kubectl(&[
                "get",
                "node",
                "pull-node",
                "-o",
                "jsonpath={.status.images[*].names}",
            ])
            .contains(&image)
        },
    );

    // A missing tag: ErrImagePull with the registry's answer, then the back-off.
    c.eventually("missing to fail its pull", Duration::from_secs(30), || {
        let state = jsonpath(
            c,
            "missing",
            "{.status.containerStatuses[0].state.waiting.reason}",
        );
        state == "ErrImagePull" || state == "ImagePullBackOff"
    });
    c.eventually("missing to back off", Duration::from_secs(30), || {
        jsonpath(
            c,
            "missing",
            "{.status.containerStatuses[0].state.waiting.reason}/{.status.containerStatuses[0].state.waiting.message}",
        ) == format!(
            "ImagePullBackOff/Back-off pulling image \"{}/test/busybox:nope\"",
            open.host()
        )
    });
    let described = c.kubectl(&["describe", "pod", "missing"]);
    assert!(
        described.contains("Failed to pull image")
            && described.contains("not found")
            && described.contains("Error: ErrImagePull")
            && described.contains("Back-off pulling image"),
        "Failed and BackOff events:\n{described}"
    );

    // A private registry: refused without credentials...
    c.eventually("denied to fail with 401", Duration::from_secs(30), || {
        let message = jsonpath(
            c,
            "denied",
            "{.status.containerStatuses[0].state.waiting.message}",
        );
        message.contains("401 Unauthorized") || message.starts_with("Back-off pulling image")
    });
    let described = c.kubectl(&["describe", "pod", "denied"]);
    assert!(
        described.contains("401 Unauthorized"),
        "the 401 in the Failed event:\n{described}"
    );
    // ...pulled with an imagePullSecrets secret (a second tag: not on the node yet).
    let copied = Command::new("skopeo")
        .args([
            "copy",
            "--quiet",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
        ])
        .arg(format!("docker://{image}"))
        .arg(format!("docker://{}/test/busybox:v2", open.host()))
        .output()
        .expect("skopeo");
    assert!(
        copied.status.success(),
        "{}",
        String::from_utf8_lossy(&copied.stderr)
    );
    let secret_image = format!("{}/test/busybox:v2", private.host());
    c.kubectl(&[
        "create",
        "secret",
        "docker-registry",
        "regcred",
        &format!("--docker-server={}", private.host()),
        "--docker-username=puller",
        "--docker-password=secret",
    ]);
    c.kubectl_stdin(
        &["apply", "-f", "-"],
        &pod(
            "private",
            &secret_image,
            "  imagePullSecrets: [{name: regcred}]\n",
        ),
    );
    c.eventually("private to be Running", Duration::from_secs(60), || {
        jsonpath(c, "private", "{.status.phase}") == "Running"
    });
    let described = c.kubectl(&["describe", "pod", "private"]);
    assert!(
        described.contains(&format!("Successfully pulled image \"{secret_image}\"")),
        "{described}"
    );

    // imagePullPolicy Always pulls on every start (only the manifest: the blobs are here).
    c.kubectl_stdin(
        &["apply", "-f", "-"],
        &pod("always", &image, "")
            .replace("    command:", "    imagePullPolicy: Always\n    command:"),
    );
    c.eventually("always to be Running", Duration::from_secs(60), || {
        jsonpath(c, "always", "{.status.phase}") == "Running"
    });
    let described = c.kubectl(&["describe", "pod", "always"]);
    assert!(
        described.contains(&format!("Successfully pulled image \"{image}\""))
            && !described.contains("already present on machine"),
        "Always pulls:\n{described}"
    );

    let uids: Vec<String> = ["pulled", "missing", "denied", "private", "always"]
        .iter()
        .map(|p| jsonpath(c, p, "{.metadata.uid}"))
        .collect();
    c.kubectl(&["delete", "pod", "--all", "--wait=true", "--timeout=60s"]);
    c.eventually("pods to be gone", Duration::from_secs(60), || {
        c.kubectl(&["get", "pods", "-o", "name"]).trim().is_empty()
    });
    c.eventually("nothing left behind", Duration::from_secs(20), || {
        leftovers(c.dir.path(), &pc.bridge, &uids).is_empty()
    });
    drop(pc);
    drop(private);
    drop(open);
}
