//! The `emporium` binary: see `emporium --help`.

fn main() -> std::process::ExitCode {
    emporium_gateway::cli::main()
}
