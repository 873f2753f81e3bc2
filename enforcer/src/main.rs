//! The `enforcer` binary: the agent and the security team's command line.

// The package's dependencies are the library's; this target uses only a few of them.
#![allow(unused_crate_dependencies)]
use clap::Parser as _;

fn main() -> std::process::ExitCode {
    let cli = enforcer::cli::Cli::parse();
    enforcer::cli::init_tracing(cli.verbose);
    match enforcer::cli::run(cli) {
        Ok(code) => code,
        Err(err) => {
            // `{:#}` prints the whole context chain on one line: what failed and why.
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
