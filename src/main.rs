//! `confide`: the operator CLI — the coordinator's operator commands (studies, tokens, participants, rounds,
//! models, privacy report), the privacy calculator, benchmarks and the local federation demo.

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
    /// Check a coordinator URL and operator token and save them as the profile the other commands use.
    #[command(after_help = cli::ops::EXIT_CODES_HELP)]
    Login(cli::ops::profile::LoginArgs),
    /// Studies: create one from a TOML/JSON file, list, show, print a template.
    #[command(after_help = cli::ops::EXIT_CODES_HELP)]
    Study(cli::ops::study::StudyArgs),
    /// Enrolment tokens for hospitals.
    #[command(after_help = cli::ops::EXIT_CODES_HELP)]
    Token(cli::ops::token::TokenArgs),
    /// A study's participants, their rounds and ε spent.
    #[command(after_help = cli::ops::EXIT_CODES_HELP)]
    Participants(cli::ops::participants::ParticipantsArgs),
    /// Rounds: start, list, show, watch live, abort.
    #[command(after_help = cli::ops::EXIT_CODES_HELP)]
    Round(cli::ops::round::RoundArgs),
    /// Model versions: list, download.
    #[command(after_help = cli::ops::EXIT_CODES_HELP)]
    Model(cli::ops::model::ModelArgs),
    /// Privacy accounting: ε of a DP-SGD run, the noise needed for a target ε, a study's privacy report.
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
        Command::Login(args) => ops(cli::ops::profile::login(args)),
        Command::Study(args) => ops(cli::ops::study::run(args)),
        Command::Token(args) => ops(cli::ops::token::run(args)),
        Command::Participants(args) => ops(cli::ops::participants::run(args)),
        Command::Round(args) => ops(cli::ops::round::run(args)),
        Command::Model(args) => ops(cli::ops::model::run(args)),
        Command::Privacy(cmd) => cli::privacy::run(cmd),
        Command::Bench(cmd) => cli::bench::run(cmd),
        Command::Demo(args) => cli::demo::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            match err.downcast_ref::<cli::ops::OpsError>() {
                Some(e) => e.exit_code(),
                None => std::process::ExitCode::FAILURE,
            }
        }
    }
}

/// Runs an operator command; its error keeps its exit code through `anyhow`.
fn ops(f: impl std::future::Future<Output = cli::ops::OpsResult<()>>) -> anyhow::Result<()> {
    Ok(cli::ops::block_on(f)?)
}
