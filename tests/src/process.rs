//! Child processes in tests: the example and test binaries print `listening on ADDR` once serving.

use std::io::{BufRead, BufReader};
use std::process::Child;

/// Reads the child's first stdout line, `listening on ADDR`, and returns `ADDR`.
///
/// # Panics
///
/// When the child's stdout was not piped or its first line is something else.
pub fn listening_address(child: &mut Child) -> String {
    let stdout = child.stdout.take().expect("the child's stdout is piped");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read the child's first line");
    line.trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("expected `listening on ADDR`, the child printed {line:?}"))
        .to_string()
}
