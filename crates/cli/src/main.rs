//! `clearbg`: the command line. Glue only: parse flags, call the engine, print results.

mod remove;
mod serve;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Frames are multi-megabyte buffers allocated and freed at video rate; glibc maps and unmaps
/// each one (a page fault per 4 KiB, ~16% of a 720p job's CPU), mimalloc keeps and reuses them.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use clearbg_engine::{model, Home, Runtime};

/// Self-hosted video background removal.
#[derive(Parser)]
#[command(name = "clearbg", version, about)]
struct Cli {
    /// Log lines as text for people or JSON for machines.
    #[arg(long, global = true, env = "CLEARBG_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Remove (or replace) the background of a video file.
    Remove(remove::RemoveArgs),
    /// List the installed models: tier, file, sha256, licence, input size, and whether it loads.
    Models,
    /// Run the HTTP API (RemoveBGVideo-compatible) with embedded workers (`--no-workers`: the
    /// API alone, for hosts whose jobs run in `clearbg worker` processes elsewhere).
    Serve(Box<serve::ServeArgs>),
    /// Run workers only (no HTTP): they take jobs from the shared database and storage
    /// (PostgreSQL and S3 when API and workers run on several hosts; see docs/deploy.md).
    Worker(Box<serve::WorkerArgs>),
    /// Manage API keys in the service's database.
    #[command(subcommand)]
    Keys(serve::KeysCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli);
    let result = match cli.command {
        Command::Remove(args) => remove::run(args),
        Command::Models => list_models(),
        Command::Serve(args) => serve::serve(*args),
        Command::Worker(config) => serve::worker(*config),
        Command::Keys(command) => serve::keys(command),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("clearbg: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr (stdout carries results, such as a new key). `CLEARBG_LOG` sets the filter;
/// the server logs every request and job at `info` by default, the one-shot commands only errors.
fn init_logging(cli: &Cli) {
    let default =
        if matches!(cli.command, Command::Serve(_) | Command::Worker(_)) { "info,sqlx=warn" } else { "error" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("CLEARBG_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    if cli.log_format == "json" {
        builder.json().with_current_span(true).with_span_list(true).init();
    } else {
        builder.init();
    }
}

fn list_models() -> anyhow::Result<ExitCode> {
    let home = Home::from_env();
    let runtime = Runtime::load(&home, 1);
    match &runtime {
        Ok(rt) => println!("ONNX Runtime {} from {}", rt.version(), home.ort_library().display()),
        Err(e) => println!("ONNX Runtime: {e}"),
    }
    println!("models in {}", home.models_dir().display());
    let statuses = model::inspect(&home, runtime.as_ref().ok());
    println!("{:<9} {:<26} {:<64} {:<8} {:<30} LICENCE", "TIER", "FILE", "SHA256", "LOADS", "INPUT");
    for tier in model::Tier::ALL {
        for file in tier.files() {
            let status = statuses.iter().find(|s| s.model.file == *file).expect("every tier file is catalogued");
            let loads = match (status.installed, &status.problem) {
                (false, None) => "-", // an opt-in model not installed: said below
                (_, None) => "yes",
                (_, Some(_)) => "no",
            };
            println!(
                "{:<9} {:<26} {:<64} {:<8} {:<30} {}",
                tier.name(),
                file,
                status.sha256.as_deref().unwrap_or("-"),
                loads,
                status.model.input,
                status.model.licence
            );
        }
    }
    println!();
    for tier in model::Tier::ALL {
        println!("{:<9} {}", tier.name(), tier.summary());
    }
    let problems: Vec<_> = statuses.iter().filter_map(|s| s.problem.as_ref().map(|p| (s.model.file, p))).collect();
    for (file, problem) in &problems {
        println!("{file}: {problem}");
    }
    for status in statuses.iter().filter(|s| !s.installed && s.problem.is_none()) {
        let install = status.model.opt_in.unwrap_or("make setup");
        println!(
            "{}: not installed; it is an opt-in model (licence {}): `{install}` installs it",
            status.model.file, status.model.licence
        );
    }
    if runtime.is_err() || !problems.is_empty() {
        println!("run `make setup` to install what is missing");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
