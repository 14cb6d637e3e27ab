//! Integration tests of the image store: import (OCI layout, docker save), resolve,
//! unpack (whiteouts, overlayfs merged view), refusal of bad tarballs, idempotence and
//! concurrency. Run as root (CI is); the overlay mount is skipped with a note otherwise.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use berth_images::spec::ContainerConfig;
use berth_images::testing::{build_busybox_oci_tar, write_tar, LayerBuilder, TestImage};
use berth_images::{ImageError, ImageStore, Removed};

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

fn is_root() -> bool {
    fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// Names of the entries in `dir` (empty if it does not exist).
fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn assert_busybox_rootfs(layer: &Path) -> Result {
    let sh = layer.join("bin/sh");
    let meta = fs::symlink_metadata(&sh)?;
    assert!(meta.file_type().is_symlink(), "bin/sh is a symlink");
    assert_eq!(fs::read_link(&sh)?, PathBuf::from("busybox"));
    let bb = fs::symlink_metadata(layer.join("bin/busybox"))?;
    assert!(bb.is_file());
    assert_eq!(bb.permissions().mode() & 0o7777, 0o755);
    assert_eq!(bb.len(), fs::metadata("/bin/busybox")?.len());
    if is_root() {
        assert_eq!((bb.uid(), bb.gid()), (0, 0));
    }
    let tmp = fs::symlink_metadata(layer.join("tmp"))?;
    assert!(tmp.is_dir());
    assert_eq!(tmp.permissions().mode() & 0o7777, 0o1777);
    assert!(fs::read_to_string(layer.join("etc/passwd"))?.starts_with("root:x:0:0:"));
    assert!(layer.join("etc/group").is_file());
    Ok(())
}

#[test]
fn imports_busybox_oci_layout_and_unpacks_it() -> Result {
    let dir = tempfile::tempdir()?;
    let tarball = dir.path().join("busybox.tar");
    build_busybox_oci_tar(&tarball, "busybox:latest")?;
    let store = ImageStore::open(&dir.path().join("images"))?;

    let refs = store.import(&tarball)?;
    assert_eq!(refs.len(), 1);
    assert_eq!(refs[0].names, vec!["docker.io/library/busybox:latest"]);

    let image = store.resolve("busybox")?.ok_or("busybox not found")?;
    assert_eq!(image.id, refs[0].id);
    assert_eq!(image.config.cmd, vec!["sh"]);
    assert!(image.config.env.iter().any(|e| e.starts_with("PATH=")));
    assert_eq!(image.layers.len(), 1);
    assert_eq!(image.os, "linux");

    // Every way of naming it finds it.
    let manifest = image.manifest_digest.to_string();
    for r in [
        "busybox:latest".to_string(),
        "docker.io/library/busybox".to_string(),
        image.id.to_string(),
        image.id.hex().to_string(),
        image.id.hex()[..12].to_string(),
        manifest.clone(),
        format!("busybox@{manifest}"),
    ] {
        assert_eq!(
            store.resolve(&r)?.map(|i| i.id),
            Some(image.id.clone()),
            "{r}"
        );
    }
    assert!(store.resolve("busybox:other")?.is_none());
    assert!(store.resolve("alpine")?.is_none());

    let list = store.list()?;
    assert_eq!(list.len(), 1);
    assert!(list[0].size > 500_000);

    let dirs = store.unpack(&image)?;
    assert_eq!(dirs.len(), 1);
    assert_busybox_rootfs(&dirs[0])?;
    // Unpacking again reuses the layer.
    assert_eq!(store.unpack(&image)?, dirs);
    assert_eq!(
        entries(&dir.path().join("images/tmp")),
        Vec::<String>::new()
    );
    Ok(())
}

#[test]
fn the_shell_script_builds_an_importable_busybox() -> Result {
    let dir = tempfile::tempdir()?;
    let tarball = dir.path().join("bb.tar");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/busybox-image.sh");
    let status = Command::new("sh")
        .arg(&script)
        .arg(&tarball)
        .arg("localhost/busybox:1")
        .status()?;
    assert!(status.success());
    let store = ImageStore::open(&dir.path().join("images"))?;
    let refs = store.import(&tarball)?;
    assert_eq!(refs[0].names, vec!["localhost/busybox:1"]);
    let image = store.resolve("localhost/busybox:1")?.ok_or("not found")?;
    assert_eq!(image.config.cmd, vec!["sh"]);
    let dirs = store.unpack(&image)?;
    assert_busybox_rootfs(&dirs[0])?;
    Ok(())
}

fn two_layer_image(gzip: bool) -> Result<TestImage> {
    let mut lower = LayerBuilder::new();
    lower
        .dir("app", 0o755)?
        .file("app/run.sh", 0o750, b"#!/bin/sh\necho hi\n")?
        .file_owned("app/data", 0o640, 1000, 1001, b"data")?
        .hardlink("app/data-link", "app/data")?
        .symlink("app/current", "/app/run.sh")?;
    let mut upper = LayerBuilder::new();
    upper.file("app/extra", 0o644, b"extra")?;
    Ok(TestImage {
        layers: vec![lower.finish()?, upper.finish()?],
        gzip,
        config: ContainerConfig {
            entrypoint: Some(vec!["/app/run.sh".into()]),
            cmd: Some(vec!["--serve".into()]),
            env: Some(vec!["A=1".into()]),
            working_dir: Some("/app".into()),
            user: Some("1000:1001".into()),
            exposed_ports: Some([("8080/tcp".to_string(), serde_json::json!({}))].into()),
            stop_signal: Some("SIGQUIT".into()),
            labels: Some([("team".to_string(), "berth".to_string())].into()),
        },
    })
}

#[test]
fn imports_docker_save_tarballs() -> Result {
    let dir = tempfile::tempdir()?;
    let tarball = dir.path().join("app.tar");
    two_layer_image(false)?.write_docker_save(&tarball, &["myapp:v1", "localhost:5000/app:2"])?;
    let store = ImageStore::open(&dir.path().join("images"))?;
    let refs = store.import(&tarball)?;
    assert_eq!(
        refs[0].names,
        vec!["docker.io/library/myapp:v1", "localhost:5000/app:2"]
    );
    let image = store.resolve("myapp:v1")?.ok_or("not found")?;
    let c = &image.config;
    assert_eq!(c.entrypoint, vec!["/app/run.sh"]);
    assert_eq!(c.cmd, vec!["--serve"]);
    assert_eq!(c.env, vec!["A=1"]);
    assert_eq!(c.working_dir.as_deref(), Some("/app"));
    assert_eq!(c.user.as_deref(), Some("1000:1001"));
    assert_eq!(c.exposed_ports, vec!["8080/tcp"]);
    assert_eq!(c.stop_signal.as_deref(), Some("SIGQUIT"));
    assert_eq!(c.labels.get("team").map(String::as_str), Some("berth"));
    assert_eq!(image.layers.len(), 2);
    assert!(image.layers.iter().all(|l| l.media_type.ends_with(".tar")));

    let dirs = store.unpack(&image)?;
    let lower = &dirs[0];
    let run = fs::metadata(lower.join("app/run.sh"))?;
    assert_eq!(run.permissions().mode() & 0o7777, 0o750);
    assert_eq!(run.mtime(), 946_684_800);
    let data = fs::metadata(lower.join("app/data"))?;
    let link = fs::metadata(lower.join("app/data-link"))?;
    assert_eq!(data.ino(), link.ino(), "hard link shares the inode");
    if is_root() {
        assert_eq!((data.uid(), data.gid()), (1000, 1001));
    }
    assert_eq!(
        fs::read_link(lower.join("app/current"))?,
        PathBuf::from("/app/run.sh")
    );
    assert_eq!(fs::read(dirs[1].join("app/extra"))?, b"extra");

    // Removing one of two names untags; removing the last deletes everything.
    assert!(matches!(
        store.remove("myapp:v1")?,
        Some(Removed::Untagged { .. })
    ));
    assert!(store.resolve("myapp:v1")?.is_none());
    assert!(matches!(
        store.remove("localhost:5000/app:2")?,
        Some(Removed::Deleted { .. })
    ));
    assert!(store.list()?.is_empty());
    assert_eq!(
        entries(&dir.path().join("images/blobs/sha256")),
        Vec::<String>::new()
    );
    assert_eq!(
        entries(&dir.path().join("images/layers")),
        Vec::<String>::new()
    );
    assert_eq!(store.remove("localhost:5000/app:2")?, None);
    Ok(())
}

/// Unmounts on drop, so a failed assertion does not leave a mount behind.
struct Mount(PathBuf);
impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn whiteouts_become_overlay_markers_and_merge_correctly() -> Result {
    let mut lower = LayerBuilder::new();
    lower
        .dir("a", 0o755)?
        .file("a/keep", 0o644, b"keep")?
        .file("a/gone", 0o644, b"gone")?
        .dir("o", 0o755)?
        .file("o/old", 0o644, b"old")?
        .dir("o/sub", 0o755)?
        .file("o/sub/deep", 0o644, b"deep")?;
    let mut upper = LayerBuilder::new();
    upper
        .dir("a", 0o755)?
        .whiteout("a", "gone")?
        .dir("o", 0o755)?
        .opaque("o")?
        .file("o/new", 0o644, b"new")?;
    let image = TestImage {
        layers: vec![lower.finish()?, upper.finish()?],
        gzip: true,
        config: Default::default(),
    };
    let dir = tempfile::tempdir()?;
    let tarball = dir.path().join("wh.tar");
    image.write_oci(&tarball, Some("wh:1"))?;
    let store = ImageStore::open(&dir.path().join("images"))?;
    store.import(&tarball)?;
    let image = store.resolve("wh:1")?.ok_or("not found")?;
    let dirs = store.unpack(&image)?;
    let top = &dirs[1];

    let gone = fs::symlink_metadata(top.join("a/gone"))?;
    assert!(
        gone.file_type().is_char_device(),
        "whiteout is a char device"
    );
    assert_eq!(gone.rdev(), 0);
    assert!(!top.join("a/.wh.gone").exists());
    assert_eq!(
        xattr::get(top.join("o"), "trusted.overlay.opaque")?,
        Some(b"y".to_vec())
    );
    assert!(!top.join("o/.wh..wh..opq").exists());

    if !is_root() {
        println!("note: not root, skipping the overlayfs mount check");
        return Ok(());
    }
    let merged = dir.path().join("merged");
    fs::create_dir(&merged)?;
    let lowerdir = dirs
        .iter()
        .rev()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(":");
    let status = Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o"])
        .arg(format!("lowerdir={lowerdir}"))
        .arg(&merged)
        .status()?;
    assert!(status.success(), "mount overlay");
    let mount = Mount(merged.clone());
    assert_eq!(entries(&merged.join("a")), vec!["keep"]);
    assert_eq!(entries(&merged.join("o")), vec!["new"]);
    assert_eq!(fs::read(merged.join("o/new"))?, b"new");
    drop(mount);
    assert!(entries(&merged).is_empty(), "unmounted");
    Ok(())
}

/// Rewrites a tarball, letting `f` change (or drop) each file's content.
fn rewrite_tar(
    src: &Path,
    dst: &Path,
    mut f: impl FnMut(&str, Vec<u8>) -> Option<Vec<u8>>,
) -> Result {
    let mut archive = tar::Archive::new(fs::File::open(src)?);
    let mut dirs = Vec::new();
    let mut files = Vec::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.to_string_lossy().into_owned();
        if entry.header().entry_type().is_dir() {
            dirs.push(path);
            continue;
        }
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut data)?;
        if let Some(data) = f(&path, data) {
            files.push((path, data));
        }
    }
    let dir_refs: Vec<&str> = dirs.iter().map(String::as_str).collect();
    write_tar(dst, &dir_refs, &files)?;
    Ok(())
}

