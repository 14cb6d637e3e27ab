//! The `berth` binary: `berth server` runs a whole cluster's control plane on this machine.

mod kubelet_certs;
mod pull;

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Parser)]
#[command(
    name = "berth",
    version,
    about = "A Kubernetes-compatible cluster in one binary"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the API server, its datastore, the controllers and this machine's node agent.
    Server(Box<ServerArgs>),
    /// Run only the node agent, as a client of a berth server's API: this machine becomes a
    /// node of that cluster.
    Agent(Box<AgentArgs>),
    /// Manage the node's images.
    #[command(subcommand)]
    Images(ImagesCommand),
}

#[derive(Subcommand)]
enum ImagesCommand {
    /// Import an OCI-layout or `docker save` tarball into the node's image store.
    Import {
        tarball: PathBuf,
        #[arg(long, default_value = "/var/lib/berth")]
        data_dir: PathBuf,
    },
    /// List the node's images.
    Ls {
        #[arg(long, default_value = "/var/lib/berth")]
        data_dir: PathBuf,
    },
    /// Pull an image from its registry (or the mirrors in `<data-dir>/registries.yaml`).
    Pull {
        /// The image: `busybox`, `busybox:1.36`, `host:5000/x/y@sha256:...`.
        reference: String,
        #[arg(long, default_value = "/var/lib/berth")]
        data_dir: PathBuf,
        /// User name for the image's registry.
        #[arg(long, requires = "password")]
        username: Option<String>,
        /// Password for the image's registry.
        #[arg(long, requires = "username")]
        password: Option<String>,
    },
}

#[derive(clap::Args)]
struct ServerArgs {
    /// Directory holding the datastore, certificates and kubeconfig.
    #[arg(long, default_value = "/var/lib/berth")]
    data_dir: PathBuf,
    /// Port of the HTTPS API.
    #[arg(long, default_value_t = 6443)]
    https_port: u16,
    /// Address the API listens on.
    #[arg(long, default_value = "0.0.0.0")]
    bind_address: IpAddr,
    /// Static bearer tokens (upstream CSV format: token,user,uid,"group1,group2").
    #[arg(long)]
    token_auth_file: Option<PathBuf>,
    /// Extra DNS names or IP addresses for the serving certificate.
    #[arg(long)]
    tls_san: Vec<String>,
    /// The CIDR Services get their cluster IPs from.
    #[arg(long, default_value = "10.43.0.0/16")]
    service_cidr: String,
    #[command(flatten)]
    node: NodeArgs,
    /// Seconds between automatic compactions of the datastore's history.
    #[arg(long, default_value_t = 30)]
    compaction_interval_seconds: u64,
    /// Newest revisions of history kept for watches by each compaction.
    #[arg(long, default_value_t = 10_000)]
    compaction_retain_revisions: i64,
    /// How long a node may go without renewing its Lease before it is marked NotReady
    /// (Unknown) and tainted unreachable, e.g. `40s`.
    #[arg(long, default_value = "40s", value_parser = berth_controllers::nodelifecycle::parse_duration)]
    node_monitor_grace_period: std::time::Duration,
    /// Log filter (tracing `EnvFilter` syntax), e.g. `info` or `berth_apiserver=debug`.
    #[arg(long, env = "BERTH_LOG", default_value = "info")]
    log: String,
}

