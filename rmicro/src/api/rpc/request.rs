//! The request message, built from the JSON body, the path's captures and the query string as
//! the binding says.

use prost_reflect::{
    Cardinality, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, ReflectMessage, Value,
};

use super::negative_zero;
use super::proto_json;
use super::route::Target;
use super::template::{percent_decode, Decode};

/// The request message: the JSON body where `body` says, then path captures and (for the rest)
/// query parameters, each converted to its field's JSON type. A query parameter may not set a
/// field the path or the body binds (as in grpc-gateway and Envoy's transcoder), nor one field
/// twice; parameters that name no field are ignored. A message of a well-known type with a JSON
/// form of its own (`StringValue`, `ListValue`, `Timestamp`...) is the whole body in that form.
/// Every proto2 `required` field must be set. A PATCH whose body is one field and that gives no
/// field mask gets one naming the fields its body sets ([`body_mask`]).
pub(super) fn build_request(
    desc: &MessageDescriptor,
    target: &Target,
    body: &[u8],
    query: Option<&str>,
) -> Result<DynamicMessage, String> {
    let mut json = serde_json::Map::new();
    // The field mask the body implies, and the field it goes in.
    let mut mask = None;
    // A body of whitespace alone (a tool's trailing newline) is no body, as Go's JSON decoder
    // finds nothing in it.
    let body = body.trim_ascii();
    if !body.is_empty() && !target.body.is_empty() {
        let value = proto_json::parse_body(body)?;
        if target.body == "*"
            && target.captures.is_empty()
            && proto_json::has_json_form(desc.full_name())
        {
            // As protojson reads the message (`"hi"` for a `StringValue`, `[1, 2]` for a
            // `ListValue`), not as an object of its fields.
            return read_message(desc, value);
        }
        if target.body == "*" {
            match value {
                serde_json::Value::Object(map) => json = map,
                _ => return Err("the request body must be a JSON object".into()),
            }
        } else {
            if target.patch {
                mask = body_mask(desc, &target.body, &value);
            }
            json.insert(target.body.clone(), value);
        }
    }
    // With `body: "*"`, the fields the body sets (not `null`): a query parameter may set the
    // others, not these (it would be lost, or overwrite the body's value).
    let from_body: Vec<String> = if target.body == "*" {
        json.iter()
            .filter(|(_, value)| !value.is_null())
            .filter_map(|(key, _)| {
                desc.get_field_by_name(key)
                    .or_else(|| desc.get_field_by_json_name(key))
                    .map(|f| f.name().to_string())
            })
            .collect()
    } else {
        Vec::new()
    };
    // Fields bound by the path, by their proto names (`author_info.full_name`).
    let mut bound = Vec::with_capacity(target.captures.len());
    for (path, value) in &target.captures {
        let chain = field_chain(desc, path)?.ok_or_else(|| {
            format!(
                "the binding's path sets `{path}`, which `{}` does not have",
                desc.full_name()
            )
        })?;
        bound.push(proto_path(&chain));
        set_param(&mut json, &chain, path, value)?;
    }
    // The fields that hold one value set so far, and by which parameter.
    let mut given: Vec<(String, String)> = Vec::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |text| {
            percent_decode(text, Decode::Query).map_err(|e| format!("the query string: {e}"))
        };
        let (key, value) = (decode(k)?, decode(v)?);
        // `labels[env]=prod` sets one entry of map field `labels`, as in grpc-gateway.
        let (name, map_key) = match key.strip_suffix(']').and_then(|k| k.split_once('[')) {
            Some((name, map_key)) => (name, Some(map_key)),
            None => (key.as_str(), None),
        };
        // As grpc-gateway: parameters that name no field (cache busters, tracking) are
        // ignored. An unknown field in a JSON body is still an error.
        let Some(chain) = field_chain(desc, name)? else {
            continue;
        };
        let field = proto_path(&chain);
        let under = |outer: &str| {
            field == outer
                || field
                    .strip_prefix(outer)
                    .is_some_and(|rest| rest.starts_with('.'))
        };
        if let Some(outer) = bound.iter().find(|b| under(b)) {
            return Err(format!(
                "query parameter `{key}` would set `{field}`, which the path binds \
                 (`{outer}`); the path's value stands, so leave it out of the query"
            ));
        }
        if let Some(outer) = from_body.iter().find(|b| under(b)) {
            return Err(format!(
                "query parameter `{key}` would set `{field}`, which the request body sets \
                 (`{outer}`); give it once, in the body or in the query"
            ));
        }
        if !target.body.is_empty() && target.body != "*" && under(&target.body) {
            return Err(format!(
                "query parameter `{key}` would set `{field}`, which this endpoint takes from \
                 the request body (`{}`); send it in the body",
                target.body
            ));
        }
        // As grpc-gateway: one of two values for a field that holds one would be lost (a
        // map's entry, set by key, is replaced by a later value for the key).
        let single = map_key.is_none() && chain.last().is_some_and(|f| !f.is_list());
        if single {
            if let Some((_, first)) = given.iter().find(|(f, _)| *f == field) {
                let names = match first == &key {
                    true => String::new(),
                    false => format!(" (as `{first}` and `{key}`)"),
                };
                return Err(format!(
                    "field `{field}` is given twice in the query string{names}; give it once"
                ));
            }
            given.push((field.clone(), key.clone()));
        }
        match map_key {
            Some(map_key) => set_map_entry(&mut json, &chain, &key, map_key, &value)?,
            None => set_param(&mut json, &chain, &key, &value)?,
        }
    }
    let mut value = serde_json::Value::Object(json);
    // A wrapper's `value` is set as a field (`?value=…`); its JSON form is that value alone.
    if is_wrapper(desc.full_name()) {
        if let Some(wrapped) = value.get_mut("value") {
            value = wrapped.take();
        }
    }
    let mut message = read_message(desc, value)?;
    if let Some((field, paths)) = mask {
        // Unless the query string gave one.
        let given = message.has_field(&field)
            && message.get_field(&field).as_message().is_some_and(|m| {
                m.get_field_by_name("paths")
                    .is_some_and(|p| p.as_list().is_some_and(|l| !l.is_empty()))
            });
        if let (false, Kind::Message(mask_desc)) = (given, field.kind()) {
            let mut value = DynamicMessage::new(mask_desc);
            let paths = paths.into_iter().map(Value::String).collect();
            value.set_field_by_name("paths", Value::List(paths));
            message.set_field(&field, Value::Message(value));
        }
    }
    Ok(message)
}

