use std::process::ExitCode;

use clap::Parser;
use etcd_repopulator::{
    app,
    cli::{Cli, Command, commands},
    cluster::rbac,
};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => {
            app::init_tracing();
            app::serve(args).await
        }
        Command::Sim(args) => {
            app::init_tracing();
            app::simulate::run_sim(args).await
        }
        Command::Fanout(args) => {
            return match etcd_repopulator::remote::cli::run_cli(args).await {
                Ok(code) => code,
                Err(err) => {
                    eprintln!("etcd-repopulator fanout: {}", describe(&err));
                    ExitCode::FAILURE
                }
            };
        }
        Command::Openapi => match serde_json::to_string_pretty(&etcd_repopulator::api::openapi()) {
            Ok(doc) => {
                println!("{doc}");
                Ok(())
            }
            Err(err) => Err(err.into()),
        },
        Command::Repopulations(args) => {
            return commands::report(commands::repopulations(&cli.client, args).await);
        }
        Command::Services(args) => {
            return commands::report(commands::services(&cli.client, args).await);
        }
        Command::Snapshots(args) => {
            return commands::report(commands::snapshots(&cli.client, args).await);
        }
        Command::EtcdClusters(args) => {
            return commands::report(commands::etcd_clusters(&cli.client, args).await);
        }
        Command::Completion { shell } => {
            use clap::CommandFactory;
            let mut command = Cli::command();
            clap_complete::generate(
                shell,
                &mut command,
                "etcd-repopulator",
                &mut std::io::stdout(),
            );
            Ok(())
        }
        Command::SimNodeGuard(args) => return app::simulate::guard(args).await,
        Command::SimNode(args) => return app::simulate::node_command(args).await,
        Command::RbacRules => {
            print!("{}", rbac::rules_yaml());
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("etcd-repopulator: {}", describe(&err));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, each once: an error whose message already includes its cause
/// (`invalid config file x.toml: <the TOML error>`) does not get it repeated after it, as
/// `{:#}` would.
fn describe(err: &anyhow::Error) -> String {
    let mut text = err.to_string();
    for cause in err.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}
