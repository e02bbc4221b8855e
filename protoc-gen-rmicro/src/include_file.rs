//! The include file (`include_file=NAME`): a module tree that `include!`s every generated file,
//! and the lints generated code is let off in its modules.

use std::collections::BTreeMap;

use prost_build::Module;
use quote::quote;

use crate::names;

/// The lints generated code is let off in the include file's modules (and on the items of files
/// without a package, which have no module there). The doc comments are the .proto's, written
/// for other languages' tools (`<ProjectID>`, bare URLs): rustdoc's lints are not theirs to meet.
/// Nor are clippy's optional groups (`pedantic`, `nursery`) that a crate may turn on: the names
/// and shapes are the `.proto`'s and prost's, not the crate's to change.
pub(crate) const ALLOWANCES: Allowances = Allowances;

/// The tokens of [`ALLOWANCES`].
pub(crate) struct Allowances;

impl quote::ToTokens for Allowances {
    fn to_tokens(&self, tokens: &mut proc_macro2::TokenStream) {
        tokens.extend(quote! {
            missing_docs, dead_code, unreachable_pub, non_camel_case_types, clippy::all,
            clippy::pedantic, clippy::nursery, rustdoc::all
        });
    }
}

/// The include file: a module per package segment, each `include!`ing its package's file.
///
/// `include!` paths are relative to the file that holds them, and the package files are at the
/// top of the output directory: an include file in a subdirectory (`gen/mod.rs`) climbs up to
/// them.
pub(crate) fn include_tree(emitted: &[(Module, String)], include_file: &str) -> String {
    let up = "../".repeat(include_file.matches('/').count());
    #[derive(Default)]
    struct Node {
        file: Option<String>,
        children: BTreeMap<String, Node>,
    }
    fn render(node: &Node, top: bool) -> proc_macro2::TokenStream {
        let include = node.file.iter().map(|f| quote! { include!(#f); });
        let children = node.children.iter().map(|(name, child)| {
            let name = names::ident(name);
            let body = render(child, false);
            let allow = top.then(|| quote! { #[allow(#ALLOWANCES)] });
            quote! { #allow pub mod #name { #body } }
        });
        quote! { #(#include)* #(#children)* }
    }
    let mut root = Node::default();
    for (module, file) in emitted {
        let mut node = &mut root;
        for part in module.parts() {
            node = node.children.entry(part.to_string()).or_default();
        }
        node.file = Some(format!("{up}{file}"));
    }
    let tokens = render(&root, true);
    match syn::parse2::<syn::File>(tokens) {
        Ok(file) => prettyplease::unparse(&file),
        Err(err) => format!("compile_error!({:?});\n", err.to_string()),
    }
}
