//! The `noether` command line: simulate ground truth, generate datasets, benchmark.
//! Run `noether --help` for the subcommands.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
