//! The `minegate` binary: everything is in the library, which has no unsafe
//! code; the one call here makes the commands that print what they read end
//! of SIGPIPE, as Unix tools do, when their output's pipe is closed early.
#![deny(unsafe_code)]

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = minegate::cli::Cli::parse();
    if cli.ends_on_a_closed_pipe() {
        // Not SIGPIPE's default disposition for the whole process: writes
        // to a socket the peer closed (hyper writes with writev, which has
        // no MSG_NOSIGNAL) would end it too, silently, when a gateway
        // refuses the client's certificate. Only a closed stdout does.
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if stdout_closed(info) {
                die_of_sigpipe();
            }
            default(info);
        }));
    }
    minegate::cli::run_main(cli)
}

/// Whether `println!` panicked because stdout is a closed pipe.
fn stdout_closed(info: &std::panic::PanicHookInfo<'_>) -> bool {
    let payload = info.payload();
    let message = payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or("");
    message.starts_with("failed printing to stdout") && message.contains("os error 32")
}

fn die_of_sigpipe() -> ! {
    // SAFETY: SIG_DFL is a valid disposition, and raise only signals this
    // process, which then ends as a closed pipe ends a Unix tool.
    #[allow(unsafe_code)]
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        libc::raise(libc::SIGPIPE);
    }
    std::process::exit(128 + libc::SIGPIPE)
}
