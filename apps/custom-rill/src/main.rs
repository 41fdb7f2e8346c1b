//! An application's own `rill`: every command of the `rill` binary, with a
//! node type (`Scale`) and a model handler (`Linear`) of its own.
//!
//!     cargo run -p custom-rill -- types
//!     cargo run -p custom-rill -- run configs/custom/scores.yaml
//!
//! (README, "Writing your own node", walks through it.)

mod linear;
mod scale;

fn main() -> std::process::ExitCode {
    rill_cli::Cli::new()
        .register::<scale::Scale>("Scale", "multiplies numeric fields by a factor")
        .handler::<linear::LinearConfig>("Linear", "y = w·x + bias, weights from a JSON list")
        .main()
}
