//! Checks that a request is one protoc could have sent, before prost-build (which assumes so and
//! panics otherwise) sees it.

use std::collections::HashSet;

use prost_types::field_descriptor_proto::Type;
use prost_types::{DescriptorProto, FileDescriptorProto};

use crate::rust_names::Site;
use crate::Error;

pub(crate) fn request(files: &[FileDescriptorProto], to_generate: &[String]) -> Result<(), Error> {
    let malformed = |msg: String| Err(Error::MalformedRequest(msg));
    let mut names = HashSet::new();
    for file in files {
        if !names.insert(file.name()) {
            return malformed(format!("the file `{}` is sent twice", file.name()));
        }
    }
    if to_generate.is_empty() {
        return malformed("no file to generate (protoc names at least one)".into());
    }
    for name in to_generate {
        if !names.contains(name.as_str()) {
            return malformed(format!(
                "`{name}` is to be generated, but the request carries no descriptor for it"
            ));
        }
    }

    let mut types = HashSet::new();
    for file in files {
        for dep in &file.dependency {
            if !names.contains(dep.as_str()) {
                return malformed(format!(
                    "`{}` imports `{dep}`, which the request does not carry (protoc sends every import)",
                    file.name()
                ));
            }
        }
        let prefix = match file.package() {
            "" => String::new(),
            p => format!(".{p}"),
        };
        for m in &file.message_type {
            collect_types(&prefix, m, &mut types);
        }
        for e in &file.enum_type {
            types.insert(format!("{prefix}.{}", e.name()));
        }
    }

    for file in files {
        if file.syntax() == "editions" && to_generate.iter().any(|n| n == file.name()) {
            // The `edition = "…";` statement's location is the `syntax` field's (12).
            return Err(Error::Editions {
                at: Site::of(file, &[12]).prefix(),
            });
        }
        let check = |what: String, name: &str| -> Result<(), Error> {
            if name.is_empty() {
                return Err(Error::MalformedRequest(format!(
                    "`{}`: {what} names no type",
                    file.name()
                )));
            }
            if !types.contains(name) {
                return Err(Error::MalformedRequest(format!(
                    "`{}`: {what} refers to `{name}`, which no file in the request defines \
                     (protoc sends fully qualified names of types it has seen)",
                    file.name()
                )));
            }
            Ok(())
        };
        for m in &file.message_type {
            check_message(m, &check)?;
        }
        for service in &file.service {
            for method in &service.method {
                let what =
                    |side: &str| format!("the {side} of `{}.{}`", service.name(), method.name());
                check(what("input"), method.input_type())?;
                check(what("output"), method.output_type())?;
            }
        }
        for ext in &file.extension {
            check(
                format!("extension `{}`'s extendee", ext.name()),
                ext.extendee(),
            )?;
        }
    }
    Ok(())
}

fn collect_types(prefix: &str, message: &DescriptorProto, out: &mut HashSet<String>) {
    let name = format!("{prefix}.{}", message.name());
    for nested in &message.nested_type {
        collect_types(&name, nested, out);
    }
    for e in &message.enum_type {
        out.insert(format!("{name}.{}", e.name()));
    }
    out.insert(name);
}

fn check_message(
    message: &DescriptorProto,
    check: &impl Fn(String, &str) -> Result<(), Error>,
) -> Result<(), Error> {
    for field in &message.field {
        let refers = field.r#type.is_none() && field.type_name.is_some()
            || matches!(
                field.r#type.and_then(|t| Type::try_from(t).ok()),
                Some(Type::Message | Type::Enum | Type::Group)
            );
        if refers {
            check(
                format!("field `{}.{}`", message.name(), field.name()),
                field.type_name(),
            )?;
        }
    }
    for nested in &message.nested_type {
        check_message(nested, check)?;
    }
    Ok(())
}
