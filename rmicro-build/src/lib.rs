//! build.rs helper for rmicro: compiles `.proto` files with protox (no `protoc` needed) and runs
//! the same generator as the `protoc-gen-rmicro` plugin, writing into `OUT_DIR`.
//!
//! ```no_run
//! // build.rs
//! rmicro_build::Config::new().compile(&["proto/user.proto"], &["proto"]);
//! ```
//!
//! ```text
//! // src/lib.rs
//! pub mod user {
//!     rmicro_runtime::include_proto!("go.micro.srv.user");
//! }
//! ```
//!
//! Every option of the plugin is a method of [`Config`] under the same name.

use std::path::{Path, PathBuf};

use protoc_gen_rmicro::{GeneratedFile, Input, Options};
use protox::file::{ChainFileResolver, GoogleFileResolver, IncludeFileResolver};

pub mod check;
mod config;
mod error;

pub use config::Config;
pub use error::Error;

/// Includes the file generated for a protobuf package from `OUT_DIR`.
///
/// `include_proto!("go.micro.srv.user")` includes `$OUT_DIR/go.micro.srv.user.rs`; use `"_"` for
/// files without a package. This one needs rmicro-build as a normal dependency too; a crate that
/// has it as a build-dependency only uses `rmicro_runtime::include_proto!`, the same macro.
#[macro_export]
macro_rules! include_proto {
    ($package:literal) => {
        include!(concat!(env!("OUT_DIR"), "/", $package, ".rs"));
    };
}

/// Compiles `protos` (searched in `includes`) with the default [`Config`] into `OUT_DIR`, printing
/// one clear error and failing the build script on error.
pub fn compile_protos(protos: &[impl AsRef<Path>], includes: &[impl AsRef<Path>]) {
    Config::new().compile(protos, includes);
}

/// What protox produced for a set of `.proto` files.
pub(crate) struct Compiled {
    /// The encoded descriptor set, imports and source info included.
    pub(crate) descriptor_set: Vec<u8>,
    /// Names of the files to generate (the ones asked for, not their imports).
    pub(crate) to_generate: Vec<String>,
    /// Paths of every file read from disk.
    pub(crate) read: Vec<PathBuf>,
}

/// Compiles `protos` with protox.
pub(crate) fn descriptors(protos: &[PathBuf], includes: &[PathBuf]) -> Result<Compiled, Error> {
    // protox's own copies of the well-known types come first, so a proto bundle that ships a newer
    // google/protobuf/descriptor.proto than protox can parse still compiles.
    let mut resolver = ChainFileResolver::new();
    resolver.add(GoogleFileResolver::new());
    for include in includes {
        resolver.add(IncludeFileResolver::new(include.clone()));
    }
    let mut compiler = protox::Compiler::with_file_resolver(resolver);
    compiler.include_imports(true).include_source_info(true);
    for proto in protos {
        compiler
            .open_file(proto)
            .map_err(|err| Error::protox(&err, includes))?;
    }
    let to_generate = compiler
        .files()
        .filter(|f| !f.is_import())
        .map(|f| f.name().to_string())
        .collect();
    let read = compiler
        .files()
        .filter_map(|f| f.path().map(Path::to_path_buf))
        .collect();
    Ok(Compiled {
        descriptor_set: compiler.encode_file_descriptor_set(),
        to_generate,
        read,
    })
}

/// Generates code for `protos` without writing anything.
pub(crate) fn generate(
    options: &Options,
    protos: &[PathBuf],
    includes: &[PathBuf],
) -> Result<(Vec<GeneratedFile>, Vec<PathBuf>), Error> {
    let compiled = descriptors(protos, includes)?;
    let mut input =
        Input::from_descriptor_set_bytes(&compiled.descriptor_set, compiled.to_generate)?;
    // Nothing else generates the imported packages the code names: without them it would not
    // compile.
    input.generate_referenced_imports(options);
    let files = protoc_gen_rmicro::generate(&input, options)?;
    Ok((files, compiled.read))
}

/// Writes `content` to `path` only when it differs, so unchanged output does not trigger rebuilds.
pub(crate) fn write_if_changed(path: &Path, content: &[u8]) -> Result<bool, Error> {
    if std::fs::read(path).is_ok_and(|old| old == content) {
        return Ok(false);
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    std::fs::write(path, content).map_err(|e| Error::io(path, e))?;
    Ok(true)
}
