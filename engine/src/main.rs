#![forbid(unsafe_code)]

// The engine allocates many small, short-lived JSON values per order, and
// much of it is freed on another thread than the one that allocated it (a
// write's data goes to the store's writer thread). jemalloc serves that
// with less overhead than glibc's allocator or mimalloc. It is built not to
// use transparent huge pages (`.cargo/config.toml`).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    ordersync::cli::main()
}
