//! Checks that the Rust names prost-build and the service generator derive from protobuf names
//! are usable: no two in one Rust namespace, none empty. prost-build does not check; a clash made
//! code that does not compile, or made prost-build panic. Each refusal names the file and line.

use std::collections::{BTreeSet, HashMap, HashSet};

use prost_build::Module;
use prost_types::{DescriptorProto, EnumDescriptorProto, FileDescriptorProto};

use crate::names::{sanitize, snake, upper_camel};
use crate::Error;

/// What a run writes: the packages emitted and the protobuf paths prost-build maps to existing
/// Rust types instead of generating them.
pub(crate) struct Generated<'a> {
    /// Protobuf packages whose files are written.
    pub(crate) packages: &'a BTreeSet<&'a str>,
    /// Every extern path given to prost-build (`.proto.path`, Rust path).
    pub(crate) externs: &'a [(String, String)],
    /// Whether an include file nests the packages' modules (`acme.order` inside `acme`).
    pub(crate) include_file: bool,
}

/// The module prost-build puts a message's nested types, enums and oneofs in (`Order` →
/// `order`), when it has any.
pub(crate) fn nested_module(message: &DescriptorProto) -> Option<String> {
    // A proto3 `optional` field's synthetic oneof is an `Option`, not a oneof enum.
    let real_oneofs = message
        .field
        .iter()
        .any(|f| f.oneof_index.is_some() && !f.proto3_optional());
    let has_module = !message.enum_type.is_empty()
        || real_oneofs
        || message
            .nested_type
            .iter()
            .any(|n| !n.options.as_ref().is_some_and(|o| o.map_entry()));
    has_module.then(|| snake(message.name()))
}

/// Whether prost-build maps the fully qualified protobuf name `proto` (`.a.b.M`) to an extern
/// path (an exact entry, or one for an enclosing package or message), as its `resolve_ident` does.
pub(crate) fn is_extern(proto: &str, externs: &[(String, String)]) -> bool {
    externs.iter().any(|(path, _)| {
        proto == path
            || proto
                .strip_prefix(path.as_str())
                .is_some_and(|rest| rest.starts_with('.'))
    })
}

/// Checks that no two protobuf names become the same Rust name in one module, which prost-build
/// does not check: two types (`Foo_Bar` and `FooBar`, or a oneof and a nested message of the same
/// name) make code that does not compile, and two enum values that become the same variant make
/// prost-build panic. Each problem names the file and line of the second name and how to fix it.
///
/// Only what is generated counts: types mapped with `extern_path` are not generated, and the
/// types of packages that are only imported are not written. Enum values are checked in every
/// enum prost-build generates, written or not, since it panics on them either way.
pub(crate) fn check(
    files: &[FileDescriptorProto],
    generated: &Generated<'_>,
    retain_enum_prefix: bool,
) -> Result<(), Error> {
    packages(files, generated)?;
    if generated.include_file {
        sub_packages(files, generated)?;
    }
    let mut modules: HashMap<String, HashMap<String, Named>> = HashMap::new();
    for file in files {
        // Every type, field and value takes a site: looked up in an index of the file's source
        // locations, not by a scan of them each time (which made large files quadratic).
        let index = SiteIndex::new(file);
        let locate = |path: &[i32]| index.site(path);
        let package = file.package();
        let mut walk = Walk {
            package,
            written: generated.packages.contains(package),
            externs: generated.externs,
            locate: &locate,
            modules: &mut modules,
            retain_enum_prefix,
            proto2: file.syntax() != "proto3",
        };
        for (i, message) in file.message_type.iter().enumerate() {
            walk.message(package, "", message, &[4, i as i32])?;
        }
        for (i, e) in file.enum_type.iter().enumerate() {
            walk.enumeration(package, "", e, &[5, i as i32])?;
        }
        if walk.written {
            if let Some(part) = package.split('.').find(|part| vanishes(part)) {
                return Err(Error::Unsupported(format!(
                    "{}package `{package}`: its part `{part}` becomes an empty Rust module name \
                     ({VANISHES}); rename it",
                    locate(&[2]).prefix(),
                )));
            }
        }
        // The service generator runs on every service prost-build meets, written or not.
        for (s, service) in file.service.iter().enumerate() {
            for (m, method) in service.method.iter().enumerate() {
                let full = qualified(&qualified(package, service.name()), method.name());
                let site = locate(&[6, s as i32, 2, m as i32]);
                refuse_vanishing("method", method.name(), &full, &site)?;
            }
        }
    }
    Ok(())
}