/// The field mask a PATCH's `body` (the JSON of request field `body_field`) implies, as
/// grpc-gateway fills in a PATCH's mask when the client sends none: the request's one
/// `google.protobuf.FieldMask` field, and the paths (proto names, sorted) of the fields the body
/// sets, relative to the body's message. A field holding a message object is gone into (an
/// empty one is a path itself), a `Struct` or `Value` by its keys; a repeated field, a map, a
/// well-known type and any other value end a path. `None` when the request has no single mask
/// field, the body field is no message of its own fields, or the body sets nothing.
fn body_mask(
    desc: &MessageDescriptor,
    body_field: &str,
    body: &serde_json::Value,
) -> Option<(FieldDescriptor, Vec<String>)> {
    let mut masks = desc.fields().filter(|f| {
        !f.is_list()
            && matches!(f.kind(), Kind::Message(m) if m.full_name() == "google.protobuf.FieldMask")
    });
    let (mask, None) = (masks.next()?, masks.next()) else {
        return None;
    };
    let target = desc.get_field_by_name(body_field)?;
    let (Kind::Message(message), serde_json::Value::Object(object)) = (target.kind(), body) else {
        return None;
    };
    if target.is_list() || target.is_map() || proto_json::has_json_form(message.full_name()) {
        return None;
    }
    fn blind(path: String, value: &serde_json::Value, out: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(o) if !o.is_empty() => {
                for (key, value) in o {
                    blind(format!("{path}.{key}"), value, out);
                }
            }
            _ => out.push(path),
        }
    }
    fn walk(
        desc: &MessageDescriptor,
        object: &serde_json::Map<String, serde_json::Value>,
        at: &str,
        out: &mut Vec<String>,
    ) {
        for (key, value) in object {
            let Some(field) = desc
                .get_field_by_name(key)
                .or_else(|| desc.get_field_by_json_name(key))
            else {
                continue;
            };
            let path = format!("{at}{}", field.name());
            match (field.kind(), value) {
                (Kind::Message(_), _) if field.is_list() || field.is_map() => out.push(path),
                (Kind::Message(m), value)
                    if matches!(
                        m.full_name(),
                        "google.protobuf.Struct" | "google.protobuf.Value"
                    ) =>
                {
                    blind(path, value, out)
                }
                (Kind::Message(m), serde_json::Value::Object(inner))
                    if !inner.is_empty() && !proto_json::has_json_form(m.full_name()) =>
                {
                    walk(&m, inner, &format!("{path}."), out)
                }
                _ => out.push(path),
            }
        }
    }
    let mut paths = Vec::new();
    walk(&message, object, "", &mut paths);
    paths.sort();
    paths.dedup();
    (!paths.is_empty()).then_some((mask, paths))
}

