//! The imported packages whose types generated code names, for callers that generate a whole
//! build at once (rmicro-build), as prost-build does.
//!
//! A protoc plugin generates only the files protoc names; the code it writes for `a.proto` refers
//! to an imported package's message as `super::dep::Msg`, which compiles once `dep` is generated
//! too (by the same run or another one). build.rs has no other run: a package it does not
//! generate is a path that resolves to nothing.

use std::collections::{BTreeSet, HashMap};

use prost_types::field_descriptor_proto::Type;
use prost_types::{DescriptorProto, FileDescriptorProto};

use crate::rust_names::is_extern;

/// The packages generated code would name but that `to_generate` does not cover: the packages of
/// every type named by a field, an rpc input or an rpc output of a generated package,
/// transitively, leaving out types mapped to existing Rust types (`externs`, the well-known types
/// included). Types only named by options (`google.api.http`) are not named by the code.
pub(crate) fn referenced_packages(
    files: &[FileDescriptorProto],
    to_generate: &[String],
    externs: &[(String, String)],
) -> BTreeSet<String> {
    let mut package_of: HashMap<String, &str> = HashMap::new();
    for file in files {
        let prefix = match file.package() {
            "" => String::new(),
            p => format!(".{p}"),
        };
        for m in &file.message_type {
            define(&prefix, m, file.package(), &mut package_of);
        }
        for e in &file.enum_type {
            package_of.insert(format!("{prefix}.{}", e.name()), file.package());
        }
    }
    let mut packages: BTreeSet<String> = files
        .iter()
        .filter(|f| to_generate.iter().any(|n| n == f.name()))
        .map(|f| f.package().to_string())
        .collect();
    let mut added = BTreeSet::new();
    let mut todo: Vec<String> = packages.iter().cloned().collect();
    while let Some(package) = todo.pop() {
        let mut named = Vec::new();
        for file in files.iter().filter(|f| f.package() == package) {
            file.message_type.iter().for_each(|m| uses(m, &mut named));
            for method in file.service.iter().flat_map(|s| &s.method) {
                named.push(method.input_type().to_string());
                named.push(method.output_type().to_string());
            }
        }
        for name in named {
            if is_extern(&name, externs) {
                continue;
            }
            let Some(&other) = package_of.get(&name) else {
                continue;
            };
            if packages.insert(other.to_string()) {
                added.insert(other.to_string());
                todo.push(other.to_string());
            }
        }
    }
    added
}

fn define<'a>(
    prefix: &str,
    message: &DescriptorProto,
    package: &'a str,
    out: &mut HashMap<String, &'a str>,
) {
    let name = format!("{prefix}.{}", message.name());
    for nested in &message.nested_type {
        define(&name, nested, package, out);
    }
    for e in &message.enum_type {
        out.insert(format!("{name}.{}", e.name()), package);
    }
    out.insert(name, package);
}

/// The fully qualified types the fields of `message` (and of its nested messages) name.
fn uses(message: &DescriptorProto, out: &mut Vec<String>) {
    for field in &message.field {
        let named = matches!(
            field.r#type.and_then(|t| Type::try_from(t).ok()),
            Some(Type::Message | Type::Enum | Type::Group) | None
        );
        if named && !field.type_name().is_empty() {
            out.push(field.type_name().to_string());
        }
    }
    for nested in &message.nested_type {
        uses(nested, out);
    }
}
