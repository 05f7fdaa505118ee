//! `fxtriage`: one binary for every service. `main` reads as the story of a run:
//! parse the command line, start telemetry, run the command until it ends or a
//! signal asks it to stop, flush telemetry, exit.

mod analyze;
mod api_cli;
mod bench;
mod cli;
mod demo;
mod infra;
mod operator;
mod private_postgres;
mod shutdown;
mod standalone;

use std::process::ExitCode;

use clap::Parser as _;

use cli::{Cli, Command, QuarantineCommand};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let telemetry =
        match fxtriage_telemetry::init(&cli.telemetry.config(cli.command.service_name())) {
            Ok(guard) => guard,
            Err(error) => {
                eprintln!("fxtriage: {error}");
                return ExitCode::from(2);
            }
        };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(run(cli.command));
    let code = match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(
                error = format!("{error:#}"),
                "fxtriage stopped with an error"
            );
            ExitCode::FAILURE
        }
    };
    telemetry.shutdown();
    code
}

async fn run(command: Command) -> anyhow::Result<()> {
    let shutdown = shutdown::on_signal();
    match command {
        Command::Ingest(args) => {
            let sites = fxtriage_ingest::Sites::load(&args.sites)?;
            let ingestor = fxtriage_ingest::Ingestor::new(
                args.store.connect().await?,
                args.bus.connect("fxtriage-ingest").await?,
                &args.bus.namespace,
            );
            let config = fxtriage_ingest::Config {
                http_address: args.http_address,
                dimse_address: args.dimse_address,
                dimse: fxtriage_ingest::dimse::DimseOptions {
                    max_associations: args.max_associations,
                    ..Default::default()
                },
                sites,
            };
            fxtriage_ingest::run(config, ingestor, shutdown).await
        }
        Command::Inference(args) => analyze::run_inference(args, shutdown).await,
        Command::Analyze(args) => analyze::run_analyze(args).await,
        Command::Prioritizer(args) => {
            let database = fxtriage_db::DbConfig::from_url(&args.database_url)?;
            let mut config = fxtriage_prioritizer::Config::new(args.health_address, database);
            config.namespace = args.bus.namespace.clone();
            config.topic_partitions = args.bus.topic_partitions;
            if let Some(path) = &args.policies {
                config.policies = fxtriage_prioritizer::PolicyBook::load(path)?;
            }
            let bus = args.bus.connect("fxtriage-prioritizer").await?;
            fxtriage_prioritizer::run(config, bus, shutdown).await
        }
        Command::Api(args) => api_cli::run_api(args, shutdown).await,
        Command::Sites(args) => api_cli::sites(args).await,
        Command::Tokens(args) => api_cli::tokens(args).await,
        Command::Standalone(args) => standalone::run(args, shutdown).await,
        Command::Samples(args) => demo::samples(&args),
        Command::Worklist(args) => demo::worklist(&args).await,
        Command::Migrate(args) => {
            let config = fxtriage_db::DbConfig::from_url(&args.database_url)?;
            let report = fxtriage_db::migrate(&config).await?;
            tracing::info!(applied = ?report.applied, version = ?report.current_version, "schema is current");
            Ok(())
        }
        Command::Import(args) => operator::import(args, shutdown).await,
        Command::Quarantine(args) => match args.command {
            QuarantineCommand::List(args) => operator::list_quarantine(args).await,
        },
        Command::Bench(args) => bench::run(args).await,
    }
}
