//! The descriptor set generated code embeds for server reflection keeps custom options
//! (`google.api.http`, a project's own field option), and protoc and protox embed the same bytes.

mod common;

use std::path::Path;

use common::{includes, project_files, protoc, stderr};
use prost_reflect::{DescriptorPool, Value};
use protoc_gen_rmicro::{generate, Input, Options};

const PROTO: &str = r#"syntax = "proto3";

package rmicro.test.refl;

import "google/api/annotations.proto";
import "google/protobuf/descriptor.proto";

extend google.protobuf.FieldOptions {
  string note = 50001;
}

message GetRequest {
  string id = 1 [(note) = "the key"];
  string plain = 2;
}

message Thing {
  string id = 1;
}

service Things {
  rpc Get(GetRequest) returns (Thing) {
    option (google.api.http) = { get: "/v1/x/{id}" };
  }
  // protoc writes an empty options message for the braces; protox writes none.
  rpc Plain(Thing) returns (Thing) {}
}
"#;

/// The bytes of the `FILE_DESCRIPTOR_SET` constant in generated `code`.
fn embedded_set(code: &str) -> Vec<u8> {
    let line = code
        .lines()
        .find_map(|l| l.strip_prefix("pub const FILE_DESCRIPTOR_SET: &[u8] = "))
        .expect("the generated file embeds a descriptor set");
    syn::parse_str::<syn::LitByteStr>(line.trim_end_matches(';'))
        .expect("a byte string")
        .value()
}

/// The package's generated file as rmicro-build makes it: protox's encoded set, read by
/// `Input::from_descriptor_set_bytes`.
fn with_protox(dir: &Path) -> String {
    let mut paths = includes();
    paths.push(dir.to_path_buf());
    let mut compiler = protox::Compiler::new(paths).unwrap();
    compiler.include_imports(true).include_source_info(true);
    compiler.open_files(["refl.proto"]).unwrap();
    let input =
        Input::from_descriptor_set_bytes(&compiler.encode_file_descriptor_set(), ["refl.proto"])
            .unwrap();
    generate(&input, &Options::default())
        .unwrap()
        .into_iter()
        .find(|f| f.name == "rmicro.test.refl.rs")
        .expect("the package's file")
        .content
}

/// The package's generated file as the plugin makes it under the real protoc.
fn with_protoc(dir: &Path) -> String {
    let out = dir.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let output = protoc(&[
        &format!("-I{}", dir.display()),
        &format!("--rmicro_out={}", out.display()),
        "refl.proto",
    ]);
    assert!(
        output.status.success(),
        "protoc failed: {}",
        stderr(&output)
    );
    std::fs::read_to_string(out.join("rmicro.test.refl.rs")).unwrap()
}

/// Checks that `set` describes the options written in [`PROTO`], as a reflection client reads
/// them.
fn assert_options_kept(set: &[u8], front_end: &str) {
    let pool = DescriptorPool::decode(set).unwrap_or_else(|e| panic!("{front_end}: {e}"));

    let http = pool
        .get_extension_by_name("google.api.http")
        .expect("annotations.proto is in the set");
    let get = pool
        .get_service_by_name("rmicro.test.refl.Things")
        .unwrap()
        .methods()
        .find(|m| m.name() == "Get")
        .unwrap();
    let options = get.options();
    assert!(
        options.has_extension(&http),
        "{front_end}: the Get method's options lost google.api.http"
    );
    let rule = options.get_extension(&http);
    let path = rule
        .as_message()
        .and_then(|rule| rule.get_field_by_name("get"))
        .and_then(|get| get.as_str().map(str::to_string));
    assert_eq!(path.as_deref(), Some("/v1/x/{id}"), "{front_end}");

    let note = pool.get_extension_by_name("rmicro.test.refl.note").unwrap();
    let request = pool
        .get_message_by_name("rmicro.test.refl.GetRequest")
        .unwrap();
    let id = request.get_field_by_name("id").unwrap().options();
    assert!(
        id.has_extension(&note),
        "{front_end}: the id field's options lost (rmicro.test.refl.note)"
    );
    assert_eq!(
        *id.get_extension(&note),
        Value::String("the key".into()),
        "{front_end}"
    );
}

#[test]
fn embedded_descriptors_keep_custom_options_and_both_front_ends_agree() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("refl.proto"), PROTO).unwrap();

    let protox_set = embedded_set(&with_protox(dir.path()));
    let protoc_set = embedded_set(&with_protoc(dir.path()));
    assert_options_kept(&protox_set, "protox");
    assert_options_kept(&protoc_set, "protoc");

    // Each toolchain embeds its own copy of google/protobuf/descriptor.proto; every other file,
    // options and all, must be the same bytes.
    let (protox_files, protoc_files) = (project_files(&protox_set), project_files(&protoc_set));
    let names: Vec<&str> = protox_files.iter().map(|f| f.0.as_str()).collect();
    assert_eq!(
        names,
        [
            "google/api/http.proto",
            "google/api/annotations.proto",
            "refl.proto"
        ]
    );
    for ((name, protox_bytes), (_, protoc_bytes)) in protox_files.iter().zip(&protoc_files) {
        assert!(
            protox_bytes == protoc_bytes,
            "{name}: protox and protoc embed different bytes"
        );
    }
    assert_eq!(protox_files.len(), protoc_files.len());
}
