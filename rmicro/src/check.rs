//! `rmicro check`: the pre-build version check from the command line.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use protoc_gen_rmicro::project::{self, Runtime};
use rmicro_build::check::{self, FileCheck, Resolved, Status};
use serde_json::{json, Value};

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Lines for a person.
    Human,
    /// One JSON object, for CI.
    Json,
}

/// `rmicro check` arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The package's Cargo.toml (default: the nearest at or above the current directory).
    #[arg(long, value_name = "PATH")]
    pub manifest_path: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,
    /// Generated files or directories to check (default: every file under the package that
    /// carries the rmicro header).
    #[arg(value_name = "PATH")]
    pub paths: Vec<PathBuf>,
}

/// The outcome, before it is printed.
#[derive(Debug, Default)]
struct Outcome {
    /// The lock file Cargo uses for the package checked (`--manifest-path`, or the one at or
    /// above the current directory).
    lockfile: Option<PathBuf>,
    /// Every runtime below, once.
    runtimes: Vec<Runtime>,
    /// The packages whose runtimes were resolved (those owning the checked files, and the one
    /// of `--manifest-path`), each with its runtimes.
    groups: Vec<Group>,
    files: Vec<FileCheck>,
    /// For each of `files`, the index of its package in `groups` (`None` for the files
    /// that could not be read or listed).
    file_groups: Vec<Option<usize>>,
    /// Where generated files were looked for.
    roots: Vec<PathBuf>,
    plugin: Option<PluginCheck>,
    /// Problems that stopped part of the check (exit 2 unless skew was also found).
    errors: Vec<String>,
    /// Version skew messages (exit 1).
    skews: Vec<String>,
}

/// One package's runtimes.
#[derive(Debug, Clone)]
struct Group {
    /// The package's manifest (`None`: the path belongs to no package the lock file lists,
    /// and every locked runtime was taken).
    manifest: Option<PathBuf>,
    /// The package's name.
    name: Option<String>,
    resolved: Resolved,
    /// The lock file the runtimes were read from (a nested project has its own).
    lockfile: PathBuf,
}

#[derive(Debug)]
struct PluginCheck {
    path: Option<PathBuf>,
    version: Option<String>,
    apis: Option<(u32, u32)>,
    status: &'static str,
    message: String,
}

/// Runs `rmicro check`.
pub fn run(args: &Args) -> ExitCode {
    let outcome = check(args);
    let code = if !outcome.skews.is_empty() {
        1
    } else if !outcome.errors.is_empty() {
        2
    } else {
        0
    };
    let written = match args.format {
        Format::Human => print_human(&outcome),
        Format::Json => crate::write_out(&format!("{}\n", to_json(&outcome, code))),
    };
    match written {
        // The verdict stands when nobody reads it (`| head -0`): the exit code still says it.
        Err(err) if err.kind() != std::io::ErrorKind::BrokenPipe => {
            eprintln!("error: cannot write the report: {err}");
            ExitCode::from(2)
        }
        _ => ExitCode::from(code),
    }
}

