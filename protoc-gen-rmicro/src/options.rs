//! Generator options: the plugin's `--rmicro_opt=k=v,k=v` parameters and rmicro-build's setters.

use crate::Error;

/// Every parameter the plugin accepts, with the shape of its value (for `--help` and errors).
pub const PARAMETERS: &[(&str, &str, &str)] = &[
    ("api", "N", "rmicro-runtime API level to emit (default: the one the project's Cargo.lock resolves, else the newest)"),
    ("runtime_path", "PATH", "Rust path of the runtime crate (default `::rmicro_runtime`)"),
    ("include_file", "NAME", "also write NAME, a module tree that include!s every generated file"),
    ("client", "BOOL", "generate service clients (default true)"),
    ("server", "BOOL", "generate handler traits and register functions (default true)"),
    ("extern_path", ".PROTO.PATH=RUST::PATH", "use existing Rust types for a protobuf package or type (repeatable)"),
    ("btree_map", "PROTO_PATH", "BTreeMap instead of HashMap for matching map fields (`.` for all; repeatable)"),
    ("bytes", "PROTO_PATH", "bytes::Bytes instead of Vec<u8> for matching bytes fields (`.` for all; repeatable)"),
    ("type_attribute", "PROTO_PATH=ATTR", "attribute on matching messages, enums and oneofs (repeatable)"),
    ("message_attribute", "PROTO_PATH=ATTR", "attribute on matching messages (repeatable)"),
    ("enum_attribute", "PROTO_PATH=ATTR", "attribute on matching enums and oneofs (repeatable)"),
    ("field_attribute", "PROTO_PATH=ATTR", "attribute on matching fields (repeatable)"),
    ("boxed", "PROTO_PATH", "Box matching message fields (repeatable)"),
    ("disable_comments", "PROTO_PATH", "leave comments out of matching items (repeatable)"),
    ("skip_debug", "PROTO_PATH", "do not derive Debug for matching types (repeatable)"),
    ("retain_enum_prefix", "BOOL", "keep the enum name prefix on variants (default false)"),
    ("enable_type_names", "BOOL", "implement prost::Name for messages (default false)"),
];

/// What the generator emits and how. `Default` is the single list of defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// The rmicro-runtime API level to emit; `None` means the newest this generator knows.
    pub api: Option<u32>,
    /// Rust path of the runtime crate, through which generated code reaches every dependency.
    pub runtime_path: String,
    /// Name of an extra file holding a module tree that `include!`s every generated file.
    pub include_file: Option<String>,
    /// Whether to generate service clients.
    pub client: bool,
    /// Whether to generate handler traits and register functions.
    pub server: bool,
    /// `(protobuf path, Rust path)` pairs for types that exist already.
    pub extern_paths: Vec<(String, String)>,
    /// Map fields generated as `BTreeMap`.
    pub btree_map: Vec<String>,
    /// Bytes fields generated as `bytes::Bytes`.
    pub bytes: Vec<String>,
    /// `(path, attribute)` for messages, enums and oneofs.
    pub type_attributes: Vec<(String, String)>,
    /// `(path, attribute)` for messages.
    pub message_attributes: Vec<(String, String)>,
    /// `(path, attribute)` for enums and oneofs.
    pub enum_attributes: Vec<(String, String)>,
    /// `(path, attribute)` for fields.
    pub field_attributes: Vec<(String, String)>,
    /// Message fields to box.
    pub boxed: Vec<String>,
    /// Items whose comments are left out.
    pub disable_comments: Vec<String>,
    /// Types that do not derive `Debug`.
    pub skip_debug: Vec<String>,
    /// Keep enum name prefixes on variants.
    pub retain_enum_prefix: bool,
    /// Implement `prost::Name`.
    pub enable_type_names: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            api: None,
            runtime_path: "::rmicro_runtime".to_string(),
            include_file: None,
            client: true,
            server: true,
            extern_paths: Vec::new(),
            btree_map: Vec::new(),
            bytes: Vec::new(),
            type_attributes: Vec::new(),
            message_attributes: Vec::new(),
            enum_attributes: Vec::new(),
            field_attributes: Vec::new(),
            boxed: Vec::new(),
            disable_comments: Vec::new(),
            skip_debug: Vec::new(),
            retain_enum_prefix: false,
            enable_type_names: false,
        }
    }
}

impl Options {
    /// Parses protoc's parameter string: `key=value` items separated by commas.
    ///
    /// A comma inside brackets (`#[derive(Eq, Hash)]`) does not separate items, and `\,` is a
    /// literal comma anywhere. A boolean key alone (`server`) means `server=true`.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownParameter`] naming the valid keys, or [`Error::InvalidParameter`] saying
    /// what the value must look like.
    pub fn parse(parameter: &str) -> Result<Options, Error> {
        let mut options = Options::default();
        for item in split_items(parameter) {
            let item = item.trim();
            if item.is_empty() {
                continue;
            }
            let (key, value) = match item.split_once('=') {
                Some((k, v)) => (k.trim(), Some(v.trim())),
                None => (item, None),
            };
            options.set(key, value)?;
        }
        Ok(options)
    }

