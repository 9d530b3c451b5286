//! `grayline`: parses the command line, runs it, and exits with the failure's code.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = grayline_cli::args::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("grayline: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(grayline_cli::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("grayline: {failure}");
            failure.exit_code()
        }
    }
}
