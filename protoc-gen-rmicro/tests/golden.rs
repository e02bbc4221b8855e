//! Golden tests: in-process CodeGeneratorRequests built from the `.proto` fixtures, run through
//! the plugin's entry point, compared with the checked-in expected files.
//!
//! Refresh the expected files only on purpose: `UPDATE_GOLDEN=1 cargo test -p protoc-gen-rmicro`.

mod common;

#[test]
fn every_case_matches_its_golden_files() {
    for case in common::CASES {
        let response = protoc_gen_rmicro::run_plugin(&common::request(case.files, case.parameter))
            .expect("a well-formed request");
        assert_eq!(response.error, None, "case {}", case.name);
        assert_eq!(
            response.supported_features,
            Some(1),
            "proto3 optional is advertised"
        );
        let files: Vec<(String, String)> = response
            .file
            .into_iter()
            .map(|f| (f.name.unwrap(), f.content.unwrap()))
            .collect();
        common::assert_golden(case.name, &files);
    }
}

#[test]
fn every_file_starts_with_the_header_and_the_pin() {
    for case in common::CASES {
        let response =
            protoc_gen_rmicro::run_plugin(&common::request(case.files, case.parameter)).unwrap();
        for file in response.file {
            let content = file.content.unwrap();
            let mut lines = content.lines();
            let header = protoc_gen_rmicro::Header::parse(lines.next().unwrap()).unwrap();
            assert_eq!(header.api, protoc_gen_rmicro::MAX_API);
            assert_eq!(header.plugin_version, protoc_gen_rmicro::VERSION);
            assert!(lines.next().unwrap().starts_with("// source: "));
            if file.name.as_deref() != Some("mod.rs") {
                let runtime = if case.parameter.contains("runtime_path=crate::rt") {
                    "crate::rt"
                } else {
                    "::rmicro_runtime"
                };
                let pin = format!("const _: () = {runtime}::__codegen::require_api(1);");
                assert!(content.contains(&pin), "{:?} lacks {pin}", file.name);
            }
        }
    }
}

#[test]
fn deprecated_services_and_methods_are_marked_deprecated() {
    let response =
        protoc_gen_rmicro::run_plugin(&common::request(&["rmicro/test/deprecated.proto"], ""))
            .unwrap();
    let content = response.file[0].content.clone().unwrap();
    let file = syn::parse_file(&content).unwrap();
    let deprecated =
        |attrs: &[syn::Attribute]| attrs.iter().any(|a| a.path().is_ident("deprecated"));
    let mut marked = Vec::new();
    for item in &file.items {
        match item {
            syn::Item::Struct(s) if deprecated(&s.attrs) => marked.push(s.ident.to_string()),
            syn::Item::Trait(t) => {
                if deprecated(&t.attrs) {
                    marked.push(t.ident.to_string());
                }
                for item in &t.items {
                    if let syn::TraitItem::Fn(f) = item {
                        if deprecated(&f.attrs) {
                            marked.push(format!("{}::{}", t.ident, f.sig.ident));
                        }
                    }
                }
            }
            syn::Item::Impl(i) => {
                for item in &i.items {
                    if let syn::ImplItem::Fn(f) = item {
                        if deprecated(&f.attrs) {
                            let syn::Type::Path(ty) = &*i.self_ty else {
                                continue;
                            };
                            marked.push(format!("{}::{}", ty.path.segments[0].ident, f.sig.ident));
                        }
                    }
                }
            }
            _ => {}
        }
    }
    marked.sort();
    assert_eq!(
        marked,
        [
            "OldShopClient",
            "OldShopHandler",
            "ShopClient::order",
            "ShopClient::watch",
            "ShopHandler::order",
            "ShopHandler::watch",
        ]
    );
}

#[test]
fn an_include_file_in_a_subdirectory_reaches_the_package_files() {
    // The package files are written at the top of the output directory; `include!` paths are
    // relative to the file holding them.
    for (include_file, dir) in [("mod.rs", ""), ("gen/mod.rs", "gen"), ("a/b/all.rs", "a/b")] {
        let case = &common::CASES[1];
        let parameter = format!("include_file={include_file}");
        let response =
            protoc_gen_rmicro::run_plugin(&common::request(case.files, &parameter)).unwrap();
        assert_eq!(response.error, None);
        let written: Vec<std::path::PathBuf> = response
            .file
            .iter()
            .map(|f| std::path::Path::new("out").join(f.name()))
            .collect();
        let tree = response
            .file
            .iter()
            .find(|f| f.name() == include_file)
            .and_then(|f| f.content.clone())
            .expect("the include file");
        let includes: Vec<&str> = tree
            .lines()
            .filter_map(|l| l.trim().strip_prefix("include!(\""))
            .filter_map(|l| l.strip_suffix("\");"))
            .collect();
        assert_eq!(includes.len(), written.len() - 1, "{tree}");
        for path in includes {
            let mut resolved = std::path::Path::new("out").join(dir);
            for part in path.split('/') {
                match part {
                    ".." => assert!(resolved.pop()),
                    part => resolved.push(part),
                }
            }
            assert!(
                written.contains(&resolved),
                "{include_file}: include!(\"{path}\") names {}, which is not written",
                resolved.display()
            );
        }
    }
}

#[test]
fn protoc_plugin_types_are_prost_types_own() {
    for parameter in ["", "include_file=mod.rs"] {
        let response = protoc_gen_rmicro::run_plugin(&common::request(
            &["rmicro/test/plugin_types.proto"],
            parameter,
        ))
        .unwrap();
        assert_eq!(response.error, None);
        let names: Vec<&str> = response.file.iter().map(|f| f.name()).collect();
        let expected: &[&str] = if parameter.is_empty() {
            &["rmicro.test.plugin_types.rs"]
        } else {
            &["rmicro.test.plugin_types.rs", "mod.rs"]
        };
        assert_eq!(names, expected);
        let content = response.file[0].content();
        for rust in [
            "::rmicro_runtime::__codegen::prost_types::compiler::Version",
            "::rmicro_runtime::__codegen::prost_types::compiler::code_generator_response::File",
        ] {
            assert!(content.contains(rust), "{rust} missing in:\n{content}");
        }
    }
}