/// How this machine's node agent runs pods (the same for `server` and `agent`).
#[derive(clap::Args)]
struct NodeArgs {
    /// The name this machine registers as a Node (default: the host name).
    #[arg(long)]
    node_name: Option<String>,
    /// The pod subnet of this node (distinct per node and per server on one machine).
    #[arg(long, default_value = "10.42.0.0/24")]
    pod_cidr: String,
    /// The bridge pods attach to (distinct per server on one machine; at most 15 bytes).
    #[arg(long, default_value = "berth0")]
    bridge: String,
    /// The OCI runtime: crun or runc.
    #[arg(long, default_value = "crun")]
    container_runtime: String,
    /// The port of the node's HTTPS endpoint (logs, exec, attach; distinct per server on
    /// one machine).
    #[arg(long, default_value_t = 10250)]
    kubelet_port: u16,
    /// Most pods this node runs (its `pods` capacity), as kubelet's `--max-pods`.
    #[arg(long, default_value_t = 110)]
    max_pods: u32,
    /// The cluster domain the node's DNS server answers for and pods search.
    #[arg(long, default_value = "cluster.local")]
    cluster_domain: String,
    /// Where the node's DNS server forwards names outside the cluster domain (IP or
    /// IP:port; repeatable; default: the nameservers of the host's /etc/resolv.conf).
    #[arg(long, value_parser = dns_upstream)]
    dns_upstream: Vec<std::net::SocketAddr>,
    /// The nftables table of this node's service proxy (default: `berth-<bridge>`, so
    /// servers on one machine never share one).
    #[arg(long)]
    proxy_table: Option<String>,
    /// When a deleted pod's containers get preStop and their stop signal: `endpoints-first`
    /// waits until every service proxy has stopped sending it new connections; `upstream`
    /// stops them at once, as upstream's kubelet.
    #[arg(long, default_value = "endpoints-first")]
    pod_termination: berth_node::deregistration::PodTermination,
    /// The longest endpoint-first wait (e.g. `10s`; never longer than the pod's grace period).
    #[arg(long, default_value = "10s", value_parser = berth_node::deregistration::parse_duration)]
    endpoint_deregistration_timeout: std::time::Duration,
}

#[derive(clap::Args)]
struct AgentArgs {
    /// The API server's URL, e.g. https://10.0.0.1:6443.
    #[arg(long)]
    server: String,
    /// A bearer token the API server accepts (see `berth server --token-auth-file`).
    #[arg(long, env = "BERTH_TOKEN", hide_env_values = true)]
    token: String,
    /// The cluster CA certificate the server's certificate is checked against (the server
    /// keeps it in `<data-dir>/pki/ca.crt`).
    #[arg(long)]
    certificate_authority: PathBuf,
    /// The cluster's service CIDR (as given to `berth server --service-cidr`).
    #[arg(long, default_value = "10.43.0.0/16")]
    service_cidr: String,
    /// Directory holding this node's images, containers and pod files.
    #[arg(long, default_value = "/var/lib/berth")]
    data_dir: PathBuf,
    #[command(flatten)]
    node: NodeArgs,
    /// The serving certificate of the node's HTTPS endpoint (PEM; default: a self-signed
    /// one, which the API server does not verify).
    #[arg(long, requires = "kubelet_key")]
    kubelet_cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(long, requires = "kubelet_cert")]
    kubelet_key: Option<PathBuf>,
    /// Log filter (tracing `EnvFilter` syntax), e.g. `info` or `berth_node=debug`.
    #[arg(long, env = "BERTH_LOG", default_value = "info")]
    log: String,
}

/// Sets up logging to stderr and the async runtime, and runs `main` on it.
fn run_async(
    log: &str,
    main: impl std::future::Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(log).context("invalid --log filter")?,
        )
        .with_writer(std::io::stderr)
        .init();
    berth_apiserver::memory::limit_arenas();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        // Datastore reads run on blocking threads; a bounded pool keeps memory bounded.
        .max_blocking_threads(16)
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
    // Starting runs code all over the binary (schema tables, TLS, every part's set-up) that
    // idling never touches again: once the parts are up, its pages go back as the shim's do
    // (they stay in the page cache; what is used later faults back in).
    runtime.spawn(async {
        tokio::time::sleep(STARTUP_PAGES_AFTER).await;
        let _ = tokio::task::spawn_blocking(berth_runtime::pages::release_startup_pages).await;
    });
    runtime.block_on(main)
}

/// When the binary's start-up pages are given back, counted from the runtime's start.
const STARTUP_PAGES_AFTER: std::time::Duration = std::time::Duration::from_secs(2);

