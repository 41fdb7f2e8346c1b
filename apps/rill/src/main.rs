//! The `rill` binary: the command line of `rill_cli` with the built-in node
//! types. An application with nodes of its own builds the same binary with
//! `rill_cli::Cli::new().register::<MyNode>(...)` (see `apps/custom-rill`).

fn main() -> std::process::ExitCode {
    rill_cli::Cli::new().main()
}
