//! Pulls against a tiny in-test registry (std `TcpListener`, HTTP/1.0-style one request per
//! connection) that serves a test image and can demand Basic or Bearer authentication.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine as _;

use super::*;
use crate::registries::Credentials;
use crate::spec::Platform;
use crate::testing::{LayerBuilder, TestImage};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// How the test registry wants clients to authenticate.
#[derive(Clone)]
enum AuthMode {
    None,
    Basic,
    /// Bearer tokens from `/token`, which wants Basic credentials.
    Bearer,
}

#[derive(Default)]
struct State {
    /// Tag or digest → (media type, bytes).
    manifests: BTreeMap<String, (String, Vec<u8>)>,
    /// Digest → bytes.
    blobs: BTreeMap<String, Vec<u8>>,
    /// Paths requested, in order.
    requests: Vec<String>,
}

struct TestRegistry {
    port: u16,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
}

const USER: &str = "puller";
const PASSWORD: &str = "s3cret";
const TOKEN: &str = "tok-123";

impl TestRegistry {
    fn start(auth: AuthMode) -> std::io::Result<Self> {
        Self::start_with(auth, None)
    }

    /// With `tls`, connections speak HTTPS with that server configuration.
    fn start_with(auth: AuthMode, tls: Option<Arc<rustls::ServerConfig>>) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp) = (state.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if sp.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(conn) = conn {
                    let st = st.clone();
                    let auth = auth.clone();
                    let tls = tls.clone();
                    std::thread::spawn(move || {
                        let _ = match tls {
                            Some(config) => rustls::ServerConnection::new(config)
                                .map_err(std::io::Error::other)
                                .and_then(|server| {
                                    serve(rustls::StreamOwned::new(server, conn), &st, &auth, port)
                                }),
                            None => serve(conn, &st, &auth, port),
                        };
                    });
                }
            }
        });
        Ok(TestRegistry { port, state, stop })
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn with_state<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let mut guard = match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        f(&mut guard)
    }

    /// Serves `image` as `repo:tag`; returns its manifest digest.
    fn push(&self, image: &TestImage, tag: &str) -> Result<Digest, Box<dyn std::error::Error>> {
        let (desc, blobs) = image.oci_blobs()?;
        self.with_state(|s| {
            for (path, bytes) in blobs {
                let hex = path.trim_start_matches("blobs/sha256/").to_string();
                s.blobs.insert(format!("sha256:{hex}"), bytes);
            }
            let manifest = s
                .blobs
                .get(&desc.digest.to_string())
                .cloned()
                .unwrap_or_default();
            s.manifests.insert(
                tag.to_string(),
                (MEDIA_TYPE_OCI_MANIFEST.to_string(), manifest.clone()),
            );
            s.manifests.insert(
                desc.digest.to_string(),
                (MEDIA_TYPE_OCI_MANIFEST.to_string(), manifest),
            );
        });
        Ok(desc.digest)
    }

    fn requests(&self) -> Vec<String> {
        self.with_state(|s| s.requests.clone())
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn serve(
    mut conn: impl Read + Write,
    state: &Mutex<State>,
    auth: &AuthMode,
    port: u16,
) -> std::io::Result<()> {
    // GET requests have no body: what the reader buffers past the headers is nothing.
    let mut reader = BufReader::new(&mut conn);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let mut authorization = String::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
        if let Some((name, value)) = h.split_once(':') {
            if name.eq_ignore_ascii_case("authorization") {
                authorization = value.trim().to_string();
            }
        }
    }
    drop(reader);
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"))
    );
    let out = &mut conn;
    let mut respond = |status: &str, headers: &[(&str, String)], body: &[u8]| {
        let mut head = format!(
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
            body.len()
        );
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        out.write_all(head.as_bytes())?;
        out.write_all(body)
    };
    let mut guard = match state.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    guard.requests.push(path.clone());
    if path.starts_with("/token") {
        return if authorization == basic {
            respond(
                "200 OK",
                &[],
                format!("{{\"token\":\"{TOKEN}\"}}").as_bytes(),
            )
        } else {
            respond(
                "401 Unauthorized",
                &[],
                br#"{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}"#,
            )
        };
    }
    let unauthorized = match auth {
        AuthMode::None => None,
        AuthMode::Basic => (authorization != basic)
            .then(|| ("WWW-Authenticate", r#"Basic realm="test""#.to_string())),
        AuthMode::Bearer => (authorization != format!("Bearer {TOKEN}")).then(|| {
            (
                "WWW-Authenticate",
                format!(
                    r#"Bearer realm="http://127.0.0.1:{port}/token",service="test-registry",scope="repository:test/app:pull""#
                ),
            )
        }),
    };
    if let Some(challenge) = unauthorized {
        return respond(
            "401 Unauthorized",
            &[challenge],
            br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
        );
    }
    let not_found = br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#;
    if let Some(reference) = path.strip_prefix("/v2/test/app/manifests/") {
        return match guard.manifests.get(reference) {
            Some((mt, bytes)) => respond("200 OK", &[("Content-Type", mt.clone())], bytes),
            None => respond("404 Not Found", &[], not_found),
        };
    }
    if let Some(digest) = path.strip_prefix("/v2/test/app/blobs/") {
        return match guard.blobs.get(digest) {
            Some(bytes) => respond(
                "200 OK",
                &[("Content-Type", "application/octet-stream".to_string())],
                bytes,
            ),
            None => respond("404 Not Found", &[], b"{}"),
        };
    }
    respond("404 Not Found", &[], b"{}")
}

fn test_image(content: &[u8]) -> Result<TestImage, Box<dyn std::error::Error>> {
    let mut l = LayerBuilder::new();
    l.dir("bin", 0o755)?.file("bin/hello", 0o755, content)?;
    let mut l2 = LayerBuilder::new();
    l2.file("etc/motd", 0o644, b"hi\n")?;
    Ok(TestImage {
        layers: vec![l.finish()?, l2.finish()?],
        gzip: true,
        config: Default::default(),
    })
}

fn store() -> Result<(tempfile::TempDir, ImageStore), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let store = ImageStore::open(&dir.path().join("images"))?;
    Ok((dir, store))
}

