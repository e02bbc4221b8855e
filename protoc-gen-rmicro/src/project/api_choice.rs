//! The API level generated code takes for a package's runtimes: the newest this generator emits
//! that every one of them accepts, or why there is none, said for the protoc plugin and for
//! build.rs.

use super::releases::release_line;
use super::Runtime;
use crate::{MAX_API, MIN_API, VERSION};

/// The API levels every one of `runtimes` accepts, `(min, max)`; `None` when they have none in
/// common (two incompatible release lines in one package's dependencies).
pub fn shared_range(runtimes: &[Runtime]) -> Option<(u32, u32)> {
    let min = runtimes.iter().map(|r| r.api_min).max().unwrap_or(0);
    let max = runtimes.iter().map(|r| r.api).min().unwrap_or(u32::MAX);
    (min <= max).then_some((min, max))
}

/// No API level this generator emits is accepted by `runtime` (one of a project's runtimes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoCommonApi {
    /// The runtime that accepts none of them.
    pub runtime: Runtime,
    /// Whether it is newer than every level emitted (else older).
    pub newer: bool,
    /// Every runtime of the package, when they accept no API level in common among themselves
    /// (two incompatible release lines in one package's dependencies): no generator can serve
    /// them all, whatever its version. Empty otherwise.
    pub conflicting: Vec<Runtime>,
}

impl NoCommonApi {
    fn direction(&self) -> &'static str {
        if self.newer {
            "newer"
        } else {
            "older"
        }
    }

    /// The runtimes of a package that accept no level in common, said so.
    fn conflict(&self) -> Option<String> {
        if self.conflicting.is_empty() {
            return None;
        }
        let list = self
            .conflicting
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" and ");
        Some(format!(
            "the package depends on {list} (directly or through crates that re-export one), \
             which accept no API level in common: no generated code compiles against both. Make \
             the package's dependencies agree on one rmicro-runtime release line"
        ))
    }

    /// Where the runtime's range was read from, for a message that doubts it.
    fn range_origin(&self) -> String {
        match &self.runtime.manifest {
            Some(manifest) => format!("the `[package.metadata.rmicro]` of {}", manifest.display()),
            None => "what the project reports for it".to_string(),
        }
    }

    /// The message for the protoc plugin: install the plugin released with the runtime.
    pub fn plugin_advice(&self) -> String {
        if let Some(conflict) = self.conflict() {
            return format!("{conflict} (or pass api=N to choose a level)");
        }
        if self.runtime.version == VERSION {
            // Installing the plugin released with the runtime would install this one again.
            return format!(
                "{}, but protoc-gen-rmicro {VERSION}, released with it, emits API \
                 {MIN_API}..={MAX_API}: the runtime's API range, read from {}, does not match \
                 its release (a checkout whose API level changed without a version bump, or a \
                 stale copy). Installing another protoc-gen-rmicro will not fix that: build the \
                 plugin from the same source as the runtime (`{}`), correct the runtime's \
                 `[package.metadata.rmicro]`, or pass api=N to choose a level",
                self.runtime,
                self.range_origin(),
                self.runtime.same_source_install("protoc-gen-rmicro"),
            );
        }
        format!(
            "{}, but protoc-gen-rmicro {VERSION} emits API {MIN_API}..={MAX_API}; the runtime is \
             {} than any level this plugin emits. Install the plugin that matches it: \
             `{}` (or pass api=N to choose a level)",
            self.runtime,
            self.direction(),
            self.runtime.install_command("protoc-gen-rmicro"),
        )
    }

    /// The message for build.rs generation: the build-dependency has to match the runtime.
    pub fn build_advice(&self) -> String {
        if let Some(conflict) = self.conflict() {
            return format!("{conflict} (or choose a level with `Config::api`)");
        }
        let runtime_line = release_line(&self.runtime.version);
        if runtime_line == release_line(VERSION) {
            // Naming rmicro-build's own release line would send the user in a circle.
            return format!(
                "{}, but rmicro-build {VERSION}, of the same release line, generates API \
                 {MIN_API}..={MAX_API}: the runtime's API range, read from {}, does not match \
                 its release (a checkout whose API level changed without a version bump, or a \
                 stale copy). Changing the rmicro-build requirement will not fix that: take \
                 rmicro-build from the same source as the runtime (the same path or git \
                 revision), or correct the runtime's `[package.metadata.rmicro]`",
                self.runtime,
                self.range_origin(),
            );
        }
        format!(
            "{}, but rmicro-build {VERSION} generates API {MIN_API}..={MAX_API}; the runtime is \
             {} than any level it generates. Use the rmicro-build released with the runtime, in \
             Cargo.toml: `[build-dependencies] {}`, or require the runtime released with this \
             rmicro-build: `rmicro-runtime = \"{}\"`",
            self.runtime,
            self.direction(),
            self.runtime.build_dependency("rmicro-build"),
            release_line(VERSION),
        )
    }
}

