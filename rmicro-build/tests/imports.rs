//! build.rs generates, besides the files it is given, the imported packages their code names:
//! nothing else would, and code naming `super::dep::Thing` without `dep` does not compile.

use std::path::PathBuf;

/// Writes `files` under a fresh include directory, compiles `a.proto` with `config`, and returns
/// the names of the files written.
fn written(case: &str, files: &[(&str, &str)], config: &mut rmicro_build::Config) -> Vec<String> {
    written_in(&scratch(case), files, config)
}

/// A scratch directory named `rmicro-build-imports-{case}-…`, removed when dropped (also when
/// the test fails).
fn scratch(case: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("rmicro-build-imports-{case}-"))
        .tempdir()
        .unwrap()
}

/// [`written`] in `scratch`, for a test that reads what was written.
fn written_in(
    scratch: &tempfile::TempDir,
    files: &[(&str, &str)],
    config: &mut rmicro_build::Config,
) -> Vec<String> {
    let dir = scratch.path();
    let include = dir.join("proto");
    for (name, content) in files {
        let path = include.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
    let out = dir.join("out");
    let paths: Vec<PathBuf> = config
        .out_dir(&out)
        .api(1)
        .emit_rerun_if_changed(false)
        .try_compile(&[include.join("a.proto")], &[&include])
        .unwrap_or_else(|err| panic!("{}: {err}", dir.display()));
    let mut names: Vec<String> = paths
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

const FILES: &[(&str, &str)] = &[
    (
        "a.proto",
        "syntax = \"proto3\";\npackage a;\nimport \"dep/dep.proto\";\nimport \"opts.proto\";\n\
         import \"mapped.proto\";\nimport \"deeper.proto\";\n\
         import \"google/protobuf/timestamp.proto\";\n\
         message A {\n  option (opts.tag) = \"x\";\n  dep.Thing thing = 1;\n  \
         google.protobuf.Timestamp at = 2;\n  mapped.M m = 3;\n}\n\
         service S {\n  rpc Get(A) returns (deeper.Deep);\n}\n",
    ),
    (
        "dep/dep.proto",
        "syntax = \"proto3\";\npackage dep;\nimport \"deeper.proto\";\n\
         message Thing {\n  enum Kind {\n    KIND_UNSPECIFIED = 0;\n  }\n  Kind kind = 1;\n  \
         deeper.Deep deep = 2;\n}\n",
    ),
    (
        "deeper.proto",
        "syntax = \"proto3\";\npackage deeper;\nmessage Deep {}\n",
    ),
    (
        "opts.proto",
        "syntax = \"proto2\";\npackage opts;\nimport \"google/protobuf/descriptor.proto\";\n\
         extend google.protobuf.MessageOptions {\n  optional string tag = 50001;\n}\n",
    ),
    (
        "mapped.proto",
        "syntax = \"proto3\";\npackage mapped;\nmessage M {}\n",
    ),
];

#[test]
fn imported_packages_the_code_names_are_generated_too() {
    // `dep` (a field's type) and `deeper` (the rpc's output, and a field of dep's) are named by the
    // code;
    // `opts` only gives an option, the well-known types come from the runtime and `mapped` from
    // the extern path.
    let names = written(
        "named",
        FILES,
        rmicro_build::Config::new().extern_path(".mapped", "::mapped"),
    );
    assert_eq!(names, ["a.rs", "deeper.rs", "dep.rs"]);

    // Without the extern path, `mapped` is generated as well.
    let names = written("unmapped", FILES, &mut rmicro_build::Config::new());
    assert_eq!(names, ["a.rs", "deeper.rs", "dep.rs", "mapped.rs"]);
}

#[test]
fn the_include_file_names_the_imported_packages() {
    let scratch = scratch("include-file");
    let dir = scratch.path();
    let names = written_in(
        &scratch,
        FILES,
        rmicro_build::Config::new()
            .extern_path(".mapped", "::mapped")
            .include_file("mod.rs"),
    );
    assert_eq!(names, ["a.rs", "deeper.rs", "dep.rs", "mod.rs"]);
    let tree = std::fs::read_to_string(dir.join("out/mod.rs")).unwrap();
    for file in ["a.rs", "deeper.rs", "dep.rs"] {
        assert!(tree.contains(&format!("include!(\"{file}\");")), "{tree}");
    }
}
