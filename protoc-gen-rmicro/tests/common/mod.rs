//! Helpers shared by the plugin's integration tests.
#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use prost::encoding::{decode_key, decode_varint, encode_key, encode_varint, WireType};

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Include directories for every fixture.
pub fn includes() -> Vec<PathBuf> {
    vec![root().join("proto"), root().join("tests/proto")]
}

/// A fixture case: a name, the files to generate (relative to an include dir) and parameters.
pub struct Case {
    pub name: &'static str,
    pub files: &'static [&'static str],
    pub parameter: &'static str,
}

/// Every golden case.
pub const CASES: &[Case] = &[
    Case {
        name: "user",
        files: &["user.proto"],
        parameter: "",
    },
    Case {
        name: "kitchen",
        files: &[
            "rmicro/test/common.proto",
            "rmicro/test/everything.proto",
            "rmicro/test/v1.proto",
        ],
        parameter: "include_file=mod.rs",
    },
    Case {
        name: "legacy",
        files: &["rmicro/test/legacy.proto"],
        parameter: "",
    },
    Case {
        name: "keywords",
        files: &["rmicro/test/keywords.proto"],
        parameter: "",
    },
    Case {
        name: "deprecated",
        files: &["rmicro/test/deprecated.proto"],
        parameter: "",
    },
    Case {
        name: "nopkg",
        files: &["nopkg.proto"],
        parameter: "include_file=mod.rs",
    },
    Case {
        name: "shapes",
        files: &[
            "rmicro/test/shapes/pub/base.proto",
            "rmicro/test/shapes/pub/reexport.proto",
            "rmicro/test/shapes/shapes.proto",
            "rmicro/test/shapes/second.proto",
            "rmicro/test/shapes/ext.proto",
            "async/v1/async.proto",
            "foo/type/v1/t.proto",
        ],
        parameter: "include_file=mod.rs",
    },
    Case {
        name: "options",
        files: &["user.proto", "rmicro/test/maps.proto"],
        parameter: "client=false,runtime_path=crate::rt,btree_map=.,bytes=.,\
                    skip_debug=.rmicro.test.maps.Opaque,disable_comments=.go.micro.srv.user.User,\
                    type_attribute=.go.micro.srv.user.CallRequest=#[derive(PartialOrd\\, Ord)],\
                    field_attribute=.go.micro.srv.user.CallResponse.msg=#[doc = \"the greeting\"]",
    },
];

/// A `CodeGeneratorRequest`, encoded, built in-process with protox from `files`.
///
/// The descriptor set protox encodes is re-keyed field by field (1 → 15) rather than decoded and
/// re-encoded, so extension options such as `google.api.http` survive as they would from protoc.
pub fn request(files: &[&str], parameter: &str) -> Vec<u8> {
    let mut compiler = protox::Compiler::new(includes()).unwrap();
    compiler.include_imports(true).include_source_info(true);
    compiler.open_files(files).unwrap();
    let set = compiler.encode_file_descriptor_set();

    let mut out = Vec::new();
    for file in files {
        encode_key(1, WireType::LengthDelimited, &mut out);
        encode_varint(file.len() as u64, &mut out);
        out.extend_from_slice(file.as_bytes());
    }
    if !parameter.is_empty() {
        encode_key(2, WireType::LengthDelimited, &mut out);
        encode_varint(parameter.len() as u64, &mut out);
        out.extend_from_slice(parameter.as_bytes());
    }
    let mut buf = &set[..];
    while !buf.is_empty() {
        let (tag, wire) = decode_key(&mut buf).unwrap();
        assert_eq!((tag, wire), (1, WireType::LengthDelimited));
        let len = decode_varint(&mut buf).unwrap() as usize;
        encode_key(15, WireType::LengthDelimited, &mut out);
        encode_varint(len as u64, &mut out);
        out.extend_from_slice(&buf[..len]);
        buf = &buf[len..];
    }
    out
}

/// Where the golden files of `case` live.
pub fn golden_dir(case: &str) -> PathBuf {
    root().join("protoc-gen-rmicro/tests/golden").join(case)
}

/// Compares `files` (name, content) with the golden directory of `case`, or rewrites it when
/// `UPDATE_GOLDEN=1`.
pub fn assert_golden(case: &str, files: &[(String, String)]) {
    let dir = golden_dir(case);
    if std::env::var("UPDATE_GOLDEN").as_deref() == Ok("1") {
        let _ = std::fs::remove_dir_all(&dir);
        for (name, content) in files {
            let path = dir.join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, content).unwrap();
        }
        return;
    }
    let mut expected: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e}; run with UPDATE_GOLDEN=1 to create it",
                dir.display()
            )
        })
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    expected.sort();
    let mut actual: Vec<String> = files.iter().map(|f| f.0.clone()).collect();
    actual.sort();
    assert_eq!(
        actual,
        expected,
        "case {case}: generated file names differ from {}",
        dir.display()
    );
    for (name, content) in files {
        let want = std::fs::read_to_string(dir.join(name)).unwrap();
        if *content != want {
            let line = content
                .lines()
                .zip(want.lines())
                .position(|(a, b)| a != b)
                .map_or("(length)".to_string(), |i| format!("line {}", i + 1));
            panic!(
                "case {case}: {name} differs from its golden file at {line}; \
                 if the change is intended, run `UPDATE_GOLDEN=1 cargo test -p protoc-gen-rmicro`"
            );
        }
    }
}

