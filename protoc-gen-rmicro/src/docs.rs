//! Rustdoc hygiene for comments copied from `.proto` files.
//!
//! prost-build (with its markdown clean-up) fences indented code as `text`, marks fenced Rust as
//! `compile_fail`, and puts `text,` before any other info string (`rust,edition2021` becomes
//! `text,rust,edition2021`). Comments in a `.proto` file are no doc tests of the user's crate:
//! a `compile_fail` block whose code compiles fails, and rustdoc still runs a block tagged both
//! `text` and `rust` when an edition is named. rmicro turns every fence that names Rust into
//! `ignore`: shown as Rust, never run.
//!
//! rustc also refuses, in any comment, the codepoints that change the direction of text
//! (`text_direction_codepoint_in_comment`, deny by default), which right-to-left text copied
//! into a `.proto` comment brings along: they are left out of doc comments (the text they framed
//! stays).

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

/// The codepoints rustc refuses in comments: embeddings, overrides and isolates, which change
/// the direction of the text around them.
fn changes_direction(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
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
///
/// Fences are followed through each doc comment: only a line that opens one is rewritten. A bare
/// opening fence (no info string) becomes `text`: prost-build opens every block it writes with an
/// info string and always fences with three backticks, so a block whose text holds a fence line
/// of its own (an indented example quoting Markdown) ends early, and what follows its inner
/// fence would otherwise open a Rust block that runs as a doc test.
pub(crate) fn fix_into(out: &mut String, text: &str) {
    let mut in_fence = false;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_start();
        let Some(doc) = trimmed.strip_prefix("///") else {
            in_fence = false;
            out.push_str(line);
            continue;
        };
        let doc = doc.trim_end_matches('\n');
        let kept;
        let stripped = doc.contains(changes_direction);
        let doc = if stripped {
            kept = doc.replace(changes_direction, "");
            kept.as_str()
        } else {
            doc
        };
        let fixed = match fence_info(doc) {
            // Closing (a closing fence has no info string, only backticks; a fence line with
            // one is text). A line that names Rust is made `ignore` wherever it stands, should
            // this reading of the comment differ from rustdoc's.
            Some((_, info)) if in_fence => {
                in_fence = !info.trim().trim_start_matches('`').is_empty();
                let fixed = fence_fix(doc);
                (stripped || fixed != doc).then_some(fixed)
            }
            Some((lead, info)) => {
                in_fence = true;
                if info.trim().trim_start_matches('`').is_empty() {
                    Some(format!("{lead}```text"))
                } else {
                    Some(fence_fix(doc))
                }
            }
            None => stripped.then(|| doc.to_string()),
        };
        match fixed {
            Some(fixed) => {
                out.push_str(&line[..line.len() - trimmed.len()]);
                out.push_str("///");
                out.push_str(&fixed);
                out.push('\n');
            }
            None => out.push_str(line),
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

    #[test]
    fn codepoints_that_change_text_direction_are_left_out() {
        assert_eq!(
            fix_file("    /// a \u{202E}cba\u{202C} \u{2067}x\u{2069}\n"),
            "    /// a cba x\n"
        );
        // In a fenced block too, and with the block still followed.
        assert_eq!(
            fix_file("/// ```\n/// \u{202B}y\n/// ```\u{2066}\n/// z\n"),
            "/// ```text\n/// y\n/// ```\n/// z\n"
        );
        // Other comments and code are left as they are.
        assert_eq!(
            fix_file("// \u{202E}\nstruct A;\n"),
            "// \u{202E}\nstruct A;\n"
        );
        assert_eq!(
            fix_file("/// right\u{200F}mark\n"),
            "/// right\u{200F}mark\n"
        );
    }

    #[test]
    fn a_fence_inside_a_text_block_opens_no_rust_block() {
        // prost-build's rendering of an indented example that quotes a fence: its text block
        // closes at the inner fence, and `bar baz` would be a Rust doc test.
        let prost = "/// ```text\n/// ```\n/// foo\n/// ```\n/// bar baz\n/// ```\n";
        assert_eq!(
            fix_file(prost),
            "/// ```text\n/// ```\n/// foo\n/// ```text\n/// bar baz\n/// ```\n"
        );
        // Inside a block, a fence line with an info string is text, not a new block (one that
        // names Rust is still made `ignore`, in case rustdoc reads the block otherwise).
        assert_eq!(
            fix_file("/// ```text\n/// ```rust\n/// ```\n/// ```compile_fail\n/// x\n/// ```\n"),
            "/// ```text\n/// ```ignore\n/// ```\n/// ```ignore\n/// x\n/// ```\n"
        );
        // Four backticks close a block too.
        assert_eq!(
            fix_file("/// ```text\n/// ````\n/// ```\n/// x\n/// ```\n"),
            "/// ```text\n/// ````\n/// ```text\n/// x\n/// ```\n"
        );
        // Each doc comment starts outside any block.
        assert_eq!(
            fix_file("/// ```text\nstruct A;\n/// ```\n/// x\n/// ```\n"),
            "/// ```text\nstruct A;\n/// ```text\n/// x\n/// ```\n"
        );
    }
}