fn check(args: &Args) -> Outcome {
    let mut out = Outcome::default();
    let cwd = std::env::current_dir().unwrap_or_default();
    let manifest = match &args.manifest_path {
        Some(p) if p.is_file() => p.clone(),
        Some(p) => {
            out.errors.push(format!(
                "{} does not exist or is not a file; pass the path of a Cargo.toml to --manifest-path",
                p.display()
            ));
            return out;
        }
        None => match cwd
            .ancestors()
            .map(|d| d.join("Cargo.toml"))
            .find(|p| p.is_file())
        {
            Some(p) => p,
            None => {
                out.errors.push(format!(
                    "no Cargo.toml in {} or above; run inside a Cargo package or pass --manifest-path",
                    cwd.display()
                ));
                return out;
            }
        },
    };
    let manifest = std::fs::canonicalize(&manifest).unwrap_or(manifest);
    let package_dir = manifest
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| cwd.clone());
    let Some(lockfile) = project::find_lockfile(&package_dir) else {
        out.errors.push(format!(
            "no Cargo.lock at or above {}; run `cargo generate-lockfile` (or build once) so the \
             rmicro-runtime version is known",
            package_dir.display()
        ));
        return out;
    };
    out.lockfile = Some(lockfile.clone());
    // Each file is checked against the runtimes of the package that owns it (in a workspace
    // whose members use different runtime release lines, each against its own).
    let resolve = |out: &mut Outcome, dir: &Path| -> Result<usize, String> {
        // The lock file Cargo uses for `dir`: a project nested in this one with a workspace of
        // its own (excluded from this one, as a fuzz crate or a standalone example is), or one
        // named on the command line, has its own. A path under no Cargo.toml at all shares
        // this project's.
        let lockfile = match project::find_lockfile(dir) {
            Some(own) => own,
            None if dir.ancestors().any(|d| d.join("Cargo.toml").is_file()) => {
                return Err(format!(
                    "no Cargo.lock for the Cargo project that owns {}; run `cargo generate-lockfile` \
                     there (or build it once) so its rmicro-runtime version is known",
                    dir.display()
                ));
            }
            None => lockfile.clone(),
        };
        let package = project::owning_package(dir);
        let manifest = package.as_ref().map(|p| p.manifest.clone());
        let known = |out: &Outcome, manifest: &Option<PathBuf>| {
            out.groups
                .iter()
                .position(|g| g.manifest == *manifest && g.lockfile == lockfile)
        };
        if let Some(i) = known(out, &manifest) {
            return Ok(i);
        }
        let resolution = project::resolve_package(&lockfile, dir).map_err(|err| err.to_string())?;
        // A path whose package the lock file does not list shares the lock file's runtimes.
        let manifest = resolution.package.as_ref().map(|p| p.manifest.clone());
        if let Some(i) = known(out, &manifest) {
            return Ok(i);
        }
        out.groups.push(Group {
            manifest,
            name: resolution.package.as_ref().map(|p| p.name.clone()),
            resolved: Resolved {
                from: resolution.describe(&lockfile),
                runtimes: resolution.runtimes,
            },
            lockfile,
        });
        Ok(out.groups.len() - 1)
    };
    // A package's runtimes are resolved first (an error stops the check); a virtual
    // workspace's root owns no files, so its members' runtimes are resolved as files are found.
    let mut base = None;
    if project::owning_package(&package_dir).is_some() {
        match resolve(&mut out, &package_dir) {
            Ok(group) => base = Some(group),
            Err(err) => {
                out.errors.push(err);
                return out;
            }
        }
    }

    let roots = if args.paths.is_empty() {
        vec![package_dir.clone()]
    } else {
        args.paths.clone()
    };
    out.roots = roots.clone();
    for root in &roots {
        if !root.exists() {
            out.errors
                .push(format!("{}: no such file or directory", root.display()));
        }
    }
    let (files, mut unlisted) =
        check::collect(&roots.into_iter().filter(|r| r.exists()).collect::<Vec<_>>());
    let mut unresolved = Vec::new();
    // Generated files sit together: each directory's package is looked up once.
    let mut by_dir: std::collections::HashMap<PathBuf, Result<usize, String>> =
        std::collections::HashMap::new();
    for file in &files {
        let dir = package_dir_of(file, &cwd);
        let group = match by_dir.get(&dir) {
            Some(group) => group.clone(),
            None => {
                let group = resolve(&mut out, &dir);
                by_dir.insert(dir, group.clone());
                group
            }
        };
        match group {
            Ok(group) => {
                let checked = check::check_files(
                    std::slice::from_ref(file),
                    &out.groups[group].resolved.runtimes,
                );
                out.files.extend(checked);
                out.file_groups.push(Some(group));
            }
            Err(err) => {
                if !unresolved.contains(&err) {
                    out.errors.push(format!("{}: {err}", file.display()));
                    unresolved.push(err);
                }
            }
        }
    }
    out.file_groups.extend(unlisted.iter().map(|_| None));
    out.files.append(&mut unlisted);
    for (file, group) in out.files.iter().zip(&out.file_groups) {
        match &file.status {
            Status::Ok(_) => {}
            Status::Skew(header) => {
                // Only a checked file (one with a package) can be skewed.
                if let Some(group) = group {
                    let resolved = &out.groups[*group].resolved;
                    out.skews.push(check::skew_message(file, header, resolved));
                }
            }
            Status::Damaged(_) => out.skews.extend(check::problem_message(file)),
            Status::NoHeader | Status::Unreadable(_) => {
                out.errors.extend(check::problem_message(file))
            }
        }
    }
    // The packages reported: those owning checked files, else the one checked.
    let used: Vec<usize> = {
        let mut used: Vec<usize> = out.file_groups.iter().flatten().copied().collect();
        used.sort_unstable();
        used.dedup();
        if used.is_empty() {
            match base {
                Some(base) => used.push(base),
                None => match resolve(&mut out, &package_dir) {
                    Ok(group) => used.push(group),
                    Err(err) => {
                        out.errors.push(err);
                        return out;
                    }
                },
            }
        }
        used
    };
    out.groups = used.iter().map(|&i| out.groups[i].clone()).collect();
    out.file_groups = out
        .file_groups
        .iter()
        .map(|g| g.and_then(|g| used.iter().position(|&u| u == g)))
        .collect();
    for group in &out.groups {
        for runtime in &group.resolved.runtimes {
            if !out.runtimes.contains(runtime) {
                out.runtimes.push(runtime.clone());
            }
        }
    }

    let plugin = check_plugin(&out.groups);
    if plugin.status == "skew" {
        out.skews.push(plugin.message.clone());
    } else if plugin.status == "error" {
        out.errors.push(plugin.message.clone());
    }
    out.plugin = Some(plugin);
    out
}

