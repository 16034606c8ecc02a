//! `ignis`: the Ignis server (`ignis serve`) and its command-line client, in one binary.
//!
//! Each subcommand is a clap struct in `commands/` with an `execute()`; this file only parses
//! the command line, installs logging and maps the outcome to an exit code.

mod commands;

use clap::Parser;

use commands::Command;

/// Ignis: a self-hosted Function-as-a-Service platform.
#[derive(Parser)]
#[command(name = "ignis", version, about)]
struct Cli {
    #[command(flatten)]
    global: commands::GlobalOpts,
    #[command(subcommand)]
    command: Command,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Serve(_) | Command::Dev(_)) {
        // A client writing into a closed pipe (`ignis activations list | head`) ends quietly,
        // as other command-line tools do, instead of panicking in println!. (Not the servers:
        // `ignis serve` and `ignis dev cluster` keep running, and stop their children in order.)
        // SAFETY: resetting a signal disposition before any thread is started.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::from(70);
        }
    };
    match runtime.block_on(cli.command.execute(&cli.global)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(commands::exit_code(&e))
        }
    }
}
