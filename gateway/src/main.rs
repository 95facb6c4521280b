//! The `emporium` binary: see `emporium --help`.

/// mimalloc instead of the system allocator: a checkout allocates often on many threads,
/// and glibc's malloc/free took about 40 % of the engine's CPU under `bench checkout`.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    emporium_gateway::cli::main()
}
