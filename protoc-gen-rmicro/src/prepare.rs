//! What prost-build is given, fixed where its own handling of valid input writes code that does
//! not compile:
//!
//! - `boxed=PATH` boxes every field the path matches, a string or an integer as much as a
//!   message, and prost's derive then panics in the user's crate. Here a path stands for the
//!   message fields it matches (as the parameter is documented); naming a field that cannot be
//!   boxed is an error that says so.
//! - a proto2 default that names an enum alias (`[default = MODE_ALIAS]` where `MODE_ALIAS = 0`
//!   repeats `MODE_A = 0`) becomes a variant prost-build never generates (aliases get none);
//!   it is given the name of the value prost-build keeps, which is the same number;
//! - a oneof holding a large message inline trips clippy's `large_enum_variant` in the user's
//!   crate: its enum is allowed it, on prost-build's output;
//! - a map field whose values are an enum gets two helper methods from prost's derive,
//!   `get_<field>` and `insert_<field>`, made by pasting the field's identifier: for a field
//!   named with a Rust keyword (`map<string, Kind> type`, the Rust field `r#type`) that is
//!   `get_r#type`, no identifier, and the derive panics in the user's crate. Such a map's values
//!   are given to prost-build as `int32`, which is how an enum is encoded and the Rust type
//!   (`i32`) prost gives enum values anyway: the field and its wire format are unchanged, only
//!   the helpers (which could not exist) and the variant names in its `Debug` are left out;
//! - prost's derived `Debug` for a message with a `btree_map=` field names
//!   `::prost::alloc::collections::BTreeMap` whatever `prost_path` says, so it does not compile
//!   in a crate that depends on rmicro-runtime alone: such a message gets a `Debug` of its own.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, EnumDescriptorProto, FileDescriptorProto};

use crate::Error;

/// Whether prost-build's path `pattern` (a `boxed`, `bytes`, ... parameter) selects the fully
/// qualified `path` (`.pkg.Message.field`), as its `PathMap` decides: the path itself, a suffix of
/// it on a `.` boundary (`Message.field`, `field`), a fully qualified prefix on a boundary
/// (`.pkg.Message`, `.pkg`), or `.`.
pub(crate) fn selects(pattern: &str, path: &str) -> bool {
    pattern == "."
        || pattern == path
        || path
            .strip_suffix(pattern)
            .is_some_and(|rest| !pattern.starts_with('.') && rest.ends_with('.'))
        || (pattern.starts_with('.')
            && path
                .strip_prefix(pattern)
                .is_some_and(|rest| rest.starts_with('.')))
}

/// Whether `pattern` names the field at `path` itself (the whole path or a suffix of it), rather
/// than a message, a package or everything.
fn names_field(pattern: &str, path: &str) -> bool {
    pattern == path || (!pattern.starts_with('.') && selects(pattern, path))
}

/// The exact paths to hand prost-build's `boxed` for the `patterns` given: every singular message
/// (or group) field a pattern selects, as prost-build spells them (`.pkg.Message.field`, or
/// `.pkg.Message.oneof.field` inside a oneof).
///
/// # Errors
///
/// A pattern that names fields only of other kinds (`boxed=.pkg.Message.name` on a string):
/// prost-build would box it, and prost's derive would fail in the user's crate.
pub(crate) fn boxed_fields(
    patterns: &[String],
    files: &[FileDescriptorProto],
) -> Result<Vec<String>, Error> {
    if patterns.is_empty() {
        return Ok(Vec::new());
    }
    let mut walk = BoxedWalk {
        patterns,
        boxed: BTreeSet::new(),
        boxes_something: vec![false; patterns.len()],
        refused: vec![None; patterns.len()],
    };
    for file in files {
        let scope = package_scope(file);
        for message in &file.message_type {
            walk.message(&scope, message);
        }
    }
    for (i, pattern) in patterns.iter().enumerate() {
        if let (false, Some((field, kind))) = (walk.boxes_something[i], &walk.refused[i]) {
            return Err(Error::InvalidParameter {
                key: "boxed".into(),
                value: pattern.clone(),
                expected: format!(
                    "it names the field `{}`, {kind}, and only singular message fields can be \
                     boxed (other fields are stored inline, repeated ones in a `Vec` already); \
                     name a message field, or drop the parameter",
                    field.trim_start_matches('.')
                ),
            });
        }
    }
    Ok(walk.boxed.into_iter().collect())
}

struct BoxedWalk<'a> {
    patterns: &'a [String],
    boxed: BTreeSet<String>,
    /// Per pattern: whether it selected a field that can be boxed.
    boxes_something: Vec<bool>,
    /// Per pattern: a field it names that cannot be boxed, and what that field is.
    refused: Vec<Option<(String, &'static str)>>,
}

