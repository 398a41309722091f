//! The `tarpit` binary: everything lives in the library.

#![deny(unsafe_code)]

fn main() -> std::process::ExitCode {
    tarpit::cli::main()
}