/// Asserts an import failed and left no image, blob or temporary file.
fn assert_nothing_left(
    store_dir: &Path,
    result: std::result::Result<Vec<berth_images::ImageRef>, ImageError>,
) -> Result {
    let err = match result {
        Ok(refs) => return Err(format!("import succeeded: {refs:?}").into()),
        Err(e) => e,
    };
    println!("refused as expected: {err}");
    let store = ImageStore::open(store_dir)?;
    assert!(store.list()?.is_empty());
    assert_eq!(
        entries(&store_dir.join("blobs/sha256")),
        Vec::<String>::new()
    );
    assert_eq!(entries(&store_dir.join("tmp")), Vec::<String>::new());
    assert_eq!(entries(&store_dir.join("layers")), Vec::<String>::new());
    Ok(())
}

#[test]
fn bad_tarballs_are_refused_and_leave_nothing() -> Result {
    let dir = tempfile::tempdir()?;
    let store_dir = dir.path().join("images");
    let store = ImageStore::open(&store_dir)?;
    let good = dir.path().join("good.tar");
    two_layer_image(true)?.write_oci(&good, Some("app:1"))?;
    // oci_blobs lists the manifest, the config, then the layers (builds are reproducible).
    let (_, blobs) = two_layer_image(true)?.oci_blobs()?;
    let layer_hex = blobs[2].0.trim_start_matches("blobs/sha256/").to_string();

    // A blob whose content does not match its digest.
    let bad_digest = dir.path().join("bad-digest.tar");
    rewrite_tar(&good, &bad_digest, |p, mut d| {
        if p.ends_with(&layer_hex) {
            if let Some(b) = d.last_mut() {
                *b ^= 0xff;
            }
        }
        Some(d)
    })?;
    let r = store.import(&bad_digest);
    assert!(matches!(r, Err(ImageError::DigestMismatch { .. })), "{r:?}");
    assert_nothing_left(&store_dir, r)?;

    // A missing blob.
    let missing = dir.path().join("missing.tar");
    rewrite_tar(&good, &missing, |p, d| {
        (!p.ends_with(&layer_hex)).then_some(d)
    })?;
    assert_nothing_left(&store_dir, store.import(&missing))?;

    // A truncated tarball.
    let truncated = dir.path().join("truncated.tar");
    let bytes = fs::read(&good)?;
    fs::write(&truncated, &bytes[..bytes.len() / 2])?;
    assert_nothing_left(&store_dir, store.import(&truncated))?;

    // A truncated gzip layer in a docker save (no digest in its name to catch it).
    let docker = dir.path().join("docker.tar");
    two_layer_image(true)?.write_docker_save(&docker, &["app:1"])?;
    let truncated_layer = dir.path().join("truncated-layer.tar");
    rewrite_tar(&docker, &truncated_layer, |p, d| {
        Some(if p == "layer0/layer.tar" {
            d[..d.len() / 2].to_vec()
        } else {
            d
        })
    })?;
    assert_nothing_left(&store_dir, store.import(&truncated_layer))?;

    // Layers that try to write outside their directory.
    let sentinel = dir.path().join("escaped");
    let hostile: Vec<Vec<u8>> = vec![
        {
            let mut l = LayerBuilder::new();
            l.file("../escaped", 0o644, b"x")?;
            l.finish()?
        },
        {
            let mut l = LayerBuilder::new();
            l.file("/escaped", 0o644, b"x")?;
            l.finish()?
        },
        {
            let mut l = LayerBuilder::new();
            l.symlink("link", &dir.path().display().to_string())?.file(
                "link/escaped",
                0o644,
                b"x",
            )?;
            l.finish()?
        },
        {
            let mut l = LayerBuilder::new();
            l.hardlink("passwd", "../../../../etc/passwd")?;
            l.finish()?
        },
    ];
    for (i, layer) in hostile.into_iter().enumerate() {
        let t = dir.path().join(format!("hostile{i}.tar"));
        TestImage {
            layers: vec![layer],
            gzip: false,
            config: Default::default(),
        }
        .write_oci(&t, Some("evil:1"))?;
        let r = store.import(&t);
        assert!(
            matches!(r, Err(ImageError::UnsafePath { .. })),
            "{i}: {r:?}"
        );
        assert_nothing_left(&store_dir, r)?;
        assert!(!sentinel.exists(), "{i}: wrote outside");
    }

    // An outer tarball whose own entries climb out.
    let climbing = dir.path().join("climbing.tar");
    let mut b = LayerBuilder::new();
    b.file("../index.json", 0o644, b"{}")?;
    fs::write(&climbing, b.finish()?)?;
    assert_nothing_left(&store_dir, store.import(&climbing))?;
    Ok(())
}

