//! The API level: the contract between generated code and this runtime.
//!
//! Every file `protoc-gen-rmicro` writes starts with a header naming the API level it was generated
//! for, and carries a compile-time pin:
//!
//! ```
//! const _: () = ::rmicro_runtime::__codegen::require_api(1);
//! ```
//!
//! The level is bumped only when the contract with generated code changes, never for a release
//! that leaves it alone, and a runtime keeps accepting older levels for as long as it can
//! ([`MIN_API_LEVEL`]`..=`[`API_LEVEL`]). A file whose level falls outside that range does not
//! compile, and the error says which plugin to install.
//!
//! ```compile_fail
//! // A file generated for an API this runtime does not know:
//! const _: () = ::rmicro_runtime::__codegen::require_api(9999);
//! ```

include!("api_level.rs");

/// This crate's version, as Cargo knows it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The command that installs the plugin matching this runtime (set by the build script): the
/// plugin of the same checkout for a runtime built from one (a path or git dependency), else
/// the release of this version.
const PLUGIN_INSTALL: &str = env!("RMICRO_PLUGIN_INSTALL");

/// Whether generated code written for API `level` compiles against this runtime.
pub const fn accepts(level: u32) -> bool {
    level >= MIN_API_LEVEL && level <= API_LEVEL
}

/// The compile-time pin that every generated file calls in a `const` item.
///
/// Does nothing when [`accepts`]`(level)`; otherwise it panics during constant evaluation, so the
/// crate fails to compile with a message that names the API the file needs, the range this runtime
/// accepts and the commands that fix it. This function exists, with this signature, in every
/// release of the runtime.
///
/// # Panics
///
/// At compile time, when `level` is outside [`MIN_API_LEVEL`]`..=`[`API_LEVEL`].
pub const fn require_api(level: u32) {
    if accepts(level) {
        return;
    }
    let mut msg = ConstStr::new();
    msg.push("rmicro version skew: this file was generated for rmicro-runtime API ");
    msg.push_u32(level);
    msg.push(", but rmicro-runtime ");
    msg.push(VERSION);
    msg.push(" accepts API ");
    msg.push_u32(MIN_API_LEVEL);
    msg.push("..=");
    msg.push_u32(API_LEVEL);
    msg.push(". Fix it one of two ways: (1) regenerate the file with the plugin that matches this runtime: `");
    msg.push(PLUGIN_INSTALL);
    msg.push("`, then re-run protoc (files made by rmicro-build in build.rs are regenerated on the next build); or (2) change the rmicro-runtime requirement in Cargo.toml to a release that accepts API ");
    msg.push_u32(level);
    msg.push(". `rmicro check` lists every generated file and the API it needs.");
    panic!("{}", msg.as_str());
}

/// A fixed-capacity string that can be built during constant evaluation, where `format!` is not
/// available.
struct ConstStr {
    buf: [u8; 2048],
    len: usize,
}

impl ConstStr {
    const fn new() -> Self {
        ConstStr {
            buf: [0; 2048],
            len: 0,
        }
    }

    const fn push(&mut self, s: &str) {
        let bytes = s.as_bytes();
        let mut i = 0;
        while i < bytes.len() && self.len < self.buf.len() {
            self.buf[self.len] = bytes[i];
            self.len += 1;
            i += 1;
        }
    }

    const fn push_u32(&mut self, mut n: u32) {
        let mut digits = [0u8; 10];
        let mut count = 0;
        loop {
            digits[count] = b'0' + (n % 10) as u8;
            count += 1;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        while count > 0 && self.len < self.buf.len() {
            count -= 1;
            self.buf[self.len] = digits[count];
            self.len += 1;
        }
    }

    const fn as_str(&self) -> &str {
        let (used, _) = self.buf.split_at(self.len);
        match core::str::from_utf8(used) {
            Ok(s) => s,
            // Only ASCII and whole `&str`s are pushed; truncation at capacity could split a
            // multi-byte character of the version string, which Cargo versions never contain.
            Err(_) => {
                "rmicro version skew: generated code needs an API this runtime does not accept"
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_metadata_matches_the_constants() {
        let manifest = include_str!("../Cargo.toml");
        assert!(
            manifest.contains(&format!("\napi = {API_LEVEL}\n")),
            "Cargo.toml [package.metadata.rmicro] api"
        );
        assert!(
            manifest.contains(&format!("\napi-min = {MIN_API_LEVEL}\n")),
            "Cargo.toml [package.metadata.rmicro] api-min"
        );
    }

    #[test]
    fn the_links_name_carries_the_release_line() {
        // 0.x.y: one line per minor version; x.y.z from 1 on: one per major version.
        let version = env!("CARGO_PKG_VERSION");
        let mut parts = version.split('.');
        let (major, minor) = (parts.next().unwrap(), parts.next().unwrap());
        let line = if major == "0" {
            format!("0_{minor}")
        } else {
            major.to_string()
        };
        let manifest = include_str!("../Cargo.toml");
        assert!(
            manifest.contains(&format!("\nlinks = \"rmicro_runtime_{line}\"\n")),
            "Cargo.toml `links` must be \"rmicro_runtime_{line}\" for version {version}"
        );
    }

    #[test]
    fn accepts_only_its_range() {
        assert!(accepts(API_LEVEL));
        assert!(accepts(MIN_API_LEVEL));
        assert!(!accepts(API_LEVEL + 1));
        assert!(!accepts(MIN_API_LEVEL - 1));
    }

    #[test]
    fn const_str_formats_numbers() {
        let mut s = ConstStr::new();
        s.push("api ");
        s.push_u32(0);
        s.push(" ");
        s.push_u32(4_294_967_295);
        assert_eq!(s.as_str(), "api 0 4294967295");
    }

    #[test]
    fn skew_message_names_level_range_and_fix() {
        let err = std::panic::catch_unwind(|| require_api(42)).unwrap_err();
        let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(msg.starts_with("rmicro version skew: this file was generated for rmicro-runtime API 42, but rmicro-runtime "), "{msg}");
        assert!(
            msg.contains(&format!("accepts API {MIN_API_LEVEL}..={API_LEVEL}")),
            "{msg}"
        );
        // Built from this checkout: its own plugin.
        let checkout = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap()
            .join("protoc-gen-rmicro");
        // (Quoted by the build script when the path needs it for a shell.)
        let path = checkout.display().to_string();
        let plain = path
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+:@%,=".contains(c));
        let shown = if plain {
            path
        } else {
            format!("'{}'", path.replace('\'', r"'\''"))
        };
        assert_eq!(
            PLUGIN_INSTALL,
            format!("cargo install --path {shown} --locked")
        );
        assert!(
            msg.contains(&format!("`{PLUGIN_INSTALL}`, then re-run protoc")),
            "{msg}"
        );
    }
}
