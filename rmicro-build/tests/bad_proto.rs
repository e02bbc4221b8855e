//! A `.proto` that does not compile fails the build with the file, the line and column, and what
//! to do, as protoc would say it; never a panic.

use std::path::{Path, PathBuf};

/// Writes `files` under a fresh `proto/` include directory and compiles `compile` with
/// rmicro-build, returning the error message (the test fails if compiling succeeds).
fn compile_error(case: &str, files: &[(&str, &str)], compile: &[&str]) -> (PathBuf, String) {
    // The directory is gone when this returns; the path only names files in the message.
    let scratch = scratch(case);
    let dir = scratch.path();
    let include = dir.join("proto");
    for (name, content) in files {
        let path = include.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
    let protos: Vec<PathBuf> = compile.iter().map(|p| include.join(p)).collect();
    let err = rmicro_build::Config::new()
        .out_dir(dir.join("out"))
        .api(1)
        .emit_rerun_if_changed(false)
        .try_compile(&protos, &[&include])
        .expect_err("the .proto must not compile");
    (include, err.to_string())
}

/// A scratch directory named `rmicro-build-bad-proto-{case}-…`, removed when dropped (also when the test
/// fails).
fn scratch(case: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("rmicro-build-bad-proto-{case}-"))
        .tempdir()
        .unwrap()
}

fn at(include: &Path, name: &str, line: u32, column: u32) -> String {
    format!("{}:{line}:{column}: ", include.join(name).display())
}

#[test]
fn a_syntax_error_names_the_file_line_and_column() {
    let (include, err) = compile_error(
        "syntax",
        &[(
            "a.proto",
            "syntax = \"proto3\";\npackage p;\n\nmessage A {\n  string x = 1\n}\n",
        )],
        &["a.proto"],
    );
    assert_eq!(
        err,
        format!(
            "could not compile the .proto files: {}expected ';' or '[', but found '}}'",
            at(&include, "a.proto", 6, 1)
        )
    );
}

#[test]
fn an_unknown_name_points_at_its_use() {
    let (include, err) = compile_error(
        "unknown-type",
        &[(
            "a.proto",
            "syntax = \"proto3\";\npackage p;\nmessage A {\n  Bee b = 1;\n}\n",
        )],
        &["a.proto"],
    );
    assert!(
        err.starts_with(&format!(
            "could not compile the .proto files: {}name 'Bee' is not defined",
            at(&include, "a.proto", 4, 3)
        )),
        "{err}"
    );
}

#[test]
fn an_unknown_option_points_at_it_and_says_what_to_import() {
    let (include, err) = compile_error(
        "unknown-option",
        &[(
            "a.proto",
            "syntax = \"proto3\";\npackage p;\nmessage A {}\nservice S {\n  rpc M(A) returns (A) {\n    option (google.api.http) = { get: \"/a\" };\n  }\n}\n",
        )],
        &["a.proto"],
    );
    assert_eq!(
        err,
        format!(
            "could not compile the .proto files: {}name 'google.api.http' is not defined; add \
             `import \"google/api/annotations.proto\";` (from googleapis, with its directory in \
             the include paths)",
            at(&include, "a.proto", 6, 5)
        )
    );
}

#[test]
fn a_missing_import_points_at_the_import_and_names_the_include_paths() {
    let (include, err) = compile_error(
        "missing-import",
        &[(
            "a.proto",
            "syntax = \"proto3\";\npackage p;\nimport \"nope/b.proto\";\nmessage A {}\n",
        )],
        &["a.proto"],
    );
    assert_eq!(
        err,
        format!(
            "could not compile the .proto files: {}import 'nope/b.proto' not found; it is looked \
             up in the include paths ({}) and among the well-known types: add the directory that \
             holds nope/b.proto to the include paths, or fix the import",
            at(&include, "a.proto", 3, 1),
            include.display()
        )
    );
}

#[test]
fn a_proto_outside_the_include_paths_says_so() {
    let (include, err) = compile_error(
        "outside",
        &[
            ("a.proto", "syntax = \"proto3\";\npackage p;\n"),
            ("../elsewhere.proto", "syntax = \"proto3\";\npackage q;\n"),
        ],
        &["../elsewhere.proto"],
    );
    assert_eq!(
        err,
        format!(
            "could not compile the .proto files: file '{}' is not in any include path; pass \
             .proto files that are inside one of the include paths ({})",
            include.join("../elsewhere.proto").display(),
            include.display()
        )
    );
}

#[test]
fn a_proto_that_does_not_exist_is_named_as_missing() {
    let (include, err) = compile_error(
        "missing",
        &[("a.proto", "syntax = \"proto3\";\npackage p;\n")],
        &["a.proto", "nope.proto"],
    );
    let want = format!(
        "could not compile the .proto files: `{}` does not exist",
        include.join("nope.proto").display()
    );
    assert!(err.starts_with(&want), "{err}");
    assert!(err.ends_with("; check the path"), "{err}");
}

