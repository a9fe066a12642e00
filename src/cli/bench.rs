//! `confide bench ...`: benchmarks that run the real code in process and print real measurements as JSON. One
//! file per benchmark: `bench_secagg.rs`, `federation/`, `bench_transport.rs`.
use clap::Subcommand;

use super::bench_secagg::{self, SecaggArgs};

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Run one whole secure-aggregation round in process (all clients and the server) and time each side.
    ///
    /// Clients that drop out (a fraction `--dropout` of all) do so right after ShareKeys, the costliest case for
    /// the server: it must rebuild their mask keys and remove their pairwise masks. The aggregate is checked against
    /// the plain sum of the surviving inputs. `--threat-model both` (the default) runs a semi-honest and a
    /// malicious-server round on the same inputs and reports the malicious mode's overhead.
    Secagg(SecaggArgs),
    /// Run R rounds over real HTTP: a real `confide-coordinator` process (SQLite or Postgres) and N simulated
    /// participants speaking the API with the real secure-aggregation client; every published model is checked
    /// and each round is timed per stage and compared with `bench secagg` for the same (N, M, dropout, graph).
    Federation(super::federation::FederationArgs),
    /// Upload the same body (4 MB by default) to a plain-HTTP and an HTTPS coordinator on loopback, alternately,
    /// and compare the median times (the cost of TLS).
    Transport(super::bench_transport::TransportArgs),
}

pub fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Federation(args) => super::federation::run(args),
        BenchCommand::Transport(args) => {
            let json = super::bench_transport::wants_json(&args);
            let report = super::bench_transport::run(args)?;
            super::bench_transport::print(&report, json)
        }
        BenchCommand::Secagg(args) => bench_secagg::run(&args),
    }
}
