//! Source files protoc accepts compile with rmicro-build too.

/// Writes `files` (name, bytes) under a fresh include directory and compiles `a.proto`,
/// returning the code of each file written.
fn compile(case: &str, files: &[(&str, &[u8])]) -> Result<Vec<String>, String> {
    let scratch = tempfile::Builder::new()
        .prefix(&format!("rmicro-build-sources-{case}-"))
        .tempdir()
        .unwrap();
    let dir = scratch.path();
    let include = dir.join("proto");
    for (name, content) in files {
        let path = include.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
    rmicro_build::Config::new()
        .out_dir(dir.join("out"))
        .api(1)
        .emit_rerun_if_changed(false)
        .try_compile(&[include.join("a.proto")], &[&include])
        .map(|written| {
            written
                .iter()
                .map(|path| std::fs::read_to_string(path).unwrap())
                .collect()
        })
        .map_err(|err| err.to_string())
}

#[test]
fn a_byte_order_mark_is_skipped_as_protoc_does() {
    // Editors on Windows start UTF-8 files with a byte order mark; protoc skips it.
    let files: &[(&str, &[u8])] = &[
        (
            "a.proto",
            b"\xEF\xBB\xBFsyntax = \"proto3\";\npackage a;\nimport \"b.proto\";\n\
              message A {\n  b.B b = 1;\n}\nservice S {\n  rpc M(A) returns (A);\n}\n",
        ),
        (
            "b.proto",
            b"\xEF\xBB\xBFsyntax = \"proto3\";\npackage b;\nmessage B {}\n",
        ),
    ];
    let written = compile("bom", files).unwrap_or_else(|err| panic!("{err}"));
    let code = &written[0];
    assert!(code.contains("pub struct A {"), "{code}");
    assert!(code.contains("pub trait SHandler"), "{code}");

    // An error after the mark still names its line and column.
    let broken: &[(&str, &[u8])] = &[(
        "a.proto",
        b"\xEF\xBB\xBFsyntax = \"proto3\";\npackage a;\nmessage A {\n  strin x = 1;\n}\n",
    )];
    let err = compile("bom-broken", broken).expect_err("a .proto that does not compile");
    assert!(
        err.contains("a.proto:4:3: name 'strin' is not defined"),
        "{err}"
    );
}

/// An output that cannot be written is refused before anything is written: an output
/// directory that is a file, a directory where a file goes.
#[test]
fn an_unwritable_output_is_refused_whole() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path();
    let include = dir.join("proto");
    std::fs::create_dir_all(&include).unwrap();
    std::fs::write(
        include.join("a.proto"),
        "syntax = \"proto3\";\npackage e;\nmessage A { int32 x = 1; }\n",
    )
    .unwrap();
    let compile = |out: &std::path::Path, include_file: &str| {
        rmicro_build::Config::new()
            .out_dir(out)
            .api(1)
            .include_file(include_file)
            .emit_rerun_if_changed(false)
            .try_compile(&[include.join("a.proto")], &[&include])
            .map_err(|err| err.to_string())
    };
    let file = dir.join("afile");
    std::fs::write(&file, "").unwrap();
    let err = compile(&file, "mod.rs").unwrap_err();
    assert!(err.contains("is a file, not a directory"), "{err}");

    let out = dir.join("out");
    std::fs::create_dir_all(out.join("mod.rs")).unwrap();
    let err = compile(&out, "mod.rs").unwrap_err();
    assert!(
        err.contains("a directory of that name is in the way"),
        "{err}"
    );
    assert!(!out.join("e.rs").exists(), "nothing is written");

    // The include file named as the package's file.
    let err = compile(&dir.join("out2"), "e.rs").unwrap_err();
    assert!(err.contains("a name other than a package's file"), "{err}");
    assert!(!dir.join("out2/e.rs").exists(), "nothing is written");
}

/// A `.proto` named relative to an include path (as protoc takes it) compiles.
#[test]
fn a_proto_named_relative_to_an_include_path_compiles() {
    let scratch = tempfile::tempdir().unwrap();
    let include = scratch.path().join("proto");
    std::fs::create_dir_all(include.join("user")).unwrap();
    std::fs::write(
        include.join("user/user.proto"),
        "syntax = \"proto3\";\npackage u;\nmessage A { int32 x = 1; }\n",
    )
    .unwrap();
    let written = rmicro_build::Config::new()
        .out_dir(scratch.path().join("out"))
        .api(1)
        .emit_rerun_if_changed(false)
        .try_compile(&["user/user.proto"], &[&include])
        .unwrap();
    assert_eq!(written.len(), 1);
}

