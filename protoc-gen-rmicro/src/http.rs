//! `google.api.http` bindings, read from the raw descriptor bytes.
//!
//! prost-types drops extension fields when it decodes `MethodOptions`, so the bindings are read
//! by decoding the same bytes a second time into a minimal mirror of the descriptor messages that
//! declares the `google.api.http` extension (field 72295728 of `MethodOptions`) as an ordinary
//! field. Everything else in the bytes is skipped.

use std::collections::HashMap;

use prost::Message;

/// One binding of an RPC, flattened: the primary rule first, then its additional bindings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Binding {
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) body: String,
    pub(crate) response_body: String,
    pub(crate) path_params: Vec<String>,
}

/// Bindings per `(package, service, method)` protobuf names.
pub(crate) type Bindings = HashMap<(String, String, String), Vec<Binding>>;

#[derive(Clone, PartialEq, Message)]
struct FileMirror {
    #[prost(string, optional, tag = "2")]
    package: Option<String>,
    #[prost(message, repeated, tag = "6")]
    service: Vec<ServiceMirror>,
}

#[derive(Clone, PartialEq, Message)]
struct ServiceMirror {
    #[prost(string, optional, tag = "1")]
    name: Option<String>,
    #[prost(message, repeated, tag = "2")]
    method: Vec<MethodMirror>,
}

#[derive(Clone, PartialEq, Message)]
struct MethodMirror {
    #[prost(string, optional, tag = "1")]
    name: Option<String>,
    #[prost(message, optional, tag = "4")]
    options: Option<MethodOptionsMirror>,
}

#[derive(Clone, PartialEq, Message)]
struct MethodOptionsMirror {
    #[prost(message, optional, tag = "72295728")]
    http: Option<HttpRule>,
}