#[derive(Default)]
struct Recorder(Mutex<Vec<LayerProgress>>);

impl PullProgress for Recorder {
    fn layer(&self, p: &LayerProgress) {
        if let Ok(mut v) = self.0.lock() {
            v.push(p.clone());
        }
    }
}

fn tmp_is_empty(store: &ImageStore) -> bool {
    std::fs::read_dir(store.tmp_dir()).is_ok_and(|mut d| d.next().is_none())
}

#[test]
fn pulls_verifies_and_records_like_an_import() -> TestResult {
    let registry = TestRegistry::start(AuthMode::None)?;
    let image = test_image(b"hello v1")?;
    let digest = registry.push(&image, "v1")?;
    let (_dir, store) = store()?;
    let recorder = Recorder::default();
    let options = PullOptions {
        progress: Some(&recorder),
        ..Default::default()
    };
    let reference = format!("{}/test/app:v1", registry.host());
    let pulled = store.pull(&reference, &options)?;
    assert_eq!(pulled.image.manifest_digest, digest);
    assert_eq!(pulled.image.names, vec![reference.clone()]);
    assert!(pulled.downloaded > 0);
    let stored = store.resolve(&reference)?.ok_or("pulled image not found")?;
    assert_eq!(stored.id, pulled.image.id);
    assert_eq!(stored.size, pulled.size);
    assert!(!stored.pinned, "pulled images are not pinned");
    assert_eq!(stored.layers.len(), 2);
    let layers = store.unpack(&stored)?;
    assert_eq!(std::fs::read(layers[0].join("bin/hello"))?, b"hello v1");
    // Progress: each layer downloading, then downloaded with every byte.
    let reports = recorder.0.lock().map(|v| v.clone()).unwrap_or_default();
    for l in &stored.layers {
        let last = reports
            .iter()
            .rev()
            .find(|p| p.digest == l.digest)
            .ok_or("no progress for a layer")?;
        assert_eq!(last.state, LayerState::Downloaded);
        assert_eq!((last.done, last.total), (l.size, l.size));
    }
    assert!(tmp_is_empty(&store));
    let listed = store.list()?;
    assert_eq!(listed.len(), 1);

    // Pulling it again fetches only the manifest.
    let before = registry.requests().len();
    let again = store.pull(&reference, &PullOptions::default())?;
    assert_eq!(again.image, pulled.image);
    assert_eq!(again.downloaded, 0);
    let after = registry.requests();
    assert_eq!(after.len() - before, 1, "{:?}", &after[before..]);
    assert!(after[before].contains("/manifests/v1"));

    // By digest: found without a name, and pinned digests are checked.
    let by_digest = format!("{}/test/app@{digest}", registry.host());
    assert!(store.resolve(&by_digest)?.is_some());
    assert_eq!(
        store.pull(&by_digest, &PullOptions::default())?.image.id,
        stored.id
    );
    Ok(())
}