/// Refuses two protobuf packages that become one Rust module (`foo.Bar` and `foo.bar`, or
/// `foo.barBaz` and `foo.bar_baz`) when either is written: prost-build merges their code into one
/// module, so one package's file would hold both and the other's would never be written (and on a
/// case-insensitive file system the two files are one). Packages mapped with `extern_path` are not
/// generated and do not count.
fn packages(files: &[FileDescriptorProto], generated: &Generated<'_>) -> Result<(), Error> {
    let mut modules: HashMap<Module, &FileDescriptorProto> = HashMap::new();
    for file in files {
        let package = file.package();
        if is_extern(&format!(".{package}"), generated.externs) {
            continue;
        }
        let module = Module::from_protobuf_package_name(package);
        let Some(first) = modules.get(&module) else {
            modules.insert(module, file);
            continue;
        };
        let written = |p: &str| generated.packages.contains(p);
        if first.package() == package || !(written(package) || written(first.package())) {
            continue;
        }
        let (site, first_site) = (Site::of(file, &[2]), Site::of(first, &[2]));
        return Err(Error::Unsupported(format!(
            "{}package `{package}` and package `{}`{} both become the Rust module `{}`, so their \
             code would be merged into one file; rename one of them so that the two differ by \
             more than letter case and underscores (protobuf packages are conventionally \
             lower_snake_case)",
            site.prefix(),
            first.package(),
            first_site.reference(&site),
            module.parts().collect::<Vec<_>>().join("::"),
        )));
    }
    Ok(())
}

/// Refuses a message whose nested-types module has the name the include file gives a
/// sub-package's module: with `include_file`, package `acme.order` is `mod order` inside
/// package `acme`'s module, where prost-build puts the nested types of `acme.Order` in a
/// `mod order` too. (Without an include file the user places each package's file.)
fn sub_packages(files: &[FileDescriptorProto], generated: &Generated<'_>) -> Result<(), Error> {
    // Package → (module name of a direct child in the include file → a file of the package that
    // made the child): every written package's parent packages get its parts as children.
    let mut children: HashMap<&str, HashMap<String, &FileDescriptorProto>> = HashMap::new();
    for file in files {
        let package = file.package();
        if package.is_empty()
            || !generated.packages.contains(package)
            || is_extern(&format!(".{package}"), generated.externs)
        {
            continue;
        }
        let mut end = 0usize;
        for part in package.split('.') {
            let parent = &package[..end.saturating_sub(1)];
            children
                .entry(parent)
                .or_default()
                .entry(snake(part))
                .or_insert(file);
            end += part.len() + 1;
        }
    }
    for file in files {
        let package = file.package();
        let Some(children) = children.get(package) else {
            continue;
        };
        if !generated.packages.contains(package) {
            continue;
        }
        for (i, message) in file.message_type.iter().enumerate() {
            let full = qualified(package, message.name());
            if is_extern(&format!(".{full}"), generated.externs) {
                continue;
            }
            let Some(module) = nested_module(message) else {
                continue;
            };
            let Some(sub) = children.get(&module) else {
                continue;
            };
            let site = Site::of(file, &[4, i as i32]);
            let shown = Module::from_protobuf_package_name(package)
                .parts()
                .chain([module.as_str()])
                .collect::<Vec<_>>()
                .join("::");
            let sub_site = Site::of(sub, &[2]);
            return Err(Error::Unsupported(format!(
                "{}message `{full}` has nested types, which prost puts in the Rust module \
                 `{shown}`, and the include file gives that module to package `{}`{} as well; \
                 rename the message or the package, or generate without `include_file` and \
                 include each package's file in a module of your own",
                site.prefix(),
                sub.package(),
                sub_site.reference(&site),
            )));
        }
    }
    Ok(())
}