/// Rust's allocations go to mimalloc: the API server's per-request JSON work is
/// allocation-bound, and glibc's malloc took a quarter of its CPU under load. Built without
/// transparent huge pages (`no_thp`): with them, its arenas became resident 2 MiB at a time
/// (+15 MB when idle).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    // `berth shim ...` (the per-container shim the node agent starts) goes straight to its
    // code: it lives as long as its container, so it touches as little as possible.
    let mut argv = std::env::args();
    if argv.nth(1).as_deref() == Some("shim") {
        std::process::exit(berth_runtime::shim::shim_main(argv.collect()));
    }
    let cli = Cli::parse();
    match cli.command {
        Command::Images(cmd) => images(cmd),
        Command::Server(args) => run_async(&args.log.clone(), server(*args)),
        Command::Agent(args) => run_async(&args.log.clone(), agent(*args)),
    }
}

async fn server(args: ServerArgs) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let _ = rustls::crypto::ring::default_provider().install_default();
    std::fs::create_dir_all(args.data_dir.join("db"))
        .with_context(|| format!("failed to create {}", args.data_dir.display()))?;
    let store = berth_store::sqlite::SqliteStore::open(
        &args.data_dir.join("db").join("state.db"),
        berth_store::sqlite::SqliteOptions {
            compaction_interval: std::time::Duration::from_secs(args.compaction_interval_seconds),
            retain_revisions: args.compaction_retain_revisions,
            ..Default::default()
        },
    )
    .context("failed to open the datastore")?;
    let shared: Arc<dyn berth_store::Store> = Arc::new(store.clone());
    let config = berth_apiserver::Config {
        data_dir: args.data_dir.clone(),
        bind_address: args.bind_address,
        https_port: args.https_port,
        token_auth_file: args.token_auth_file.clone(),
        tls_san: args.tls_san.clone(),
        service_cidr: berth_apiserver::service_ips::ServiceCidr::parse(&args.service_cidr)
            .map_err(anyhow::Error::msg)
            .context("invalid --service-cidr")?,
    };
    let kubernetes_service = berth_controllers::kubernetes_service::Config {
        cluster_ip: config.service_cidr.first().into(),
        address: advertised_address(args.bind_address),
        port: args.https_port,
    };
    let api = berth_apiserver::start(config, shared)
        .await
        .context("failed to start the API server")?;
    tracing::info!(
        address = %api.address,
        kubeconfig = %api.kubeconfig.display(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "API server ready"
    );
    println!(
        "berth server ready on {}; export KUBECONFIG={}",
        api.url,
        api.kubeconfig.display()
    );

    let kubeconfig = kube::config::Kubeconfig::read_from(&api.kubeconfig)
        .context("failed to read the kubeconfig")?;
    let client_config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .context("failed to load the kubeconfig")?;
    let client = kube::Client::try_from(client_config).context("failed to build the API client")?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stop_for_parts = stop_rx.clone();
    let stopped = move || {
        let mut rx = stop_for_parts.clone();
        async move {
            let _ = rx.wait_for(|v| *v).await;
        }
    };
    let (proxy, proxy_config) = service_proxy(
        &args.node,
        &args.service_cidr,
        client.clone(),
        stop_rx.clone(),
    )
    .unzip();
    let dns = cluster_dns(&args.node, client.clone(), stop_rx.clone());
    let parts = vec![
        tokio::spawn(berth_controllers::run(
            client.clone(),
            berth_controllers::Config {
                node_lifecycle: berth_controllers::nodelifecycle::Config {
                    node_monitor_grace_period: args.node_monitor_grace_period,
                },
            },
            stop_rx.clone(),
        )),
        tokio::spawn(berth_controllers::loadbalancer::run(
            client.clone(),
            advertised_address(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)),
            stop_rx.clone(),
        )),
        tokio::spawn(berth_controllers::kubernetes_service::run(
            client.clone(),
            kubernetes_service,
            stop_rx.clone(),
        )),
        tokio::spawn(berth_scheduler::run(
            client.clone(),
            berth_scheduler::Config::default(),
            stopped(),
        )),
        node_agent(
            &args.node,
            &args.data_dir,
            client,
            stop_rx.clone(),
            |name| {
                Ok((
                    kubelet_certs::issued_by_cluster_ca(&args.data_dir.join("pki"), name)?,
                    false,
                ))
            },
            Some(in_process_endpoint(api.local_nodes.clone())),
        )?,
    ];

    wait_for_signal().await;
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    // A part still starting its watches may not see the signal: give it a moment, then stop
    // it (parts keep no state of their own; the next start picks up where the world is).
    for part in parts.into_iter().chain(proxy).chain(dns) {
        let abort = part.abort_handle();
        if tokio::time::timeout(std::time::Duration::from_millis(500), part)
            .await
            .is_err()
        {
            abort.abort();
        }
    }
    remove_service_rules(proxy_config).await;
    api.shutdown().await;
    store.close().await;
    Ok(())
}

