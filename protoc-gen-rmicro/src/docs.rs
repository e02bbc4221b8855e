//! Rustdoc hygiene for comments copied from `.proto` files.
//!
//! prost-build (with its markdown clean-up) fences indented code as `text` and marks fenced Rust
//! as `compile_fail`. A `compile_fail` block whose code happens to compile is a failing doc test,
//! so rmicro turns those fences into `ignore`: shown as Rust, never run.

/// Rewrites one doc-comment line (without its `///`) if it opens a `compile_fail` fence.
pub(crate) fn fence_fix(line: &str) -> String {
    match line.trim_start().strip_prefix("```compile_fail") {
        Some(rest) if rest.trim().is_empty() || rest.starts_with(',') => {
            let indent = &line[..line.len() - line.trim_start().len()];
            format!("{indent}```ignore{rest}")
        }
        _ => line.to_string(),
    }
}

/// Applies [`fence_fix`] to every `///` line of a formatted file.
#[cfg(test)]
pub(crate) fn fix_file(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    fix_into(&mut out, text);
    out
}

/// [`fix_file`], appending to `out`.
pub(crate) fn fix_into(out: &mut String, text: &str) {
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_start();
        match trimmed.strip_prefix("///") {
            Some(doc) if doc.trim_start().starts_with("```compile_fail") => {
                let indent = &line[..line.len() - trimmed.len()];
                out.push_str(indent);
                out.push_str("///");
                out.push_str(&fence_fix(doc.trim_end_matches('\n')));
                out.push('\n');
            }
            _ => out.push_str(line),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compile_fail_fences_become_ignore() {
        assert_eq!(fence_fix(" ```compile_fail"), " ```ignore");
        assert_eq!(fence_fix(" ```text"), " ```text");
        assert_eq!(
            fix_file("    /// ```compile_fail\n    /// let x = 1;\n    /// ```\n"),
            "    /// ```ignore\n    /// let x = 1;\n    /// ```\n"
        );
    }
}