#[test]
fn follows_an_index_to_this_platform() -> TestResult {
    let registry = TestRegistry::start(AuthMode::None)?;
    let ours = test_image(b"ours")?;
    let other = test_image(b"other arch")?;
    let ours_digest = registry.push(&ours, "ours")?;
    let other_digest = registry.push(&other, "other")?;
    let size = |d: &Digest| registry.with_state(|s| s.blobs.get(&d.to_string()).map(Vec::len));
    let desc = |d: &Digest, arch: &str| -> Result<Descriptor, Box<dyn std::error::Error>> {
        Ok(Descriptor {
            media_type: MEDIA_TYPE_OCI_MANIFEST.into(),
            digest: d.clone(),
            size: size(d).ok_or("manifest missing")? as u64,
            platform: Some(Platform {
                architecture: arch.into(),
                os: "linux".into(),
                variant: None,
            }),
            annotations: Default::default(),
        })
    };
    let index = Index {
        schema_version: 2,
        media_type: Some(MEDIA_TYPE_OCI_INDEX.into()),
        manifests: vec![
            desc(&other_digest, "s390x")?,
            desc(&ours_digest, host_architecture())?,
        ],
        annotations: Default::default(),
    };
    let index_bytes = serde_json::to_vec(&index)?;
    let index_digest = Digest::of(&index_bytes);
    registry.with_state(|s| {
        s.manifests.insert(
            "multi".into(),
            (MEDIA_TYPE_OCI_INDEX.into(), index_bytes.clone()),
        );
        s.manifests.insert(
            index_digest.to_string(),
            (MEDIA_TYPE_OCI_INDEX.into(), index_bytes),
        );
    });
    let (_dir, store) = store()?;
    let pulled = store.pull(
        &format!("{}/test/app:multi", registry.host()),
        &PullOptions::default(),
    )?;
    assert_eq!(pulled.image.manifest_digest, ours_digest);
    // The index digest finds the image too.
    let by_index = format!("{}/test/app@{index_digest}", registry.host());
    assert_eq!(
        store.resolve(&by_index)?.map(|i| i.manifest_digest),
        Some(ours_digest)
    );
    Ok(())
}

#[test]
fn selects_the_host_platform_from_an_index() {
    let entry = |arch: &str, os: &str, n: u8| Descriptor {
        media_type: MEDIA_TYPE_OCI_MANIFEST.into(),
        digest: Digest::of(&[n]),
        size: 1,
        platform: Some(Platform {
            architecture: arch.into(),
            os: os.into(),
            variant: None,
        }),
        annotations: Default::default(),
    };
    let index = |manifests| Index {
        schema_version: 2,
        media_type: None,
        manifests,
        annotations: Default::default(),
    };
    let arch = host_architecture();
    let i = index(vec![
        entry("unknown", "unknown", 1),
        entry(arch, "windows", 2),
        entry("s390x", "linux", 3),
        entry(arch, "linux", 4),
    ]);
    assert_eq!(
        select_manifest(&i).map(|d| d.digest.clone()),
        Some(Digest::of(&[4]))
    );
    assert!(select_manifest(&index(vec![entry("s390x", "linux", 1)])).is_none());
    let mut bare = entry(arch, "linux", 5);
    bare.platform = None;
    assert_eq!(
        select_manifest(&index(vec![bare.clone()])).map(|d| d.digest.clone()),
        Some(Digest::of(&[5]))
    );
    assert!(select_manifest(&index(vec![bare.clone(), bare])).is_none());
}

#[test]
fn refuses_a_blob_that_does_not_match_its_digest() -> TestResult {
    let registry = TestRegistry::start(AuthMode::None)?;
    let image = test_image(b"good")?;
    registry.push(&image, "v1")?;
    // Swap the first layer's bytes for other bytes of the same size.
    let manifest: Manifest = registry.with_state(|s| {
        serde_json::from_slice(
            &s.manifests
                .get("v1")
                .map(|m| m.1.clone())
                .unwrap_or_default(),
        )
    })?;
    let layer = manifest.layers.first().ok_or("no layer")?.clone();
    registry.with_state(|s| {
        if let Some(b) = s.blobs.get_mut(&layer.digest.to_string()) {
            if let Some(last) = b.last_mut() {
                *last ^= 0xff;
            }
        }
    });
    let (_dir, store) = store()?;
    let reference = format!("{}/test/app:v1", registry.host());
    let err = match store.pull(&reference, &PullOptions::default()) {
        Ok(p) => return Err(format!("bad blob accepted: {p:?}").into()),
        Err(e) => e,
    };
    let text = err.to_string();
    assert!(
        text.starts_with(&format!(
            "failed to pull and unpack image \"{reference}\": failed to verify blob {}",
            layer.digest
        )),
        "{text}"
    );
    assert!(store.list()?.is_empty(), "nothing recorded");
    assert!(
        !store.blob_path(&layer.digest).exists(),
        "bad blob not stored"
    );
    assert!(tmp_is_empty(&store));

    // A pinned digest the registry's manifest does not match is refused too.
    let wrong = Digest::of(b"something else");
    registry.with_state(|s| {
        let m = s.manifests.get("v1").cloned();
        if let Some(m) = m {
            s.manifests.insert(wrong.to_string(), m);
        }
    });
    let text = store
        .pull(
            &format!("{}/test/app@{wrong}", registry.host()),
            &PullOptions::default(),
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        text.contains(&format!("failed to verify manifest {wrong}")),
        "{text}"
    );
    Ok(())
}

