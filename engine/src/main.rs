#![forbid(unsafe_code)]

// The engine allocates many small, short-lived JSON values per order;
// mimalloc serves those with far less contention and overhead than glibc's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    ordersync::cli::main()
}
