//! The `minegate` binary: everything is in the library, which has no unsafe
//! code; the one call here restores SIGPIPE's default for the commands that
//! should end on a closed pipe.
#![deny(unsafe_code)]

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = minegate::cli::Cli::parse();
    if cli.ends_on_a_closed_pipe() {
        // SAFETY: before any thread is started; SIG_DFL is a valid disposition.
        #[allow(unsafe_code)]
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    minegate::cli::run_main(cli)
}