#[test]
fn reimport_is_idempotent() -> Result {
    let dir = tempfile::tempdir()?;
    let tarball = dir.path().join("busybox.tar");
    build_busybox_oci_tar(&tarball, "busybox")?;
    let store_dir = dir.path().join("images");
    let store = ImageStore::open(&store_dir)?;
    let first = store.import(&tarball)?;
    let index = fs::read(store_dir.join("index.json"))?;
    let blobs = entries(&store_dir.join("blobs/sha256"));
    let second = store.import(&tarball)?;
    assert_eq!(first, second);
    assert_eq!(fs::read(store_dir.join("index.json"))?, index);
    assert_eq!(entries(&store_dir.join("blobs/sha256")), blobs);
    assert_eq!(store.list()?.len(), 1);
    // A reopened store sees the same.
    assert_eq!(ImageStore::open(&store_dir)?.list()?, store.list()?);
    Ok(())
}

#[test]
fn concurrent_unpack_of_one_layer_is_safe() -> Result {
    let dir = tempfile::tempdir()?;
    let tarball = dir.path().join("busybox.tar");
    build_busybox_oci_tar(&tarball, "busybox")?;
    let store_dir = dir.path().join("images");
    ImageStore::open(&store_dir)?.import(&tarball)?;
    let results: Vec<std::result::Result<Vec<PathBuf>, String>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..6)
            .map(|_| {
                s.spawn(|| {
                    let store = ImageStore::open(&store_dir).map_err(|e| e.to_string())?;
                    let image = store
                        .resolve("busybox")
                        .map_err(|e| e.to_string())?
                        .ok_or("not found")?;
                    store.unpack(&image).map_err(|e| e.to_string())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("thread panicked".to_string()))
            })
            .collect()
    });
    let first = results[0].clone()?;
    for r in &results {
        assert_eq!(r.as_ref().map_err(Clone::clone)?, &first);
    }
    assert_busybox_rootfs(&first[0])?;
    assert_eq!(
        entries(&store_dir.join("layers")).len(),
        1,
        "no temporary leftovers"
    );
    Ok(())
}