impl BoxedWalk<'_> {
    fn message(&mut self, scope: &str, message: &DescriptorProto) {
        let full = format!("{scope}.{}", message.name());
        for field in &message.field {
            if field.label() == Label::Repeated {
                continue;
            }
            let oneof = field
                .oneof_index
                .filter(|_| !field.proto3_optional())
                .and_then(|i| message.oneof_decl.get(i as usize));
            let path = match oneof {
                Some(oneof) => format!("{full}.{}.{}", oneof.name(), field.name()),
                None => format!("{full}.{}", field.name()),
            };
            let boxable = matches!(field.r#type(), Type::Message | Type::Group);
            for (i, pattern) in self.patterns.iter().enumerate() {
                if !selects(pattern, &path) {
                    continue;
                }
                if boxable {
                    self.boxes_something[i] = true;
                    self.boxed.insert(path.clone());
                } else if names_field(pattern, &path) && self.refused[i].is_none() {
                    self.refused[i] = Some((path.clone(), kind_of(field.r#type())));
                }
            }
        }
        for nested in &message.nested_type {
            self.message(&full, nested);
        }
    }
}

/// prost-build's code for one module, each oneof's enum allowed clippy's `large_enum_variant`:
/// a oneof holding a large message inline next to a small one trips it in the user's crate.
/// (Added to prost's one-line derive of each oneof, before formatting: an `enum_attribute`
/// per oneof would cost prost-build a path match per oneof for every enum it writes.)
pub(crate) fn allow_large_oneofs(body: String) -> String {
    if !body.contains("::Oneof)]") {
        return body;
    }
    let mut out = String::with_capacity(body.len() + 1024);
    for line in body.split_inclusive('\n') {
        let code = line.trim_start();
        if code.starts_with("#[derive(") && code.trim_end().ends_with("::Oneof)]") {
            out.push_str(&line[..line.len() - code.len()]);
            out.push_str("#[allow(clippy::large_enum_variant)]\n");
        }
        out.push_str(line);
    }
    out
}

/// The fully qualified scope of `file`'s top-level types: `.pkg`, or nothing without a package.
fn package_scope(file: &FileDescriptorProto) -> String {
    match file.package() {
        "" => String::new(),
        package => format!(".{package}"),
    }
}

/// A field's kind in words, for messages.
fn kind_of(kind: Type) -> &'static str {
    match kind {
        Type::String => "a string",
        Type::Bytes => "bytes",
        Type::Enum => "an enum",
        Type::Bool => "a bool",
        Type::Float | Type::Double => "a floating-point number",
        _ => "an integer",
    }
}

/// Rewrites proto2 defaults that name an enum alias to the name of the first value with the same
/// number, the one prost-build turns into a variant.
pub(crate) fn canonical_enum_defaults(files: &mut [FileDescriptorProto]) {
    // Fully qualified enum name → alias name → the name prost-build keeps.
    let mut aliases: HashMap<String, BTreeMap<String, String>> = HashMap::new();
    fn collect(
        scope: &str,
        enums: &[EnumDescriptorProto],
        out: &mut HashMap<String, BTreeMap<String, String>>,
    ) {
        for e in enums {
            let mut first: HashMap<i32, &str> = HashMap::new();
            let mut renamed = BTreeMap::new();
            for value in &e.value {
                match first.get(&value.number()) {
                    Some(kept) => {
                        renamed.insert(value.name().to_string(), kept.to_string());
                    }
                    None => {
                        first.insert(value.number(), value.name());
                    }
                }
            }
            if !renamed.is_empty() {
                out.insert(format!("{scope}.{}", e.name()), renamed);
            }
        }
    }
    fn collect_message(
        scope: &str,
        message: &DescriptorProto,
        out: &mut HashMap<String, BTreeMap<String, String>>,
    ) {
        let full = format!("{scope}.{}", message.name());
        collect(&full, &message.enum_type, out);
        for nested in &message.nested_type {
            collect_message(&full, nested, out);
        }
    }
    for file in files.iter() {
        let scope = package_scope(file);
        collect(&scope, &file.enum_type, &mut aliases);
        for message in &file.message_type {
            collect_message(&scope, message, &mut aliases);
        }
    }
    if aliases.is_empty() {
        return;
    }
    fn rewrite(message: &mut DescriptorProto, aliases: &HashMap<String, BTreeMap<String, String>>) {
        for field in message.field.iter_mut().chain(message.extension.iter_mut()) {
            if field.r#type() != Type::Enum {
                continue;
            }
            let kept = aliases
                .get(field.type_name())
                .zip(field.default_value.as_deref())
                .and_then(|(renamed, default)| renamed.get(default));
            if let Some(kept) = kept {
                field.default_value = Some(kept.clone());
            }
        }
        for nested in &mut message.nested_type {
            rewrite(nested, aliases);
        }
    }
    for file in files.iter_mut() {
        for message in &mut file.message_type {
            rewrite(message, &aliases);
        }
        // Extensions declared at the top of a file: the same, through a message of their own.
        if !file.extension.is_empty() {
            let mut top = DescriptorProto {
                extension: std::mem::take(&mut file.extension),
                ..DescriptorProto::default()
            };
            rewrite(&mut top, &aliases);
            file.extension = top.extension;
        }
    }
}

/// Turns the enum values of map fields named with a Rust keyword into `int32` (see the module's
/// docs): prost's derive would name the map's helper methods after the raw identifier and panic.
pub(crate) fn keyword_enum_maps(files: &mut [FileDescriptorProto]) {
    fn rewrite(message: &mut DescriptorProto) {
        let keyword_maps: Vec<String> = message
            .field
            .iter()
            .filter(|f| f.label() == Label::Repeated && f.r#type() == Type::Message)
            .filter(|f| crate::names::snake(f.name()).starts_with("r#"))
            .filter_map(|f| f.type_name().rsplit('.').next().map(str::to_string))
            .collect();
        for nested in &mut message.nested_type {
            let is_map = nested.options.as_ref().is_some_and(|o| o.map_entry());
            if is_map && keyword_maps.iter().any(|name| name == nested.name()) {
                for value in nested.field.iter_mut().filter(|f| f.number() == 2) {
                    if value.r#type() == Type::Enum {
                        value.set_type(Type::Int32);
                        value.type_name = None;
                    }
                }
            }
            rewrite(nested);
        }
    }
    for file in files {
        file.message_type.iter_mut().for_each(rewrite);
    }
}

/// Gives each message in `items` (and in their modules) that has a `btree_map` field a `Debug`
/// impl of its own in place of prost's (`#[prost(skip_debug)]`), which names `::prost` (see the
/// module's docs). It writes each field with the field's own `Debug`: an enum field shows its
/// number, where prost's shows the variant's name.
pub(crate) fn btree_map_debug(items: &mut Vec<syn::Item>) {
    let mut out = Vec::with_capacity(items.len());
    for mut item in std::mem::take(items) {
        let debug = match &mut item {
            // Left alone when `skip_debug` selected it: its `Debug` is the user's to write.
            syn::Item::Struct(message) if has_btree_map(message) && !skips_debug(message) => {
                message.attrs.push(syn::parse_quote!(#[prost(skip_debug)]));
                Some(debug_impl(message))
            }
            syn::Item::Mod(module) => {
                if let Some((_, inner)) = &mut module.content {
                    btree_map_debug(inner);
                }
                None
            }
            _ => None,
        };
        out.push(item);
        out.extend(debug);
    }
    *items = out;
}

/// Whether prost was told to leave `message` without a `Debug` impl (`#[prost(skip_debug)]`).
fn skips_debug(message: &syn::ItemStruct) -> bool {
    message
        .attrs
        .iter()
        .any(|attr| prost_says(attr, "skip_debug"))
}

/// Whether `attr` is a `#[prost(...)]` naming `word`.
fn prost_says(attr: &syn::Attribute, word: &str) -> bool {
    attr.path().is_ident("prost")
        && attr.meta.require_list().is_ok_and(|list| {
            list.tokens
                .clone()
                .into_iter()
                .any(|t| matches!(t, proc_macro2::TokenTree::Ident(i) if i == word))
        })
}

/// Whether a field of `message` is a prost `btree_map`.
fn has_btree_map(message: &syn::ItemStruct) -> bool {
    message
        .fields
        .iter()
        .any(|field| field.attrs.iter().any(|attr| prost_says(attr, "btree_map")))
}

/// `impl Debug for <message>`, as prost's derive writes it but for enum fields. It reads
/// deprecated fields (and may name a deprecated message) without a warning, as prost's does.
fn debug_impl(message: &syn::ItemStruct) -> syn::Item {
    use syn::ext::IdentExt;
    let name = &message.ident;
    let label = name.unraw().to_string();
    let fields = message
        .fields
        .iter()
        .filter_map(|f| f.ident.as_ref())
        .map(|f| {
            let label = f.unraw().to_string();
            quote::quote! { .field(#label, &self.#f) }
        });
    syn::parse_quote! {
        #[allow(deprecated)]
        impl ::core::fmt::Debug for #name {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                f.debug_struct(#label) #(#fields)* .finish()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_select_as_prost_builds_do() {
        let path = ".a.b.M.f";
        for pattern in [
            ".", ".a.b.M.f", "a.b.M.f", "M.f", "f", ".a.b.M", ".a.b", ".a",
        ] {
            assert!(selects(pattern, path), "{pattern} selects {path}");
        }
        for pattern in [
            ".a.b.M.g",
            "b.M",
            ".b.M.f",
            ".a.b.Mf",
            "M.f.x",
            "xf",
            ".a.b.M.f.x",
        ] {
            assert!(!selects(pattern, path), "{pattern} does not select {path}");
        }
        assert!(names_field("M.f", path) && names_field(".a.b.M.f", path));
        assert!(!names_field(".a.b.M", path) && !names_field(".", path));
    }
}
