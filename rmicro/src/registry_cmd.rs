//! `rmicro registry list|get NAME|watch [NAME]`: what the registry holds, from the terminal.
//!
//! Exit status: 0 done (a watch interrupted by Ctrl-C or a closed output), 1 the service was
//! not found (`get`) or the watch ended by itself and missed changes (`watch`), 2 the registry
//! could not be read.

use std::process::ExitCode;

use rmicro_runtime::config::RegistryFlags;
use rmicro_runtime::registry::Service;
use tokio_stream::StreamExt;

/// `rmicro registry` arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Which registry to read.
    #[command(flatten)]
    pub registry: RegistryFlags,
    /// What to show.
    #[command(subcommand)]
    pub command: Command,
}

/// `rmicro registry` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Every service: name, version, node count (`--json` for the records).
    List {
        /// Print the full go-micro records as JSON.
        #[arg(long)]
        json: bool,
    },
    /// One service's versions, endpoints and nodes, as go-micro JSON.
    Get {
        /// The service name, e.g. go.micro.srv.user.
        name: String,
    },
    /// Prints one JSON line per change until interrupted. Exits 1, with an error, when the
    /// watch ends by itself: it fell behind and missed changes (its output was not read fast
    /// enough), or the registry went away.
    Watch {
        /// Only this service.
        name: Option<String>,
    },
}

/// Runs `rmicro registry`. Warnings go to stderr (records skipped because they are not go-micro
/// services, each with its key), filtered by `RUST_LOG` as the gateway's logs are.
pub fn run(args: &Args) -> ExitCode {
    crate::init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: could not start the async runtime: {err}");
            return ExitCode::from(2);
        }
    };
    runtime.block_on(async {
        match run_async(args).await {
            Ok(code) => code,
            Err(err) => {
                eprintln!("error: {err}");
                ExitCode::from(2)
            }
        }
    })
}

/// `text` as it can be shown on a terminal: control characters (escape sequences a record
/// written by anyone could carry) escaped.
fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    if text.chars().any(char::is_control) {
        std::borrow::Cow::Owned(text.escape_debug().to_string())
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

/// How often `watch` asks whether its registry is still there.
const WATCH_PING_EVERY: std::time::Duration = std::time::Duration::from_secs(3);

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Writes a command's output: a reader that went away (`| head`) ends it quietly, as the watch
/// does; another failure (a full disk) is an error.
fn output(text: &str) -> Result<ExitCode, Box<dyn std::error::Error>> {
    match crate::write_out(text) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(err) => write_failed(err),
    }
}

/// How a command ends when writing its output failed: see [`output`].
fn write_failed(err: std::io::Error) -> Result<ExitCode, Box<dyn std::error::Error>> {
    if err.kind() == std::io::ErrorKind::BrokenPipe {
        return Ok(ExitCode::SUCCESS);
    }
    Err(format!("cannot write the output: {err}").into())
}

async fn run_async(args: &Args) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let registry = args.registry.build()?;
    if registry.name() == "memory" {
        eprintln!(
            "note: the memory registry lives inside one process, so this one holds nothing; \
             read a shared one with --registry etcd --registry-address HOST:PORT"
        );
    }
    match &args.command {
        Command::List { json } => {
            let services = registry.list_services().await?;
            let text = if *json {
                format!("{}\n", serde_json::to_string_pretty(&services)?)
            } else if services.is_empty() {
                format!("no services in the {} registry\n", registry.name())
            } else {
                services
                    .iter()
                    .map(|s| {
                        format!(
                            "{:<40} {:<10} {} node(s)\n",
                            printable(&s.name),
                            printable(&s.version),
                            s.nodes.len()
                        )
                    })
                    .collect()
            };
            output(&text)
        }
        Command::Get { name } => {
            let services: Vec<Service> = registry.get_service(name).await?;
            if services.is_empty() {
                eprintln!(
                    "error: service `{name}` not found in the {} registry",
                    registry.name()
                );
                return Ok(ExitCode::from(1));
            }
            output(&format!("{}\n", serde_json::to_string_pretty(&services)?))
        }
        Command::Watch { name } => {
            let mut events = registry.watch(name.as_deref()).await?;
            // Make sure the registry is reachable, so a wrong address fails instead of hanging.
            registry.ping().await?;
            // One Ctrl-C listener for the whole watch: one made anew each time round would
            // miss a Ctrl-C that comes while a change is being printed (tokio tells a
            // listener only of signals after it was made), and the watch would go on. It is
            // polled first, so it listens from the first time round and a stream of changes
            // cannot keep it waiting.
            let mut interrupted = std::pin::pin!(tokio::signal::ctrl_c());
            // The watch itself goes quiet when the registry goes away (the node cache behind
            // it keeps what it had and retries): asked now and then, so that a watch whose
            // registry is gone ends with an error instead of printing nothing forever.
            let (gone_tx, mut gone) = tokio::sync::oneshot::channel::<String>();
            let pinger = {
                let registry = std::sync::Arc::clone(&registry);
                tokio::spawn(async move {
                    loop {
                        tokio::time::sleep(WATCH_PING_EVERY).await;
                        if let Err(err) = registry.ping().await {
                            let _ = gone_tx.send(err.to_string());
                            return;
                        }
                    }
                })
            };
            let _stop_pinging = AbortOnDrop(pinger);
            loop {
                tokio::select! {
                    biased;
                    _ = &mut interrupted => return Ok(ExitCode::SUCCESS),
                    Ok(err) = &mut gone => {
                        eprintln!(
                            "error: the watch of the {} registry ended: the registry went away ({err}); what was printed may not be what it holds now: watch again once it is back",
                            registry.name()
                        );
                        return Ok(ExitCode::from(1));
                    }
                    event = events.next() => match event {
                        Some(event) => {
                            // A closed pipe (`| head`) ends the watch quietly; a full disk
                            // with an error.
                            let line = format!("{}\n", serde_json::to_string(&event)?);
                            if let Err(err) = crate::write_out(&line) {
                                return write_failed(err);
                            }
                        }
                        // Not the end of the changes: some were lost, so what was printed is not
                        // the registry's state any more. A script must not take it for one.
                        None => {
                            eprintln!(
                                "error: the watch of the {} registry ended: it fell behind and missed changes, or the registry went away; run `rmicro registry list` for what it holds now, and watch again",
                                registry.name()
                            );
                            return Ok(ExitCode::from(1));
                        }
                    },
                }
            }
        }
    }
}