#[test]
fn no_proto_at_all_says_what_to_pass() {
    // A build.rs that collects the .proto files of an empty or misnamed directory.
    let dir = std::env::temp_dir().join("rmicro-build-bad-proto-none");
    let err = rmicro_build::Config::new()
        .out_dir(dir.join("out"))
        .api(1)
        .emit_rerun_if_changed(false)
        .try_compile(&[] as &[PathBuf], &[dir.join("proto")])
        .expect_err("nothing to compile");
    assert_eq!(
        err.to_string(),
        "no .proto files to compile: pass at least one, as a path inside one of the include \
         paths (`compile(&[\"proto/user.proto\"], &[\"proto\"])`)"
    );
}

/// In the child process of [`build_script_output`]: compiles as a build script does, with
/// [`rmicro_build::Config::compile`], which prints the error and exits.
#[test]
fn build_script_child() {
    let Ok(dir) = std::env::var("RMICRO_BUILD_TEST_CHILD") else {
        return;
    };
    let include = PathBuf::from(dir).join("proto");
    let protos: Vec<PathBuf> = std::env::var("RMICRO_BUILD_TEST_PROTOS")
        .unwrap()
        .split(',')
        .map(|p| include.join(p))
        .collect();
    rmicro_build::Config::new()
        .out_dir(include.with_file_name("out"))
        .api(1)
        .emit_rerun_if_changed(false)
        .compile(&protos, &[&include]);
    std::process::exit(0);
}

/// Writes `files` under a fresh `proto/` include directory and runs `Config::compile` on
/// `compile` in a child process (this test binary, running [`build_script_child`]), as Cargo runs
/// a build script: returns its exit code and standard error.
fn build_script_output(
    case: &str,
    files: &[(&str, &str)],
    compile: &[&str],
) -> (Option<i32>, String) {
    let scratch = scratch(case);
    let dir = scratch.path();
    for (name, content) in files {
        let path = dir.join("proto").join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "build_script_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("RMICRO_BUILD_TEST_CHILD", dir)
        .env("RMICRO_BUILD_TEST_PROTOS", compile.join(","))
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A method named `_` used to make the service generator panic (an empty identifier): the panic
/// hook printed its message into the build before rmicro-build's error. It is refused before
/// generation now; a panic that still happens is caught without output (the plugin's
/// `a_panic_while_generating_is_an_error_naming_the_file_and_prints_nothing` has one).
#[test]
fn a_name_the_generator_cannot_use_is_one_error_naming_the_file() {
    let (code, stderr) = build_script_output(
        "generator-panic",
        &[
            ("a.proto", "syntax = \"proto3\";\npackage p;\nmessage A {}\n"),
            (
                "b.proto",
                "syntax = \"proto3\";\npackage p;\nimport \"a.proto\";\nservice S {\n  rpc _(A) returns (A);\n}\n",
            ),
        ],
        &["a.proto", "b.proto"],
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(
        stderr,
        "error: rmicro-build: b.proto:5:3: method `p.S._` becomes an empty Rust name (only \
         underscores, which the conversion to Rust's naming style drops); rename it\n"
    );
}

#[test]
fn an_editions_file_says_editions_are_not_supported_with_its_line() {
    let (include, err) = compile_error(
        "editions",
        &[(
            "e.proto",
            "// A file in edition 2023.\nedition = \"2023\";\n\npackage e;\n\nmessage E {\n  string x = 1;\n}\n",
        )],
        &["e.proto"],
    );
    assert_eq!(
        err,
        format!(
            "{}protobuf editions are not supported (yet): prost, which generates the messages, \
             cannot read them; write `syntax = \"proto3\";` or `syntax = \"proto2\";` instead of \
             `edition = ...;`",
            at(&include, "e.proto", 2, 1)
        )
    );
}

/// A field of a `google.protobuf` type that prost-types lacks (descriptor.proto's editions
/// types, which protox's copy defines) is refused naming the field, not generated into code
/// that names a type the runtime does not have.
#[test]
fn a_descriptor_type_prost_types_lacks_is_refused_naming_the_field() {
    let (_, err) = compile_error(
        "feature-set",
        &[(
            "f.proto",
            "syntax = \"proto3\";\npackage f;\nimport \"google/protobuf/descriptor.proto\";\n\
             message A {\n  message B { google.protobuf.FeatureSet fs = 1; }\n  \
             google.protobuf.FieldOptions ok = 1;\n}\n",
        )],
        &["f.proto"],
    );
    assert!(
        err.starts_with(
            "f.proto: field `f.A.B.fs` has type `google.protobuf.FeatureSet`, which prost-types"
        ),
        "{err}"
    );
    assert!(
        err.contains("extern_path=.google.protobuf.FeatureSet=::path::to::Type"),
        "{err}"
    );
}
