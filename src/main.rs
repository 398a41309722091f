//! The `tarpit` binary: everything lives in the library.

fn main() -> std::process::ExitCode {
    tarpit::cli::main()
}