/// The message of type `desc` that request JSON `value` stands for, as proto3 JSON reads it.
fn read_message(
    desc: &MessageDescriptor,
    mut value: serde_json::Value,
) -> Result<DynamicMessage, String> {
    proto_json::conform_request(desc, &mut value, "")?;
    // Kept for the negative zeros reading loses (rare: cloned only when there is one).
    let zeros = negative_zero::in_json(&value).then(|| value.clone());
    let mut message = DynamicMessage::deserialize(desc.clone(), value)
        .map_err(|e| format!("the request does not fit `{}`: {e}", desc.full_name()))?;
    if let Some(json) = &zeros {
        negative_zero::restore(&mut message, json);
    }
    proto_json::restore_anys(&mut message);
    // Refused as protojson and go-micro's jsonpb refuse it: a service cannot read the message.
    if let Some((path, owner)) = missing_required(&message, "") {
        return Err(format!(
            "field `{path}` is required (proto2 `required`) in `{owner}`; give it"
        ));
    }
    Ok(message)
}

/// Whether `name` is one of the wrapper types (`google.protobuf.StringValue`, ...).
fn is_wrapper(name: &str) -> bool {
    matches!(
        name,
        "google.protobuf.DoubleValue"
            | "google.protobuf.FloatValue"
            | "google.protobuf.Int64Value"
            | "google.protobuf.UInt64Value"
            | "google.protobuf.Int32Value"
            | "google.protobuf.UInt32Value"
            | "google.protobuf.BoolValue"
            | "google.protobuf.StringValue"
            | "google.protobuf.BytesValue"
    )
}

/// The first proto2 `required` field left unset in `message` or a message it holds (in a field,
/// a list, a map's value), by its path in JSON names (`children[1].id`, after `at`), and the
/// type it is missing from.
fn missing_required(message: &DynamicMessage, at: &str) -> Option<(String, String)> {
    let desc = message.descriptor();
    if let Some(field) = desc
        .fields()
        .find(|f| f.cardinality() == Cardinality::Required && !message.has_field(f))
    {
        let path = format!("{at}{}", field.json_name());
        return Some((path, desc.full_name().to_string()));
    }
    for (field, value) in message.fields() {
        let name = field.json_name();
        let found = match value {
            Value::Message(inner) => missing_required(inner, &format!("{at}{name}.")),
            Value::List(items) => items.iter().enumerate().find_map(|(i, item)| {
                let inner = item.as_message()?;
                missing_required(inner, &format!("{at}{name}[{i}]."))
            }),
            Value::Map(entries) => entries.iter().find_map(|(key, item)| {
                let inner = item.as_message()?;
                let key = proto_json::map_key_text(key);
                missing_required(inner, &format!("{at}{name}[{key}]."))
            }),
            _ => None,
        };
        if found.is_some() {
            return found;
        }
    }
    None
}

