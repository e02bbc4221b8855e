//! [`Config`]: what to compile and how, shaped like prost-build's `Config` and cc's `Build`.

use std::path::{Path, PathBuf};

use protoc_gen_rmicro::Options;

use crate::Error;

/// Configuration for one build.rs run. Every generator option of the `protoc-gen-rmicro` plugin
/// is a method here under the same name.
#[derive(Debug, Clone, Default)]
pub struct Config {
    options: Options,
    out_dir: Option<PathBuf>,
    emit_rerun_if_changed: Option<bool>,
}

/// Reads an environment variable the way a build script should: through Cargo's
/// `rerun-if-env-changed`, so a change reruns the script.
pub(crate) fn env_var(name: &str) -> Option<String> {
    if std::env::var_os("CARGO").is_some() {
        println!("cargo:rerun-if-env-changed={name}");
    }
    std::env::var(name).ok()
}

impl Config {
    /// The defaults: newest API, `::rmicro_runtime`, clients and servers, output to `OUT_DIR`.
    pub fn new() -> Self {
        Config::default()
    }

    /// Where to write the generated files. Default: the `OUT_DIR` Cargo gives build scripts.
    pub fn out_dir(&mut self, dir: impl Into<PathBuf>) -> &mut Self {
        self.out_dir = Some(dir.into());
        self
    }

    /// Whether to print `cargo:rerun-if-changed` for every `.proto` read. Default: when run by
    /// Cargo (the `CARGO` variable is set).
    pub fn emit_rerun_if_changed(&mut self, yes: bool) -> &mut Self {
        self.emit_rerun_if_changed = Some(yes);
        self
    }

    /// Emit code for rmicro-runtime API `level` (plugin: `api=N`). Default: the newest.
    pub fn api(&mut self, level: u32) -> &mut Self {
        self.options.api = Some(level);
        self
    }

    /// Rust path of the runtime crate (plugin: `runtime_path=`). Default: `::rmicro_runtime`.
    ///
    /// ```no_run
    /// rmicro_build::Config::new().runtime_path("::my_platform::rmicro_runtime");
    /// ```
    pub fn runtime_path(&mut self, path: impl Into<String>) -> &mut Self {
        self.options.runtime_path = path.into();
        self
    }

    /// Also write `name`, a module tree that `include!`s every generated file (plugin:
    /// `include_file=`). Default: none.
    pub fn include_file(&mut self, name: impl Into<String>) -> &mut Self {
        self.options.include_file = Some(name.into());
        self
    }

    /// Generate service clients (plugin: `client=`). Default: true.
    pub fn client(&mut self, yes: bool) -> &mut Self {
        self.options.client = yes;
        self
    }

    /// Generate handler traits and register functions (plugin: `server=`). Default: true.
    pub fn server(&mut self, yes: bool) -> &mut Self {
        self.options.server = yes;
        self
    }

    /// Use an existing Rust type or module for a protobuf path (plugin: `extern_path=`).
    ///
    /// ```no_run
    /// rmicro_build::Config::new().extern_path(".google.type", "::google_types");
    /// ```
    pub fn extern_path(&mut self, proto: impl Into<String>, rust: impl Into<String>) -> &mut Self {
        self.options.extern_paths.push((proto.into(), rust.into()));
        self
    }

    /// `BTreeMap` for matching map fields, `.` for all (plugin: `btree_map=`).
    pub fn btree_map(&mut self, path: impl Into<String>) -> &mut Self {
        self.options.btree_map.push(path.into());
        self
    }

    /// `bytes::Bytes` for matching bytes fields, `.` for all (plugin: `bytes=`).
    pub fn bytes(&mut self, path: impl Into<String>) -> &mut Self {
        self.options.bytes.push(path.into());
        self
    }

    /// An attribute on matching messages, enums and oneofs (plugin: `type_attribute=`).
    ///
    /// ```no_run
    /// rmicro_build::Config::new().type_attribute(".go.micro.srv.user.CallRequest", "#[derive(Eq, Hash)]");
    /// ```
    pub fn type_attribute(
        &mut self,
        path: impl Into<String>,
        attr: impl Into<String>,
    ) -> &mut Self {
        self.options
            .type_attributes
            .push((path.into(), attr.into()));
        self
    }

    /// An attribute on matching messages (plugin: `message_attribute=`).
    pub fn message_attribute(
        &mut self,
        path: impl Into<String>,
        attr: impl Into<String>,
    ) -> &mut Self {
        self.options
            .message_attributes
            .push((path.into(), attr.into()));
        self
    }

