//! `postern`: the SPA client. This release carries `postern decode`, which opens a
//! packet with access.conf-style keys and prints its fields as one JSON object; the
//! knocking flags of fwknop's client come next (see the README).

mod cli;
mod decode;

use std::io::Write as _;
use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    let result = match args.command {
        cli::Command::Decode(d) => decode::run(&d),
    };
    match result {
        Ok(out) => {
            let mut stdout = std::io::stdout().lock();
            if writeln!(stdout, "{out}").is_err() {
                return ExitCode::from(1);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("postern: {e}");
            ExitCode::from(1)
        }
    }
}
