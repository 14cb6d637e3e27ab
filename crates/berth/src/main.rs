//! The `berth` binary: `berth server` runs a whole cluster's control plane on this machine.

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
    /// Run the API server, its datastore and the controllers.
    Server(ServerArgs),
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
    /// The name this machine registers as a Node (default: the host name).
    #[arg(long)]
    node_name: Option<String>,
    /// Seconds between automatic compactions of the datastore's history.
    #[arg(long, default_value_t = 30)]
    compaction_interval_seconds: u64,
    /// Newest revisions of history kept for watches by each compaction.
    #[arg(long, default_value_t = 10_000)]
    compaction_retain_revisions: i64,
    /// Log filter (tracing `EnvFilter` syntax), e.g. `info` or `berth_apiserver=debug`.
    #[arg(long, env = "BERTH_LOG", default_value = "info")]
    log: String,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Server(args) => {
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_new(&args.log)
                        .context("invalid --log filter")?,
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
            runtime.block_on(server(args))
        }
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
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|v| *v).await;
        }
    };
    let node_name = match &args.node_name {
        Some(n) => n.clone(),
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_lowercase())
            .unwrap_or_else(|_| "berth".to_string()),
    };
    let parts = vec![
        tokio::spawn(berth_controllers::namespace::run(client.clone(), stopped())),
        tokio::spawn(berth_node::run(
            client,
            berth_node::NodeConfig::new(node_name, args.data_dir.clone()),
            stopped(),
        )),
    ];

    wait_for_signal().await;
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    // A part still starting its watches may not see the signal: give it a moment, then stop
    // it (parts keep no state of their own; the next start picks up where the world is).
    for part in parts {
        let abort = part.abort_handle();
        if tokio::time::timeout(std::time::Duration::from_millis(500), part)
            .await
            .is_err()
        {
            abort.abort();
        }
    }
    api.shutdown().await;
    store.close().await;
    Ok(())
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