/// Why a name [vanishes](vanishes).
const VANISHES: &str = "only underscores, which the conversion to Rust's naming style drops";

/// Whether `name` has no Rust form: prost's (heck's) case conversions drop underscores, and a name
/// of underscores only becomes empty, which is no identifier.
fn vanishes(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c == '_')
}

/// Refuses `name` (of the `kind` item `full`, declared at `site`) if it [vanishes](vanishes).
fn refuse_vanishing(kind: &str, name: &str, full: &str, site: &Site) -> Result<(), Error> {
    if vanishes(name) {
        return Err(Error::Unsupported(format!(
            "{}{kind} `{full}` becomes an empty Rust name ({VANISHES}); rename it",
            site.prefix()
        )));
    }
    Ok(())
}

/// Where a descriptor was declared.
#[derive(Debug, Clone)]
pub(crate) struct Site {
    file: String,
    /// 1-based line and column, when the request carries source info.
    position: Option<(i32, i32)>,
}

/// The start of each source location of a file, by its path.
struct SiteIndex<'a> {
    file: &'a str,
    positions: HashMap<&'a [i32], (i32, i32)>,
}

impl<'a> SiteIndex<'a> {
    fn new(file: &'a FileDescriptorProto) -> SiteIndex<'a> {
        let mut positions = HashMap::new();
        for l in file.source_code_info.iter().flat_map(|info| &info.location) {
            if l.span.len() >= 3 {
                // The first location of a path, as `Site::of` finds it.
                positions
                    .entry(l.path.as_slice())
                    .or_insert((l.span[0] + 1, l.span[1] + 1));
            }
        }
        SiteIndex {
            file: file.name(),
            positions,
        }
    }

    fn site(&self, path: &[i32]) -> Site {
        Site {
            file: self.file.to_string(),
            position: self.positions.get(path).copied(),
        }
    }
}

impl Site {
    pub(crate) fn of(file: &FileDescriptorProto, path: &[i32]) -> Site {
        let position = file
            .source_code_info
            .as_ref()
            .and_then(|info| info.location.iter().find(|l| l.path == path))
            .filter(|l| l.span.len() >= 3)
            .map(|l| (l.span[0] + 1, l.span[1] + 1));
        Site {
            file: file.name().to_string(),
            position,
        }
    }

    /// `a.proto:3:1: `, as protoc prefixes its own errors.
    pub(crate) fn prefix(&self) -> String {
        match self.position {
            Some((line, column)) => format!("{}:{line}:{column}: ", self.file),
            None => format!("{}: ", self.file),
        }
    }

    /// Where the first of two names was declared, as seen from `other`'s line.
    fn reference(&self, other: &Site) -> String {
        match (self.file == other.file, self.position) {
            (true, Some((line, _))) => format!(" (line {line})"),
            (false, Some((line, _))) => format!(" ({}:{line})", self.file),
            (false, None) => format!(" (in {})", self.file),
            (true, None) => String::new(),
        }
    }
}

/// A protobuf item that took a Rust name.
#[derive(Debug, Clone)]
struct Named {
    kind: &'static str,
    full: String,
    site: Site,
}

impl Named {
    fn new(kind: &'static str, full: &str, site: Site) -> Named {
        Named {
            kind,
            full: full.to_string(),
            site,
        }
    }
}

fn qualified(scope: &str, name: &str) -> String {
    if scope.is_empty() {
        name.to_string()
    } else {
        format!("{scope}.{name}")
    }
}

/// The names taken inside one Rust item: the fields of a struct, the variants of an enum.
struct Namespace {
    /// What the names are (`field`, `variant`).
    what: &'static str,
    /// The Rust item, as shown in messages.
    item: String,
    /// Said after the item, where the names are not the protobuf names made Rust.
    why: &'static str,
    taken: HashMap<String, Named>,
}

impl Namespace {
    fn new(what: &'static str, item: String) -> Namespace {
        Namespace {
            what,
            item,
            why: "",
            taken: HashMap::new(),
        }
    }

