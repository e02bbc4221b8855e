//! `google.api.http` path templates (`/v1/{name=shelves/*}/books/{id}:verb`): parsing, matching
//! a request path and percent-decoding what they capture.

/// A path template: `/v1/{name=shelves/*}/books/{id}:verb`.
#[derive(Debug, Clone)]
pub(super) struct Template {
    segments: Vec<Segment>,
    verb: Option<String>,
}

#[derive(Debug, Clone)]
enum Segment {
    Literal(String),
    /// A variable `field` over pattern segments (`*`, `**` or literals); `{field}` is `{field=*}`.
    Variable {
        field: String,
        pattern: Vec<String>,
    },
    /// A bare `*` or `**`.
    Wildcard(bool),
}

impl Template {
    pub(super) fn parse(template: &str) -> Option<Template> {
        let path = template.strip_prefix('/')?;
        let (path, verb) = match path.rfind(':') {
            Some(i) if !path[i..].contains('/') && !path[i..].contains('}') => {
                (&path[..i], Some(path[i + 1..].to_string()))
            }
            _ => (path, None),
        };
        let mut segments = Vec::new();
        let mut rest = path;
        while !rest.is_empty() {
            if let Some(inner) = rest.strip_prefix('{') {
                let end = inner.find('}')?;
                let var = &inner[..end];
                let (field, pattern) = match var.split_once('=') {
                    Some((f, p)) => (f, p.split('/').map(str::to_string).collect()),
                    None => (var, vec!["*".to_string()]),
                };
                segments.push(Segment::Variable {
                    field: field.trim().to_string(),
                    pattern,
                });
                rest = inner[end + 1..]
                    .strip_prefix('/')
                    .unwrap_or(&inner[end + 1..]);
            } else {
                let (seg, next) = rest.split_once('/').unwrap_or((rest, ""));
                segments.push(match seg {
                    "*" => Segment::Wildcard(false),
                    "**" => Segment::Wildcard(true),
                    _ => Segment::Literal(seg.to_string()),
                });
                rest = next;
            }
        }
        Some(Template { segments, verb })
    }

    /// How specific the template is, to try the most specific first: more literal segments
    /// (inside variables too), then a custom verb before none, then no `**` before one.
    pub(super) fn specificity(&self) -> (usize, bool, bool) {
        let mut literals = 0;
        let mut deep = false;
        for segment in &self.segments {
            match segment {
                Segment::Literal(_) => literals += 1,
                Segment::Wildcard(d) => deep |= d,
                Segment::Variable { pattern, .. } => {
                    for p in pattern {
                        match p.as_str() {
                            "*" => {}
                            "**" => deep = true,
                            _ => literals += 1,
                        }
                    }
                }
            }
        }
        (literals, self.verb.is_some(), !deep)
    }

    /// The captured variables when `path` matches: each field, its value as it is in `path`
    /// (still percent-encoded: the template is matched on the raw segments) and how to decode it.
    pub(super) fn matches(&self, path: &str) -> Option<Vec<(String, String, Decode)>> {
        let path = path.strip_prefix('/')?;
        let path = match &self.verb {
            Some(verb) => path.strip_suffix(verb.as_str())?.strip_suffix(':')?,
            None => path,
        };
        let parts: Vec<&str> = if path.is_empty() {
            Vec::new()
        } else {
            path.split('/').collect()
        };
        let mut captures = Vec::new();
        let mut i = 0;
        // Where a `**` (at most one per template) stops: it takes the segments the rest of the
        // template does not need, none or more. The rest follows the variable's `k`-th pattern
        // element, or segment `n` as a whole.
        let deep_end = |i: usize, n: usize, k: Option<usize>| -> Option<usize> {
            let mut after: usize = self.segments[n + 1..]
                .iter()
                .map(|s| match s {
                    Segment::Variable { pattern, .. } => pattern.len(),
                    _ => 1,
                })
                .sum();
            if let (Some(k), Segment::Variable { pattern, .. }) = (k, &self.segments[n]) {
                after += pattern.len() - k - 1;
            }
            parts.len().checked_sub(after).filter(|end| *end >= i)
        };
        for (n, segment) in self.segments.iter().enumerate() {
            match segment {
                Segment::Literal(lit) => {
                    if parts.get(i) != Some(&lit.as_str()) {
                        return None;
                    }
                    i += 1;
                }
                Segment::Wildcard(true) => i = deep_end(i, n, None)?,
                Segment::Wildcard(false) => {
                    parts.get(i).filter(|p| !p.is_empty())?;
                    i += 1;
                }
                Segment::Variable { field, pattern } => {
                    let start = i;
                    for (k, p) in pattern.iter().enumerate() {
                        match p.as_str() {
                            "**" => i = deep_end(i, n, Some(k))?,
                            "*" => {
                                parts.get(i).filter(|p| !p.is_empty())?;
                                i += 1;
                            }
                            lit => {
                                if parts.get(i) != Some(&lit) {
                                    return None;
                                }
                                i += 1;
                            }
                        }
                    }
                    let mode = if pattern.len() > 1 || pattern.iter().any(|p| p == "**") {
                        Decode::Segments
                    } else {
                        Decode::Segment
                    };
                    captures.push((field.clone(), parts[start..i].join("/"), mode));
                }
            }
        }
        (i == parts.len()).then_some(captures)
    }
}

