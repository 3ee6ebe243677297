use std::process::ExitCode;

use bip324_proxy::daemon::{self, Config, logging};
use clap::Parser;

fn main() -> ExitCode {
    let config = Config::parse();
    if let Err(e) = logging::init(&config.log_level) {
        eprintln!("bip324-proxy: {e:#}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(daemon::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}
