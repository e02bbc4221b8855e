//! Rustdoc hygiene for comments copied from `.proto` files.
//!
//! prost-build (with its markdown clean-up) fences indented code as `text`, marks fenced Rust as
//! `compile_fail`, and puts `text,` before any other info string (`rust,edition2021` becomes
//! `text,rust,edition2021`). Comments in a `.proto` file are no doc tests of the user's crate:
//! a `compile_fail` block whose code compiles fails, and rustdoc still runs a block tagged both
//! `text` and `rust` when an edition is named. rmicro turns every fence that names Rust into
//! `ignore`: shown as Rust, never run.

/// Rewrites one doc-comment line (without its `///`) if it opens a fence that rustdoc would run
/// as Rust. The fence may sit in a block quote (`> ```rust`, also nested): rustdoc runs those too.
pub(crate) fn fence_fix(line: &str) -> String {
    let Some((lead, info)) = fence_info(line) else {
        return line.to_string();
    };
    let mut tokens = info
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|t| !t.is_empty());
    let first = info.split(',').next().unwrap_or("").trim();
    if first == "compile_fail" || tokens.any(|t| t == "rust") {
        format!("{lead}```ignore")
    } else {
        line.to_string()
    }
}

/// Splits a line that opens or closes a backtick fence into what comes before the fence
/// (indentation and block-quote markers) and the fence's info string.
fn fence_info(line: &str) -> Option<(&str, &str)> {
    let mut rest = line.trim_start();
    while let Some(quoted) = rest.strip_prefix('>') {
        rest = quoted.trim_start();
    }
    let info = rest.strip_prefix("```")?;
    Some((&line[..line.len() - rest.len()], info))
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
            Some(doc) if fence_info(doc).is_some() => {
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
    fn fences_that_name_rust_become_ignore() {
        assert_eq!(fence_fix(" ```compile_fail"), " ```ignore");
        assert_eq!(fence_fix(" ```compile_fail,E0308"), " ```ignore");
        assert_eq!(fence_fix(" ```text,rust,edition2021"), " ```ignore");
        assert_eq!(fence_fix(" ```text,rust,no_run"), " ```ignore");
        assert_eq!(fence_fix(" ```text"), " ```text");
        assert_eq!(fence_fix(" ```text,"), " ```text,");
        assert_eq!(fence_fix(" ```text,should_panic"), " ```text,should_panic");
        assert_eq!(fence_fix(" ```text,trusty"), " ```text,trusty");
        assert_eq!(fence_fix(" ```"), " ```");
        assert_eq!(fence_fix(" no fence"), " no fence");
        assert_eq!(fence_fix(" > ```compile_fail"), " > ```ignore");
        assert_eq!(fence_fix(" > > ```text,rust"), " > > ```ignore");
        assert_eq!(fence_fix(" >```compile_fail"), " >```ignore");
        assert_eq!(fence_fix(" > ```text"), " > ```text");
        assert_eq!(fence_fix(" > quoted"), " > quoted");
        assert_eq!(
            fix_file("    /// ```compile_fail\n    /// let x = 1;\n    /// ```\n"),
            "    /// ```ignore\n    /// let x = 1;\n    /// ```\n"
        );
        assert_eq!(
            fix_file("/// ```text,rust,edition2021\n/// x\n/// ```\n"),
            "/// ```ignore\n/// x\n/// ```\n"
        );
    }
}
