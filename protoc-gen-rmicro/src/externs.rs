//! The extern paths prost-build is given: the user's, and the well-known types pointing into
//! the runtime's re-export of prost-types.

use prost_types::FileDescriptorProto;

use crate::{names, rust_names, Options};

/// Every extern path prost-build is given: the user's, then the well-known types the user's do
/// not cover.
pub(crate) fn extern_paths(
    options: &Options,
    files: &[FileDescriptorProto],
) -> Vec<(String, String)> {
    let mut all = options.extern_paths.clone();
    for (proto, rust) in well_known_externs(files, &options.runtime_path) {
        if !rust_names::is_extern(&proto, &options.extern_paths) {
            all.push((proto, rust));
        }
    }
    all
}

/// Exact extern paths for every well-known type in the request, pointing into the runtime's
/// re-export of prost-types (wrappers map to Rust primitives and `Empty` to `()`, as prost-build
/// does by default).
///
/// prost-build's own `.google.protobuf` prefix mapping would pass the runtime path through
/// `to_snake`, which turns `__codegen` into `codegen`; exact entries are used verbatim.
fn well_known_externs(files: &[FileDescriptorProto], rt: &str) -> Vec<(String, String)> {
    fn walk(
        prefix: &str,
        module: &str,
        message: &prost_types::DescriptorProto,
        out: &mut Vec<(String, String)>,
    ) {
        let proto = format!("{prefix}.{}", message.name());
        out.push((
            proto.clone(),
            format!("{module}::{}", names::upper_camel(message.name())),
        ));
        let inner = format!("{module}::{}", names::snake(message.name()));
        for e in &message.enum_type {
            out.push((
                format!("{proto}.{}", e.name()),
                format!("{inner}::{}", names::upper_camel(e.name())),
            ));
        }
        for nested in &message.nested_type {
            walk(&proto, &inner, nested, out);
        }
    }
    let primitive = |name: &str| -> Option<String> {
        Some(match name {
            "BoolValue" => "bool".into(),
            "BytesValue" => format!("{rt}::__codegen::prost::alloc::vec::Vec<u8>"),
            "DoubleValue" => "f64".into(),
            "Empty" => "()".into(),
            "FloatValue" => "f32".into(),
            "Int32Value" => "i32".into(),
            "Int64Value" => "i64".into(),
            "StringValue" => format!("{rt}::__codegen::prost::alloc::string::String"),
            "UInt32Value" => "u32".into(),
            "UInt64Value" => "u64".into(),
            _ => return None,
        })
    };
    let mut out = Vec::new();
    // prost-types carries `google.protobuf` and `google.protobuf.compiler` (plugin.proto).
    for (package, module) in [
        ("google.protobuf", format!("{rt}::__codegen::prost_types")),
        (
            "google.protobuf.compiler",
            format!("{rt}::__codegen::prost_types::compiler"),
        ),
    ] {
        let prefix = format!(".{package}");
        for file in files.iter().filter(|f| f.package() == package) {
            for message in &file.message_type {
                match primitive(message.name()).filter(|_| package == "google.protobuf") {
                    Some(rust) => out.push((format!("{prefix}.{}", message.name()), rust)),
                    None => walk(&prefix, &module, message, &mut out),
                }
            }
            for e in &file.enum_type {
                out.push((
                    format!("{prefix}.{}", e.name()),
                    format!("{module}::{}", names::upper_camel(e.name())),
                ));
            }
        }
    }
    out
}