/// The fields `path` (`a.b.c`, by proto or JSON names) names, outermost first; `None` when a
/// message on the way has no such field.
fn field_chain(
    desc: &MessageDescriptor,
    path: &str,
) -> Result<Option<Vec<FieldDescriptor>>, String> {
    let mut chain: Vec<FieldDescriptor> = Vec::new();
    let mut message = desc.clone();
    for (n, name) in path.split('.').enumerate() {
        if n > 0 {
            let outer = &chain[n - 1];
            match outer.kind() {
                Kind::Message(inner) if !outer.is_list() && !outer.is_map() => message = inner,
                Kind::Message(_) => {
                    let what = if outer.is_map() {
                        "a map"
                    } else {
                        "a repeated field"
                    };
                    return Err(format!(
                        "field `{}` of `{}` is {what}; `{path}` cannot name a field inside \
                         its entries (send them in the body)",
                        outer.name(),
                        message.full_name()
                    ));
                }
                _ => {
                    return Err(format!(
                        "field `{}` of `{}` is not a message; `{path}` cannot name a field in it",
                        outer.name(),
                        message.full_name()
                    ))
                }
            }
        }
        let Some(field) = message
            .get_field_by_name(name)
            .or_else(|| message.get_field_by_json_name(name))
        else {
            return Ok(None);
        };
        chain.push(field);
    }
    Ok(Some(chain))
}

/// Whether a request message failed to build because it names a field or an enum value the
/// descriptors lack (the message parser's wording), which newer descriptors may have.
pub(super) fn names_unknown(detail: &str) -> bool {
    detail.contains("unrecognized field name") || detail.contains("unrecognized enum value")
}

/// The message type a message could not be read or written without (an `Any`'s), in the
/// message parser's and serializer's wording: `message 'pkg.Type' not found`.
pub(super) fn missing_message(detail: &str) -> Option<&str> {
    let start = detail.find("message '")? + "message '".len();
    let rest = &detail[start..];
    let end = rest.find("' not found")?;
    Some(&rest[..end]).filter(|name| !name.is_empty() && !name.contains('\''))
}

/// `a.b.c` by proto field names.
fn proto_path(chain: &[FieldDescriptor]) -> String {
    let names: Vec<&str> = chain.iter().map(FieldDescriptor::name).collect();
    names.join(".")
}

/// Sets the field at the end of `chain` to `value` in `json`, typed by that field (`path` is
/// how the request named it, for errors). A JSON-name key the body used for a field on the way
/// is renamed to the proto name first, so the field is not given twice.
fn set_param(
    json: &mut serde_json::Map<String, serde_json::Value>,
    chain: &[FieldDescriptor],
    path: &str,
    value: &str,
) -> Result<(), String> {
    let Some((field, outer)) = chain.split_last() else {
        return Ok(());
    };
    let json = descend(json, outer, path)?;
    unalias(json, field);
    let typed = typed_value(field, path, value)?;
    if field.is_list() {
        let entry = json
            .entry(field.name().to_string())
            .or_insert_with(|| serde_json::Value::Array(Vec::new()));
        // `null` is the field's default: an empty list to add to.
        if entry.is_null() {
            *entry = serde_json::Value::Array(Vec::new());
        }
        let serde_json::Value::Array(items) = entry else {
            return Err(format!(
                "`{path}` adds to `{}`, which is already set to a value that is not a list",
                field.name()
            ));
        };
        items.push(typed);
    } else {
        json.insert(field.name().to_string(), typed);
    }
    Ok(())
}