#[test]
fn reports_missing_images_like_containerd() -> TestResult {
    let registry = TestRegistry::start(AuthMode::None)?;
    let (_dir, store) = store()?;
    let reference = format!("{}/test/app:nope", registry.host());
    let text = store
        .pull(&reference, &PullOptions::default())
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert_eq!(
        text,
        format!("failed to pull and unpack image \"{reference}\": failed to resolve reference \"{reference}\": {reference}: not found")
    );
    // An endpoint that refuses connections: the request error is reported.
    let closed = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let text = store
        .pull(
            &format!("127.0.0.1:{closed}/x/y:1"),
            &PullOptions::default(),
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(text.contains("failed to do request: GET"), "{text}");
    Ok(())
}

#[test]
fn authenticates_with_bearer_tokens_and_basic_auth() -> TestResult {
    let creds = Credentials {
        username: USER.into(),
        password: PASSWORD.into(),
    };
    for mode in [AuthMode::Bearer, AuthMode::Basic] {
        let registry = TestRegistry::start(mode.clone())?;
        registry.push(&test_image(b"secret app")?, "v1")?;
        let (_dir, store) = store()?;
        let reference = format!("{}/test/app:v1", registry.host());
        // Anonymous: refused with the registry's 401.
        let text = store
            .pull(&reference, &PullOptions::default())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(text.contains("401 Unauthorized"), "{text}");
        if matches!(mode, AuthMode::Bearer) {
            assert!(text.contains("failed to fetch anonymous token"), "{text}");
        }
        // Wrong password: refused.
        let wrong = PullOptions {
            credentials: Some(Credentials {
                username: USER.into(),
                password: "nope".into(),
            }),
            ..Default::default()
        };
        let text = store
            .pull(&reference, &wrong)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(text.contains("401 Unauthorized"), "{text}");
        // Explicit credentials, then the same from registries.yaml.
        let options = PullOptions {
            credentials: Some(creds.clone()),
            ..Default::default()
        };
        store.pull(&reference, &options)?;
        let yaml = format!(
            "configs:\n  \"{}\":\n    auth: {{username: {USER}, password: {PASSWORD}}}\n",
            registry.host()
        );
        let options = PullOptions {
            registries: RegistriesConfig::parse(&yaml)?,
            ..Default::default()
        };
        store.pull(&reference, &options)?;
        assert_eq!(store.list()?.len(), 1);
    }
    Ok(())
}

/// A self-signed certificate for 127.0.0.1: the server's TLS configuration and the PEM.
fn tls_server() -> Result<(Arc<rustls::ServerConfig>, String), Box<dyn std::error::Error>> {
    let key = rcgen::KeyPair::generate()?;
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])?.self_signed(&key)?;
    let der = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(vec![cert.der().clone()], der)?;
    Ok((Arc::new(config), cert.pem()))
}

#[test]
fn verifies_https_registries_with_the_configured_ca() -> TestResult {
    let (server, pem) = tls_server()?;
    let registry = TestRegistry::start_with(AuthMode::None, Some(server))?;
    registry.push(&test_image(b"over tls")?, "v1")?;
    let (dir, store) = store()?;
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &pem)?;
    let host = registry.host();
    let reference = format!("{host}/test/app:v1");
    let config = |tls: &str| -> Result<PullOptions<'static>, String> {
        Ok(PullOptions {
            registries: RegistriesConfig::parse(&format!(
                "mirrors:\n  \"{host}\":\n    endpoint: [\"https://{host}\"]\nconfigs:\n  \"{host}\":\n    tls: {tls}\n"
            ))?,
            ..Default::default()
        })
    };
    // The public roots do not know this certificate.
    let text = store
        .pull(&reference, &config("{}")?)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        text.contains("failed to do request: GET \"https://"),
        "{text}"
    );
    assert!(store.list()?.is_empty());
    // Its CA from ca_file, or no verification at all, and the pull works.
    store.pull(
        &reference,
        &config(&format!("{{ca_file: {}}}", ca.display()))?,
    )?;
    store.pull(&reference, &config("{insecure_skip_verify: true}")?)?;
    assert_eq!(store.list()?.len(), 1);
    Ok(())
}