/// The directory whose package a generated file counts for: the one the file is listed in, as
/// named (absolute, `.` and `..` taken out by name), not where symbolic links lead. A file
/// reached through a link (to the file, or to a directory above it) counts where the link is,
/// not where it points: the package holding the link is the one that compiles it (by
/// `include!` or `mod`), against its own runtime.
fn package_dir_of(file: &Path, cwd: &Path) -> PathBuf {
    let listed = match file.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    project::lexically_normal(&cwd.join(listed))
}

/// The `protoc-gen-rmicro` protoc would run: the first one on `PATH` that can be executed. A
/// file of that name without the execute bit (a download not yet made executable) is passed
/// over, as the shell and protoc pass it over.
fn find_plugin() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    let name = format!("protoc-gen-rmicro{}", std::env::consts::EXE_SUFFIX);
    std::env::split_paths(&path)
        .map(|dir| dir.join(&name))
        .find(|p| executable(p))
}

#[cfg(unix)]
fn executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(not(unix))]
fn executable(path: &Path) -> bool {
    path.is_file()
}

fn check_plugin(groups: &[Group]) -> PluginCheck {
    let Some(path) = find_plugin() else {
        // The plugin released with the project's runtime(s), from where Cargo takes them.
        let mut commands: Vec<String> = Vec::new();
        for runtime in groups.iter().flat_map(|g| &g.resolved.runtimes) {
            let command = runtime.install_command("protoc-gen-rmicro");
            if !commands.contains(&command) {
                commands.push(command);
            }
        }
        let install = match commands.as_slice() {
            [] => "`cargo install protoc-gen-rmicro --locked`".to_string(),
            commands => commands
                .iter()
                .map(|c| format!("`{c}`"))
                .collect::<Vec<_>>()
                .join(" or "),
        };
        return PluginCheck {
            path: None,
            version: None,
            apis: None,
            status: "not_found",
            message: format!(
                "protoc-gen-rmicro is not on PATH (only needed to run protoc --rmicro_out); \
                 install it with {install}"
            ),
        };
    };
    let error = |message: String| PluginCheck {
        path: Some(path.clone()),
        version: None,
        apis: None,
        status: "error",
        message,
    };
    let version_out = match Command::new(&path).arg("--version").output() {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).trim().to_string(),
        Ok(out) => {
            return error(format!(
                "{} --version failed: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
        Err(err) => return error(format!("could not run {}: {err}", path.display())),
    };
    // `protoc-gen-rmicro X.Y.Z (rmicro API N)`
    let parsed = version_out
        .strip_prefix("protoc-gen-rmicro ")
        .and_then(|rest| rest.split_once(" (rmicro API "))
        .and_then(|(v, api)| Some((v.to_string(), api.strip_suffix(')')?.parse::<u32>().ok()?)));
    let Some((version, newest)) = parsed else {
        return error(format!(
            "{} --version printed `{version_out}`, not `protoc-gen-rmicro X.Y.Z (rmicro API N)`",
            path.display()
        ));
    };
    // Every level it can emit; a plugin that does not answer emits only its newest.
    let apis = Command::new(&path)
        .arg("--supported-apis")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| {
            let text = String::from_utf8_lossy(&o.stdout).trim().to_string();
            let (min, max) = text.split_once("..=")?;
            Some((min.parse().ok()?, max.parse().ok()?))
        })
        .unwrap_or((newest, newest));
    let list = |runtimes: &[Runtime]| {
        runtimes
            .iter()
            .map(|r| {
                format!(
                    "rmicro-runtime {} (API {}..={})",
                    r.version, r.api_min, r.api
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let at = format!("{version_out} at {}", path.display());
    let verdicts: Vec<(&Group, Result<u32, String>)> = groups
        .iter()
        .map(|g| (g, plugin_level(&version, apis, &g.resolved.runtimes)))
        .collect();
    let (status, message) = if let [(group, verdict)] = verdicts.as_slice() {
        let runtime_list = list(&group.resolved.runtimes);
        match verdict {
            Ok(level) if *level == newest => (
                "ok",
                format!("{at} emits API {newest}, which the locked {runtime_list} accepts"),
            ),
            Ok(level) => (
                "ok",
                format!(
                    "{at} emits API {newest} by default and API {level} for this project's \
                     {runtime_list} (it reads Cargo.lock)"
                ),
            ),
            Err(why) => (
                "skew",
                format!(
                    "{at} emits API {}..={}, none of which the locked {runtime_list} accepts; {why}",
                    apis.0, apis.1
                ),
            ),
        }
    } else {
        // Several packages, each with its own runtimes: the plugin picks the level of the
        // package it writes into, so each is judged alone.
        let name = |g: &Group| {
            g.name
                .as_ref()
                .map_or_else(|| "the rest".to_string(), |n| format!("`{n}`"))
        };
        let served: Vec<String> = verdicts
            .iter()
            .filter_map(|(g, v)| {
                let level = v.as_ref().ok()?;
                Some(format!(
                    "API {level} for {} ({})",
                    name(g),
                    list(&g.resolved.runtimes)
                ))
            })
            .collect();
        let unserved: Vec<String> = verdicts
            .iter()
            .filter_map(|(g, v)| {
                let why = v.as_ref().err()?;
                Some(format!(
                    "{} ({}) accepts none of its levels: {why}",
                    name(g),
                    list(&g.resolved.runtimes)
                ))
            })
            .collect();
        match (served.is_empty(), unserved.is_empty()) {
            (_, true) => (
                "ok",
                format!(
                    "{at} emits API {newest} by default and, for each package, what its runtime \
                     accepts: {}",
                    served.join("; ")
                ),
            ),
            (true, false) => (
                "skew",
                format!(
                    "{at} emits API {}..={}: {}",
                    apis.0,
                    apis.1,
                    unserved.join("; ")
                ),
            ),
            // Packages on different runtime release lines need a plugin each: not a skew of
            // any file (each file is checked against its own package above).
            (false, false) => (
                "partial",
                format!(
                    "{at} emits {}; {} (for that package, next to this plugin; protoc takes \
                     `--plugin=protoc-gen-rmicro=PATH`)",
                    served.join("; "),
                    unserved.join("; ")
                ),
            ),
        }
    };
    PluginCheck {
        path: Some(path),
        version: Some(version),
        apis: Some(apis),
        status,
        message,
    }
}

/// The newest level among `apis` (what the plugin `version` emits) that every one of `runtimes`
/// accepts, or why there is none and what to do.
fn plugin_level(version: &str, apis: (u32, u32), runtimes: &[Runtime]) -> Result<u32, String> {
    if let Some(level) = (apis.0..=apis.1)
        .rev()
        .find(|level| runtimes.iter().all(|r| r.accepts(*level)))
    {
        return Ok(level);
    }
    if project::shared_range(runtimes).is_none() {
        return Err(
            "the package's runtimes accept no API level in common, so no plugin can \
                    serve it: make its dependencies agree on one rmicro-runtime release line"
                .to_string(),
        );
    }
    let blocking = runtimes
        .iter()
        .find(|r| !(apis.0..=apis.1).any(|level| r.accepts(level)))
        .or(runtimes.first());
    match blocking {
        Some(runtime) if runtime.version == version => Err(format!(
            "yet this plugin is the release of rmicro-runtime {version}: the runtime's API range{} \
             does not match its release (a checkout whose API level changed without a version \
             bump, or a stale copy); reinstalling protoc-gen-rmicro {version} will not fix that: \
             build the plugin from the same source as the runtime (`{}`) or correct the \
             runtime's `[package.metadata.rmicro]`",
            runtime
                .manifest
                .as_ref()
                .map(|m| format!(", read from {},", m.display()))
                .unwrap_or_default(),
            runtime.same_source_install("protoc-gen-rmicro"),
        )),
        Some(runtime) => Err(format!(
            "install the matching plugin: `{}`",
            runtime.install_command("protoc-gen-rmicro")
        )),
        None => Err("no rmicro-runtime was found for it".to_string()),
    }
}

fn print_human(out: &Outcome) -> std::io::Result<()> {
    use std::fmt::Write as _;
    let mut text = String::new();
    for group in &out.groups {
        // Whose runtime it is, when several packages were checked.
        let owner = match &group.name {
            Some(name) if out.groups.len() > 1 => format!(" for package `{name}`"),
            _ => String::new(),
        };
        for runtime in &group.resolved.runtimes {
            let _ = writeln!(
                text,
                "{runtime}, locked in {}{owner}",
                group.lockfile.display()
            );
        }
    }
    for file in &out.files {
        if matches!(file.status, Status::Ok(_)) {
            let _ = writeln!(text, "{file}");
        }
    }
    let none_found = out.lockfile.is_some() && out.files.is_empty() && out.errors.is_empty();
    if none_found {
        let roots: Vec<String> = out.roots.iter().map(|r| r.display().to_string()).collect();
        let _ = writeln!(
            text,
            "no generated files found under {}: no checked-in generated code to check (code \
             rmicro-build generates into OUT_DIR is checked by the build script on every build)",
            roots.join(", ")
        );
    }
    if let Some(plugin) = &out.plugin {
        if plugin.status != "skew" && plugin.status != "error" {
            let _ = writeln!(text, "plugin: {}", plugin.message);
        }
    }
    crate::write_out(&text)?;
    for skew in &out.skews {
        eprintln!("\nerror: {skew}");
    }
    for error in &out.errors {
        eprintln!("\nerror: could not check: {error}");
    }
    if out.skews.is_empty() && out.errors.is_empty() && !out.files.is_empty() {
        crate::write_out(if out.groups.len() > 1 {
            "all good: every generated file is accepted by the rmicro-runtime its package locks\n"
        } else {
            "all good: every generated file is accepted by the locked rmicro-runtime\n"
        })?;
    }
    Ok(())
}

fn to_json(out: &Outcome, code: u8) -> Value {
    let files: Vec<Value> = out
        .files
        .iter()
        .zip(&out.file_groups)
        .map(|(f, group)| {
            let group = group.map(|g| &out.groups[g]);
            let header = match &f.status {
                Status::Ok(h) | Status::Skew(h) => Some(h),
                _ => None,
            };
            json!({
                "path": f.path.display().to_string(),
                "status": f.status.name(),
                "api": header.map(|h| h.api),
                "plugin_version": header.map(|h| h.plugin_version.clone()),
                "sources": f.sources,
                "package": group.and_then(|g| g.name.clone()),
                "runtimes": group.map(|g| g.resolved.runtimes.iter().map(|r| r.version.clone()).collect::<Vec<_>>()),
                "lockfile": group.map(|g| g.lockfile.display().to_string()),
                "message": match (&f.status, group) {
                    (Status::Skew(h), Some(g)) => Some(check::skew_message(f, h, &g.resolved)),
                    _ => check::problem_message(f),
                },
            })
        })
        .collect();
    let plugin = out.plugin.as_ref().map(|p| {
        json!({
            "path": p.path.as_ref().map(|p| p.display().to_string()),
            "version": p.version,
            "apis": p.apis.map(|(min, max)| [min, max]),
            "status": p.status,
            "message": p.message,
        })
    });
    // Every lock file the runtimes were read from: a project nested in the checked one with a
    // workspace of its own has its own.
    let mut lockfiles: Vec<&PathBuf> = Vec::new();
    for group in &out.groups {
        if !lockfiles.contains(&&group.lockfile) {
            lockfiles.push(&group.lockfile);
        }
    }
    // The one the runtimes were read from; when there are several, the checked project's.
    let lockfile = match lockfiles.as_slice() {
        [only] => Some(*only),
        _ => out.lockfile.as_ref(),
    };
    json!({
        "status": match code { 0 => "ok", 1 => "skew", _ => "error" },
        "exit_code": code,
        "lockfile": lockfile.map(|l| l.display().to_string()),
        "lockfiles": lockfiles.iter().map(|l| l.display().to_string()).collect::<Vec<_>>(),
        "runtimes": out.runtimes.iter().map(|r| json!({
            "version": r.version, "api_min": r.api_min, "api": r.api,
        })).collect::<Vec<_>>(),
        "files": files,
        "plugin": plugin,
        "skews": out.skews,
        "errors": out.errors,
    })
}
