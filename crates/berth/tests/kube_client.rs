//! The `kube` crate against a real `berth server`: typed CRUD, watch order, and the
//! upstream status codes for bad input.

mod common;

use common::Cluster;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use serde_json::json;

fn cm(name: &str, v: &str) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name}, "data": {"v": v}}))
        .expect("configmap")
}

/// Sends a raw request and returns the HTTP-level error code and reason, if it failed.
async fn raw(
    client: &kube::Client,
    method: &str,
    path: &str,
    ctype: &str,
    body: Vec<u8>,
) -> Result<serde_json::Value, (u16, String)> {
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", ctype)
        .body(body)
        .expect("request");
    match client.request::<serde_json::Value>(req).await {
        Ok(v) => Ok(v),
        Err(kube::Error::Api(e)) => Err((e.code, e.reason)),
        Err(e) => Err((0, e.to_string())),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crud_and_watch_in_order() {
    let c = Cluster::start();
    let client = c.client().await;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let start = api.list(&ListParams::default()).await.expect("list");
    let rv = start
        .metadata
        .resource_version
        .clone()
        .expect("list resourceVersion");
    let mut stream = api
        .watch(&WatchParams::default(), &rv)
        .await
        .expect("watch")
        .boxed();

    let created = api
        .create(&PostParams::default(), &cm("k1", "1"))
        .await
        .expect("create");
    assert!(created.metadata.uid.is_some());
    let err = api
        .create(&PostParams::default(), &cm("k1", "1"))
        .await
        .expect_err("duplicate");
    assert!(
        matches!(err, kube::Error::Api(ref e) if e.code == 409 && e.reason == "AlreadyExists"),
        "{err:?}"
    );
    api.patch(
        "k1",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"v": "2"}})),
    )
    .await
    .expect("patch");
    // A stale resourceVersion is a 409 Conflict.
    let mut stale = created.clone();
    stale.data = Some([("v".to_string(), "3".to_string())].into());
    let err = api
        .replace("k1", &PostParams::default(), &stale)
        .await
        .expect_err("stale");
    assert!(
        matches!(err, kube::Error::Api(ref e) if e.code == 409 && e.reason == "Conflict"),
        "{err:?}"
    );
    api.delete("k1", &DeleteParams::default())
        .await
        .expect("delete");
    let err = api.get("k1").await.expect_err("gone");
    assert!(
        matches!(err, kube::Error::Api(ref e) if e.code == 404),
        "{err:?}"
    );

    let mut seen = Vec::new();
    while seen.len() < 3 {
        let ev = tokio::time::timeout(std::time::Duration::from_secs(10), stream.try_next())
            .await
            .expect("event in time")
            .expect("watch ok")
            .expect("stream open");
        match ev {
            WatchEvent::Added(o) => seen.push(("ADDED", o.data.and_then(|d| d.get("v").cloned()))),
            WatchEvent::Modified(o) => {
                seen.push(("MODIFIED", o.data.and_then(|d| d.get("v").cloned())))
            }
            WatchEvent::Deleted(o) => {
                seen.push(("DELETED", o.data.and_then(|d| d.get("v").cloned())))
            }
            WatchEvent::Bookmark(_) => {}
            WatchEvent::Error(e) => panic!("watch error {e:?}"),
        }
    }
    assert_eq!(
        seen,
        vec![
            ("ADDED", Some("1".into())),
            ("MODIFIED", Some("2".into())),
            ("DELETED", Some("2".into()))
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_upstream_status() {
    let c = Cluster::start();
    let client = c.client().await;
    let path = "/api/v1/namespaces/default/configmaps";
    let r = raw(
        &client,
        "POST",
        path,
        "application/json",
        b"{not json".to_vec(),
    )
    .await;
    assert_eq!(r.err().map(|e| e.0), Some(400));
    let wrong_kind = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"}});
    let r = raw(
        &client,
        "POST",
        path,
        "application/json",
        wrong_kind.to_string().into_bytes(),
    )
    .await;
    assert_eq!(r.err().map(|e| e.0), Some(400));
    let bad_name =
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "Bad_Name"}});
    let r = raw(
        &client,
        "POST",
        path,
        "application/json",
        bad_name.to_string().into_bytes(),
    )
    .await;
    assert_eq!(r.err(), Some((422, "Invalid".to_string())));
    let unknown =
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "u"}, "bogus": 1});
    let r = raw(
        &client,
        "POST",
        &format!("{path}?fieldValidation=Strict"),
        "application/json",
        unknown.to_string().into_bytes(),
    )
    .await;
    assert_eq!(r.err().map(|e| e.0), Some(400));
    let big = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "big"}, "data": {"x": "a".repeat(4 << 20)}});
    let r = raw(
        &client,
        "POST",
        path,
        "application/json",
        big.to_string().into_bytes(),
    )
    .await;
    assert_eq!(r.err().map(|e| e.0), Some(413));
    let r = raw(
        &client,
        "PATCH",
        &format!("{path}/nothing"),
        "application/merge-patch+json",
        b"{}".to_vec(),
    )
    .await;
    assert_eq!(r.clone().err().map(|e| e.0), Some(404), "{r:?}");
    let r = raw(
        &client,
        "PATCH",
        &format!("{path}/x"),
        "text/plain",
        b"{}".to_vec(),
    )
    .await;
    assert_eq!(r.err().map(|e| e.0), Some(415));
    // Expired watch: compacted revisions answer 410 Gone.
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    api.create(&PostParams::default(), &cm("p", "1"))
        .await
        .expect("create");
    let r = raw(
        &client,
        "PATCH",
        &format!("{path}/p"),
        "application/json-patch+json",
        br#"[{"op":"remove","path":"/nope"}]"#.to_vec(),
    )
    .await;
    assert_eq!(r.err().map(|e| e.0), Some(422));
    // The server still serves after all of that.
    assert!(api.get("p").await.is_ok());
    // Unauthenticated requests are refused.
    let anon = reqwest_like_anonymous(c.port).await;
    assert_eq!(anon, 401);
}