fn image_with_cmd(cmd: &str) -> Result<TestImage> {
    let mut l = LayerBuilder::new();
    l.file(cmd, 0o755, cmd.as_bytes())?;
    Ok(TestImage {
        layers: vec![l.finish()?],
        gzip: true,
        config: ContainerConfig {
            cmd: Some(vec![cmd.to_string()]),
            ..Default::default()
        },
    })
}

#[test]
fn picks_the_host_platform_from_a_multi_arch_index() -> Result {
    use berth_images::spec::{
        host_architecture, Descriptor, Index, Platform, MEDIA_TYPE_OCI_INDEX,
    };
    let (mut other, mut blobs) = image_with_cmd("other")?.oci_blobs()?;
    let (mut host, host_blobs) = image_with_cmd("host")?.oci_blobs()?;
    blobs.extend(host_blobs);
    other.platform = Some(Platform {
        architecture: if host_architecture() == "s390x" {
            "arm64"
        } else {
            "s390x"
        }
        .into(),
        os: "linux".into(),
        variant: None,
    });
    host.platform = Some(Platform {
        architecture: host_architecture().into(),
        os: "linux".into(),
        variant: None,
    });
    let nested = serde_json::to_vec(&Index {
        schema_version: 2,
        media_type: Some(MEDIA_TYPE_OCI_INDEX.into()),
        manifests: vec![other, host],
        annotations: Default::default(),
    })?;
    let nested_digest = berth_images::Digest::parse(&format!("sha256:{}", sha256_hex(&nested)))?;
    blobs.push((
        format!("blobs/sha256/{}", nested_digest.hex()),
        nested.clone(),
    ));
    let top = Descriptor {
        media_type: MEDIA_TYPE_OCI_INDEX.into(),
        digest: nested_digest,
        size: nested.len() as u64,
        platform: None,
        annotations: [(
            "org.opencontainers.image.ref.name".to_string(),
            "multi:1".to_string(),
        )]
        .into(),
    };
    let dir = tempfile::tempdir()?;
    let tarball = dir.path().join("multi.tar");
    berth_images::testing::write_oci_layout(&tarball, vec![top], blobs)?;
    let store = ImageStore::open(&dir.path().join("images"))?;
    store.import(&tarball)?;
    let image = store.resolve("multi:1")?.ok_or("not found")?;
    assert_eq!(image.config.cmd, vec!["host"]);
    assert_eq!(image.architecture, host_architecture());
    // Only the chosen image's blobs are stored: manifest, config, one layer.
    assert_eq!(entries(&dir.path().join("images/blobs/sha256")).len(), 3);
    Ok(())
}

