//! Rust identifiers for protobuf names: keyword escaping and collision-free allocation.
//!
//! Generated service items share a module with prost's messages, enums and nested-type modules,
//! and with the modules of sub-packages in an include file. A [`Scope`] knows every name already
//! taken there and hands out unique ones: a wanted name that is taken gets `_` appended until it is
//! free, so `message UserClient {}` next to `service User {}` still compiles (the client becomes
//! `UserClient_`).

use std::collections::HashSet;

use heck::{ToShoutySnakeCase, ToSnakeCase, ToUpperCamelCase};
use proc_macro2::{Ident, Span};

/// Makes `name` usable as a Rust identifier, as prost-build does: keywords become raw identifiers
/// (`type` → `r#type`), the keywords that cannot be raw get a trailing underscore (`Self` →
/// `Self_`), and a leading digit gets a leading underscore.
pub(crate) fn sanitize(name: &str) -> String {
    match name {
        "as" | "break" | "const" | "continue" | "else" | "enum" | "false" | "fn" | "for" | "if"
        | "impl" | "in" | "let" | "loop" | "match" | "mod" | "move" | "mut" | "pub" | "ref"
        | "return" | "static" | "struct" | "trait" | "true" | "type" | "unsafe" | "use"
        | "where" | "while" | "dyn" | "abstract" | "become" | "box" | "do" | "final" | "macro"
        | "override" | "priv" | "typeof" | "unsized" | "virtual" | "yield" | "async" | "await"
        | "try" | "gen" => format!("r#{name}"),
        "_" | "super" | "self" | "Self" | "extern" | "crate" => format!("{name}_"),
        _ if name.starts_with(|c: char| c.is_ascii_digit()) => format!("_{name}"),
        _ => name.to_string(),
    }
}

/// `UpperCamel` type name of a protobuf name, as prost-build derives it.
pub(crate) fn upper_camel(name: &str) -> String {
    sanitize(&name.to_upper_camel_case())
}

/// `snake_case` value or module name of a protobuf name, as prost-build derives it.
pub(crate) fn snake(name: &str) -> String {
    sanitize(&name.to_snake_case())
}

/// `SHOUTY_SNAKE` constant name.
pub(crate) fn shouty(name: &str) -> String {
    sanitize(&name.to_shouty_snake_case())
}

/// An identifier token for a sanitized name (raw when it starts with `r#`).
pub(crate) fn ident(name: &str) -> Ident {
    match name.strip_prefix("r#") {
        Some(raw) => Ident::new_raw(raw, Span::call_site()),
        None => Ident::new(name, Span::call_site()),
    }
}

/// The names taken in one Rust namespace.
#[derive(Debug, Default, Clone)]
pub(crate) struct Scope {
    taken: HashSet<String>,
}

impl Scope {
    /// Marks `name` (sanitized) as taken without allocating it.
    pub(crate) fn reserve(&mut self, name: &str) {
        self.taken.insert(unraw(name).to_string());
    }

    /// Allocates `wanted` (a sanitized identifier), or the first of `wanted_`, `wanted__`, … that
    /// is free, and marks it taken.
    pub(crate) fn claim(&mut self, wanted: &str) -> String {
        let mut candidate = wanted.to_string();
        while self.taken.contains(unraw(&candidate)) {
            candidate = sanitize(&format!("{}_", unraw(&candidate)));
        }
        self.taken.insert(unraw(&candidate).to_string());
        candidate
    }
}

fn unraw(name: &str) -> &str {
    name.strip_prefix("r#").unwrap_or(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keywords_are_escaped_like_prost() {
        assert_eq!(snake("type"), "r#type");
        assert_eq!(upper_camel("Self"), "Self_");
        assert_eq!(snake("self"), "self_");
        assert_eq!(snake("match"), "r#match");
        assert_eq!(upper_camel("3d"), "_3d");
        assert_eq!(snake("GetHTTPThing"), "get_http_thing");
    }

    #[test]
    fn scope_appends_underscores_until_free() {
        let mut scope = Scope::default();
        scope.reserve("UserClient");
        assert_eq!(scope.claim("UserClient"), "UserClient_");
        assert_eq!(scope.claim("UserClient"), "UserClient__");
        scope.reserve("r#type");
        assert_eq!(scope.claim("r#type"), "type_");
        assert_eq!(scope.claim("call"), "call");
    }

    #[test]
    fn ident_tokens_accept_raw_names() {
        assert_eq!(ident("r#type").to_string(), "r#type");
        assert_eq!(ident("Self_").to_string(), "Self_");
    }
}