#[derive(Clone, PartialEq, Message)]
struct HttpRule {
    #[prost(string, optional, tag = "2")]
    get: Option<String>,
    #[prost(string, optional, tag = "3")]
    put: Option<String>,
    #[prost(string, optional, tag = "4")]
    post: Option<String>,
    #[prost(string, optional, tag = "5")]
    delete: Option<String>,
    #[prost(string, optional, tag = "6")]
    patch: Option<String>,
    #[prost(string, optional, tag = "7")]
    body: Option<String>,
    #[prost(message, optional, tag = "8")]
    custom: Option<CustomPattern>,
    #[prost(message, repeated, tag = "11")]
    additional_bindings: Vec<HttpRule>,
    #[prost(string, optional, tag = "12")]
    response_body: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
struct CustomPattern {
    #[prost(string, optional, tag = "1")]
    kind: Option<String>,
    #[prost(string, optional, tag = "2")]
    path: Option<String>,
}

/// Reads every binding in `files`, each an encoded `FileDescriptorProto` (see
/// [`embedded::file_bytes`](crate::embedded::file_bytes)).
pub(crate) fn bindings(files: &[Vec<u8>]) -> Result<Bindings, prost::DecodeError> {
    let mut out = Bindings::new();
    for file in files {
        let file = FileMirror::decode(file.as_slice())?;
        let package = file.package.unwrap_or_default();
        for service in file.service {
            let service_name = service.name.unwrap_or_default();
            for method in service.method {
                let Some(rule) = method.options.and_then(|o| o.http) else {
                    continue;
                };
                let mut flat = Vec::new();
                flatten(&rule, &mut flat);
                if !flat.is_empty() {
                    let key = (
                        package.clone(),
                        service_name.clone(),
                        method.name.unwrap_or_default(),
                    );
                    out.insert(key, flat);
                }
            }
        }
    }
    Ok(out)
}

fn flatten(rule: &HttpRule, out: &mut Vec<Binding>) {
    let pattern = [
        ("GET", &rule.get),
        ("PUT", &rule.put),
        ("POST", &rule.post),
        ("DELETE", &rule.delete),
        ("PATCH", &rule.patch),
    ]
    .into_iter()
    .find_map(|(method, path)| path.as_ref().map(|p| (method.to_string(), p.clone())))
    .or_else(|| {
        rule.custom.as_ref().map(|c| {
            (
                c.kind.clone().unwrap_or_default(),
                c.path.clone().unwrap_or_default(),
            )
        })
    });
    // A rule with no pattern binds nothing; kept (with an empty method) for `check` to refuse,
    // unless it only holds additional bindings.
    let holder =
        !rule.additional_bindings.is_empty() && rule.body.is_none() && rule.response_body.is_none();
    if pattern.is_some() || !holder {
        let (method, path) = pattern.unwrap_or_default();
        out.push(Binding {
            path_params: path_params(&path),
            method,
            path,
            body: rule.body.clone().unwrap_or_default(),
            response_body: rule.response_body.clone().unwrap_or_default(),
        });
    }
    for extra in &rule.additional_bindings {
        flatten(extra, out);
    }
}

/// Well-known message types whose JSON is a single value, which a path variable can set as it
/// sets a scalar field.
const SCALAR_MESSAGES: &[&str] = &[
    ".google.protobuf.Timestamp",
    ".google.protobuf.Duration",
    ".google.protobuf.FieldMask",
    ".google.protobuf.DoubleValue",
    ".google.protobuf.FloatValue",
    ".google.protobuf.Int64Value",
    ".google.protobuf.UInt64Value",
    ".google.protobuf.Int32Value",
    ".google.protobuf.UInt32Value",
    ".google.protobuf.BoolValue",
    ".google.protobuf.StringValue",
    ".google.protobuf.BytesValue",
];

/// Checks the bindings of the services in `files` that are generated (`to_generate`): each
/// must be one the gateway can serve. The error names the method's line and what to change.
pub(crate) fn check(
    files: &[prost_types::FileDescriptorProto],
    to_generate: &[String],
    bindings: &Bindings,
) -> Result<(), crate::Error> {
    use prost_types::DescriptorProto;
    if bindings.is_empty() {
        return Ok(());
    }
    let mut messages: HashMap<String, &DescriptorProto> = HashMap::new();
    fn collect<'a>(
        prefix: &str,
        message: &'a DescriptorProto,
        out: &mut HashMap<String, &'a DescriptorProto>,
    ) {
        let name = format!("{prefix}.{}", message.name());
        for nested in &message.nested_type {
            collect(&name, nested, out);
        }
        out.insert(name, message);
    }
    for file in files {
        let prefix = match file.package() {
            "" => String::new(),
            package => format!(".{package}"),
        };
        for message in &file.message_type {
            collect(&prefix, message, &mut messages);
        }
    }
    for file in files
        .iter()
        .filter(|f| to_generate.iter().any(|n| n == f.name()))
    {
        for (si, service) in file.service.iter().enumerate() {
            for (mi, method) in service.method.iter().enumerate() {
                let key = (
                    file.package().to_string(),
                    service.name().to_string(),
                    method.name().to_string(),
                );
                let Some(found) = bindings.get(&key) else {
                    continue;
                };
                let input = messages.get(method.input_type()).copied();
                let output = messages.get(method.output_type()).copied();
                for binding in found {
                    if let Err(problem) = check_binding(binding, input, output, &messages) {
                        let path = [6, si as i32, 2, mi as i32];
                        let at = crate::rust_names::Site::of(file, &path).prefix();
                        return Err(crate::Error::HttpRule(format!(
                            "{at}the google.api.http binding of `{}.{}` {problem}",
                            service.name(),
                            method.name()
                        )));
                    }
                }
            }
        }
    }
    Ok(())
}