/// Sets entry `map_key` of the map field at the end of `chain` to `value` (`path` is how the
/// request named it, `labels[env]`, for errors), typed by the map's value type.
fn set_map_entry(
    json: &mut serde_json::Map<String, serde_json::Value>,
    chain: &[FieldDescriptor],
    path: &str,
    map_key: &str,
    value: &str,
) -> Result<(), String> {
    let Some((field, outer)) = chain.split_last() else {
        return Ok(());
    };
    let entry = match field.kind() {
        Kind::Message(entry) if field.is_map() => entry,
        _ => {
            return Err(format!(
                "`{path}` sets a map entry, but field `{}` is not a map; leave out the `[…]`",
                field.name()
            ))
        }
    };
    let typed = typed_value(&entry.map_entry_value_field(), path, value)?;
    let json = descend(json, outer, path)?;
    unalias(json, field);
    let slot = json
        .entry(field.name().to_string())
        .or_insert_with(|| serde_json::Value::Object(serde_json::Map::new()));
    if slot.is_null() {
        *slot = serde_json::Value::Object(serde_json::Map::new());
    }
    let serde_json::Value::Object(map) = slot else {
        return Err(format!(
            "`{path}` sets an entry of `{}`, which is already set to a value that is not a map",
            field.name()
        ));
    };
    // Proto3 JSON writes every map key as a string (a bool as `true` or `false`, whichever
    // form the query string used); a later value for one key replaces it.
    let map_key = match entry.map_entry_key_field().kind() {
        Kind::Bool => match parse_bool(map_key) {
            Some(b) => b.to_string(),
            None => {
                return Err(format!(
                    "`{path}` names a key of `{}`, whose keys are true or false, not `{map_key}`",
                    field.name()
                ))
            }
        },
        // An integer key is checked here, where the error can name the parameter.
        kind if proto_json::is_integer(&kind) => {
            let (parsed, what) = match kind {
                Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
                    (map_key.parse::<i32>().map(|n| n.to_string()), "32-bit")
                }
                Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
                    (map_key.parse::<i64>().map(|n| n.to_string()), "64-bit")
                }
                Kind::Uint32 | Kind::Fixed32 => (
                    map_key.parse::<u32>().map(|n| n.to_string()),
                    "unsigned 32-bit",
                ),
                _ => (
                    map_key.parse::<u64>().map(|n| n.to_string()),
                    "unsigned 64-bit",
                ),
            };
            match parsed {
                Ok(key) => key,
                Err(_) => {
                    return Err(format!(
                        "`{path}` names a key of `{}`, whose keys are {what} integers, not \
                         `{map_key}`",
                        field.name()
                    ))
                }
            }
        }
        _ => map_key.to_string(),
    };
    map.insert(map_key, typed);
    Ok(())
}

/// The object in `json` for the message the fields `outer` lead to, made on the way (a JSON-name
/// key the body used for one of them renamed to its proto name first, so it is not given twice).
fn descend<'j>(
    mut json: &'j mut serde_json::Map<String, serde_json::Value>,
    outer: &[FieldDescriptor],
    path: &str,
) -> Result<&'j mut serde_json::Map<String, serde_json::Value>, String> {
    for f in outer {
        unalias(json, f);
        let entry = json
            .entry(f.name().to_string())
            .or_insert_with(|| serde_json::Value::Object(serde_json::Map::new()));
        // `null` is the field's default (proto3 JSON): an empty message to set fields in.
        if entry.is_null() {
            *entry = serde_json::Value::Object(serde_json::Map::new());
        }
        let serde_json::Value::Object(map) = entry else {
            return Err(format!(
                "`{path}` sets a field inside `{}`, which is already set to a value",
                f.name()
            ));
        };
        json = map;
    }
    Ok(json)
}

/// Renames `field`'s JSON-name key in `json` (`displayName`) to its proto name.
fn unalias(json: &mut serde_json::Map<String, serde_json::Value>, field: &FieldDescriptor) {
    if field.json_name() != field.name() && !json.contains_key(field.name()) {
        if let Some(v) = json.remove(field.json_name()) {
            json.insert(field.name().to_string(), v);
        }
    }
}

/// A field mask's paths (`display_name,author_info.full_name`) in proto3 JSON's lowerCamelCase
/// (`displayName,authorInfo.fullName`); paths already in that form are unchanged.
fn camel_case_paths(mask: &str) -> String {
    let mut out = String::with_capacity(mask.len());
    let mut upper = false;
    for c in mask.chars() {
        match c {
            '_' => upper = true,
            _ if upper => {
                out.extend(c.to_uppercase());
                upper = false;
            }
            _ => out.push(c),
        }
    }
    out
}