fn images(cmd: ImagesCommand) -> anyhow::Result<()> {
    match cmd {
        ImagesCommand::Pull {
            reference,
            data_dir,
            username,
            password,
        } => pull::run(&reference, &data_dir, username, password)?,
        ImagesCommand::Import { tarball, data_dir } => {
            let store = berth_images::ImageStore::open(&data_dir.join("images"))
                .context("failed to open the image store")?;
            for r in store
                .import(&tarball)
                .with_context(|| format!("failed to import {}", tarball.display()))?
            {
                println!("imported {} ({})", r.names.join(", "), r.id);
            }
        }
        ImagesCommand::Ls { data_dir } => {
            let store = berth_images::ImageStore::open(&data_dir.join("images"))
                .context("failed to open the image store")?;
            println!("{:<50} {:<20} {:>12}", "IMAGE", "ID", "SIZE");
            for i in store.list().context("failed to list images")? {
                let id = i.id.to_string();
                let short = id
                    .trim_start_matches("sha256:")
                    .chars()
                    .take(12)
                    .collect::<String>();
                for name in if i.names.is_empty() {
                    vec!["<none>".to_string()]
                } else {
                    i.names.clone()
                } {
                    println!("{name:<50} {short:<20} {:>12}", i.size);
                }
            }
        }
    }
    Ok(())
}

/// Imports the image tarballs dropped into the store's directory (airgap images).
fn import_dropped_images(images: &berth_images::ImageStore) {
    let Ok(entries) = std::fs::read_dir(images.root()) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "tar") {
            match images.import(&p) {
                Ok(refs) => {
                    tracing::info!(tarball = %p.display(), images = refs.len(), "imported images")
                }
                Err(err) => {
                    tracing::warn!(tarball = %p.display(), "failed to import images: {err}")
                }
            }
        }
    }
}

/// Makes the API server reach this process's node endpoint in memory (no TLS hop between
/// the two halves of one `berth server`).
fn in_process_endpoint(nodes: berth_apiserver::proxy::LocalNodes) -> berth_node::InProcessEndpoint {
    berth_node::InProcessEndpoint(Arc::new(move |endpoint| {
        let name = endpoint.node_name.clone();
        nodes.register(
            &name,
            Arc::new(move |req| Box::pin(endpoint.clone().serve_in_process(req))),
        );
    }))
}

/// Starts this machine's node agent as a task that ends when `stop` turns true.
fn node_agent(
    args: &NodeArgs,
    data_dir: &std::path::Path,
    client: kube::Client,
    stop: tokio::sync::watch::Receiver<bool>,
    kubelet_tls: impl FnOnce(&str) -> anyhow::Result<(berth_node::server::KubeletTls, bool)>,
    in_process: Option<berth_node::InProcessEndpoint>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let node_name = match &args.node_name {
        Some(n) => n.clone(),
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_lowercase())
            .unwrap_or_else(|_| "berth".to_string()),
    };
    let pods = pod_runtime(args, data_dir, client.clone(), &node_name)?;
    let mut config = berth_node::NodeConfig::new(node_name, data_dir.to_path_buf());
    config.kubelet_port = args.kubelet_port;
    config.max_pods = args.max_pods;
    if pods.is_some() {
        let (tls, self_signed) = kubelet_tls(&config.name)?;
        config.kubelet_tls = Some(tls);
        config.kubelet_self_signed = self_signed;
    }
    config.in_process = in_process;
    Ok(tokio::spawn(async move {
        // Dropped-in images are there before the first pod looks for them; the import runs
        // off the async workers (the API is already serving).
        if let Some(store) = pods.as_ref().map(|p| p.images.clone()) {
            let _ = tokio::task::spawn_blocking(move || import_dropped_images(&store)).await;
        }
        berth_node::run(client, config, pods, stop).await
    }))
}

