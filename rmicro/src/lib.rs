//! The `rmicro` command line, as a library so custom binaries can build on it.
//!
//! - `rmicro check`: is every generated file accepted by the rmicro-runtime the project resolves,
//!   and does the `protoc-gen-rmicro` on PATH emit code it accepts?
//! - `rmicro registry list|get NAME|watch [NAME]`: what the registry holds.
//! - `rmicro api`: the HTTP gateway, with [plugins](api::plugin).
//!
//! A custom gateway is a small `main.rs` that adds plugins and runs the CLI:
//!
//! ```no_run
//! fn main() -> std::process::ExitCode {
//!     let mut cli = rmicro::Cli::new();
//!     // cli.plugin(MyPlugin::default()).expect("unique plugin name");
//!     cli.run()
//! }
//! ```

use std::ffi::{OsStr, OsString};
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

pub mod api;
pub mod check;
pub mod registry_cmd;

use api::plugin::{Plugin, PluginError};

/// The parsed command line.
#[derive(Debug, Parser)]
#[command(
    name = "rmicro",
    version,
    about = "rmicro: go-micro's workflow in Rust, with generated code pinned to its runtime"
)]
pub struct Args {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
// Parsed once per process: the size of its largest variant does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// Check generated files and the protoc-gen-rmicro on PATH against the project's rmicro-runtime.
    ///
    /// Exit status: 0 all good, 1 version skew found, 2 could not check.
    Check(check::Args),
    /// Show what the registry holds: list services, get one, or watch changes.
    Registry(registry_cmd::Args),
    /// Run the HTTP gateway: `/user/...` → a node of `go.micro.api.user`.
    Api(api::ApiArgs),
}

/// The CLI with its gateway plugins: [`Cli::plugin`] adds one, [`Cli::run`] parses the
/// process's arguments and runs the subcommand (see the [crate docs](crate) for a whole
/// `main.rs`, and [`api::plugin`] for writing a plugin).
pub struct Cli {
    plugins: Vec<Box<dyn Plugin>>,
}