/// A bool in a path or query parameter, in the forms grpc-gateway reads there (Go's
/// `strconv.ParseBool`): `1`, `t`, `T`, `TRUE`, `True`, `true` and their `0`, `f`... opposites.
fn parse_bool(text: &str) -> Option<bool> {
    match text {
        "1" | "t" | "T" | "TRUE" | "True" | "true" => Some(true),
        "0" | "f" | "F" | "FALSE" | "False" | "false" => Some(false),
        _ => None,
    }
}

/// A duration in Go's form (`time.ParseDuration`: `300ms`, `-1h30m`, `1.5us`, `0`; units `ns`,
/// `us`, `µs`, `μs`, `ms`, `s`, `m`, `h`) in proto3 JSON's (`-5400s`), to the nanosecond (a
/// finer fraction is cut, as Go cuts it); `None` when it is not one.
fn go_duration(text: &str) -> Option<String> {
    let (negative, mut rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if rest == "0" {
        return Some("0s".into());
    }
    if rest.is_empty() {
        return None;
    }
    let mut nanos: i128 = 0;
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_end);
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
            return None;
        }
        let unit_end = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_end);
        let scale: i128 = match unit {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return None,
        };
        // Digits past these are below a nanosecond for every unit.
        let whole: i128 = match whole {
            "" => 0,
            digits if digits.len() <= 20 => digits.parse().ok()?,
            _ => return None,
        };
        let fraction = &fraction[..fraction.len().min(18)];
        let fraction_nanos = match fraction {
            "" => 0,
            digits => {
                let n: i128 = digits.parse().ok()?;
                n * scale / 10_i128.pow(digits.len() as u32)
            }
        };
        nanos = nanos.checked_add(whole.checked_mul(scale)?.checked_add(fraction_nanos)?)?;
        rest = next;
    }
    let (seconds, fraction) = (nanos / 1_000_000_000, nanos % 1_000_000_000);
    let sign = if negative && nanos != 0 { "-" } else { "" };
    Some(match fraction {
        0 => format!("{sign}{seconds}s"),
        f => format!("{sign}{seconds}.{f:09}s"),
    })
}

