//! `clearbg serve` and `clearbg keys`: hand the settings to the service and run it.

use std::process::ExitCode;

use clap::Subcommand;
use clearbg_service::store::Store;
use clearbg_service::{Config, StoreConfig};

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

/// `clearbg serve`.
pub fn serve(config: Config) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(clearbg_service::serve(config))?;
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
        #[command(flatten)]
        store: StoreConfig,
    },
    /// List keys: fingerprint, status, client id, note.
    List {
        #[command(flatten)]
        store: StoreConfig,
    },
}

/// Runs a `keys` command against the service's database.
pub fn keys(command: KeysCommand) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        match command {
            KeysCommand::Create { client_id, note, store } => {
                anyhow::ensure!(!client_id.trim().is_empty(), "--client-id must not be empty");
                let db = Store::open(&store.database_url()).await?;
                let (key, record) = db.create_key(client_id.trim(), note.as_deref()).await?;
                println!("{key}");
                eprintln!(
                    "created key {} for {}; keep it now, it cannot be shown again",
                    record.fingerprint, record.client_id
                );
            }
            KeysCommand::List { store } => {
                let db = Store::open(&store.database_url()).await?;
                for k in db.list_keys().await? {
                    println!("{}\t{}\t{}\t{}", k.fingerprint, k.status, k.client_id, k.note.unwrap_or_default());
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}