/// `berth agent`: the node agent alone, a client of a remote API server.
async fn agent(args: AgentArgs) -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("failed to create {}", args.data_dir.display()))?;
    let ca = std::fs::read(&args.certificate_authority).with_context(|| {
        format!(
            "failed to read the cluster CA {}",
            args.certificate_authority.display()
        )
    })?;
    let url: http::Uri = args
        .server
        .parse()
        .with_context(|| format!("invalid --server {:?}", args.server))?;
    let mut config = kube::Config::new(url);
    config.root_cert = Some(
        rustls_pemfile::certs(&mut ca.as_slice())
            .map(|c| c.map(|c| c.to_vec()))
            .collect::<Result<Vec<_>, _>>()
            .context("the cluster CA is not a PEM certificate")?,
    );
    config.auth_info.token = Some(args.token.clone().into());
    let client = kube::Client::try_from(config).context("failed to build the API client")?;
    // Fail early and clearly when the server is unreachable or refuses the token.
    let probe = http::Request::get("/api/v1/nodes?limit=1")
        .body(Vec::new())
        .context("failed to build a request")?;
    client
        .request_text(probe)
        .await
        .with_context(|| format!("failed to reach the API server at {}", args.server))?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (proxy, proxy_config) = service_proxy(
        &args.node,
        &args.service_cidr,
        client.clone(),
        stop_rx.clone(),
    )
    .unzip();
    let dns = cluster_dns(&args.node, client.clone(), stop_rx.clone());
    let part = node_agent(
        &args.node,
        &args.data_dir,
        client,
        stop_rx,
        |name| {
            kubelet_certs::for_agent(
                args.kubelet_cert.as_deref(),
                args.kubelet_key.as_deref(),
                &args.certificate_authority,
                &args.data_dir,
                name,
            )
        },
        None,
    )?;
    println!("berth agent running; its node reports to {}", args.server);
    wait_for_signal().await;
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    for part in std::iter::once(part).chain(proxy).chain(dns) {
        let abort = part.abort_handle();
        if tokio::time::timeout(std::time::Duration::from_millis(500), part)
            .await
            .is_err()
        {
            abort.abort();
        }
    }
    remove_service_rules(proxy_config).await;
    Ok(())
}

/// The pod runtime of this node, when it can have one (root, an OCI runtime, CNI plugins).
fn pod_runtime(
    args: &NodeArgs,
    data_dir: &std::path::Path,
    client: kube::Client,
    node_name: &str,
) -> anyhow::Result<Option<berth_node::pods::PodRuntime>> {
    if !berth_node::host::is_root() {
        tracing::warn!("not running as root: the node agent registers the node but runs no pods");
        return Ok(None);
    }
    let images = berth_images::ImageStore::open(&data_dir.join("images"))
        .context("failed to open the image store")?;
    let runtime = match args.container_runtime.as_str() {
        "crun" => berth_runtime::RuntimeKind::Crun,
        "runc" => berth_runtime::RuntimeKind::Runc,
        other => anyhow::bail!("unknown --container-runtime {other:?}: crun or runc"),
    };
    let shim_exe = std::env::current_exe().context("failed to find the berth executable")?;
    let containers = berth_runtime::ContainerManager::new(berth_runtime::ManagerConfig {
        state_dir: data_dir.join("containers"),
        runtime,
        runtime_binary: None,
        shim_exe,
    });
    let network = berth_net::NetworkConfig {
        bridge: args.bridge.clone(),
        pod_cidr: args.pod_cidr.clone(),
        plugin_dir: PathBuf::from("/usr/lib/cni"),
        state_dir: data_dir.to_path_buf(),
        mtu: None,
    };
    // Pods resolve through this node's DNS server (started beside the node agent).
    let cluster_dns = network
        .gateway()
        .map(|nameserver| berth_node::dns::ClusterDns {
            nameserver,
            domain: args.cluster_domain.clone(),
        });
    Ok(Some(berth_node::pods::PodRuntime {
        client,
        node_name: node_name.to_string(),
        node_ip: berth_node::host::primary_address().map(|a| a.to_string()),
        images,
        network,
        cluster_dns,
        containers,
        pods_dir: data_dir.join("pods"),
        logs_dir: PathBuf::from("/var/log/pods"),
        start_failures: Default::default(),
        prober: Default::default(),
        image_ids: Default::default(),
        image_pulls: Default::default(),
        sources: Default::default(),
        termination: berth_node::deregistration::TerminationConfig {
            mode: args.pod_termination,
            deregistration_timeout: args.endpoint_deregistration_timeout,
        },
    }))
}

