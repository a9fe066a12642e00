//! `confide`: the operator CLI — privacy calculator, benchmarks and the local federation demo.

mod cli;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "confide",
    version,
    about = "Differentially private federated learning with secure aggregation"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Privacy accounting: ε of a DP-SGD run, or the noise needed for a target ε.
    #[command(subcommand)]
    Privacy(cli::privacy::PrivacyCommand),
    /// Benchmarks that print real measurements as JSON.
    #[command(subcommand)]
    Bench(cli::bench::BenchCommand),
    /// The whole system on one machine: a coordinator, N hospital agents over real HTTP, R private rounds with
    /// secure aggregation on a bundled dataset, and the non-private baseline beside the result.
    Demo(cli::demo::DemoArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Privacy(cmd) => cli::privacy::run(cmd),
        Command::Bench(cmd) => cli::bench::run(cmd),
        Command::Demo(args) => cli::demo::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
