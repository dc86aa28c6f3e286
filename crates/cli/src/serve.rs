//! `clearbg serve`, `clearbg worker` and `clearbg keys`: hand the settings to the service and run it.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use clearbg_service::billing::parse_credits;
use clearbg_service::config::parse_grant;
use clearbg_service::ids::KeyFingerprint;
use clearbg_service::store::{Adjustment, Credits, Store, StoreError};
use clearbg_service::{Config, Role, StoreConfig};

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

/// Runs the service to its end, then leaves without waiting for blocking threads: `run` has
/// already bounded the shutdown (and killed any ffmpeg left), and dropping a runtime would wait
/// for a stuck engine thread forever.
fn run_service(config: Config, role: Role) -> anyhow::Result<()> {
    let runtime = runtime()?;
    let result = runtime.block_on(clearbg_service::run(config, role));
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    result
}

/// `clearbg serve` flags.
#[derive(Args)]
pub struct ServeArgs {
    /// Serve the API without embedded workers (jobs run in `clearbg worker` processes).
    #[arg(long)]
    no_workers: bool,
    #[command(flatten)]
    config: Config,
}

/// `clearbg serve`.
pub fn serve(ServeArgs { no_workers, mut config }: ServeArgs) -> anyhow::Result<ExitCode> {
    if no_workers {
        config.workers = 0;
    }
    run_service(config, Role::Serve)?;
    Ok(ExitCode::SUCCESS)
}

/// `clearbg worker` flags.
#[derive(Args)]
pub struct WorkerArgs {
    /// Serve /health and /metrics on this address (a worker serves no API).
    #[arg(long, env = "CLEARBG_METRICS_LISTEN")]
    metrics_listen: Option<std::net::SocketAddr>,
    #[command(flatten)]
    config: Config,
}

/// `clearbg worker`.
pub fn worker(WorkerArgs { metrics_listen, config }: WorkerArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(config.workers > 0, "a worker process needs --workers 1 or more");
    run_service(config, Role::Worker { ops_listen: metrics_listen })?;
    Ok(ExitCode::SUCCESS)
}

/// `clearbg keys …`.
#[derive(Subcommand)]
pub enum KeysCommand {
    /// Create an API key; prints the key (and only the key) on stdout. Only its hash is stored.
    Create {
        /// Who the key is for.
        #[arg(long)]
        client_id: String,
        /// A note kept with the key.
        #[arg(long)]
        note: Option<String>,
        /// Credits granted to the key (the server's setting of the same name).
        #[arg(long, env = "CLEARBG_INITIAL_CREDITS", default_value = "100000", value_parser = parse_grant)]
        initial_credits: i64,
        #[command(flatten)]
        store: StoreConfig,
    },
    /// List keys: fingerprint, status, client id, credits, note.
    List {
        #[command(flatten)]
        store: StoreConfig,
    },
    /// Change a key's credits (an `adjust` row in its ledger); prints the new balance.
    Credits {
        /// The key's fingerprint (`kfp_…`, from `keys list`).
        #[arg(long)]
        key_fingerprint: KeyFingerprint,
        /// Credits to add; negative takes them away (never below zero).
        #[arg(long, allow_hyphen_values = true, conflicts_with = "set", required_unless_present = "set", value_parser = parse_amount)]
        add: Option<i64>,
        /// Set the balance to this many credits.
        #[arg(long, value_parser = parse_grant)]
        set: Option<i64>,
        /// Why, kept in the ledger.
        #[arg(long)]
        note: Option<String>,
        #[command(flatten)]
        store: StoreConfig,
    },
}

fn parse_amount(s: &str) -> Result<i64, String> {
    parse_credits(s.trim())
        .filter(|n| *n != 0)
        .ok_or_else(|| format!("{s:?} is not a non-zero number of credits (at most 3 decimals)"))
}

/// Runs a `keys` command against the service's database.
pub fn keys(command: KeysCommand) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        match command {
            KeysCommand::Create { client_id, note, initial_credits, store } => {
                anyhow::ensure!(!client_id.trim().is_empty(), "--client-id must not be empty");
                let db = Store::open(&store.database_url()).await?;
                let (key, record) = db.create_key(client_id.trim(), note.as_deref(), initial_credits, None).await?;
                println!("{key}");
                eprintln!(
                    "created key {} for {}; keep it now, it cannot be shown again",
                    record.fingerprint, record.client_id
                );
            }
            KeysCommand::List { store } => {
                let db = Store::open(&store.database_url()).await?;
                for k in db.list_keys().await? {
                    let credits = Credits(k.credits);
                    println!(
                        "{}\t{}\t{}\t{credits}\t{}",
                        k.fingerprint,
                        k.status,
                        k.client_id,
                        k.note.unwrap_or_default()
                    );
                }
            }
            KeysCommand::Credits { key_fingerprint, add, set, note, store } => {
                let db = Store::open(&store.database_url()).await?;
                let adjustment = match (add, set) {
                    (Some(n), _) => Adjustment::Add(n),
                    (None, Some(n)) => Adjustment::Set(n),
                    (None, None) => anyhow::bail!("give --add or --set"),
                };
                match db.adjust_credits(&key_fingerprint, adjustment, note.as_deref(), None).await {
                    Ok(Some((record, change))) => {
                        println!("{}", Credits(record.credits));
                        eprintln!(
                            "{} now has {} credits ({}{})",
                            record.fingerprint,
                            Credits(record.credits),
                            if change >= 0 { "+" } else { "" },
                            Credits(change)
                        );
                    }
                    Ok(None) => anyhow::bail!("no key has the fingerprint {key_fingerprint}"),
                    Err(StoreError::InsufficientCredits { balance, .. }) => {
                        anyhow::bail!("that would take the balance below zero (it is {})", Credits(balance))
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}