/// Starts this node's service proxy (root only: it programs nftables and routes).
fn service_proxy(
    args: &NodeArgs,
    service_cidr: &str,
    client: kube::Client,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Option<(tokio::task::JoinHandle<()>, berth_proxy::Config)> {
    if !berth_node::host::is_root() {
        tracing::warn!("not running as root: no service proxy (Services are not reachable)");
        return None;
    }
    let node_name = match &args.node_name {
        Some(n) => n.clone(),
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_lowercase())
            .unwrap_or_else(|_| "berth".to_string()),
    };
    let node_ips = match berth_node::host::primary_address() {
        Some(IpAddr::V4(ip)) => vec![ip],
        _ => Vec::new(),
    };
    let proxy = berth_proxy::Proxy::new(berth_proxy::Config {
        table: args
            .proxy_table
            .clone()
            .unwrap_or_else(|| format!("berth-{}", args.bridge)),
        node_name,
        node_ips,
        pod_cidr: args.pod_cidr.clone(),
        service_cidr: service_cidr.to_string(),
        bridge: args.bridge.clone(),
    });
    let config = proxy.config().clone();
    Some((tokio::spawn(proxy.run(client, stop)), config))
}

/// Starts this node's cluster DNS server on its bridge's gateway address, port 53 (root
/// only, like the pods it serves).
fn cluster_dns(
    args: &NodeArgs,
    client: kube::Client,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Option<tokio::task::JoinHandle<()>> {
    if !berth_node::host::is_root() {
        return None;
    }
    let Some(gateway) = berth_net::sandbox::gateway_of(&args.pod_cidr) else {
        tracing::warn!(pod_cidr = %args.pod_cidr, "no gateway address: no cluster DNS");
        return None;
    };
    let upstreams = if args.dns_upstream.is_empty() {
        berth_dns::forward::host_nameservers(std::path::Path::new("/etc/resolv.conf"))
    } else {
        args.dns_upstream.clone()
    };
    let config = berth_dns::Config {
        cluster_domain: args.cluster_domain.clone(),
        listen: std::net::SocketAddr::new(gateway, 53),
        upstreams,
    };
    match berth_dns::DnsServer::bind(config) {
        Ok(server) => Some(tokio::spawn(server.run(client, stop))),
        Err(e) => {
            tracing::error!("cluster DNS: {e}");
            None
        }
    }
}

/// `--dns-upstream`: `IP` or `IP:port`.
fn dns_upstream(s: &str) -> Result<std::net::SocketAddr, String> {
    berth_dns::forward::parse_upstream(s).ok_or_else(|| format!("{s:?} is not an IP or IP:port"))
}

/// A clean shutdown removes the service proxy's table and routes (a server that dies
/// leaves them, so traffic keeps flowing until it is back).
async fn remove_service_rules(config: Option<berth_proxy::Config>) {
    if let Some(config) = config {
        if let Err(e) = berth_proxy::cleanup(&config).await {
            tracing::warn!("{e}");
        }
    }
}

/// The address the API server is reached at from pods and other nodes: the bind address,
/// or the node's primary address when bound to every address.
fn advertised_address(bind: IpAddr) -> IpAddr {
    if bind.is_unspecified() {
        berth_node::host::primary_address().unwrap_or(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))
    } else {
        bind
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
