//! The `minegate` binary: everything is in the library.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    minegate::cli::main()
}
