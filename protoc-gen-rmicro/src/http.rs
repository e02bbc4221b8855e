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
struct RequestMirror {
    #[prost(message, repeated, tag = "15")]
    proto_file: Vec<FileMirror>,
}

#[derive(Clone, PartialEq, Message)]
struct SetMirror {
    #[prost(message, repeated, tag = "1")]
    file: Vec<FileMirror>,
}

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

/// Which message the bytes hold.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Source {
    /// A `CodeGeneratorRequest` (files at field 15).
    Request,
    /// A `FileDescriptorSet` (files at field 1).
    DescriptorSet,
}

/// Reads every binding in `bytes`.
pub(crate) fn bindings(bytes: &[u8], source: Source) -> Result<Bindings, prost::DecodeError> {
    let files = match source {
        Source::Request => RequestMirror::decode(bytes)?.proto_file,
        Source::DescriptorSet => SetMirror::decode(bytes)?.file,
    };
    let mut out = Bindings::new();
    for file in files {
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
    if let Some((method, path)) = pattern {
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
