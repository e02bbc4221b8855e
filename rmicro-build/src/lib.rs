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
use std::cell::RefCell;
use std::io::Read;
use std::rc::Rc;

use protox::file::{
    ChainFileResolver, File, FileResolver, GoogleFileResolver, IncludeFileResolver,
};

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
    let with_bom = Rc::new(RefCell::new(Vec::new()));
    for include in includes {
        resolver.add(Include {
            dir: include.clone(),
            files: IncludeFileResolver::new(include.clone()),
            with_bom: Rc::clone(&with_bom),
        });
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
        .chain(with_bom.take())
        .collect();
    Ok(Compiled {
        descriptor_set: compiler.encode_file_descriptor_set(),
        to_generate,
        read,
    })
}

/// An include directory whose files may start with a UTF-8 byte order mark, as editors on
/// Windows write them: protoc skips it, protox reads it as an invalid token.
struct Include {
    dir: PathBuf,
    files: IncludeFileResolver,
    /// Files read without their mark, which protox then knows by name only (not by path).
    with_bom: Rc<RefCell<Vec<PathBuf>>>,
}

impl FileResolver for Include {
    fn resolve_path(&self, path: &Path) -> Option<String> {
        self.files.resolve_path(path)
    }

    fn open_file(&self, name: &str) -> Result<File, protox::Error> {
        const BOM: &[u8] = b"\xEF\xBB\xBF";
        let path = self.dir.join(name);
        let mut start = [0; BOM.len()];
        let marked = std::fs::File::open(&path)
            .and_then(|mut f| f.read_exact(&mut start))
            .is_ok()
            && start == BOM;
        let source = marked
            .then(|| std::fs::read_to_string(&path).ok())
            .flatten();
        match source {
            Some(source) => {
                self.with_bom.borrow_mut().push(path);
                File::from_source(name, &source[BOM.len()..])
            }
            // protox says what is wrong with the file (not found, not UTF-8, …).
            None => self.files.open_file(name),
        }
    }
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