    /// An attribute on matching enums and oneofs (plugin: `enum_attribute=`).
    pub fn enum_attribute(
        &mut self,
        path: impl Into<String>,
        attr: impl Into<String>,
    ) -> &mut Self {
        self.options
            .enum_attributes
            .push((path.into(), attr.into()));
        self
    }

    /// An attribute on matching fields (plugin: `field_attribute=`).
    pub fn field_attribute(
        &mut self,
        path: impl Into<String>,
        attr: impl Into<String>,
    ) -> &mut Self {
        self.options
            .field_attributes
            .push((path.into(), attr.into()));
        self
    }

    /// Box matching message fields (plugin: `boxed=`).
    pub fn boxed(&mut self, path: impl Into<String>) -> &mut Self {
        self.options.boxed.push(path.into());
        self
    }

    /// Leave comments out of matching items (plugin: `disable_comments=`).
    pub fn disable_comments(&mut self, path: impl Into<String>) -> &mut Self {
        self.options.disable_comments.push(path.into());
        self
    }

    /// Do not derive `Debug` for matching types (plugin: `skip_debug=`).
    pub fn skip_debug(&mut self, path: impl Into<String>) -> &mut Self {
        self.options.skip_debug.push(path.into());
        self
    }

    /// Keep enum name prefixes on variants (plugin: `retain_enum_prefix=`). Default: false.
    pub fn retain_enum_prefix(&mut self, yes: bool) -> &mut Self {
        self.options.retain_enum_prefix = yes;
        self
    }

    /// Implement `prost::Name` for messages (plugin: `enable_type_names=`). Default: false.
    pub fn enable_type_names(&mut self, yes: bool) -> &mut Self {
        self.options.enable_type_names = yes;
        self
    }

    /// Sets an option by its plugin parameter name, as `--rmicro_opt=key=value` would.
    ///
    /// # Errors
    ///
    /// An unknown key or an invalid value, with the same message the plugin gives.
    pub fn parameter(&mut self, key: &str, value: &str) -> Result<&mut Self, Error> {
        self.options.set(key, Some(value))?;
        Ok(self)
    }

    /// The generator options as configured.
    pub fn options(&self) -> &Options {
        &self.options
    }

    /// Compiles `protos` (paths of `.proto` files, each inside one of `includes`) and writes the
    /// generated files, returning their paths. Unchanged files are not rewritten.
    ///
    /// # Errors
    ///
    /// A `.proto` that does not compile, options the generator rejects, no output directory, or
    /// an I/O failure.
    pub fn try_compile(
        &self,
        protos: &[impl AsRef<Path>],
        includes: &[impl AsRef<Path>],
    ) -> Result<Vec<PathBuf>, Error> {
        let out_dir = match &self.out_dir {
            Some(dir) => dir.clone(),
            None => PathBuf::from(env_var("OUT_DIR").ok_or(Error::NoOutDir)?),
        };
        let protos: Vec<PathBuf> = protos.iter().map(|p| p.as_ref().to_path_buf()).collect();
        let includes: Vec<PathBuf> = includes.iter().map(|p| p.as_ref().to_path_buf()).collect();
        let rerun = self
            .emit_rerun_if_changed
            .unwrap_or_else(|| std::env::var_os("CARGO").is_some());
        // Report inputs first, so a failed compile still reruns once the .proto is fixed.
        if rerun {
            for proto in &protos {
                println!("cargo:rerun-if-changed={}", proto.display());
            }
        }
        let (files, read) = crate::generate(&self.options, &protos, &includes)?;
        if rerun {
            for path in read.iter().filter(|p| !protos.contains(p)) {
                println!("cargo:rerun-if-changed={}", path.display());
            }
        }
        let mut written = Vec::with_capacity(files.len());
        for file in files {
            let path = out_dir.join(&file.name);
            crate::write_if_changed(&path, file.content.as_bytes())?;
            written.push(path);
        }
        Ok(written)
    }

    /// [`Config::try_compile`] for build.rs: on error, prints one `error:` line Cargo shows and
    /// exits the build script with status 1.
    pub fn compile(&self, protos: &[impl AsRef<Path>], includes: &[impl AsRef<Path>]) {
        if let Err(err) = self.try_compile(protos, includes) {
            eprintln!("error: rmicro-build: {err}");
            println!("cargo:warning=rmicro-build: {err}");
            std::process::exit(1);
        }
    }
}