fn sha256_hex(data: &[u8]) -> String {
    berth_images::Digest::of(data).hex().to_string()
}

#[test]
fn imports_a_gzipped_tarball() -> Result {
    let dir = tempfile::tempdir()?;
    let tarball = dir.path().join("busybox.tar");
    build_busybox_oci_tar(&tarball, "busybox:gz")?;
    let status = Command::new("gzip").arg("-k").arg(&tarball).status()?;
    assert!(status.success());
    let store = ImageStore::open(&dir.path().join("images"))?;
    let refs = store.import(&dir.path().join("busybox.tar.gz"))?;
    assert_eq!(refs[0].names, vec!["docker.io/library/busybox:gz"]);
    Ok(())
}

#[test]
fn a_corrupted_blob_fails_unpack_and_leaves_no_layer() -> Result {
    let dir = tempfile::tempdir()?;
    let tarball = dir.path().join("app.tar");
    two_layer_image(true)?.write_oci(&tarball, Some("app:1"))?;
    let store_dir = dir.path().join("images");
    let store = ImageStore::open(&store_dir)?;
    store.import(&tarball)?;
    let image = store.resolve("app:1")?.ok_or("not found")?;
    let blob = store.blob_path(&image.layers[0].digest);
    let bytes = fs::read(&blob)?;
    fs::write(&blob, &bytes[..bytes.len() - 8])?;
    let r = store.unpack(&image);
    println!("refused as expected: {r:?}");
    assert!(r.is_err());
    assert_eq!(entries(&store_dir.join("layers")), Vec::<String>::new());
    Ok(())
}

