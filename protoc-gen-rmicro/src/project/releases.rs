//! The rmicro-runtime releases this crate knows, with the API range each accepts, and the
//! release line (`major.minor`) of a version.

use crate::{MAX_API, MIN_API, VERSION};

/// A release line `(major, minor)` of rmicro-runtime and the API range `(min, max)` it accepts.
type Release = ((u64, u64), (u32, u32));

/// Releases of rmicro-runtime before this one. This crate's own release line is added by
/// [`known_range`].
const PAST_RELEASES: &[Release] = &[];

/// The API range `(min, max)` of a runtime release, if this crate knows the release.
pub fn known_range(version: &str) -> Option<(u32, u32)> {
    let line = major_minor(version)?;
    if Some(line) == major_minor(VERSION) {
        return Some((MIN_API, MAX_API));
    }
    PAST_RELEASES
        .iter()
        .find(|(release, _)| *release == line)
        .map(|(_, range)| *range)
}

/// The release line of `version` as a Cargo requirement names it: `major.minor` (`0.1.3` →
/// `0.1`), or the version itself when it has no such form.
pub fn release_line(version: &str) -> String {
    major_minor(version).map_or_else(
        || version.to_string(),
        |(major, minor)| format!("{major}.{minor}"),
    )
}

fn major_minor(version: &str) -> Option<(u64, u64)> {
    let mut parts = version.split(['.', '-', '+']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_release_line_is_known() {
        assert_eq!(known_range(VERSION), Some((MIN_API, MAX_API)));
        assert_eq!(known_range("999.0.0"), None);
        assert_eq!(known_range("garbage"), None);
    }
}
