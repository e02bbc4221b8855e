//! The generator's error type.

/// Why generation failed. Every message says what was wrong and how to fix it.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// A plugin parameter's key is not one the plugin knows.
    #[error("unknown parameter `{key}`; valid parameters are: {valid}")]
    UnknownParameter {
        /// The key as given.
        key: String,
        /// The valid keys, comma-separated.
        valid: String,
    },
    /// A known parameter with a value it cannot take.
    #[error("parameter `{key}` has an invalid value `{value}`: {expected}")]
    InvalidParameter {
        /// The key.
        key: String,
        /// The value as given.
        value: String,
        /// What the value must look like.
        expected: String,
    },
    /// `api=N` asks for an API level this plugin cannot emit.
    #[error(
        "api={requested} is outside what protoc-gen-rmicro {version} can emit (API {min}..={max}); \
         {hint}"
    )]
    UnsupportedApi {
        /// The level asked for.
        requested: u32,
        /// The oldest level this plugin emits.
        min: u32,
        /// The newest level this plugin emits.
        max: u32,
        /// This plugin's version.
        version: String,
        /// What to do about it.
        hint: String,
    },
    /// The input is not a request protoc could have sent.
    #[error("malformed CodeGeneratorRequest: {0}")]
    MalformedRequest(String),
    /// A file to generate uses protobuf editions (`edition = "2023";`), which prost cannot read.
    #[error(
        "{at}protobuf editions are not supported (yet): prost, which generates the messages, \
         cannot read them; write `syntax = \"proto3\";` or `syntax = \"proto2\";` instead of \
         `edition = ...;`"
    )]
    Editions {
        /// Where the `edition` statement is, as `file.proto:LINE:COLUMN: ` (or `file.proto: `).
        at: String,
    },
    /// A method's `google.api.http` binding cannot be served as written: a path template that
    /// does not parse, a variable, `body` or `response_body` naming no usable field, a rule
    /// without a pattern. The message starts with `file.proto:LINE:COLUMN: `.
    #[error("{0}")]
    HttpRule(String),
    /// The `.proto` input uses something the generator does not support.
    #[error("{0}")]
    Unsupported(String),
    /// prost-build, which generates the messages, failed.
    #[error("generating messages failed: {0}")]
    Prost(String),
    /// Generating a file stopped on a panic: input the generator should have refused with a clear
    /// message, or a bug in it.
    #[error(
        "{file}: generating Rust code failed ({message}); this is a bug in rmicro, which should \
         generate this file or refuse it with a message saying what to change: please report it \
         with the file at https://github.com/rmicro/rmicro/issues"
    )]
    Bug {
        /// The `.proto` file being generated.
        file: String,
        /// The panic's message.
        message: String,
    },
}