#[test]
fn open_removes_debris_of_crashed_processes() -> Result {
    let dir = tempfile::tempdir()?;
    let store_dir = dir.path().join("images");
    ImageStore::open(&store_dir)?;
    // No process has this pid (above the kernel's pid_max).
    let dead_layer = store_dir.join("layers/.tmp-999999999-0-abc");
    let dead_import = store_dir.join("tmp/.tmp-999999999-1-import");
    let live = store_dir.join(format!("layers/.tmp-{}-0-live", std::process::id()));
    for d in [&dead_layer, &dead_import, &live] {
        fs::create_dir_all(d.join("half"))?;
    }
    ImageStore::open(&store_dir)?;
    assert!(!dead_layer.exists() && !dead_import.exists());
    assert!(live.exists(), "a live process's work is kept");
    Ok(())
}

#[test]
fn importing_a_name_again_moves_it_to_the_new_image() -> Result {
    let dir = tempfile::tempdir()?;
    let store = ImageStore::open(&dir.path().join("images"))?;
    let first = dir.path().join("first.tar");
    image_with_cmd("first")?.write_oci(&first, Some("app:latest"))?;
    let second = dir.path().join("second.tar");
    image_with_cmd("second")?.write_docker_save(&second, &["app"])?;
    let old = store.import(&first)?;
    let new = store.import(&second)?;
    let image = store.resolve("docker.io/library/app")?.ok_or("not found")?;
    assert_eq!(image.id, new[0].id);
    assert_eq!(image.config.cmd, vec!["second"]);
    // The old image stays, nameless (like Docker's `<none>`), reachable by id.
    let list = store.list()?;
    assert_eq!(list.len(), 2);
    let dangling = store
        .resolve(&old[0].id.to_string())?
        .ok_or("old image gone")?;
    assert!(dangling.names.is_empty());
    assert!(matches!(
        store.remove(&old[0].id.to_string())?,
        Some(Removed::Deleted { .. })
    ));
    assert_eq!(store.list()?.len(), 1);
    assert!(store.unpack(&image).is_ok());
    Ok(())
}