/// A `.proto` path relative to the working directory under an absolute include path (the
/// `concat!(env!("CARGO_MANIFEST_DIR"), "/proto")` of many build scripts) compiles, and so
/// does the reverse; protoc refuses both, as the paths differ as written.
#[test]
fn relative_and_absolute_paths_mix() {
    // Under the workspace's target directory, so it has a path relative to this test's working
    // directory (the package's).
    let target = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target");
    std::fs::create_dir_all(&target).unwrap();
    let scratch = tempfile::Builder::new()
        .prefix("rmicro-build-mixed-")
        .tempdir_in(&target)
        .unwrap();
    let name = scratch.path().file_name().unwrap();
    let relative = std::path::Path::new("../target").join(name);
    std::fs::create_dir_all(scratch.path().join("proto")).unwrap();
    std::fs::write(
        scratch.path().join("proto/user.proto"),
        "syntax = \"proto3\";\npackage u;\nmessage A { int32 x = 1; }\n",
    )
    .unwrap();
    let compile = |out: &str, proto: std::path::PathBuf, include: std::path::PathBuf| {
        rmicro_build::Config::new()
            .out_dir(scratch.path().join(out))
            .api(1)
            .emit_rerun_if_changed(false)
            .try_compile(&[proto], &[include])
            .map_err(|err| err.to_string())
    };
    let written = compile(
        "out1",
        relative.join("proto/user.proto"),
        scratch.path().join("proto"),
    )
    .unwrap_or_else(|err| panic!("relative file, absolute include: {err}"));
    assert_eq!(written.len(), 1);
    let written = compile(
        "out2",
        scratch.path().join("proto/user.proto"),
        relative.join("proto"),
    )
    .unwrap_or_else(|err| panic!("absolute file, relative include: {err}"));
    assert_eq!(written.len(), 1);
}

/// Values given to `Config`'s setters are checked as the plugin checks its parameters, with the
/// same messages: a typo is the user's to fix, not generated code that does not parse.
#[test]
fn setter_values_are_checked_as_plugin_parameters() {
    let scratch = tempfile::tempdir().unwrap();
    let include = scratch.path().join("proto");
    std::fs::create_dir_all(&include).unwrap();
    std::fs::write(
        include.join("a.proto"),
        "syntax = \"proto3\";\npackage a;\nmessage B { string c = 1; }\n",
    )
    .unwrap();
    let compile = |config: &mut rmicro_build::Config| {
        config
            .out_dir(scratch.path().join("out"))
            .api(1)
            .emit_rerun_if_changed(false)
            .try_compile(&[include.join("a.proto")], &[&include])
            .map(|_| ())
            .map_err(|err| err.to_string())
    };
    let err =
        compile(rmicro_build::Config::new().type_attribute(".a.B", "derive(Hash)")).unwrap_err();
    assert!(
        err.contains(
            "parameter `type_attribute` has an invalid value `.a.B=derive(Hash)`: expected \
             `PROTO_PATH=#[attribute]`"
        ),
        "{err}"
    );
    assert!(!err.contains("please report"), "{err}");
    let err =
        compile(rmicro_build::Config::new().field_attribute(".a.B.c", "#[serde(rename = \"x\")"))
            .unwrap_err();
    assert!(err.contains("parameter `field_attribute`"), "{err}");
    let err = compile(rmicro_build::Config::new().include_file("../x.rs")).unwrap_err();
    assert!(
        err.contains("parameter `include_file` has an invalid value `../x.rs`"),
        "{err}"
    );
    assert!(!scratch.path().join("x.rs").exists());
    let err = compile(rmicro_build::Config::new().extern_path("google.type", "::g")).unwrap_err();
    assert!(err.contains("parameter `extern_path`"), "{err}");
    // Good values pass.
    compile(
        rmicro_build::Config::new()
            .type_attribute(".a.B", "#[derive(Eq, Hash)]")
            .include_file("mod.rs"),
    )
    .unwrap();
}