    /// Takes `rust` for `named`, refusing it when an earlier name took it.
    fn claim(&mut self, rust: &str, named: Named) -> Result<(), Error> {
        if let Some(first) = self.taken.get(rust) {
            return Err(Error::Unsupported(format!(
                "{}{} `{}` and {} `{}`{} both become the Rust {} `{rust}` of `{}`{}, which does \
                 not compile; rename one of them",
                named.site.prefix(),
                named.kind,
                named.full,
                first.kind,
                first.full,
                first.site.reference(&named.site),
                self.what,
                self.item,
                self.why,
            )));
        }
        self.taken.insert(rust.to_string(), named);
        Ok(())
    }
}

/// Takes `rust` in the module `module` (Rust path inside `package`'s module) for `named`.
fn claim(
    modules: &mut HashMap<String, HashMap<String, Named>>,
    package: &str,
    module: &str,
    rust: &str,
    named: Named,
) -> Result<(), Error> {
    let key = format!("{package}\0{module}");
    let taken = modules.entry(key).or_default();
    match taken.get(rust) {
        Some(first) => {
            let shown = if module.is_empty() {
                rust.to_string()
            } else {
                format!("{module}::{rust}")
            };
            Err(Error::Unsupported(format!(
                "{}{} `{}` and {} `{}`{} both become the Rust type `{shown}`, which does not \
                 compile; rename one of them",
                named.site.prefix(),
                named.kind,
                named.full,
                first.kind,
                first.full,
                first.site.reference(&named.site),
            )))
        }
        None => {
            taken.insert(rust.to_string(), named);
            Ok(())
        }
    }
}

/// The walk over one file's types.
struct Walk<'a, F> {
    package: &'a str,
    /// Whether the package's file is written by this run.
    written: bool,
    externs: &'a [(String, String)],
    locate: &'a F,
    modules: &'a mut HashMap<String, HashMap<String, Named>>,
    retain_enum_prefix: bool,
    /// Whether the file is proto2, whose `optional` scalars get getters from prost's derive.
    proto2: bool,
}

