//! One module per top-level subcommand of `confide`.

pub mod bench;
pub mod bench_secagg;
pub mod bench_transport;
pub mod demo;
pub mod federation;
pub mod ops;
pub mod privacy;