/// An HTTPS GET without credentials, returning the status code.
async fn reqwest_like_anonymous(port: u16) -> u16 {
    let out = tokio::process::Command::new("curl")
        .args([
            "-sk",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("https://127.0.0.1:{port}/api/v1/namespaces"),
        ])
        .output()
        .await
        .expect("curl");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_from_compacted_revision_is_gone() {
    let c = Cluster::start_with(&[
        "--compaction-interval-seconds",
        "1",
        "--compaction-retain-revisions",
        "2",
    ]);
    let client = c.client().await;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let first = api
        .create(&PostParams::default(), &cm("churn", "0"))
        .await
        .expect("create");
    let first_rv = first.metadata.resource_version.clone().expect("rv");
    for i in 1..20 {
        api.patch(
            "churn",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"v": i.to_string()}})),
        )
        .await
        .expect("patch");
    }
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let status = match api.watch(&WatchParams::default(), &first_rv).await {
        Err(kube::Error::Api(e)) => e.code,
        Ok(events) => match events.boxed().try_next().await {
            Ok(Some(WatchEvent::Error(e))) => e.code,
            Ok(_) => panic!("expected 410, got an event"),
            Err(kube::Error::Api(e)) => e.code,
            Err(e) => panic!("expected 410, got {e:?}"),
        },
        Err(e) => panic!("unexpected error {e:?}"),
    };
    assert_eq!(status, 410);
    // Watching from now on still works.
    let now = api
        .list(&ListParams::default())
        .await
        .expect("list")
        .metadata
        .resource_version
        .expect("rv");
    let mut stream = api
        .watch(&WatchParams::default(), &now)
        .await
        .expect("watch")
        .boxed();
    api.delete("churn", &DeleteParams::default())
        .await
        .expect("delete");
    let ev = tokio::time::timeout(std::time::Duration::from_secs(10), stream.try_next())
        .await
        .expect("in time");
    assert!(matches!(ev, Ok(Some(WatchEvent::Deleted(_)))), "{ev:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_bearer_tokens_authenticate() {
    let tokens = tempfile::NamedTempFile::new().expect("token file");
    std::fs::write(
        tokens.path(),
        "s3cret-token,ci-bot,1001,\"ci,system:masters\"\n",
    )
    .expect("write tokens");
    let path = tokens.path().display().to_string();
    let c = Cluster::start_with(&["--token-auth-file", &path]);
    let get = |token: &'static str| {
        let url = format!("https://127.0.0.1:{}/api/v1/namespaces/default", c.port);
        async move {
            let out = tokio::process::Command::new("curl")
                .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}", "-H"])
                .arg(format!("Authorization: Bearer {token}"))
                .arg(url)
                .output()
                .await
                .expect("curl");
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        }
    };
    assert_eq!(get("s3cret-token").await, "200");
    assert_eq!(get("wrong-token").await, "401");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paginated_and_exact_lists_read_one_snapshot() {
    let c = Cluster::start();
    let client = c.client().await;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    for i in 0..6 {
        api.create(&PostParams::default(), &cm(&format!("snap-{i}"), "1"))
            .await
            .expect("create");
    }
    let first = api
        .list(&ListParams::default().limit(2))
        .await
        .expect("first page");
    let snapshot_rv = first.metadata.resource_version.clone().expect("rv");
    let mut names: Vec<String> = first
        .items
        .iter()
        .filter_map(|o| o.metadata.name.clone())
        .collect();
    // The world changes between pages; the pages still show the first page's snapshot.
    api.delete("snap-5", &DeleteParams::default())
        .await
        .expect("delete");
    api.create(&PostParams::default(), &cm("snap-9", "1"))
        .await
        .expect("create");
    let mut token = first.metadata.continue_.clone();
    while let Some(t) = token.filter(|t| !t.is_empty()) {
        let page = api
            .list(&ListParams::default().limit(2).continue_token(&t))
            .await
            .expect("page");
        names.extend(page.items.iter().filter_map(|o| o.metadata.name.clone()));
        token = page.metadata.continue_;
    }
    let want: Vec<String> = (0..6).map(|i| format!("snap-{i}")).collect();
    assert_eq!(names, want);
    // An exact list at the snapshot's revision shows it too; the current list does not.
    let exact = api
        .list(
            &ListParams::default()
                .at(&snapshot_rv)
                .matching(kube::api::VersionMatch::Exact),
        )
        .await
        .expect("exact list");
    let exact_names: Vec<String> = exact
        .items
        .iter()
        .filter_map(|o| o.metadata.name.clone())
        .collect();
    assert_eq!(exact_names, want);
    let now: Vec<String> = api
        .list(&ListParams::default())
        .await
        .expect("list")
        .items
        .iter()
        .filter_map(|o| o.metadata.name.clone())
        .collect();
    assert!(
        now.contains(&"snap-9".to_string()) && !now.contains(&"snap-5".to_string()),
        "{now:?}"
    );
}