/// How a piece of a request target is percent-decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Decode {
    /// A query string's key or value: `+` is a space.
    Query,
    /// A single-segment path variable (`{id}`): every escape decoded; `+` is a plus.
    Segment,
    /// A multi-segment path variable (`{name=shelves/*}`, `{path=**}`): as `Segment`, except
    /// that `%2F` stays encoded, so a `/` inside a segment stays told apart from the separators
    /// (http.proto's rule for reserved expansion).
    Segments,
}

/// Percent-decodes `text` byte by byte as `mode` says. A `%` not followed by two hex digits, or
/// bytes that are not UTF-8 once decoded, are an error that says which.
pub(super) fn percent_decode(text: &str, mode: Decode) -> Result<String, String> {
    let plus_is_space = mode == Decode::Query;
    let bytes = text.as_bytes();
    if !bytes
        .iter()
        .any(|&b| b == b'%' || (plus_is_space && b == b'+'))
    {
        return Ok(text.to_string());
    }
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let (Some(hi), Some(lo)) = (
                    bytes.get(i + 1).copied().and_then(hex),
                    bytes.get(i + 2).copied().and_then(hex),
                ) else {
                    return Err(format!(
                        "`{text}` has a `%` not followed by two hex digits; write a literal `%` as `%25`"
                    ));
                };
                let byte = (hi * 16 + lo) as u8;
                if byte == b'/' && mode == Decode::Segments {
                    out.extend_from_slice(&bytes[i..i + 3]);
                } else {
                    out.push(byte);
                }
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out)
        .map_err(|_| format!("`{text}` does not decode to UTF-8 text; percent-encode UTF-8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_double_wildcard_before_other_segments_takes_what_they_leave() {
        // Firestore's ListDocuments, as googleapis binds it.
        let t =
            Template::parse("/v1/{parent=projects/*/databases/*/documents/*/**}/{collection_id}")
                .unwrap();
        let caught = |path: &str| {
            t.matches(path)
                .map(|c| c.into_iter().map(|(f, v, _)| (f, v)).collect::<Vec<_>>())
        };
        assert_eq!(
            caught("/v1/projects/p/databases/d/documents/a/b/c/books"),
            Some(vec![
                (
                    "parent".into(),
                    "projects/p/databases/d/documents/a/b/c".into()
                ),
                ("collection_id".into(), "books".into()),
            ])
        );
        assert_eq!(
            caught("/v1/projects/p/databases/d/documents/a/books"),
            Some(vec![
                ("parent".into(), "projects/p/databases/d/documents/a".into()),
                ("collection_id".into(), "books".into()),
            ])
        );
        assert_eq!(caught("/v1/projects/p/databases/d/documents/a"), None);
        let t = Template::parse("/v1/files/**/meta").unwrap();
        assert!(t.matches("/v1/files/a/b/meta").is_some());
        assert!(t.matches("/v1/files/meta").is_some());
        assert!(t.matches("/v1/files/a/b").is_none());
    }

    #[test]
    fn templates_match_and_capture() {
        let t = Template::parse("/v1/items/{id}").unwrap();
        assert_eq!(
            t.matches("/v1/items/7"),
            Some(vec![("id".into(), "7".into(), Decode::Segment)])
        );
        assert_eq!(t.matches("/v1/items"), None);
        assert_eq!(t.matches("/v1/items/7/x"), None);
        let t = Template::parse("/v1/shelves/{shelf.name=shelves/*}/items/{id}").unwrap();
        assert_eq!(
            t.matches("/v1/shelves/shelves/top/items/9"),
            Some(vec![
                ("shelf.name".into(), "shelves/top".into(), Decode::Segments),
                ("id".into(), "9".into(), Decode::Segment)
            ])
        );
        let t = Template::parse("/v1/{name=files/**}:get").unwrap();
        assert_eq!(
            t.matches("/v1/files/a/b/c:get"),
            Some(vec![(
                "name".into(),
                "files/a/b/c".into(),
                Decode::Segments
            )])
        );
        assert_eq!(t.matches("/v1/files/a/b/c"), None);
        let t = Template::parse("/v1/items").unwrap();
        assert_eq!(t.matches("/v1/items"), Some(vec![]));
        let specificity = |t: &str| Template::parse(t).unwrap().specificity();
        assert!(
            specificity("/v1/shelves/me/books/latest") > specificity("/v1/{n=shelves/*/books/*}")
        );
        assert!(specificity("/v1/{n=shelves/*}:get") > specificity("/v1/{n=shelves/*}"));
        assert!(specificity("/v1/{n=shelves/*}") > specificity("/v1/{n=shelves/**}"));
        assert_eq!(Template::parse("/v1/items/{x").map(|_| ()), None);
        assert_eq!(
            percent_decode("a%20b+c", Decode::Query).as_deref(),
            Ok("a b c")
        );
        assert_eq!(
            percent_decode("a%20b+c", Decode::Segment).as_deref(),
            Ok("a b+c")
        );
        assert_eq!(
            percent_decode("a%2Fb%2f", Decode::Segment).as_deref(),
            Ok("a/b/")
        );
        assert_eq!(
            percent_decode("a%2Fb%2f%20", Decode::Segments).as_deref(),
            Ok("a%2Fb%2f ")
        );
        assert_eq!(
            percent_decode("%C3%A9t\u{e9}", Decode::Segment).as_deref(),
            Ok("\u{e9}t\u{e9}")
        );
        assert!(percent_decode("%a\u{e9}", Decode::Query).is_err());
        assert!(percent_decode("50%", Decode::Query).is_err());
        assert!(percent_decode("%ff", Decode::Query).is_err());
    }
}
