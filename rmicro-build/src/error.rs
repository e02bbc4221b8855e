//! rmicro-build's error type.

use std::path::{Path, PathBuf};

/// Why a build step failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// protox could not compile the `.proto` files (syntax error, missing import, …).
    #[error("{0}")]
    Proto(String),
    /// The generator rejected the input or the options.
    #[error(transparent)]
    Generate(#[from] protoc_gen_rmicro::Error),
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// Generated files need an API the resolved rmicro-runtime does not accept, or could not be
    /// checked. The message names each file and both ways out.
    #[error("{0}")]
    Skew(String),
    /// The project's rmicro-runtime could not be determined.
    #[error(transparent)]
    Project(#[from] protoc_gen_rmicro::project::ProjectError),
    /// The project's rmicro-runtime accepts no API level this generator emits.
    #[error("{0}")]
    NoCommonApi(String),
    /// No output directory: neither `Config::out_dir` nor the `OUT_DIR` variable Cargo sets for
    /// build scripts.
    #[error("OUT_DIR is not set: run this from build.rs, or set an output directory with Config::out_dir")]
    NoOutDir,
}

impl Error {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Error {
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn protox(err: protox::Error) -> Error {
        let location = err.file().map(|f| format!("{f}: ")).unwrap_or_default();
        Error::Proto(format!(
            "could not compile the .proto files: {location}{err}"
        ))
    }
}
