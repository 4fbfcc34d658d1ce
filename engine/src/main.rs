#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    ordersync::cli::main()
}