/// `value` as the JSON that `field` takes.
fn typed_value(
    field: &FieldDescriptor,
    path: &str,
    value: &str,
) -> Result<serde_json::Value, String> {
    if field.is_map() {
        return Err(format!(
            "field `{path}` is a map; set its entries (`{path}[key]=value`)"
        ));
    }
    Ok(match field.kind() {
        Kind::Bool => match parse_bool(value) {
            Some(b) => serde_json::Value::Bool(b),
            None => return Err(format!("field `{path}` takes true or false, not `{value}`")),
        },
        // As a string, proto3 JSON's form that also carries NaN and ±Infinity (a JSON number
        // cannot).
        Kind::Double | Kind::Float => {
            if value.parse::<f64>().is_err() && !matches!(value, "Infinity" | "-Infinity") {
                return Err(format!(
                    "field `{path}` takes a number (or NaN, Infinity, -Infinity), not `{value}`"
                ));
            }
            serde_json::Value::String(value.to_string())
        }
        // A value's name or its number.
        Kind::Enum(_) => match value.parse::<i32>() {
            Ok(number) => serde_json::Value::from(number),
            Err(_) => serde_json::Value::String(value.to_string()),
        },
        Kind::Message(inner) => match inner.full_name() {
            // Proto3 JSON gives these a string form, which the message parser reads.
            "google.protobuf.Timestamp" => serde_json::Value::String(value.to_string()),
            // Proto3 JSON's `1.5s`, or Go's `100ms`, `1h30m` as grpc-gateway reads a path or
            // query parameter (`time.ParseDuration`), in proto3 JSON's form.
            "google.protobuf.Duration" => {
                let proto3 = value.strip_suffix('s').is_some_and(|n| {
                    !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit() || b"-.".contains(&b))
                });
                match go_duration(value) {
                    Some(seconds) if !proto3 => serde_json::Value::String(seconds),
                    _ => serde_json::Value::String(value.to_string()),
                }
            }
            // `display_name,page_count` (proto names, as grpc-gateway takes them) or the JSON
            // form's `displayName,pageCount`.
            "google.protobuf.FieldMask" => serde_json::Value::String(camel_case_paths(value)),
            // JSON, as grpc-gateway reads a parameter of these (`?v=5`, `?v="text"`,
            // `?s={"a":1}`): their JSON form is any JSON (an object, a list).
            name @ ("google.protobuf.Value"
            | "google.protobuf.Struct"
            | "google.protobuf.ListValue") => {
                proto_json::parse_body(value.as_bytes()).map_err(|_| {
                    format!(
                        "field `{path}` takes JSON (a `{name}`: `5`, `\"text\"`, `{{\"a\":1}}`, \
                         `[1,2]`), not `{value}`"
                    )
                })?
            }
            // A wrapper's JSON form is its value's.
            name if is_wrapper(name) => match inner.get_field_by_name("value") {
                Some(wrapped) => typed_value(&wrapped, path, value)?,
                None => return Err(format!("`{}` has no field `value`", inner.full_name())),
            },
            _ => {
                return Err(format!(
                    "field `{path}` is a message; set its fields (`{path}.x`)"
                ))
            }
        },
        // Integers as strings are valid proto JSON (the message parser checks their range),
        // taken as a JSON body's strings are.
        kind if proto_json::is_integer(&kind) => {
            if !proto_json::is_integer_text(value) {
                return Err(format!("field `{path}` takes an integer, not `{value}`"));
            }
            serde_json::Value::String(value.to_string())
        }
        // Strings and bytes (base64) as they are.
        _ => serde_json::Value::String(value.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use prost_reflect::DescriptorPool;

    use super::*;

    #[test]
    fn missing_any_types_are_named_from_the_parsers_words() {
        assert_eq!(
            missing_message("the request does not fit `a.B`: message 'x.y.Label' not found"),
            Some("x.y.Label")
        );
        assert_eq!(missing_message("message 'x' is bad"), None);
        // prost-reflect's wording, pinned: an upgrade that changes it fails here.
        let pool = DescriptorPool::global();
        let any = pool.get_message_by_name("google.protobuf.Any").unwrap();
        let json = serde_json::json!({"@type": "type.googleapis.com/no.Such"});
        let err = DynamicMessage::deserialize(any, json)
            .unwrap_err()
            .to_string();
        assert_eq!(missing_message(&err), Some("no.Such"), "{err}");
    }

    /// A path into a repeated or map field's messages says so, not that the field is no message.
    #[test]
    fn a_path_into_a_repeated_message_field_says_it_is_repeated() {
        let pool = DescriptorPool::global();
        let list = pool
            .get_message_by_name("google.protobuf.ListValue")
            .unwrap();
        let err = field_chain(&list, "values.number_value").unwrap_err();
        assert!(
            err.contains("`values`") && err.contains("a repeated field"),
            "{err}"
        );
        let strukt = pool.get_message_by_name("google.protobuf.Struct").unwrap();
        let err = field_chain(&strukt, "fields.x").unwrap_err();
        assert!(err.contains("`fields`") && err.contains("a map"), "{err}");
    }

    #[test]
    fn go_durations_are_read_to_the_nanosecond() {
        let read = |text: &str| go_duration(text);
        assert_eq!(read("1h30m").as_deref(), Some("5400s"));
        assert_eq!(read("-1.5m").as_deref(), Some("-90s"));
        assert_eq!(read("+.5s").as_deref(), Some("0.500000000s"));
        assert_eq!(read("1.s").as_deref(), Some("1s"));
        assert_eq!(read("1.0000000019s").as_deref(), Some("1.000000001s"));
        assert_eq!(read("-0").as_deref(), Some("0s"));
        assert_eq!(read("-0s").as_deref(), Some("0s"));
        assert_eq!(read("2\u{3bc}s3ns").as_deref(), Some("0.000002003s"));
        for bad in [
            "", "-", "7", ".s", "1..5s", "1d", "s", "1h-1m", "1e3s", "1.5.5s",
        ] {
            assert_eq!(read(bad), None, "{bad}");
        }
    }

    #[test]
    fn field_mask_paths_are_camel_cased() {
        assert_eq!(
            camel_case_paths("display_name,author_info.full_name,pageCount"),
            "displayName,authorInfo.fullName,pageCount"
        );
    }
}