/// What is wrong with `binding` of a method taking `input` and answering `output`, if anything.
fn check_binding(
    binding: &Binding,
    input: Option<&prost_types::DescriptorProto>,
    output: Option<&prost_types::DescriptorProto>,
    messages: &HashMap<String, &prost_types::DescriptorProto>,
) -> Result<(), String> {
    use prost_types::field_descriptor_proto::{Label, Type};
    if binding.method.is_empty() && binding.path.is_empty() {
        return Err(
            "has no pattern: give it one of `get`, `put`, `post`, `delete`, `patch` \
                    or `custom`"
                .into(),
        );
    }
    if binding.method.is_empty() {
        return Err(format!(
            "has a custom pattern without a `kind` (the HTTP method) for `{}`",
            binding.path
        ));
    }
    let variables = template_variables(&binding.path)
        .map_err(|e| format!("has the path template `{}`, which {e}", binding.path))?;
    let mut seen = std::collections::HashSet::new();
    for variable in &variables {
        if !seen.insert(variable.as_str()) {
            return Err(format!(
                "binds `{variable}` twice in the path template `{}`",
                binding.path
            ));
        }
        let Some(mut message) = input else { continue };
        let parts: Vec<&str> = variable.split('.').collect();
        for (n, part) in parts.iter().enumerate() {
            let Some(field) = message.field.iter().find(|f| f.name() == *part) else {
                return Err(format!(
                    "binds `{{{variable}}}`, but `{}` has no field `{part}`; name a field of \
                     the request message (by its .proto name)",
                    message.name()
                ));
            };
            let repeated = field.label() == Label::Repeated;
            let last = n + 1 == parts.len();
            let is_message = matches!(field.r#type(), Type::Message | Type::Group);
            if repeated {
                return Err(format!(
                    "binds `{{{variable}}}` to a repeated or map field; a path variable sets \
                     one value"
                ));
            }
            if !last {
                if !is_message {
                    return Err(format!(
                        "binds `{{{variable}}}`, but `{part}` is not a message field, so it has \
                         no field `{}`",
                        parts[n + 1]
                    ));
                }
                match messages.get(field.type_name()) {
                    Some(next) => message = next,
                    None => break,
                }
            } else if is_message && !SCALAR_MESSAGES.contains(&field.type_name()) {
                return Err(format!(
                    "binds `{{{variable}}}` to a message field; a path variable sets a scalar \
                     field (or a well-known type written as one value, such as a Timestamp): \
                     bind one of its fields, as `{{{variable}.<field>}}`"
                ));
            }
        }
    }
    let top_level =
        |message: Option<&prost_types::DescriptorProto>, name: &str, what: &str| match message {
            Some(m) if !m.field.iter().any(|f| f.name() == name) => Err(format!(
                "has `{what}: \"{name}\"`, but `{}` has no field `{name}`; name a top-level \
                 field of it (by its .proto name){}",
                m.name(),
                if what == "body" {
                    ", or `*` for the whole message"
                } else {
                    ""
                }
            )),
            _ => Ok(()),
        };
    if !binding.body.is_empty() && binding.body != "*" {
        top_level(input, &binding.body, "body")?;
    }
    if !binding.response_body.is_empty() {
        top_level(output, &binding.response_body, "response_body")?;
    }
    Ok(())
}

/// The variables of a path template, checked against `google/api/http.proto`'s grammar:
/// `"/" Segments [":" Verb]`, a segment `*`, `**`, a literal or `{field.path[=Segments]}`,
/// `**` last. Why it does not parse, otherwise.
fn template_variables(template: &str) -> Result<Vec<String>, String> {
    let Some(path) = template.strip_prefix('/') else {
        return Err(if template.is_empty() {
            "is empty; a template starts with `/`".into()
        } else {
            "does not start with `/`".into()
        });
    };
    // The verb: after the last `:` that is outside braces and not followed by a `/`.
    let mut depth = 0;
    let mut verb_at = None;
    for (i, c) in path.char_indices() {
        match c {
            '{' if depth > 0 => return Err("has a `{` inside a variable".into()),
            '{' => depth += 1,
            '}' if depth == 0 => return Err("has a `}` with no `{` before it".into()),
            '}' => depth -= 1,
            ':' if depth == 0 => verb_at = Some(i),
            _ => {}
        }
    }
    if depth > 0 {
        return Err("has a `{` with no `}` after it".into());
    }
    let path = match verb_at {
        Some(i) if path[i + 1..].contains('/') => {
            return Err("has a `:` in a segment before the last; a `:` starts the verb".into())
        }
        Some(i) if i + 1 == path.len() => return Err("ends in `:` without a verb".into()),
        Some(i) => &path[..i],
        None => path,
    };
    if path.is_empty() {
        // `/` alone, or `/:verb`.
        return Ok(Vec::new());
    }
    let ident = |s: &str| {
        let mut chars = s.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    let mut variables = Vec::new();
    let mut segments = Vec::new();
    let mut rest = path;
    while !rest.is_empty() {
        if let Some(inner) = rest.strip_prefix('{') {
            let end = inner.find('}').unwrap_or(inner.len());
            let variable = &inner[..end];
            let (field, pattern) = variable.split_once('=').unwrap_or((variable, "*"));
            if !field.split('.').all(ident) {
                return Err(format!(
                    "has the variable `{{{variable}}}`, whose field path `{field}` is not \
                     field names joined by `.`"
                ));
            }
            for segment in pattern.split('/') {
                if segment.is_empty() {
                    return Err(format!(
                        "has an empty segment in the variable `{{{variable}}}`"
                    ));
                }
                segments.push(segment);
            }
            variables.push(field.to_string());
            rest = &inner[(end + 1).min(inner.len())..];
            if !rest.is_empty() {
                rest = rest.strip_prefix('/').ok_or_else(|| {
                    format!(
                        "has text right after the variable `{{{variable}}}`; end the segment \
                         with `/`"
                    )
                })?;
            }
        } else {
            // A trailing `/` ends the path (as the gateway reads it).
            let (segment, next) = rest.split_once('/').unwrap_or((rest, ""));
            if segment.is_empty() {
                return Err("has an empty segment (`//`)".into());
            }
            segments.push(segment);
            rest = next;
        }
    }
    // http.proto wants `**` last, but googleapis itself has it before another segment
    // (Firestore's `{parent=projects/*/databases/*/documents/*/**}/{collection_id}`), which
    // other parsers and the gateway take: one `**` is allowed anywhere.
    if segments.iter().filter(|s| **s == "**").count() > 1 {
        return Err(
            "has `**` more than once; it matches any number of segments, so a second \
                    one makes the match ambiguous"
                .into(),
        );
    }
    Ok(variables)
}

/// The field paths bound by `{var}` and `{var=pattern}` segments of a path template.
fn path_params(template: &str) -> Vec<String> {
    let mut params = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        let after = &rest[start + 1..];
        let Some(end) = after.find('}') else { break };
        let var = &after[..end];
        let name = var.split_once('=').map_or(var, |(n, _)| n).trim();
        if !name.is_empty() {
            params.push(name.to_string());
        }
        rest = &after[end + 1..];
    }
    params
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_params_in_template_order() {
        assert_eq!(
            path_params("/v1/{parent=shelves/*}/books/{book.id}:get"),
            ["parent", "book.id"]
        );
        assert_eq!(path_params("/v1/users"), Vec::<String>::new());
        assert_eq!(path_params("/v1/{broken"), Vec::<String>::new());
    }

    #[test]
    fn templates_are_checked_against_the_grammar() {
        let ok = |t: &str| template_variables(t).unwrap_or_else(|e| panic!("{t}: {e}"));
        assert_eq!(ok("/v1/{name=shelves/*/books/*}:get"), ["name"]);
        assert_eq!(ok("/v1/{parent.id}/x/{b}"), ["parent.id", "b"]);
        assert_eq!(ok("/v1/files/**"), Vec::<String>::new());
        assert_eq!(ok("/v1/{path=**}"), ["path"]);
        assert_eq!(ok("/"), Vec::<String>::new());
        assert_eq!(ok("/v1/things:batchGet"), Vec::<String>::new());
        // As googleapis writes them (Firestore), and a trailing `/`.
        assert_eq!(
            ok("/v1/{parent=projects/*/databases/*/documents/*/**}/{collection_id}"),
            ["parent", "collection_id"]
        );
        assert_eq!(ok("/v1/things/"), Vec::<String>::new());
        let bad = |t: &str, why: &str| {
            let err = template_variables(t).expect_err(t);
            assert!(err.contains(why), "{t}: {err}");
        };
        bad("", "is empty");
        bad("v1/things", "does not start with `/`");
        bad("/v1/{name", "a `{` with no `}`");
        bad("/v1/name}/x", "a `}` with no `{`");
        bad("/v1/{a{b}}", "a `{` inside a variable");
        bad("/v1//x", "an empty segment");
        bad("/v1/{na me}", "is not field names joined by `.`");
        bad("/v1/{a.}", "is not field names joined by `.`");
        bad("/v1/**/x/**", "`**` more than once");
        bad("/v1/{x}y", "text right after the variable");
        bad("/v1/x:", "without a verb");
    }

    #[test]
    fn additional_bindings_follow_the_primary_rule() {
        let rule = HttpRule {
            post: Some("/v1/a/{id}".into()),
            body: Some("*".into()),
            additional_bindings: vec![HttpRule {
                get: Some("/v1/a".into()),
                ..Default::default()
            }],
            ..Default::default()
        };
        let mut out = Vec::new();
        flatten(&rule, &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(
            (out[0].method.as_str(), out[0].body.as_str()),
            ("POST", "*")
        );
        assert_eq!(out[0].path_params, ["id"]);
        assert_eq!(out[1].method, "GET");
    }
}
