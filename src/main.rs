//! `casewatch` binary: parse the command line, set up logging, run, map errors to exit codes.

use clap::Parser;

fn main() {
    casewatch::allocator::configure();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = casewatch::cli::Cli::parse();
    match casewatch::cli::run(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(2);
        }
    }
}
