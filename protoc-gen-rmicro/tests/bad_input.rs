//! Bad input never panics: each case ends with a message that says what is wrong.

mod common;

use std::path::PathBuf;

use common::{protoc, run_plugin_binary, stderr};
use prost::Message;
use prost_types::compiler::{CodeGeneratorRequest, CodeGeneratorResponse};
use prost_types::{
    DescriptorProto, FieldDescriptorProto, FileDescriptorProto, MethodDescriptorProto,
    ServiceDescriptorProto,
};

/// Runs the binary on an encoded request and returns the response's error.
fn response_error(request: &CodeGeneratorRequest) -> String {
    let output = run_plugin_binary(&request.encode_to_vec(), &[]);
    assert!(
        output.status.success(),
        "protocol errors travel in the response: {}",
        stderr(&output)
    );
    assert!(
        output.stderr.is_empty(),
        "nothing on stderr: {}",
        stderr(&output)
    );
    let response = CodeGeneratorResponse::decode(&output.stdout[..]).expect("a response");
    assert!(response.file.is_empty());
    response.error.expect("an error in the response")
}

fn file(name: &str) -> FileDescriptorProto {
    FileDescriptorProto {
        name: Some(name.into()),
        package: Some("p".into()),
        syntax: Some("proto3".into()),
        ..Default::default()
    }
}

#[test]
fn unknown_parameter_through_protoc_names_the_valid_keys() {
    let output = protoc(&[
        "--rmicro_out=/tmp",
        "--rmicro_opt=api=1,frobnicate=yes",
        "user.proto",
    ]);
    assert!(!output.status.success());
    let err = stderr(&output);
    assert!(
        err.contains(
            "--rmicro_out: unknown parameter `frobnicate`; valid parameters are: api, runtime_path, \
             include_file, client, server, extern_path, btree_map, bytes, type_attribute, \
             message_attribute, enum_attribute, field_attribute, boxed, disable_comments, \
             skip_debug, retain_enum_prefix, enable_type_names"
        ),
        "{err}"
    );
}

#[test]
fn malformed_parameter_values_say_what_is_expected() {
    let cases = [
        ("api=x", "parameter `api` has an invalid value `x`: expected a whole number such as `api=1`"),
        ("api=99", "api=99 is outside what protoc-gen-rmicro"),
        ("server=perhaps", "parameter `server` has an invalid value `perhaps`: expected `true` or `false`"),
        ("extern_path=nodot", "parameter `extern_path` has an invalid value `nodot`: expected `.proto.path=::rust::path`"),
        // The include file in place of the package's own file would include itself.
        ("include_file=go.micro.srv.user.rs", "parameter `include_file` has an invalid value `go.micro.srv.user.rs`: expected a name other than a package's file (`go.micro.srv.user.rs` holds package `go.micro.srv.user`), such as `mod.rs`"),
    ];
    for (param, want) in cases {
        let mut request =
            CodeGeneratorRequest::decode(&common::request(&["user.proto"], "")[..]).unwrap();
        request.parameter = Some(param.into());
        let err = response_error(&request);
        assert!(err.contains(want), "{param}: {err}");
    }
}

/// `mod.rs` refused for package `mod`'s file: the name suggested is another.
#[test]
fn the_include_file_suggested_is_not_the_one_refused() {
    let request = CodeGeneratorRequest {
        file_to_generate: vec!["mod.proto".into()],
        proto_file: vec![FileDescriptorProto {
            package: Some("mod".into()),
            message_type: vec![DescriptorProto {
                name: Some("D".into()),
                ..Default::default()
            }],
            ..file("mod.proto")
        }],
        parameter: Some("api=1,include_file=mod.rs".into()),
        ..Default::default()
    };
    assert_eq!(
        response_error(&request),
        "parameter `include_file` has an invalid value `mod.rs`: expected a name other than a \
         package's file (`mod.rs` holds package `mod`), such as `protos.rs`"
    );
}

#[test]
fn api_out_of_range_says_which_plugin_to_install() {
    let mut request =
        CodeGeneratorRequest::decode(&common::request(&["user.proto"], "")[..]).unwrap();
    request.parameter = Some("api=99".into());
    let version = protoc_gen_rmicro::VERSION;
    assert_eq!(
        response_error(&request),
        format!(
            "api=99 is outside what protoc-gen-rmicro {version} can emit (API 1..=1); a newer \
             protoc-gen-rmicro is needed for API 99: `cargo install protoc-gen-rmicro --locked`, \
             or from a newer checkout `cargo install --path <checkout>/protoc-gen-rmicro --locked`"
        )
    );
}