impl<F: Fn(&[i32]) -> Site> Walk<'_, F> {
    /// Whether prost-build generates the type `full` (protobuf name without the leading dot).
    fn generates(&self, full: &str) -> bool {
        !is_extern(&format!(".{full}"), self.externs)
    }

    /// Takes `rust` in `module` for `named`, when the package is written.
    fn claim(&mut self, module: &str, rust: &str, named: Named) -> Result<(), Error> {
        if !self.written {
            return Ok(());
        }
        claim(self.modules, self.package, module, rust, named)
    }

    fn message(
        &mut self,
        scope: &str,
        module: &str,
        message: &DescriptorProto,
        path: &[i32],
    ) -> Result<(), Error> {
        let full = qualified(scope, message.name());
        if !self.generates(&full) {
            return Ok(());
        }
        let site = (self.locate)(path);
        if self.written {
            refuse_vanishing("message", message.name(), &full, &site)?;
            for (i, field) in message.field.iter().enumerate() {
                let mut p = path.to_vec();
                p.extend([2, i as i32]);
                let name = qualified(&full, field.name());
                refuse_vanishing("field", field.name(), &name, &(self.locate)(&p))?;
            }
        }
        let named = Named::new("message", &full, site);
        self.claim(module, &upper_camel(message.name()), named)?;
        if self.written {
            self.fields(&full, module, message, path)?;
        }
        let inner = if module.is_empty() {
            snake(message.name())
        } else {
            format!("{module}::{}", snake(message.name()))
        };
        let child = |kind: i32, i: usize| {
            let mut p = path.to_vec();
            p.extend([kind, i as i32]);
            p
        };
        for (i, nested) in message.nested_type.iter().enumerate() {
            if nested.options.as_ref().is_some_and(|o| o.map_entry()) {
                continue;
            }
            self.message(&full, &inner, nested, &child(3, i))?;
        }
        for (i, e) in message.enum_type.iter().enumerate() {
            self.enumeration(&full, &inner, e, &child(4, i))?;
        }
        for (i, oneof) in message.oneof_decl.iter().enumerate() {
            // proto3 `optional` fields are synthetic oneofs prost-build does not generate.
            let synthetic = message
                .field
                .iter()
                .any(|f| f.oneof_index == Some(i as i32) && f.proto3_optional());
            if synthetic {
                continue;
            }
            let p = child(8, i);
            let name = qualified(&full, oneof.name());
            if self.written {
                refuse_vanishing("oneof", oneof.name(), &name, &(self.locate)(&p))?;
            }
            let named = Named::new("oneof", &name, (self.locate)(&p));
            self.claim(&inner, &oneof_type(message, oneof.name()), named)?;
        }
        Ok(())
    }

    /// Refuses two fields (or a field and a oneof) of `message` that become the same Rust field,
    /// and two fields of one oneof that become the same variant of its Rust enum.
    fn fields(
        &self,
        full: &str,
        module: &str,
        message: &DescriptorProto,
        path: &[i32],
    ) -> Result<(), Error> {
        let at = |kind: i32, i: usize| {
            let mut p = path.to_vec();
            p.extend([kind, i as i32]);
            (self.locate)(&p)
        };
        let rust_type = if module.is_empty() {
            upper_camel(message.name())
        } else {
            format!("{module}::{}", upper_camel(message.name()))
        };
        let inner = if module.is_empty() {
            snake(message.name())
        } else {
            format!("{module}::{}", snake(message.name()))
        };
        // proto3 `optional` fields sit in synthetic oneofs but are plain fields in Rust.
        let real_oneof =
            |f: &prost_types::FieldDescriptorProto| f.oneof_index.filter(|_| !f.proto3_optional());
        let mut fields = Namespace::new("field", rust_type.clone());
        let mut methods = Namespace::new("method", rust_type);
        methods.why = " (prost's accessors of the fields)";
        for (i, field) in message.field.iter().enumerate() {
            if real_oneof(field).is_none() {
                let named = Named::new("field", &qualified(full, field.name()), at(2, i));
                fields.claim(&snake(field.name()), named.clone())?;
                for method in accessors(message, field, self.proto2) {
                    methods.claim(&method, named.clone())?;
                }
            }
        }
        for (o, oneof) in message.oneof_decl.iter().enumerate() {
            let members = message
                .field
                .iter()
                .enumerate()
                .filter(|(_, f)| real_oneof(f) == Some(o as i32));
            let mut variants = Namespace::new(
                "variant",
                format!("{inner}::{}", oneof_type(message, oneof.name())),
            );
            let mut any = false;
            for (i, field) in members {
                any = true;
                let named = Named::new("field", &qualified(full, field.name()), at(2, i));
                variants.claim(&upper_camel(field.name()), named)?;
            }
            if any {
                let named = Named::new("oneof", &qualified(full, oneof.name()), at(8, o));
                fields.claim(&snake(oneof.name()), named)?;
            }
        }
        Ok(())
    }

    fn enumeration(
        &mut self,
        scope: &str,
        module: &str,
        e: &EnumDescriptorProto,
        path: &[i32],
    ) -> Result<(), Error> {
        let full = qualified(scope, e.name());
        if !self.generates(&full) {
            return Ok(());
        }
        let site = (self.locate)(path);
        if self.written {
            refuse_vanishing("enum", e.name(), &full, &site)?;
        }
        let named = Named::new("enum", &full, site);
        self.claim(module, &upper_camel(e.name()), named)?;
        enum_values(e, &full, path, self.locate, self.retain_enum_prefix)
    }
}