    /// Checks values set directly on the fields (as `rmicro_build::Config`'s setters do) the way
    /// [`Options::set`] checks a parameter's: the same refusals, with the same messages naming
    /// the parameter.
    ///
    /// # Errors
    ///
    /// As [`Options::set`].
    pub fn validate(&self) -> Result<(), Error> {
        let mut scratch = Options::default();
        scratch.set("runtime_path", Some(&self.runtime_path))?;
        if let Some(include) = &self.include_file {
            scratch.set("include_file", Some(include))?;
        }
        let pairs = [
            ("extern_path", &self.extern_paths),
            ("type_attribute", &self.type_attributes),
            ("message_attribute", &self.message_attributes),
            ("enum_attribute", &self.enum_attributes),
            ("field_attribute", &self.field_attributes),
        ];
        for (key, list) in pairs {
            for (path, value) in list {
                scratch.set(key, Some(&format!("{path}={value}")))?;
            }
        }
        let paths = [
            ("btree_map", &self.btree_map),
            ("bytes", &self.bytes),
            ("boxed", &self.boxed),
            ("disable_comments", &self.disable_comments),
            ("skip_debug", &self.skip_debug),
        ];
        for (key, list) in paths {
            for path in list {
                scratch.set(key, Some(path))?;
            }
        }
        Ok(())
    }

    /// Sets one option by its parameter name, validating the value.
    ///
    /// # Errors
    ///
    /// As [`Options::parse`].
    pub fn set(&mut self, key: &str, value: Option<&str>) -> Result<(), Error> {
        let invalid = |expected: &str| Error::InvalidParameter {
            key: key.to_string(),
            value: value.unwrap_or("").to_string(),
            expected: expected.to_string(),
        };
        let required = || value.filter(|v| !v.is_empty());
        match key {
            "api" => {
                let v =
                    required().ok_or_else(|| invalid("expected a whole number such as `api=1`"))?;
                self.api = Some(
                    v.parse()
                        .map_err(|_| invalid("expected a whole number such as `api=1`"))?,
                );
            }
            "runtime_path" => {
                let v = required()
                    .ok_or_else(|| invalid("expected a Rust path such as `::rmicro_runtime`"))?;
                syn::parse_str::<syn::Path>(v).map_err(|_| {
                    invalid("expected a Rust path such as `::rmicro_runtime` or `crate::rt`")
                })?;
                self.runtime_path = v.to_string();
            }
            "include_file" => {
                let v =
                    required().ok_or_else(|| invalid("expected a file name such as `mod.rs`"))?;
                let bad = v.starts_with('/')
                    || v.contains('\\')
                    || v.split('/')
                        .any(|part| part.is_empty() || part == "." || part == "..");
                if bad {
                    return Err(invalid("expected a relative file name inside the output directory, such as `mod.rs`"));
                }
                self.include_file = Some(v.to_string());
            }
            "client" => {
                self.client =
                    parse_bool(value).ok_or_else(|| invalid("expected `true` or `false`"))?
            }
            "server" => {
                self.server =
                    parse_bool(value).ok_or_else(|| invalid("expected `true` or `false`"))?
            }
            "retain_enum_prefix" => {
                self.retain_enum_prefix =
                    parse_bool(value).ok_or_else(|| invalid("expected `true` or `false`"))?
            }
            "enable_type_names" => {
                self.enable_type_names =
                    parse_bool(value).ok_or_else(|| invalid("expected `true` or `false`"))?
            }
            "extern_path" => {
                let expected = "expected `.proto.path=::rust::path`, for example `extern_path=.google.type=::google_types`";
                let (proto, rust) = required()
                    .and_then(|v| v.split_once('='))
                    .ok_or_else(|| invalid(expected))?;
                let (proto, rust) = (proto.trim(), rust.trim());
                if !proto.starts_with('.')
                    || proto.len() < 2
                    || syn::parse_str::<syn::Path>(rust).is_err()
                {
                    return Err(invalid(expected));
                }
                self.extern_paths
                    .push((proto.to_string(), rust.to_string()));
            }
            "btree_map" | "bytes" | "boxed" | "disable_comments" | "skip_debug" => {
                let v = required().ok_or_else(|| {
                    invalid(
                        "expected a protobuf path such as `.my.pkg.Message.field`, or `.` for all",
                    )
                })?;
                let list = match key {
                    "btree_map" => &mut self.btree_map,
                    "bytes" => &mut self.bytes,
                    "boxed" => &mut self.boxed,
                    "disable_comments" => &mut self.disable_comments,
                    _ => &mut self.skip_debug,
                };
                list.push(v.to_string());
            }
            "type_attribute" | "message_attribute" | "enum_attribute" | "field_attribute" => {
                let expected = "expected `PROTO_PATH=#[attribute]`, for example `type_attribute=.my.pkg.Message=#[derive(Eq, Hash)]`";
                let (path, attr) = required()
                    .and_then(|v| v.split_once('='))
                    .ok_or_else(|| invalid(expected))?;
                let (path, attr) = (path.trim(), attr.trim());
                let parsed = syn::parse::Parser::parse_str(syn::Attribute::parse_outer, attr);
                if path.is_empty() || !matches!(parsed, Ok(ref attrs) if !attrs.is_empty()) {
                    return Err(invalid(expected));
                }
                let list = match key {
                    "type_attribute" => &mut self.type_attributes,
                    "message_attribute" => &mut self.message_attributes,
                    "enum_attribute" => &mut self.enum_attributes,
                    _ => &mut self.field_attributes,
                };
                list.push((path.to_string(), attr.to_string()));
            }
            _ => {
                return Err(Error::UnknownParameter {
                    key: key.to_string(),
                    valid: PARAMETERS
                        .iter()
                        .map(|p| p.0)
                        .collect::<Vec<_>>()
                        .join(", "),
                })
            }
        }
        Ok(())
    }
}