impl std::fmt::Debug for Cli {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cli")
            .field(
                "plugins",
                &self.plugins.iter().map(|p| p.name()).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Default for Cli {
    fn default() -> Self {
        Cli::new()
    }
}

impl Cli {
    /// The CLI with the built-in plugins (access log, health, CORS, token auth), each off until
    /// its flag.
    pub fn new() -> Cli {
        Cli {
            plugins: api::builtin_plugins(),
        }
    }

    /// Adds a gateway plugin; its flags join `rmicro api`'s.
    ///
    /// # Errors
    ///
    /// [`PluginError::Duplicate`] when a plugin of that name is registered already;
    /// [`PluginError::FlagTaken`] when one of its flags has the id, long name or short name of
    /// a flag `rmicro api` has already (its own, `--help`, or another plugin's), which clap
    /// would otherwise stop on with a panic when the command line is parsed.
    pub fn plugin(&mut self, plugin: impl Plugin) -> Result<&mut Self, PluginError> {
        if self.plugins.iter().any(|p| p.name() == plugin.name()) {
            return Err(PluginError::Duplicate(plugin.name().to_string()));
        }
        if let Some(clash) = self.flag_clash(&plugin) {
            return Err(clash);
        }
        self.plugins.push(Box::new(plugin));
        Ok(self)
    }

    /// The first of `plugin`'s flags whose id, long name or short name (aliases included) is
    /// taken already, by `rmicro api` itself or a plugin registered before it, or by another
    /// flag of `plugin`.
    fn flag_clash(&self, plugin: &dyn Plugin) -> Option<PluginError> {
        // What is taken, and by whom.
        let mut taken: Vec<(String, String)> = Vec::new();
        let mut api = Args::command();
        api.build(); // adds `--help`
        if let Some(api) = api.find_subcommand("api") {
            let by = "`rmicro api` itself".to_string();
            for arg in api.get_arguments() {
                taken.extend(names(arg).into_iter().map(|n| (n, by.clone())));
            }
            for group in api.get_groups() {
                taken.push((format!("id `{}`", group.get_id()), by.clone()));
            }
        }
        for other in &self.plugins {
            let by = format!("plugin `{}`", other.name());
            for arg in other.flags() {
                taken.extend(names(&arg).into_iter().map(|n| (n, by.clone())));
            }
        }
        let by = format!("plugin `{}`", plugin.name());
        for arg in plugin.flags() {
            for name in names(&arg) {
                if let Some((_, owner)) = taken.iter().find(|(t, _)| *t == name) {
                    return Some(PluginError::FlagTaken {
                        plugin: plugin.name().to_string(),
                        flag: name,
                        owner: owner.clone(),
                    });
                }
                taken.push((name, by.clone()));
            }
        }
        None
    }

    /// The registered plugins, built-ins first (to build a [`api::Gateway`] yourself).
    pub fn into_plugins(self) -> Vec<Box<dyn Plugin>> {
        self.plugins
    }

    /// The clap command, plugin flags included.
    pub fn command(&self) -> clap::Command {
        let flags: Vec<clap::Arg> = self.plugins.iter().flat_map(|p| p.flags()).collect();
        Args::command().mut_subcommand("api", |api| api.args(flags))
    }

    /// Parses the process's arguments and runs the command.
    pub fn run(self) -> ExitCode {
        self.run_from(std::env::args_os())
    }

    /// Parses `args` (the first is the program name) and runs the command.
    pub fn run_from(self, args: impl IntoIterator<Item = impl Into<OsString> + Clone>) -> ExitCode {
        let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
        let command = self.command();
        let matches = match command.clone().try_get_matches_from(&args) {
            Ok(m) => m,
            Err(err) if err.kind() == clap::error::ErrorKind::InvalidUtf8 => {
                // clap says only "invalid UTF-8 was detected in one or more arguments".
                eprintln!("error: {}", not_utf8(&command, &args));
                return ExitCode::from(2);
            }
            Err(err) => {
                let _ = err.print();
                return ExitCode::from(if err.use_stderr() { 2 } else { 0 });
            }
        };
        let parsed = match Args::from_arg_matches(&matches) {
            Ok(p) => p,
            Err(err) => {
                let _ = err.print();
                return ExitCode::from(2);
            }
        };
        match parsed.command {
            Command::Check(args) => check::run(&args),
            Command::Registry(args) => registry_cmd::run(&args),
            Command::Api(args) => {
                let sub = matches
                    .subcommand_matches("api")
                    .cloned()
                    .unwrap_or_default();
                run_gateway(args, &sub, self.plugins)
            }
        }
    }
}

/// How `arg` is named on the command line and in the matches: its id, its long names and its
/// short names, written as in [`PluginError::FlagTaken`].
fn names(arg: &clap::Arg) -> Vec<String> {
    let mut names = vec![format!("id `{}`", arg.get_id())];
    let longs = arg
        .get_long()
        .into_iter()
        .chain(arg.get_all_aliases().unwrap_or_default());
    names.extend(longs.map(|l| format!("`--{l}`")));
    let shorts = arg
        .get_short()
        .into_iter()
        .chain(arg.get_all_short_aliases().unwrap_or_default());
    names.extend(shorts.map(|s| format!("`-{s}`")));
    names
}

/// What is not UTF-8 text, for clap's `InvalidUtf8` error: an environment variable one of the
/// options reads, or an argument.
fn not_utf8(command: &clap::Command, args: &[OsString]) -> String {
    fn env_names(command: &clap::Command, out: &mut Vec<OsString>) {
        out.extend(
            command
                .get_arguments()
                .filter_map(|a| a.get_env())
                .map(OsStr::to_os_string),
        );
        for sub in command.get_subcommands() {
            env_names(sub, out);
        }
    }
    let mut names = Vec::new();
    env_names(command, &mut names);
    let variable = names
        .iter()
        .find(|name| std::env::var_os(name).is_some_and(|v| v.to_str().is_none()));
    if let Some(name) = variable {
        return format!(
            "environment variable {} is not UTF-8 text; set it to UTF-8 or unset it",
            name.to_string_lossy()
        );
    }
    match args.iter().skip(1).position(|a| a.to_str().is_none()) {
        Some(i) => format!(
            "argument {} (`{}`) is not UTF-8 text",
            i + 1,
            args[i + 1].to_string_lossy()
        ),
        None => "invalid UTF-8 in the arguments or the environment".to_string(),
    }
}

fn run_gateway(
    args: api::ApiArgs,
    matches: &clap::ArgMatches,
    plugins: Vec<Box<dyn Plugin>>,
) -> ExitCode {
    init_logging();
    let workers = args.workers.map_or_else(
        || std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
        usize::from,
    );
    let runtime = match api::workers::runtime() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: could not start the async runtime: {err}");
            return ExitCode::from(2);
        }
    };
    let code = runtime.block_on(async move {
        let address = args.address.clone();
        let grace = args.shutdown_timeout;
        let (handler, registry) = (args.handler.clone(), args.registry.registry.clone());
        let gateway = match api::Gateway::new(args, matches, plugins, None) {
            Ok(g) => g,
            Err(err) => {
                eprintln!("error: {err}");
                return ExitCode::from(2);
            }
        };
        // Before the gateway says it listens: from then on, a SIGHUP never stops it.
        reload_tls_on_hangup(gateway.clone());
        let sockets = match api::workers::bind(&address, workers) {
            Ok(sockets) => sockets,
            Err(err) => {
                eprintln!("error: could not listen on {address}: {err}");
                return ExitCode::from(2);
            }
        };
        // Told on standard output for scripts; a closed one (`| head -0`) does not stop the
        // gateway.
        let _ = match sockets[0].local_addr() {
            Ok(addr) => write_out(&format!("listening on {addr}\n")),
            Err(_) => write_out(&format!("listening on {address}\n")),
        };
        tracing::info!(
            workers,
            %handler,
            %registry,
            https = gateway.serves_tls(),
            "gateway workers"
        );
        // Listening from now on, so that a second signal is counted whenever it comes.
        let twice = signals(2);
        let shutdown = async move {
            shutdown_signal().await;
            tracing::info!(
                ?grace,
                "stopping: new connections are refused; requests in flight and open tunnels \
                 get the grace time to finish (a second SIGINT or SIGTERM stops at once)"
            );
        };
        tokio::select! {
            served = api::workers::serve(gateway, sockets, shutdown) => match served {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    eprintln!("error: {err}");
                    ExitCode::FAILURE
                }
            },
            () = twice => {
                tracing::warn!("second signal: stopped at once; requests in flight and open tunnels were cut off");
                ExitCode::FAILURE
            }
        }
    });
    // Without waiting for what is left (a stop at once leaves the workers' threads running):
    // the process ends with this function.
    runtime.shutdown_background();
    code
}

