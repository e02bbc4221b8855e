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

/// The types of `google.protobuf` (and `google.protobuf.compiler`) that prost-types has, by
/// their protobuf names: descriptor.proto as protobuf 3 had it, without the types editions
/// added (`FeatureSet`, `Edition`, …), which newer copies of descriptor.proto (protox's
/// among them) define. Wrappers and `Empty` map to Rust types of their own.
const PROST_TYPES: &[&str] = &[
    "Any",
    "Api",
    "BoolValue",
    "BytesValue",
    "DescriptorProto",
    "DescriptorProto.ExtensionRange",
    "DescriptorProto.ReservedRange",
    "DoubleValue",
    "Duration",
    "Empty",
    "Enum",
    "EnumDescriptorProto",
    "EnumDescriptorProto.EnumReservedRange",
    "EnumOptions",
    "EnumValue",
    "EnumValueDescriptorProto",
    "EnumValueOptions",
    "ExtensionRangeOptions",
    "Field",
    "Field.Cardinality",
    "Field.Kind",
    "FieldDescriptorProto",
    "FieldDescriptorProto.Label",
    "FieldDescriptorProto.Type",
    "FieldMask",
    "FieldOptions",
    "FieldOptions.CType",
    "FieldOptions.JSType",
    "FileDescriptorProto",
    "FileDescriptorSet",
    "FileOptions",
    "FileOptions.OptimizeMode",
    "FloatValue",
    "GeneratedCodeInfo",
    "GeneratedCodeInfo.Annotation",
    "Int32Value",
    "Int64Value",
    "ListValue",
    "MessageOptions",
    "Method",
    "MethodDescriptorProto",
    "MethodOptions",
    "MethodOptions.IdempotencyLevel",
    "Mixin",
    "NullValue",
    "OneofDescriptorProto",
    "OneofOptions",
    "Option",
    "ServiceDescriptorProto",
    "ServiceOptions",
    "SourceCodeInfo",
    "SourceCodeInfo.Location",
    "SourceContext",
    "StringValue",
    "Struct",
    "Syntax",
    "Timestamp",
    "Type",
    "UInt32Value",
    "UInt64Value",
    "UninterpretedOption",
    "UninterpretedOption.NamePart",
    "Value",
    "compiler.CodeGeneratorRequest",
    "compiler.CodeGeneratorResponse",
    "compiler.CodeGeneratorResponse.Feature",
    "compiler.CodeGeneratorResponse.File",
    "compiler.Version",
];

/// Refuses a field or method of the `packages` generated whose type is in `google.protobuf` but
/// not in prost-types (and not mapped by the user's `extern_path`): its code would name a type
/// the runtime does not have, and fail to compile with errors in generated code.
pub(crate) fn check_well_known(
    files: &[FileDescriptorProto],
    packages: &std::collections::BTreeSet<&str>,
    user_externs: &[(String, String)],
) -> Result<(), crate::Error> {
    let missing = |type_name: &str| {
        type_name
            .strip_prefix(".google.protobuf.")
            .is_some_and(|name| !PROST_TYPES.contains(&name))
            && !rust_names::is_extern(type_name, user_externs)
    };
    let refuse =
        |file: &FileDescriptorProto, what: String, type_name: &str| {
            let name = type_name.trim_start_matches('.');
            crate::Error::Unsupported(format!(
            "{}: {what} has type `{name}`, which prost-types (the well-known types rmicro-runtime \
             carries) does not have: it has descriptor.proto's types as protobuf 3 defined them, \
             without those protobuf editions added; give the {} another type, or map `{name}` \
             to a Rust type of your own with `extern_path=.{name}=::path::to::Type`",
            file.name(),
            if what.starts_with("field") { "field" } else { "method" },
        ))
        };
    fn fields<'a>(
        scope: &str,
        message: &'a prost_types::DescriptorProto,
        out: &mut Vec<(String, &'a str)>,
    ) {
        let name = format!("{scope}{}", message.name());
        for field in &message.field {
            out.push((
                format!("field `{name}.{}`", field.name()),
                field.type_name(),
            ));
        }
        for nested in &message.nested_type {
            fields(&format!("{name}."), nested, out);
        }
    }
    for file in files
        .iter()
        .filter(|f| packages.contains(f.package()) && !f.package().starts_with("google.protobuf"))
    {
        let scope = match file.package() {
            "" => String::new(),
            package => format!("{package}."),
        };
        let mut used = Vec::new();
        for message in &file.message_type {
            fields(&scope, message, &mut used);
        }
        for service in &file.service {
            for method in &service.method {
                let at = format!("method `{scope}{}.{}`", service.name(), method.name());
                used.push((format!("{at}'s input"), method.input_type()));
                used.push((format!("{at}'s output"), method.output_type()));
            }
        }
        if let Some((what, type_name)) = used.into_iter().find(|(_, t)| missing(t)) {
            return Err(refuse(file, what, type_name));
        }
    }
    Ok(())
}