fn parse_bool(value: Option<&str>) -> Option<bool> {
    match value {
        None | Some("true") => Some(true),
        Some("false") => Some(false),
        _ => None,
    }
}

/// Splits at commas outside brackets; `\,` stays a comma.
fn split_items(parameter: &str) -> Vec<String> {
    let mut items = vec![String::new()];
    let mut depth = 0usize;
    let mut chars = parameter.chars().peekable();
    while let Some(c) = chars.next() {
        let current = items.last_mut().expect("items is never empty");
        match c {
            '\\' if chars.peek() == Some(&',') => {
                current.push(',');
                chars.next();
            }
            '(' | '[' | '{' => {
                depth += 1;
                current.push(c);
            }
            ')' | ']' | '}' => {
                depth = depth.saturating_sub(1);
                current.push(c);
            }
            ',' if depth == 0 => items.push(String::new()),
            _ => current.push(c),
        }
    }
    items
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_for_empty_parameter() {
        assert_eq!(Options::parse("").unwrap(), Options::default());
    }

    #[test]
    fn parses_every_kind_of_value() {
        let o = Options::parse(
            "api=1,runtime_path=crate::rt,include_file=mod.rs,client=false,server,\
             extern_path=.google.type=::gtypes,btree_map=.,bytes=.a.B.c,\
             type_attribute=.a.B=#[derive(Eq, Hash)],field_attribute=.a.B.c=#[serde(default)]",
        )
        .unwrap();
        assert_eq!(o.api, Some(1));
        assert_eq!(o.runtime_path, "crate::rt");
        assert_eq!(o.include_file.as_deref(), Some("mod.rs"));
        assert!(!o.client && o.server);
        assert_eq!(
            o.extern_paths,
            vec![(".google.type".into(), "::gtypes".into())]
        );
        assert_eq!(o.btree_map, vec!["."]);
        assert_eq!(
            o.type_attributes,
            vec![(".a.B".into(), "#[derive(Eq, Hash)]".into())]
        );
        assert_eq!(
            o.field_attributes,
            vec![(".a.B.c".into(), "#[serde(default)]".into())]
        );
    }

    #[test]
    fn escaped_comma_is_literal() {
        let o = Options::parse(r#"type_attribute=.a.B=#[doc = "x\, y"]"#).unwrap();
        assert_eq!(o.type_attributes[0].1, r#"#[doc = "x, y"]"#);
    }

    #[test]
    fn unknown_key_lists_valid_keys() {
        let err = Options::parse("api=1,frobnicate=yes")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("unknown parameter `frobnicate`; valid parameters are: api, runtime_path, include_file, client, server, extern_path,"), "{err}");
    }

    #[test]
    fn malformed_values_say_what_is_expected() {
        let cases = [
            ("api=one", "parameter `api` has an invalid value `one`: expected a whole number such as `api=1`"),
            ("client=maybe", "parameter `client` has an invalid value `maybe`: expected `true` or `false`"),
            ("runtime_path=not a path", "parameter `runtime_path` has an invalid value `not a path`: expected a Rust path"),
            ("extern_path=google=::x", "parameter `extern_path` has an invalid value `google=::x`: expected `.proto.path=::rust::path`"),
            ("type_attribute=.a.B=derive(Eq)", "parameter `type_attribute` has an invalid value `.a.B=derive(Eq)`: expected `PROTO_PATH=#[attribute]`"),
            ("include_file=../mod.rs", "parameter `include_file` has an invalid value `../mod.rs`: expected a relative file name"),
        ];
        for (input, want) in cases {
            let err = Options::parse(input).unwrap_err().to_string();
            assert!(err.starts_with(want), "{input}: {err}");
        }
    }
}