/// The inherent methods prost's derive gives `message` for `field` (not in a oneof): a getter
/// (the field's Rust name) and `set_` for a singular enum, a getter and `push_` for a repeated
/// one, a getter for an optional scalar (proto2's `optional`, proto3's `optional`), and `get_` and
/// `insert_` for a map of enums (none when the field's name is a keyword: see
/// `prepare::keyword_enum_maps`).
fn accessors(
    message: &DescriptorProto,
    field: &prost_types::FieldDescriptorProto,
    proto2: bool,
) -> Vec<String> {
    use prost_types::field_descriptor_proto::{Label, Type};
    let rust = snake(field.name());
    let bare = rust.strip_prefix("r#").unwrap_or(&rust).to_string();
    let repeated = field.label() == Label::Repeated;
    match field.r#type() {
        Type::Enum if repeated => vec![bare.clone(), format!("push_{bare}")],
        Type::Enum => vec![bare.clone(), format!("set_{bare}")],
        Type::Message if repeated => {
            let entry = field.type_name().rsplit('.').next().unwrap_or_default();
            let enum_map = message.nested_type.iter().any(|n| {
                n.name() == entry
                    && n.options.as_ref().is_some_and(|o| o.map_entry())
                    && n.field
                        .iter()
                        .any(|v| v.number() == 2 && v.r#type() == Type::Enum)
            });
            if enum_map && !rust.starts_with("r#") {
                vec![format!("get_{bare}"), format!("insert_{bare}")]
            } else {
                Vec::new()
            }
        }
        Type::Message | Type::Group => Vec::new(),
        _ if field.proto3_optional() || (proto2 && field.label() == Label::Optional) => {
            vec![bare]
        }
        _ => Vec::new(),
    }
}

/// The Rust type prost-build gives oneof `name` of `message`: its name in UpperCamelCase, with
/// `OneOf` after it when a type nested in the message has that name already (prost-build's own
/// way out of the clash, which real protos rely on: googleapis has oneofs named like a
/// message beside them).
fn oneof_type(message: &DescriptorProto, name: &str) -> String {
    let rust = upper_camel(name);
    let mut nested = message
        .nested_type
        .iter()
        .map(DescriptorProto::name)
        .chain(message.enum_type.iter().map(EnumDescriptorProto::name));
    if nested.any(|n| upper_camel(n) == rust) {
        format!("{rust}OneOf")
    } else {
        rust
    }
}

/// Refuses two values of one enum that become the same Rust variant (prost-build panics on them).
fn enum_values(
    e: &EnumDescriptorProto,
    full: &str,
    path: &[i32],
    locate: &impl Fn(&[i32]) -> Site,
    retain_enum_prefix: bool,
) -> Result<(), Error> {
    let prefix = upper_camel(e.name());
    let mut numbers = HashSet::new();
    let mut variants: HashMap<String, (&str, Site)> = HashMap::new();
    for (i, value) in e.value.iter().enumerate() {
        // Aliases (same number) are skipped by prost-build, as here.
        if !numbers.insert(value.number()) {
            continue;
        }
        let mut p = path.to_vec();
        p.extend([2, i as i32]);
        let site = locate(&p);
        // Checked in every enum prost-build generates: two such values would make it panic.
        refuse_vanishing(
            "enum value",
            value.name(),
            &qualified(full, value.name()),
            &site,
        )?;
        let mut variant = upper_camel(value.name());
        if !retain_enum_prefix {
            variant = strip_enum_prefix(&prefix, &variant);
        }
        if let Some((first, first_site)) = variants.get(&variant) {
            let fix = if retain_enum_prefix {
                "rename one of them".to_string()
            } else {
                "rename one of them, or keep the prefixes with the parameter \
                 `retain_enum_prefix=true`"
                    .to_string()
            };
            let why = if retain_enum_prefix {
                ""
            } else {
                " (prost strips the enum's name from its values)"
            };
            return Err(Error::Unsupported(format!(
                "{}enum `{full}`: the values `{first}`{} and `{}` both become the Rust variant \
                 `{variant}`{why}; {fix}",
                site.prefix(),
                first_site.reference(&site),
                value.name(),
            )));
        }
        variants.insert(variant, (value.name(), site));
    }
    Ok(())
}

/// prost-build's `strip_enum_prefix`: `ColorRed` in enum `Color` becomes `Red`, but `Foobar`
/// stays `Foobar` and a digit after the prefix keeps it.
fn strip_enum_prefix(prefix: &str, name: &str) -> String {
    let stripped = name.strip_prefix(prefix).unwrap_or(name);
    if stripped.starts_with(char::is_uppercase) {
        sanitize(stripped)
    } else {
        sanitize(name)
    }
}
