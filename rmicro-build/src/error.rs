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
    /// The output directory, or a file's place in it, is not what can be written.
    #[error("{0}")]
    Output(String),
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
    /// `compile` or `try_compile` was given no `.proto` file.
    #[error(
        "no .proto files to compile: pass at least one, as a path inside one of the include \
         paths (`compile(&[\"proto/user.proto\"], &[\"proto\"])`)"
    )]
    NoProtos,
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

    /// A protox error as protoc would print it: `path/to/file.proto:LINE:COLUMN: message`, with
    /// the file on disk where it is in an include path, and what to do about it.
    pub(crate) fn protox(err: &protox::Error, includes: &[PathBuf]) -> Error {
        use miette::Diagnostic;

        let on_disk = |name: &str| {
            includes
                .iter()
                .map(|include| include.join(name))
                .find(|path| path.is_file())
                .map_or_else(|| name.to_string(), |path| path.display().to_string())
        };
        let position = err.labels().and_then(|mut labels| {
            let label = labels.next()?;
            let contents = err.source_code()?.read_span(label.inner(), 0, 0).ok()?;
            Some((contents.line() + 1, contents.column() + 1))
        });
        let location = match (err.file(), position) {
            (Some(file), Some((line, column))) => format!("{}:{line}:{column}: ", on_disk(file)),
            (Some(file), None) => format!("{}: ", on_disk(file)),
            (None, _) => String::new(),
        };
        let searched = includes
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let message = err.to_string();
        // protox parses proto2 and proto3 only: an `edition` statement is an unexpected token.
        let editions = message.ends_with("but found 'edition'")
            && err.labels().and_then(|mut labels| {
                let label = labels.next()?;
                let text = err.source_code()?.read_span(label.inner(), 0, 0).ok()?;
                Some(text.data() == b"edition")
            }) == Some(true);
        if editions {
            return Error::Generate(protoc_gen_rmicro::Error::Editions { at: location });
        }
        let hint = if err.is_file_not_found() && err.file().is_some() {
            let import = message
                .strip_prefix("import '")
                .and_then(|rest| rest.split_once('\''))
                .map_or("the imported file", |(name, _)| name);
            format!(
                "; it is looked up in the include paths ({searched}) and among the well-known \
                 types: add the directory that holds {import} to the include paths, or fix the import"
            )
        } else if err.is_file_not_found() {
            format!("; pass .proto files that are inside one of the include paths ({searched})")
        } else if message == "name 'google.api.http' is not defined" {
            "; add `import \"google/api/annotations.proto\";` (from googleapis, with its \
             directory in the include paths)"
                .to_string()
        } else {
            err.help()
                .map(|help| format!("; {help}"))
                .unwrap_or_default()
        };
        Error::Proto(format!(
            "could not compile the .proto files: {location}{message}{hint}"
        ))
    }
}