/// The newest API level this generator emits that every runtime in `runtimes` accepts.
///
/// # Errors
///
/// [`NoCommonApi`] naming a runtime that accepts none of them (and, when the runtimes accept no
/// level in common among themselves, all of them).
///
/// # Panics
///
/// When `runtimes` is empty.
// The error carries whole runtimes for its advice; it is made once per failed build, never in
// a loop, so its size costs nothing worth boxing it for.
#[allow(clippy::result_large_err)]
pub fn common_api(runtimes: &[Runtime]) -> Result<u32, NoCommonApi> {
    let choice = (MIN_API..=MAX_API)
        .rev()
        .find(|level| runtimes.iter().all(|r| r.accepts(*level)));
    if let Some(level) = choice {
        return Ok(level);
    }
    let conflicting = if shared_range(runtimes).is_none() {
        runtimes.to_vec()
    } else {
        Vec::new()
    };
    let blocking = runtimes
        .iter()
        .find(|r| !(MIN_API..=MAX_API).any(|level| r.accepts(level)))
        .unwrap_or(&runtimes[0]);
    Err(NoCommonApi {
        runtime: blocking.clone(),
        newer: blocking.api >= MIN_API,
        conflicting,
    })
}

/// [`common_api`], with the plugin's advice as the error.
///
/// # Errors
///
/// [`NoCommonApi::plugin_advice`] when no level fits.
pub fn choose_api(runtimes: &[Runtime]) -> Result<u32, String> {
    common_api(runtimes).map_err(|e| e.plugin_advice())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::project::Origin;

    #[test]
    fn build_advice_names_the_build_dependency_to_change() {
        let runtime = Runtime {
            version: "7.3.1".into(),
            api_min: 50,
            api: 60,
            manifest: None,
            origin: Origin::Registry,
        };
        let err = common_api(std::slice::from_ref(&runtime)).unwrap_err();
        assert_eq!(err.runtime, runtime);
        let advice = err.build_advice();
        assert!(
            advice.contains("the runtime is newer than any level it generates"),
            "{advice}"
        );
        assert!(
            advice.contains("`[build-dependencies] rmicro-build = \"7.3\"`"),
            "{advice}"
        );
        assert!(!advice.contains("cargo install"), "{advice}");
        assert!(err
            .plugin_advice()
            .contains("cargo install protoc-gen-rmicro --version 7.3.1"));
    }

    #[test]
    fn choose_api_picks_the_newest_common_level() {
        let rt = |api_min, api| Runtime {
            version: "x".into(),
            api_min,
            api,
            manifest: None,
            origin: Origin::Registry,
        };
        assert_eq!(choose_api(&[rt(1, 1)]), Ok(1));
        assert_eq!(choose_api(&[rt(1, 5)]), Ok(MAX_API));
        let err = choose_api(&[rt(50, 60)]).unwrap_err();
        assert!(
            err.contains("newer than any level this plugin emits"),
            "{err}"
        );
    }

    #[test]
    fn runtimes_that_share_no_level_are_named_together() {
        let rt = |version: &str, api_min, api| Runtime {
            version: version.into(),
            api_min,
            api,
            manifest: None,
            origin: Origin::Registry,
        };
        let err = common_api(&[rt("0.1.0", 1, 1), rt("9.0.0", 9, 9)]).unwrap_err();
        assert_eq!(err.conflicting.len(), 2);
        let advice = err.plugin_advice();
        assert!(advice.contains("accept no API level in common"), "{advice}");
        assert!(!advice.contains("cargo install"), "{advice}");
    }
}