#[test]
fn requests_protoc_could_never_send() {
    // A file to generate that is not in the request.
    let request = CodeGeneratorRequest {
        file_to_generate: vec!["missing.proto".into()],
        proto_file: vec![file("a.proto")],
        ..Default::default()
    };
    assert_eq!(
        response_error(&request),
        "malformed CodeGeneratorRequest: `missing.proto` is to be generated, but the request carries no descriptor for it"
    );

    // An import that is not carried.
    let mut a = file("a.proto");
    a.dependency = vec!["b.proto".into()];
    let request = CodeGeneratorRequest {
        file_to_generate: vec!["a.proto".into()],
        proto_file: vec![a],
        ..Default::default()
    };
    assert_eq!(
        response_error(&request),
        "malformed CodeGeneratorRequest: `a.proto` imports `b.proto`, which the request does not carry (protoc sends every import)"
    );

    // A field and a method referring to types nobody defines.
    let mut a = file("a.proto");
    a.message_type = vec![DescriptorProto {
        name: Some("M".into()),
        field: vec![FieldDescriptorProto {
            name: Some("f".into()),
            number: Some(1),
            r#type: Some(11),
            type_name: Some(".p.Nope".into()),
            ..Default::default()
        }],
        ..Default::default()
    }];
    let request = CodeGeneratorRequest {
        file_to_generate: vec!["a.proto".into()],
        proto_file: vec![a.clone()],
        ..Default::default()
    };
    assert_eq!(
        response_error(&request),
        "malformed CodeGeneratorRequest: `a.proto`: field `M.f` refers to `.p.Nope`, which no file in the request defines (protoc sends fully qualified names of types it has seen)"
    );

    a.message_type[0].field.clear();
    a.service = vec![ServiceDescriptorProto {
        name: Some("S".into()),
        method: vec![MethodDescriptorProto {
            name: Some("Go".into()),
            input_type: Some(".p.M".into()),
            output_type: None,
            ..Default::default()
        }],
        ..Default::default()
    }];
    let request = CodeGeneratorRequest {
        file_to_generate: vec!["a.proto".into()],
        proto_file: vec![a],
        ..Default::default()
    };
    assert_eq!(
        response_error(&request),
        "malformed CodeGeneratorRequest: `a.proto`: the output of `S.Go` names no type"
    );

    // Editions are refused with a way out.
    let mut e = file("e.proto");
    e.syntax = Some("editions".into());
    let request = CodeGeneratorRequest {
        file_to_generate: vec!["e.proto".into()],
        proto_file: vec![e],
        ..Default::default()
    };
    assert_eq!(
        response_error(&request),
        "e.proto: protobuf editions are not supported (yet): prost, which generates the messages, \
         cannot read them; write `syntax = \"proto3\";` or `syntax = \"proto2\";` instead of \
         `edition = ...;`"
    );
}

#[test]
fn bytes_that_are_not_a_request_fail_on_stderr() {
    let output = run_plugin_binary(b"\xff\xff\xff\xff not protobuf", &[]);
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty());
    let err = stderr(&output);
    assert!(
        err.starts_with("protoc-gen-rmicro: malformed CodeGeneratorRequest: standard input is not an encoded CodeGeneratorRequest ("),
        "{err}"
    );
    assert!(
        err.contains(
            "run it as `protoc --rmicro_out=DIR file.proto` with it on PATH (or name it: \
             `--plugin=protoc-gen-rmicro=/path/to/protoc-gen-rmicro`)"
        ),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");

    let output = run_plugin_binary(b"", &[]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output)
        .starts_with("protoc-gen-rmicro: malformed CodeGeneratorRequest: standard input is empty"));
}

#[test]
fn version_and_help() {
    let output = run_plugin_binary(b"", &["--version"]);
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        format!(
            "protoc-gen-rmicro {} (rmicro API 1)\n",
            protoc_gen_rmicro::VERSION
        )
    );
    let output = run_plugin_binary(b"", &["--help"]);
    let help = String::from_utf8_lossy(&output.stdout);
    for (key, _, _) in protoc_gen_rmicro::options::PARAMETERS {
        assert!(help.contains(&format!("{key}=")), "--help documents {key}");
    }
    let output = run_plugin_binary(b"", &["--bogus"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("unexpected argument `--bogus`"));
}

/// Runs the real protoc with the plugin on `proto` (written as `clash.proto` in a scratch include
/// directory) and returns its standard error, which must report a failure.
fn protoc_error(case: &str, proto: &str) -> String {
    protoc_error_with(case, proto, &[])
}