/// The files of an embedded `FILE_DESCRIPTOR_SET` other than `google/protobuf/*.proto` (each
/// toolchain embeds its own copies of those), each as its name and its bytes exactly as embedded,
/// so that comparing them compares options and extensions too.
pub fn project_files(set: &[u8]) -> Vec<(String, Vec<u8>)> {
    use prost::Message;
    let mut out = Vec::new();
    let mut buf = set;
    while !buf.is_empty() {
        let (tag, wire) = decode_key(&mut buf).unwrap();
        assert_eq!((tag, wire), (1, WireType::LengthDelimited));
        let len = decode_varint(&mut buf).unwrap() as usize;
        let raw = buf[..len].to_vec();
        buf = &buf[len..];
        let name = prost_types::FileDescriptorProto::decode(&raw[..])
            .unwrap()
            .name()
            .to_string();
        if !name.starts_with("google/protobuf/") {
            out.push((name, raw));
        }
    }
    out
}

/// Like [`assert_golden`] for files made by a different toolchain (protoc instead of protox):
/// everything must be identical except the embedded `FILE_DESCRIPTOR_SET`, whose copies of
/// `google/protobuf/*.proto` are each toolchain's own; its other files must be the same bytes.
pub fn assert_golden_other_toolchain(case: &str, files: &[(String, String)]) {
    let dir = golden_dir(case);
    let split = |text: &str| -> (String, Option<Vec<u8>>) {
        let mut rest = String::new();
        let mut set = None;
        for line in text.lines() {
            match line.strip_prefix("pub const FILE_DESCRIPTOR_SET: &[u8] = ") {
                Some(lit) => {
                    let lit = lit.trim_end_matches(';');
                    set = Some(
                        syn::parse_str::<syn::LitByteStr>(lit)
                            .expect("a byte string")
                            .value(),
                    );
                }
                None => {
                    rest.push_str(line);
                    rest.push('\n');
                }
            }
        }
        (rest, set)
    };
    let mut names: Vec<&str> = files.iter().map(|f| f.0.as_str()).collect();
    names.sort_unstable();
    let mut expected: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    expected.sort();
    assert_eq!(names, expected, "case {case}: file names");
    for (name, content) in files {
        let want = std::fs::read_to_string(dir.join(name)).unwrap();
        let ((got_rest, got_set), (want_rest, want_set)) = (split(content), split(&want));
        assert!(
            got_rest == want_rest,
            "case {case}: {name} differs from its golden file outside the descriptor set"
        );
        match (got_set, want_set) {
            (Some(a), Some(b)) => {
                let (got, want) = (project_files(&a), project_files(&b));
                let names = |files: &[(String, Vec<u8>)]| -> Vec<String> {
                    files.iter().map(|f| f.0.clone()).collect()
                };
                assert_eq!(
                    names(&got),
                    names(&want),
                    "case {case}: {name}: embedded files"
                );
                for ((file, got), (_, want)) in got.iter().zip(&want) {
                    assert!(
                        got == want,
                        "case {case}: {name}: the embedded descriptor of {file} differs"
                    );
                }
            }
            (None, None) => {}
            _ => panic!("case {case}: {name}: only one side embeds a descriptor set"),
        }
    }
}

/// The plugin binary Cargo built for these tests.
pub fn plugin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_protoc-gen-rmicro"))
}

/// Runs the real `protoc` with the plugin. Panics with an install hint when protoc is missing.
pub fn protoc(args: &[&str]) -> Output {
    let mut cmd = Command::new("protoc");
    cmd.arg(format!("--plugin=protoc-gen-rmicro={}", plugin().display()));
    for include in includes() {
        cmd.arg(format!("-I{}", include.display()));
    }
    cmd.args(args);
    cmd.output().unwrap_or_else(|e| {
        panic!("could not run protoc ({e}); install it: apt-get install protobuf-compiler (scripts/test.sh does)")
    })
}

/// Runs the plugin binary with `stdin` and `args`.
pub fn run_plugin_binary(stdin: &[u8], args: &[&str]) -> Output {
    run_plugin_binary_in(stdin, args, &std::env::temp_dir(), None)
}

/// Runs the plugin binary in `dir`, optionally with `CARGO_HOME` set.
pub fn run_plugin_binary_in(
    stdin: &[u8],
    args: &[&str],
    dir: &Path,
    cargo_home: Option<&Path>,
) -> Output {
    use std::io::Write;
    let mut cmd = Command::new(plugin());
    cmd.current_dir(dir);
    if let Some(home) = cargo_home {
        cmd.env("CARGO_HOME", home);
    }
    let mut child = cmd
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

/// A scratch crate depending on the workspace's rmicro-runtime, built in a target directory
/// shared by every test that builds one (so dependencies compile once).
pub struct ScratchCrate {
    pub dir: PathBuf,
}

impl ScratchCrate {
    pub fn new(name: &str) -> ScratchCrate {
        let dir = root().join("target/scratch-crates").join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("src")).unwrap();
        let manifest = format!(
            "[package]\nname = \"{name}\"\nversion = \"0.0.0\"\nedition = \"2021\"\npublish = false\n\n\
             [dependencies]\nrmicro-runtime = {{ path = {:?} }}\n\n[workspace]\n",
            root().join("rmicro-runtime").display().to_string()
        );
        std::fs::write(dir.join("Cargo.toml"), manifest).unwrap();
        // Same dependency versions as the workspace, so nothing new is resolved or downloaded.
        std::fs::copy(root().join("Cargo.lock"), dir.join("Cargo.lock")).unwrap();
        ScratchCrate { dir }
    }

    /// Runs `cargo <args>` in the crate, offline, with the shared target directory.
    pub fn cargo(&self, args: &[&str]) -> Output {
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(args)
            .arg("--offline")
            .current_dir(&self.dir)
            .env(
                "CARGO_TARGET_DIR",
                root().join("target/scratch-crates/target"),
            )
            .env_remove("RUSTFLAGS")
            .output()
            .unwrap()
    }
}

/// Standard error of `output`, as text.
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}
