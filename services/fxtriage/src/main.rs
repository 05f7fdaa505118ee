//! `fxtriage`: one binary for every service. `main` reads as the story of a run:
//! parse the command line, start telemetry, run the command until it ends or a
//! signal asks it to stop, flush telemetry, exit.

mod cli;
mod clients;
mod commands;
mod model_args;
mod ort_library;
mod private_postgres;
mod shutdown;

use std::process::ExitCode;

use clap::Parser as _;

use cli::{Cli, Command};

/// mimalloc instead of the C library's malloc: decoding an image allocates
/// buffers of several megabytes, which glibc's malloc serves with a fresh
/// mmap each time on the runtime's threads, so every image paid for its pages
/// again (an uncompressed 1760x1760 CR took 22 ms to decode and preprocess on
/// one core instead of 7 ms; docs/bench/local-2core-decode.txt).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
        Command::Ingest(args) => commands::ingest::run(args, shutdown).await,
        Command::Inference(args) => commands::inference::run(args, shutdown).await,
        Command::Analyze(args) => commands::analyze::run(args).await,
        Command::Prioritizer(args) => commands::prioritizer::run(args, shutdown).await,
        Command::Api(args) => commands::api::run(args, shutdown).await,
        Command::Dispatch(args) => commands::dispatch::run(args, shutdown).await,
        Command::Sites(args) => commands::sites::run(args).await,
        Command::Tokens(args) => commands::tokens::run(args).await,
        Command::Standalone(args) => commands::standalone::run(args, shutdown).await,
        Command::Samples(args) => commands::samples::run(&args),
        Command::Audit(args) => commands::audit::run(args).await,
        Command::Simulate(args) => commands::simulate::run(&args),
        Command::Models(args) => commands::models::run(args).await,
        Command::Analytics(args) => commands::analytics::run(args).await,
        Command::Worklist(args) => commands::worklist::run(&args).await,
        Command::Migrate(args) => commands::migrate::run(args).await,
        Command::Import(args) => commands::import::run(args, shutdown).await,
        Command::Quarantine(args) => commands::quarantine::run(args).await,
        Command::Bench(args) => commands::bench::run(args).await,
    }
}