/// Re-reads the gateway's TLS files on each SIGHUP, as nginx does on a reload: its own
/// certificate and key, and the CA and certificate it reaches nodes with, so a renewed
/// certificate is taken without a restart. Files that cannot be used are logged, and the ones
/// in use stay. Without TLS there is nothing to re-read, and SIGHUP is only logged: a reload
/// (`systemctl reload`, a log rotation's `kill -HUP`) must not stop the gateway.
fn reload_tls_on_hangup(gateway: api::Gateway) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(hangups) => hangups,
            Err(err) => {
                tracing::warn!(error = %err, "cannot listen for SIGHUP; nothing is reloaded on it");
                return;
            }
        };
        tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                if !gateway.has_tls_files() {
                    tracing::info!("SIGHUP: nothing to reload (no --tls-cert, no --client-tls-ca)");
                    continue;
                }
                // Read off the workers' threads: a slow mount holds no connection up.
                let reloading = gateway.clone();
                match tokio::task::spawn_blocking(move || reloading.reload_tls()).await {
                    Ok(Ok(())) => tracing::info!("SIGHUP: TLS files reloaded"),
                    Ok(Err(err)) => {
                        tracing::error!(error = %err, "SIGHUP: TLS files not reloaded; the ones in use stay")
                    }
                    Err(err) => {
                        tracing::error!(error = %err, "SIGHUP: reloading the TLS files failed; the ones in use stay")
                    }
                }
            }
        });
    }
    #[cfg(not(unix))]
    let _ = gateway;
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`); in colour only on a terminal (and
/// without `NO_COLOR`), so log files and journals get plain text. What `rmicro` itself uses;
/// binaries built on it (custom gateways, the examples) can call it too.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        )
        .try_init();
}

/// SIGTERM and SIGINT, listened for from now on.
struct StopSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn listen() -> std::io::Result<StopSignals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(StopSignals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// The next of either.
    async fn next(&mut self) {
        tokio::select! { _ = self.term.recv() => {}, _ = self.int.recv() => {} }
    }
}

/// Listens for SIGINT and SIGTERM from the call on, and completes on the `n`th of them (at once
/// for 0; never, and says so, if they cannot be listened for).
fn signals(n: usize) -> impl std::future::Future<Output = ()> {
    let listening = StopSignals::listen();
    async move {
        let mut signals = match listening {
            Ok(signals) => signals,
            Err(err) => {
                tracing::warn!(error = %err, "cannot listen for a second SIGINT or SIGTERM");
                return std::future::pending().await;
            }
        };
        for _ in 0..n {
            signals.next().await;
        }
    }
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    match StopSignals::listen() {
        Ok(mut signals) => signals.next().await,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Writes `text` to standard output at once. Unlike `println!`, which panics, a failure comes
/// back: a reader that went away (`| head`) is [`std::io::ErrorKind::BrokenPipe`].
pub(crate) fn write_out(text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes()).and_then(|()| out.flush())
}