/// [`protoc_error`] with more protoc arguments.
fn protoc_error_with(case: &str, proto: &str, args: &[&str]) -> String {
    let scratch = scratch(case);
    let dir = scratch.path();
    std::fs::create_dir_all(dir.join("out")).unwrap();
    std::fs::write(dir.join("clash.proto"), proto).unwrap();
    let mut all = vec![
        format!("-I{}", dir.display()),
        format!("--rmicro_out={}", dir.join("out").display()),
    ];
    all.extend(args.iter().map(|a| a.to_string()));
    all.push("clash.proto".into());
    let output = protoc(&all.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(!output.status.success(), "{case} must fail");
    let err = stderr(&output);
    assert!(!err.contains("panicked"), "{err}");
    err.lines()
        .find(|line| line.starts_with("--rmicro_out: "))
        .unwrap_or_else(|| panic!("no error from the plugin in:\n{err}"))
        .to_string()
}

#[test]
fn enum_values_that_become_the_same_variant_are_refused_with_their_line() {
    let err = protoc_error(
        "enum-variants",
        "syntax = \"proto2\";\npackage p;\nenum Color {\n  COLOR_RED = 0;\n  RED = 1;\n}\n",
    );
    assert_eq!(
        err,
        "--rmicro_out: clash.proto:5:3: enum `p.Color`: the values `COLOR_RED` (line 4) and `RED` \
         both become the Rust variant `Red` (prost strips the enum's name from its values); rename \
         one of them, or keep the prefixes with the parameter `retain_enum_prefix=true`"
    );
}

#[test]
fn types_that_become_the_same_rust_name_are_refused_with_their_line() {
    let err = protoc_error(
        "type-names",
        "syntax = \"proto3\";\npackage p;\nmessage Foo_Bar {}\nmessage FooBar {}\n",
    );
    assert_eq!(
        err,
        "--rmicro_out: clash.proto:4:1: message `p.FooBar` and message `p.Foo_Bar` (line 3) both \
         become the Rust type `FooBar`, which does not compile; rename one of them"
    );

    // A oneof named like a nested message is prost-build's `KindOneOf` (as in googleapis'
    // `DatasetConfig.cloud_storage_locations`); only a type already named so clashes.
    let (output, out) = protoc_on(
        "oneof-name",
        &[(
            "clash.proto",
            "syntax = \"proto3\";\npackage p;\nmessage M {\n  message Kind {}\n  oneof kind {\n    \
             Kind a = 1;\n  }\n}\n",
        )],
        &["clash.proto"],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let code = std::fs::read_to_string(out.join("p.rs")).unwrap();
    assert!(code.contains("pub enum KindOneOf {"), "{code}");
    let err = protoc_error(
        "oneof-name-taken",
        "syntax = \"proto3\";\npackage p;\nmessage M {\n  message Kind {}\n  message KindOneOf {}\n  \
         oneof kind {\n    Kind a = 1;\n  }\n}\n",
    );
    assert_eq!(
        err,
        "--rmicro_out: clash.proto:6:3: oneof `p.M.kind` and message `p.M.KindOneOf` (line 5) both \
         become the Rust type `m::KindOneOf`, which does not compile; rename one of them"
    );
}

/// Writes `files` into a scratch include directory and runs the real protoc with the plugin and
/// `args` (options and the files to generate), returning protoc's output and the output directory.
fn protoc_on(case: &str, files: &[(&str, &str)], args: &[&str]) -> (std::process::Output, Out) {
    let scratch = scratch(case);
    let dir = scratch.path();
    let out = dir.join("out");
    std::fs::create_dir_all(&out).unwrap();
    for (name, content) in files {
        std::fs::write(dir.join(name), content).unwrap();
    }
    let mut all = vec![
        format!("-I{}", dir.display()),
        format!("--rmicro_out={}", out.display()),
    ];
    all.extend(args.iter().map(|a| a.to_string()));
    let output = protoc(&all.iter().map(String::as_str).collect::<Vec<_>>());
    (
        output,
        Out {
            path: out,
            _scratch: scratch,
        },
    )
}

/// A scratch directory named `rmicro-bad-input-{case}-…`, removed when dropped (also when the
/// test fails).
fn scratch(case: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("rmicro-bad-input-{case}-"))
        .tempdir()
        .unwrap()
}

/// The output directory of [`protoc_on`]; its scratch directory lives as long as it does.
struct Out {
    path: PathBuf,
    _scratch: tempfile::TempDir,
}

impl std::ops::Deref for Out {
    type Target = std::path::Path;

    fn deref(&self) -> &std::path::Path {
        &self.path
    }
}

/// The names of the files in `dir`, sorted.
fn written(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn name_clashes_count_only_in_code_that_is_generated() {
    let files = [
        (
            "dep.proto",
            "syntax = \"proto3\";\npackage dep;\nmessage Foo_Bar {}\nmessage FooBar {}\n",
        ),
        (
            "a.proto",
            "syntax = \"proto3\";\npackage a;\nimport \"dep.proto\";\nmessage A {\n  dep.FooBar x = 1;\n}\n",
        ),
    ];

    // `dep` is mapped to an existing crate: prost generates nothing for it.
    let (output, out) = protoc_on(
        "clash-extern-package",
        &files,
        &["--rmicro_opt=extern_path=.dep=::dep", "a.proto"],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(written(&out), ["a.rs"]);

    // Only one of the two types is mapped: the other one is generated alone.
    let (output, out) = protoc_on(
        "clash-extern-type",
        &files,
        &[
            "--rmicro_opt=extern_path=.dep.FooBar=::elsewhere::FooBar",
            "dep.proto",
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(written(&out), ["dep.rs"]);

    // `dep` is only imported: its code is not written by this run.
    let (output, out) = protoc_on("clash-imported", &files, &["a.proto"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(written(&out), ["a.rs"]);

    // Generating `dep` itself still meets the clash.
    let (output, _) = protoc_on("clash-generated", &files, &["dep.proto"]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains(
            "--rmicro_out: dep.proto:4:1: message `dep.FooBar` and message `dep.Foo_Bar` (line 3) \
             both become the Rust type `FooBar`, which does not compile; rename one of them"
        ),
        "{}",
        stderr(&output)
    );
}

#[test]
fn packages_that_become_one_rust_module_are_refused_naming_both() {
    let files = [
        (
            "upper.proto",
            "syntax = \"proto3\";\npackage foo.Bar;\nmessage Upper {}\n",
        ),
        (
            "lower.proto",
            "syntax = \"proto3\";\n\npackage foo.bar;\nimport \"upper.proto\";\nmessage Lower {\n  foo.Bar.Upper u = 1;\n}\n",
        ),
    ];
    let refused = "--rmicro_out: lower.proto:3:1: package `foo.bar` and package `foo.Bar` \
                   (upper.proto:2) both become the Rust module `foo::bar`, so their code would be \
                   merged into one file; rename one of them so that the two differ by more than \
                   letter case and underscores (protobuf packages are conventionally \
                   lower_snake_case)";

    // Both generated: before, one file `foo.Bar.rs` held both packages and `foo.bar.rs` was
    // never written.
    let (output, out) = protoc_on("module-case-both", &files, &["upper.proto", "lower.proto"]);
    assert!(!output.status.success(), "{:?}", written(&out));
    assert!(stderr(&output).contains(refused), "{}", stderr(&output));

    // One generated, the other imported: its types would still land in the generated file.
    let (output, _) = protoc_on("module-case-one", &files, &["lower.proto"]);
    assert!(!output.status.success());
    assert!(stderr(&output).contains(refused), "{}", stderr(&output));

    // The imported package mapped to an existing crate: nothing is merged.
    let (output, out) = protoc_on(
        "module-case-extern",
        &files,
        &["--rmicro_opt=extern_path=.foo.Bar=::upper", "lower.proto"],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(written(&out), ["foo.bar.rs"]);

    // Underscores vanish the same way.
    let (output, _) = protoc_on(
        "module-underscore",
        &[
            ("a.proto", "syntax = \"proto3\";\npackage foo.barBaz;\n"),
            ("b.proto", "syntax = \"proto3\";\npackage foo.bar_baz;\n"),
        ],
        &["a.proto", "b.proto"],
    );
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains(
            "--rmicro_out: b.proto:2:1: package `foo.bar_baz` and package `foo.barBaz` (a.proto:2) \
             both become the Rust module `foo::bar_baz`"
        ),
        "{}",
        stderr(&output)
    );
}

#[test]
fn a_message_module_and_a_sub_package_module_of_one_name_are_refused_with_an_include_file() {
    // `acme.Order` keeps its nested enum in `acme::order`, the include file's module of package
    // `acme.order`: before, both were written and the crate did not compile.
    let files = [
        (
            "acme.proto",
            "syntax = \"proto3\";\npackage acme;\nmessage Order {\n  enum Status {\n    \
             STATUS_UNSPECIFIED = 0;\n  }\n  Status status = 1;\n}\n",
        ),
        (
            "order.proto",
            "syntax = \"proto3\";\npackage acme.order.v1;\nmessage Line {\n  string sku = 1;\n}\n",
        ),
    ];
    let (output, out) = protoc_on(
        "sub-package-module",
        &files,
        &[
            "--rmicro_opt=include_file=mod.rs",
            "acme.proto",
            "order.proto",
        ],
    );
    assert!(!output.status.success(), "{:?}", written(&out));
    assert!(
        stderr(&output).contains(
            "--rmicro_out: acme.proto:3:1: message `acme.Order` has nested types, which prost puts \
             in the Rust module `acme::order`, and the include file gives that module to package \
             `acme.order.v1` (order.proto:2) as well; rename the message or the package, or \
             generate without `include_file` and include each package's file in a module of your \
             own"
        ),
        "{}",
        stderr(&output)
    );

    // Without an include file the user places each package's file: both are written.
    let (output, out) = protoc_on(
        "sub-package-module-apart",
        &files,
        &["acme.proto", "order.proto"],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(written(&out), ["acme.order.v1.rs", "acme.rs"]);

    // At the root: a file without a package next to package `billing`.
    let (output, _) = protoc_on(
        "sub-package-module-root",
        &[
            (
                "root.proto",
                "syntax = \"proto3\";\nmessage Billing {\n  oneof kind {\n    string a = 1;\n  }\n}\n",
            ),
            ("billing.proto", "syntax = \"proto3\";\npackage billing;\nmessage B {}\n"),
        ],
        &["--rmicro_opt=include_file=mod.rs", "root.proto", "billing.proto"],
    );
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains(
            "--rmicro_out: root.proto:2:1: message `Billing` has nested types, which prost puts in \
             the Rust module `billing`, and the include file gives that module to package \
             `billing` (billing.proto:2) as well"
        ),
        "{}",
        stderr(&output)
    );
}

#[test]
fn a_message_whose_only_oneofs_are_proto3_optional_has_no_module_to_clash() {
    // `optional` makes a synthetic oneof, which prost writes as an `Option` field: `shop.Order`
    // has no `shop::order` module, so package `shop.order.v1` may have it.
    let (output, out) = protoc_on(
        "synthetic-oneof-module",
        &[
            (
                "shop.proto",
                "syntax = \"proto3\";\npackage shop;\nmessage Order {\n  optional string note = 1;\n}\n",
            ),
            (
                "order.proto",
                "syntax = \"proto3\";\npackage shop.order.v1;\nmessage Line {\n  string sku = 1;\n}\n",
            ),
        ],
        &["--rmicro_opt=include_file=mod.rs", "shop.proto", "order.proto"],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(written(&out), ["mod.rs", "shop.order.v1.rs", "shop.rs"]);
}

#[test]
fn boxing_names_message_fields_and_refuses_others() {
    let proto = (
        "box.proto",
        "syntax = \"proto3\";\npackage bx;\nmessage Inner {}\nmessage Req {\n  string name = 1;\n  \
         Inner inner = 2;\n  repeated Inner many = 3;\n  oneof pick {\n    Inner one = 4;\n    \
         int32 other = 5;\n  }\n}\n",
    );
    // A string is stored inline: boxing it made prost's derive panic in the user's crate.
    let (output, _) = protoc_on(
        "boxed-scalar",
        &[proto],
        &["--rmicro_opt=boxed=.bx.Req.name", "box.proto"],
    );
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains(
            "--rmicro_out: parameter `boxed` has an invalid value `.bx.Req.name`: it names the \
             field `bx.Req.name`, a string, and only singular message fields can be boxed"
        ),
        "{}",
        stderr(&output)
    );

    // A path to a message, or `.`, boxes its singular message fields and leaves the rest.
    for pattern in [".bx.Req", "."] {
        let (output, out) = protoc_on(
            "boxed-broad",
            &[proto],
            &[&format!("--rmicro_opt=boxed={pattern}"), "box.proto"],
        );
        assert!(output.status.success(), "{}", stderr(&output));
        let code = std::fs::read_to_string(out.join("bx.rs")).unwrap();
        for boxed in [
            "#[prost(message, optional, boxed, tag = \"2\")]",
            "One(::rmicro_runtime::__codegen::prost::alloc::boxed::Box<super::Inner>)",
        ] {
            assert!(code.contains(boxed), "{pattern}: no `{boxed}` in\n{code}");
        }
        for plain in [
            "#[prost(string, tag = \"1\")]",
            "#[prost(message, repeated, tag = \"3\")]",
            "#[prost(int32, tag = \"5\")]",
        ] {
            assert!(code.contains(plain), "{pattern}: no `{plain}` in\n{code}");
        }
    }
}

#[test]
fn a_panic_while_generating_is_an_error_naming_the_file_and_prints_nothing() {
    // A package set but empty: protoc never sends it, and prost-build's message graph then names
    // the message `..p.M` and panics looking up `.M`. Nothing in the plugin refuses it first.
    let mut b = file("b.proto");
    b.package = Some(String::new());
    b.message_type = vec![DescriptorProto {
        name: Some("M".into()),
        ..Default::default()
    }];
    let request = CodeGeneratorRequest {
        file_to_generate: vec!["a.proto".into(), "b.proto".into()],
        proto_file: vec![file("a.proto"), b],
        ..Default::default()
    };
    assert_eq!(
        response_error(&request),
        "b.proto: generating Rust code failed (called `Option::unwrap()` on a `None` value); this \
         is a bug in rmicro, which should generate this file or refuse it with a message saying \
         what to change: please report it with the file at https://github.com/rmicro/rmicro/issues"
    );
}

#[test]
fn an_editions_file_from_a_protoc_that_sends_it_is_refused_with_its_line() {
    // protoc 3.21 (Debian's) cannot parse editions; the protoc that grpcio-tools bundles can, and
    // sends the file to a plugin that does not declare editions support (then adds its own note).
    let scratch = scratch("editions");
    let dir = scratch.path();
    std::fs::create_dir_all(dir.join("out")).unwrap();
    std::fs::write(
        dir.join("e.proto"),
        "// A file in edition 2023.\nedition = \"2023\";\n\npackage e;\n\nmessage E {\n  string x = 1;\n}\n",
    )
    .unwrap();
    let output = std::process::Command::new("python3")
        .args(["-m", "grpc_tools.protoc"])
        .arg(format!(
            "--plugin=protoc-gen-rmicro={}",
            common::plugin().display()
        ))
        .arg(format!("-I{}", dir.display()))
        .arg(format!("--rmicro_out={}", dir.join("out").display()))
        .arg("e.proto")
        .output()
        .expect(
            "python3 runs (scripts/test.sh installs grpcio-tools, which bundles a newer protoc)",
        );
    let err = stderr(&output);
    assert!(
        !err.contains("No module named"),
        "grpcio-tools is missing (scripts/test.sh installs it): {err}"
    );
    assert!(!output.status.success());
    // protoc ends its own note without a line break, so the plugin's line follows it directly.
    assert!(
        err.contains(
            "--rmicro_out: e.proto:2:1: protobuf editions are not supported (yet): prost, which \
             generates the messages, cannot read them; write `syntax = \"proto3\";` or \
             `syntax = \"proto2\";` instead of `edition = ...;`\n"
        ),
        "{err}"
    );
}

#[test]
fn names_that_become_empty_in_rust_are_refused_with_their_line() {
    // Names of underscores only: prost's case conversion leaves nothing of them.
    let cases = [
        (
            "empty-method",
            "syntax = \"proto3\";\npackage p;\nmessage A {}\nservice S {\n  rpc _(A) returns (A);\n}\n",
            "--rmicro_out: clash.proto:5:3: method `p.S._` becomes an empty Rust name (only \
             underscores, which the conversion to Rust's naming style drops); rename it",
        ),
        (
            "empty-message",
            "syntax = \"proto3\";\npackage p;\nmessage __ {}\n",
            "--rmicro_out: clash.proto:3:1: message `p.__` becomes an empty Rust name (only \
             underscores, which the conversion to Rust's naming style drops); rename it",
        ),
        (
            "empty-field",
            "syntax = \"proto3\";\npackage p;\nmessage A {\n  string _ = 1;\n}\n",
            "--rmicro_out: clash.proto:4:3: field `p.A._` becomes an empty Rust name (only \
             underscores, which the conversion to Rust's naming style drops); rename it",
        ),
        (
            "empty-oneof",
            "syntax = \"proto3\";\npackage p;\nmessage A {\n  oneof _ {\n    string x = 1;\n  }\n}\n",
            "--rmicro_out: clash.proto:4:3: oneof `p.A._` becomes an empty Rust name (only \
             underscores, which the conversion to Rust's naming style drops); rename it",
        ),
        (
            "empty-enum-value",
            "syntax = \"proto3\";\npackage p;\nenum E {\n  _ = 0;\n}\n",
            "--rmicro_out: clash.proto:4:3: enum value `p.E._` becomes an empty Rust name (only \
             underscores, which the conversion to Rust's naming style drops); rename it",
        ),
        (
            "empty-package-segment",
            "syntax = \"proto3\";\npackage p._.v1;\nmessage A {}\n",
            "--rmicro_out: clash.proto:2:1: package `p._.v1`: its part `_` becomes an empty Rust \
             module name (only underscores, which the conversion to Rust's naming style drops); \
             rename it",
        ),
    ];
    for (case, proto, want) in cases {
        assert_eq!(
            protoc_error_with(case, proto, &["--rmicro_opt=include_file=mod.rs"]),
            want
        );
    }
}

#[test]
fn fields_that_become_the_same_rust_name_are_refused_with_their_line() {
    // proto3 refuses most of these itself (JSON name conflicts); proto2 lets them through.
    let err = protoc_error(
        "field-names",
        "syntax = \"proto2\";\npackage p;\nmessage A {\n  optional string foo_bar = 1;\n  \
         optional string fooBar = 2;\n}\n",
    );
    assert_eq!(
        err,
        "--rmicro_out: clash.proto:5:3: field `p.A.fooBar` and field `p.A.foo_bar` (line 4) both \
         become the Rust field `foo_bar` of `A`, which does not compile; rename one of them"
    );

    let err = protoc_error(
        "field-oneof-names",
        "syntax = \"proto2\";\npackage p;\nmessage A {\n  optional string kind = 1;\n  oneof Kind \
         {\n    string x = 2;\n  }\n}\n",
    );
    assert_eq!(
        err,
        "--rmicro_out: clash.proto:5:3: oneof `p.A.Kind` and field `p.A.kind` (line 4) both \
         become the Rust field `kind` of `A`, which does not compile; rename one of them"
    );

    let err = protoc_error(
        "oneof-variants",
        "syntax = \"proto2\";\npackage p;\nmessage A {\n  oneof k {\n    string foo_bar = 1;\n    \
         string fooBar = 2;\n  }\n}\n",
    );
    assert_eq!(
        err,
        "--rmicro_out: clash.proto:6:5: field `p.A.fooBar` and field `p.A.foo_bar` (line 5) both \
         become the Rust variant `FooBar` of `a::K`, which does not compile; rename one of them"
    );

    // `self` cannot be a raw identifier: prost makes it `self_`, which is taken.
    let err = protoc_error(
        "field-names-keyword",
        "syntax = \"proto2\";\npackage p;\nmessage A {\n  optional string self = 1;\n  \
         optional string self_ = 2;\n}\n",
    );
    assert_eq!(
        err,
        "--rmicro_out: clash.proto:5:3: field `p.A.self_` and field `p.A.self` (line 4) both \
         become the Rust field `self_` of `A`, which does not compile; rename one of them"
    );
}

/// prost's derive gives enum fields a getter and a `set_`/`push_` method, proto2 and proto3
/// `optional` scalars a getter, and maps of enums `get_`/`insert_` methods: a field whose own
/// accessor has one of those names made two methods of one name in the user's crate.
#[test]
fn fields_whose_accessors_become_one_rust_method_are_refused_with_their_line() {
    let err = protoc_error(
        "accessor-set",
        "syntax = \"proto3\";\npackage p;\nenum E {\n  E_UNSPECIFIED = 0;\n}\nmessage A {\n  \
         E state = 1;\n  optional bool set_state = 2;\n}\n",
    );
    assert_eq!(
        err,
        "--rmicro_out: clash.proto:8:3: field `p.A.set_state` and field `p.A.state` (line 7) both \
         become the Rust method `set_state` of `A` (prost's accessors of the fields), which does \
         not compile; rename one of them"
    );

    let err = protoc_error(
        "accessor-push",
        "syntax = \"proto2\";\npackage p;\nenum E {\n  E_A = 0;\n}\nmessage A {\n  \
         optional E push_tags = 1;\n  repeated E tags = 2;\n}\n",
    );
    assert_eq!(
        err,
        "--rmicro_out: clash.proto:8:3: field `p.A.tags` and field `p.A.push_tags` (line 7) both \
         become the Rust method `push_tags` of `A` (prost's accessors of the fields), which does \
         not compile; rename one of them"
    );

    let err = protoc_error(
        "accessor-map",
        "syntax = \"proto3\";\npackage p;\nenum E {\n  E_UNSPECIFIED = 0;\n}\nmessage A {\n  \
         map<string, E> labels = 1;\n  E get_labels = 2;\n}\n",
    );
    assert_eq!(
        err,
        "--rmicro_out: clash.proto:8:3: field `p.A.get_labels` and field `p.A.labels` (line 7) \
         both become the Rust method `get_labels` of `A` (prost's accessors of the fields), which \
         does not compile; rename one of them"
    );

    // Fields without accessors take no method names: a message field, a plain proto3 string.
    let (output, _out) = protoc_on(
        "accessor-none",
        &[(
            "clash.proto",
            "syntax = \"proto3\";\npackage p;\nenum E {\n  E_UNSPECIFIED = 0;\n}\nmessage A {\n  \
             E state = 1;\n  string set_state = 2;\n  repeated string push_tags = 3;\n  \
             repeated string tags = 4;\n}\n",
        )],
        &["clash.proto"],
    );
    assert!(output.status.success(), "{}", stderr(&output));
}

/// `google.api.http` bindings the gateway could not serve as written are refused at generation,
/// with the method's line, rather than written into the endpoint metadata (where a typo would
/// have become a 404).
#[test]
fn http_bindings_the_gateway_cannot_serve_are_refused_with_their_line() {
    let head = "syntax = \"proto3\";\npackage p;\nimport \"google/api/annotations.proto\";\n\
                message Get {\n  string name = 1;\n  Inner inner = 2;\n  repeated string tags = 3;\n}\n\
                message Inner {\n  string id = 1;\n}\nservice S {\n";
    let cases = [
        (
            "unknown",
            r#"get: "/v1/{nme}""#,
            "binds `{nme}`, but `Get` has no field `nme`",
        ),
        (
            "unbalanced",
            r#"get: "/v1/{name""#,
            "`/v1/{name`, which has a `{` with no `}` after it",
        ),
        (
            "stray",
            r#"get: "/v1/name}/x""#,
            "has a `}` with no `{` before it",
        ),
        (
            "body",
            r#"post: "/v1/things" body: "nosuch""#,
            "has `body: \"nosuch\"`, but `Get` has no field `nosuch`",
        ),
        (
            "response-body",
            r#"get: "/v1/t" response_body: "nosuch""#,
            "has `response_body: \"nosuch\"`, but `Get` has no field `nosuch`",
        ),
        ("no-slash", r#"get: "v1/things""#, "does not start with `/`"),
        ("empty", r#"get: """#, "is empty"),
        (
            "nested",
            r#"get: "/v1/{inner.nope}""#,
            "binds `{inner.nope}`, but `Inner` has no field `nope`",
        ),
        (
            "message",
            r#"get: "/v1/{inner}""#,
            "binds `{inner}` to a message field",
        ),
        (
            "repeated",
            r#"get: "/v1/{tags}""#,
            "binds `{tags}` to a repeated or map field",
        ),
        ("twice", r#"get: "/v1/{name}/{name}""#, "binds `name` twice"),
        ("no-pattern", r#"body: "*""#, "has no pattern"),
        (
            "additional",
            r#"get: "/v1/a" additional_bindings { get: "/v1/{nope}" }"#,
            "`Get` has no field `nope`",
        ),
    ];
    for (case, rule, want) in cases {
        let proto = format!(
            "{head}  rpc M(Get) returns (Get) {{ option (google.api.http) = {{ {rule} }}; }}\n}}\n"
        );
        let err = protoc_error(case, &proto);
        assert!(
            err.starts_with(
                "--rmicro_out: clash.proto:13:3: the google.api.http binding of `S.M` "
            ),
            "{case}: {err}"
        );
        assert!(err.contains(want), "{case}: {err}");
    }
    // Bindings as real APIs write them pass.
    let good = format!(
        "{head}  rpc M(Get) returns (Get) {{ option (google.api.http) = {{ get: \
         \"/v1/{{name=things/*}}/{{inner.id}}:peek\" response_body: \"inner\" \
         additional_bindings {{ post: \"/v1/things\" body: \"*\" }} }}; }}\n}}\n"
    );
    let scratch = scratch("good-binding");
    let dir = scratch.path();
    std::fs::create_dir_all(dir.join("out")).unwrap();
    std::fs::write(dir.join("clash.proto"), good).unwrap();
    let output = protoc(&[
        &format!("-I{}", dir.display()),
        &format!("--rmicro_out={}", dir.join("out").display()),
        "clash.proto",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
}
