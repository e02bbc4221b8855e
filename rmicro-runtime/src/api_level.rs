// The API level, shared by the library (src/api.rs) and the build script (build.rs).

/// The API level this runtime implements: the newest level generated code may be written for.
pub const API_LEVEL: u32 = 1;

/// The oldest API level this runtime still accepts.
pub const MIN_API_LEVEL: u32 = 1;
