//! Where the message JSON of prost-reflect's serde support differs from proto3 JSON as real
//! peers write it (protojson, json_format), and the mending.

use prost_reflect::{
    DynamicMessage, FieldDescriptor, Kind, MapKey, MessageDescriptor, ReflectMessage, Value,
};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value as Json;

use super::negative_zero;

/// A request body's JSON. A key given twice in one object is an error, as in protojson and
/// json_format (serde_json keeps the last silently); errors say where (line and column).
pub(super) fn parse_body(body: &[u8]) -> Result<Json, String> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = Strict
        .deserialize(&mut de)
        .and_then(|value| de.end().map(|()| value))
        .map_err(|e| format!("the request body is not JSON: {e}"))?;
    Ok(value)
}

/// Reads any JSON value, refusing duplicate keys.
#[derive(Clone, Copy)]
struct Strict;

impl<'de> DeserializeSeed<'de> for Strict {
    type Value = Json;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Json, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict {
    type Value = Json;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Json, E> {
        Ok(Json::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Json, E> {
        Ok(Json::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Json, E> {
        Ok(Json::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Json, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Json::Null, Json::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Json, E> {
        Ok(Json::String(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Json, E> {
        Ok(Json::String(v))
    }

    fn visit_unit<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(self)? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut object = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(de::Error::custom(format!("key `{key}` given twice")));
            }
            let value = map.next_value_seed(self)?;
            object.insert(key, value);
        }
        Ok(Json::Object(object))
    }
}

/// Brings a request's `json` for message `desc` to a form prost-reflect reads as protojson and
/// json_format read it (`at` names where, for errors):
/// - a field named twice (by its proto name and its JSON name) is an error;
/// - an integer written with a fraction or an exponent (`1.0`, `1e3`, `"1e2"`) is that integer;
/// - a `float` written with more digits than it holds (`3.4028235e38`, `float`'s largest value as
///   peers write it) is rounded to a `float`, not refused as out of range;
/// - an `Any` of `google.protobuf.Empty` may leave out `value` (json_format writes it so).
///
/// An empty `Any` (`{}`) gets a stand-in type for prost-reflect to read; [`restore_anys`]
/// empties it again in the message read.
pub(super) fn conform_request(
    desc: &MessageDescriptor,
    json: &mut Json,
    at: &str,
) -> Result<(), String> {
    conform(desc, json, at)
}

/// [`conform_request`] for a message of type `desc` at `at`.
fn conform(desc: &MessageDescriptor, json: &mut Json, at: &str) -> Result<(), String> {
    match desc.full_name() {
        "google.protobuf.Any" => return conform_any(desc, json, at),
        "google.protobuf.Timestamp" | "google.protobuf.Duration" => {
            if let Json::String(text) = &*json {
                time_text(desc.full_name(), text, at)?;
            }
            return Ok(());
        }
        "google.protobuf.FloatValue"
        | "google.protobuf.DoubleValue"
        | "google.protobuf.Int64Value"
        | "google.protobuf.UInt64Value"
        | "google.protobuf.Int32Value"
        | "google.protobuf.UInt32Value" => {
            if let Some(field) = desc.get_field_by_name("value") {
                conform_scalar(&field.kind(), json, at)?;
            }
            return Ok(());
        }
        name if name.starts_with("google.protobuf.") && is_special(name) => return Ok(()),
        _ => {}
    }
    let Json::Object(object) = json else {
        return Ok(());
    };
    let mut seen: Vec<(u32, &str)> = Vec::new();
    for (key, value) in object.iter_mut() {
        let Some(field) = desc
            .get_field_by_name(key)
            .or_else(|| desc.get_field_by_json_name(key))
        else {
            continue;
        };
        if let Some((_, first)) = seen.iter().find(|(n, _)| *n == field.number()) {
            return Err(format!(
                "`{at}{key}` and `{at}{first}` name the same field of `{}`; give it once",
                desc.full_name()
            ));
        }
        seen.push((field.number(), key));
        let at = format!("{at}{key}.");
        match value {
            Json::Null => {}
            Json::Array(items) if field.is_list() => {
                for item in items {
                    conform_field(&field.kind(), item, &at)?;
                }
            }
            Json::Object(entries) if field.is_map() => {
                let Kind::Message(entry) = field.kind() else {
                    continue;
                };
                same_keys(&entry.map_entry_key_field().kind(), entries, &at)?;
                let kind = entry.map_entry_value_field().kind();
                for item in entries.values_mut() {
                    conform_field(&kind, item, &at)?;
                }
            }
            value => conform_field(&field.kind(), value, &at)?,
        }
    }
    Ok(())
}

/// The domain of the type URL an empty `Any` (no type, no value) carries while prost-reflect
/// writes or reads its message: protojson and json_format write and read one as `{}`, which
/// prost-reflect cannot (it wants an `@type`). `.invalid` is reserved: no real type URL has it.
const EMPTY_ANY: &str = "rmicro.invalid/";

/// The type URL that stands for an empty `Any` in messages of `pool`: [`EMPTY_ANY`] and a type
/// of the pool without a JSON form of its own (so an empty one is written as an object).
/// `None` when the pool has no `Any` (no message of it can hold one).
fn empty_any_url(pool: &prost_reflect::DescriptorPool) -> Option<String> {
    pool.get_message_by_name("google.protobuf.Any")?;
    let stand_in = pool
        .all_messages()
        .find(|m| !m.is_map_entry() && !has_json_form(m.full_name()))?;
    Some(format!("{EMPTY_ANY}{}", stand_in.full_name()))
}

/// The domain put before a type URL without `/` (`acme.Order`) while prost-reflect writes or
/// reads its `Any`: protojson and json_format take the whole URL as the type's name then, where
/// prost-reflect refuses it.
const BARE_ANY: &str = "bare.rmicro.invalid/";

/// Makes every `Any` in `message` (in its fields, lists and maps, at any depth, also inside
/// another `Any`'s message) one prost-reflect can write: an empty one gets the stand-in type URL,
/// a type URL without `/` the [`BARE_ANY`] domain. [`mend_response`] writes them as they were.
pub(super) fn mark_anys(message: &mut DynamicMessage) {
    let pool = message.descriptor().parent_pool().clone();
    if pool.get_message_by_name("google.protobuf.Any").is_none() {
        return;
    }
    // Looked up at the first empty `Any`, if there is one.
    let mut stand_in = None;
    for_each_any(message, &mut |any| {
        if is_empty_any(any) {
            if let Some(url) = stand_in.get_or_insert_with(|| empty_any_url(&pool)) {
                any.set_field_by_name("type_url", Value::String(url.clone()));
                return true;
            }
        } else if let Some(bare) = type_url(any).filter(|u| !u.contains('/')) {
            let marked = format!("{BARE_ANY}{bare}");
            any.set_field_by_name("type_url", Value::String(marked));
            return true;
        }
        false
    });
}

/// Undoes in `message` what [`conform_request`] did to `Any`s for prost-reflect to read them: one
/// written `{}` is present with neither type nor value again, as protojson and json_format read
/// it; a type URL without `/` is as the client wrote it.
pub(super) fn restore_anys(message: &mut DynamicMessage) {
    let desc = message.descriptor();
    if desc
        .parent_pool()
        .get_message_by_name("google.protobuf.Any")
        .is_none()
    {
        return;
    }
    for_each_any(message, &mut |any| {
        let Some(url) = type_url(any) else {
            return false;
        };
        if url.starts_with(EMPTY_ANY) {
            any.clear_field_by_name("type_url");
            any.clear_field_by_name("value");
        } else if let Some(bare) = url.strip_prefix(BARE_ANY) {
            let bare = bare.to_string();
            any.set_field_by_name("type_url", Value::String(bare));
        } else {
            return false;
        }
        true
    });
}

/// An `Any`'s type URL.
fn type_url(any: &DynamicMessage) -> Option<String> {
    let url = any.get_field_by_name("type_url")?;
    url.as_str().map(str::to_string)
}

/// The first `Duration` or `Timestamp` in `message` (at any depth; not inside an `Any`'s
/// bytes) that proto3's JSON cannot write, said with its field path: a `Duration` whose seconds
/// and nanos have different signs or whose nanos are a second or more, a `Timestamp` whose
/// nanos are outside 0..1e9. protojson and json_format refuse to write them; prost-reflect
/// would write another value. (Seconds out of range prost-reflect refuses itself.)
pub(super) fn invalid_time(message: &DynamicMessage) -> Option<String> {
    /// The problem, and the path to it (built on the way back, so a valid message costs no
    /// path text).
    fn check(message: &DynamicMessage) -> Option<(String, String)> {
        let int = |name: &str| {
            message
                .get_field_by_name(name)
                .and_then(|v| v.as_i64().or(v.as_i32().map(i64::from)))
                .unwrap_or(0)
        };
        match message.descriptor().full_name() {
            "google.protobuf.Duration" => {
                let (seconds, nanos) = (int("seconds"), int("nanos"));
                let bad = nanos.abs() >= 1_000_000_000 || seconds.signum() * nanos.signum() < 0;
                return bad.then(|| {
                    let what = format!(
                        "a Duration of {seconds} s and {nanos} ns (its nanos must be under a \
                         second, with the sign of its seconds)"
                    );
                    (String::new(), what)
                });
            }
            "google.protobuf.Timestamp" => {
                let nanos = int("nanos");
                return (!(0..1_000_000_000).contains(&nanos)).then(|| {
                    let what =
                        format!("a Timestamp with {nanos} ns (its nanos must be 0 to 999999999)");
                    (String::new(), what)
                });
            }
            "google.protobuf.Any" => return None,
            _ => {}
        }
        let under = |at: String, (path, what): (String, String)| {
            let path = if path.is_empty() {
                at
            } else {
                format!("{at}.{path}")
            };
            (path, what)
        };
        for (field, value) in message.fields() {
            if !matches!(field.kind(), Kind::Message(_)) {
                continue;
            }
            let name = field.json_name();
            let found = match value {
                Value::Message(inner) => check(inner).map(|f| under(name.to_string(), f)),
                Value::List(items) => items.iter().enumerate().find_map(|(i, item)| {
                    let found = check(item.as_message()?)?;
                    Some(under(format!("{name}[{i}]"), found))
                }),
                Value::Map(entries) => entries.iter().find_map(|(key, item)| {
                    let found = check(item.as_message()?)?;
                    Some(under(format!("{name}[{}]", map_key_text(key)), found))
                }),
                _ => None,
            };
            if found.is_some() {
                return found;
            }
        }
        None
    }
    let (path, what) = check(message)?;
    Some(match path.as_str() {
        "" => what,
        path => format!("field `{path}`: {what}"),
    })
}

/// Calls `f` on each `Any` set in `message` (itself, when it is one), and on those inside an
/// `Any`'s message when the pool knows its type (the message is written back when `f` changed
/// one there). `f` says whether it changed the `Any`; so does the result, of any.
fn for_each_any(
    message: &mut DynamicMessage,
    f: &mut impl FnMut(&mut DynamicMessage) -> bool,
) -> bool {
    let desc = message.descriptor();
    if desc.full_name() == "google.protobuf.Any" {
        let changed = f(message);
        return in_any_message(message, f) || changed;
    }
    let mut changed = false;
    for field in desc.fields() {
        let holds_messages = match field.kind() {
            Kind::Message(m) if field.is_map() => {
                matches!(m.map_entry_value_field().kind(), Kind::Message(_))
            }
            Kind::Message(_) => true,
            _ => false,
        };
        // Unset fields are left alone: taking one mutably would set it.
        if !holds_messages || !message.has_field(&field) {
            continue;
        }
        match message.get_field_mut(&field) {
            Value::Message(inner) => changed |= for_each_any(inner, f),
            Value::List(items) => {
                for item in items {
                    if let Value::Message(inner) = item {
                        changed |= for_each_any(inner, f);
                    }
                }
            }
            Value::Map(entries) => {
                for value in entries.values_mut() {
                    if let Value::Message(inner) = value {
                        changed |= for_each_any(inner, f);
                    }
                }
            }
            _ => {}
        }
    }
    changed
}

/// [`for_each_any`] inside the message `any` holds, when the pool knows its type; its bytes are
/// written anew when `f` changed an `Any` there.
fn in_any_message(
    any: &mut DynamicMessage,
    f: &mut impl FnMut(&mut DynamicMessage) -> bool,
) -> bool {
    let Some(url) = type_url(any) else {
        return false;
    };
    let name = url.rsplit('/').next().unwrap_or(&url);
    let Some(desc) = any.descriptor().parent_pool().get_message_by_name(name) else {
        return false;
    };
    // No bytes are a message too: all of its fields unset (an empty `Any`, for one).
    let bytes = match any
        .get_field_by_name("value")
        .as_deref()
        .and_then(Value::as_bytes)
    {
        Some(bytes) => bytes.clone(),
        None => return false,
    };
    let Ok(mut inner) = DynamicMessage::decode(desc, bytes) else {
        return false;
    };
    if !for_each_any(&mut inner, f) {
        return false;
    }
    any.set_field_by_name(
        "value",
        Value::Bytes(prost::Message::encode_to_vec(&inner).into()),
    );
    true
}

/// Whether an `Any` has neither a type URL nor a value.
fn is_empty_any(any: &DynamicMessage) -> bool {
    let url = any.get_field_by_name("type_url");
    let value = any.get_field_by_name("value");
    url.as_deref()
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
        && value
            .as_deref()
            .and_then(Value::as_bytes)
            .is_none_or(|b| b.is_empty())
}

/// Whether `google.protobuf.<name>` has a JSON form of its own (not an object of its fields).
fn is_special(name: &str) -> bool {
    matches!(
        name.trim_start_matches("google.protobuf."),
        "Timestamp"
            | "Duration"
            | "FieldMask"
            | "Struct"
            | "Value"
            | "ListValue"
            | "BoolValue"
            | "StringValue"
            | "BytesValue"
            | "Empty"
    )
}

fn conform_field(kind: &Kind, json: &mut Json, at: &str) -> Result<(), String> {
    match kind {
        Kind::Message(desc) => conform(desc, json, at),
        kind => conform_scalar(kind, json, at),
    }
}

/// Whether message type `name` is a well-known type with a JSON form of its own, which an
/// `Any` holds under `value` (prost-reflect's list, so details are written as `Any` fields are).
pub(super) fn has_json_form(name: &str) -> bool {
    matches!(
        name,
        "google.protobuf.Any"
            | "google.protobuf.Timestamp"
            | "google.protobuf.Duration"
            | "google.protobuf.Struct"
            | "google.protobuf.FloatValue"
            | "google.protobuf.DoubleValue"
            | "google.protobuf.Int32Value"
            | "google.protobuf.Int64Value"
            | "google.protobuf.UInt32Value"
            | "google.protobuf.UInt64Value"
            | "google.protobuf.BoolValue"
            | "google.protobuf.StringValue"
            | "google.protobuf.BytesValue"
            | "google.protobuf.FieldMask"
            | "google.protobuf.ListValue"
            | "google.protobuf.Value"
            | "google.protobuf.Empty"
    )
}

/// An `Any`'s message, when the pool knows its type (else the parser says it does not).
fn conform_any(desc: &MessageDescriptor, json: &mut Json, at: &str) -> Result<(), String> {
    let Json::Object(object) = json else {
        return Ok(());
    };
    if object.is_empty() {
        // The stand-in type, which `restore_anys` (which also goes into `Any`s' messages) takes
        // away again. Without one, unset is the nearest.
        *json = match empty_any_url(desc.parent_pool()) {
            Some(url) => serde_json::json!({ "@type": url }),
            None => Json::Null,
        };
        return Ok(());
    }
    let Some(url) = object.get("@type").and_then(Json::as_str) else {
        return Ok(());
    };
    if url.starts_with(EMPTY_ANY) || url.starts_with(BARE_ANY) {
        return Err(format!(
            "`{at}@type` is `{url}`: the domain `rmicro.invalid` is the gateway's own; write an \
             empty `Any` as `{{}}`"
        ));
    }
    let name = url.rsplit('/').next().unwrap_or(url).to_string();
    if !url.contains('/') {
        let marked = format!("{BARE_ANY}{url}");
        object.insert("@type".into(), Json::String(marked));
    }
    let Some(inner) = desc.parent_pool().get_message_by_name(&name) else {
        return Ok(());
    };
    if name == "google.protobuf.Empty" && !object.contains_key("value") {
        object.insert("value".into(), Json::Object(serde_json::Map::new()));
    }
    // A type with a JSON form of its own (an `Any` among them) is under `value`; the others'
    // fields are beside `@type`.
    if has_json_form(&name) {
        return match object.get_mut("value") {
            Some(value) => conform(&inner, value, &format!("{at}value.")),
            None => Ok(()),
        };
    }
    conform(&inner, json, at)
}

/// A number for an integer or `float` field, in the form the parser reads.
fn conform_scalar(kind: &Kind, json: &mut Json, at: &str) -> Result<(), String> {
    if let (Kind::Float | Kind::Double, Json::String(text)) = (kind, &*json) {
        float_text(kind, text, at)?;
        return Ok(());
    }
    // An enum's number written `1.0` is that number, as an integer field's is.
    if let (Kind::Enum(_), Json::Number(n)) = (kind, &*json) {
        if let Some(i) = n
            .as_f64()
            .filter(|f| f.fract() == 0.0 && f.abs() <= f64::from(i32::MAX))
        {
            if n.is_f64() {
                *json = Json::from(i as i32);
            }
        }
        return Ok(());
    }
    match kind {
        Kind::Float => {
            if let Some(f) = json.as_f64().filter(|f| f.is_finite()) {
                // Rounded to the nearest `float`: one past its range stays out of range.
                let rounded = f as f32;
                // Exactly that `float`, widened (its shortest decimal may read back as a
                // `double` past `float`'s range).
                if let Some(n) = serde_json::Number::from_f64(f64::from(rounded)) {
                    *json = Json::Number(n);
                }
            }
        }
        kind if is_integer(kind) => {
            // What the message parser would refuse without naming the field, refused here
            // with its name.
            let not_integer = || {
                let forms = "(a JSON number, or a string of one)";
                match at.trim_end_matches('.') {
                    "" => format!("an integer is expected {forms}, not {json}"),
                    field => format!("field `{field}` takes an integer {forms}, not {json}"),
                }
            };
            let out_of_range = || {
                let what = match at.trim_end_matches('.') {
                    "" => "the value".to_string(),
                    field => format!("field `{field}`"),
                };
                format!(
                    "{what} is out of range for its type ({}): {json}",
                    kind_name(kind)
                )
            };
            let integer = match &*json {
                Json::Number(n) if n.is_f64() => {
                    let f = n.as_f64().unwrap_or(f64::NAN);
                    if f.is_finite() && f.fract() == 0.0 && !fits(kind, f) {
                        return Err(out_of_range());
                    }
                    // Written with a fraction or an exponent, the number was read as a double,
                    // which holds every integer only below 2^53: a larger one may have been
                    // rounded (`9007199254740993.0` reads as …992), so it is refused rather
                    // than changed, unless the double is a short decimal (`1.8e19`, `1e18`):
                    // a literal of up to 15 significant digits reads back as itself. Digits
                    // alone, or a string, are read exactly.
                    if f.abs() >= INEXACT_ABOVE && significant_digits(f) > 15 {
                        let field = match at.trim_end_matches('.') {
                            "" => "the value".to_string(),
                            field => format!("field `{field}`"),
                        };
                        return Err(format!(
                            "{field} is {json}, read as a double: past 2^53 a double does not \
                             hold every integer, so it may have been rounded; send it as a \
                             string, or as digits without a fraction or exponent"
                        ));
                    }
                    Some(integral_f64(f).ok_or_else(not_integer)?)
                }
                Json::Number(n) => {
                    let n = n.as_i64().map(i128::from).or(n.as_u64().map(i128::from));
                    if n.is_some_and(|n| !fits_exactly(kind, n)) {
                        return Err(out_of_range());
                    }
                    None
                }
                Json::Null => None,
                // Digits, as 64-bit integers are written and path and query parameters always
                // are.
                Json::String(s) => match s.parse::<i128>() {
                    Ok(n) if !fits_exactly(kind, n) => return Err(out_of_range()),
                    Ok(_) => None,
                    Err(_) => Some(integral_text(s).ok_or_else(not_integer)?),
                },
                _ => return Err(not_integer()),
            };
            if let Some(integer) = integer {
                if integer
                    .parse::<i128>()
                    .is_ok_and(|n| !fits_exactly(kind, n))
                {
                    return Err(out_of_range());
                }
                *json = match &*json {
                    Json::String(_) => Json::String(integer),
                    _ => serde_json::from_str(&integer).unwrap_or(Json::String(integer)),
                };
            }
        }
        _ => {}
    }
    Ok(())
}

/// Refuses a `float` or `double` given as a string (as path and query parameters always are)
/// that is no value of its type: a finite number past its range, which the parser would make an
/// infinity, and spellings of the infinities other than proto3 JSON's `Infinity` and
/// `-Infinity` (`inf`), as protojson refuses them. Other text is left to the parser.
fn float_text(kind: &Kind, text: &str, at: &str) -> Result<(), String> {
    if matches!(text, "NaN" | "Infinity" | "-Infinity") {
        return Ok(());
    }
    let Ok(value) = text.trim().parse::<f64>() else {
        return Ok(());
    };
    let (name, fits) = match kind {
        Kind::Float => ("float", value.is_nan() || (value as f32).is_finite()),
        _ => ("double", value.is_nan() || value.is_finite()),
    };
    let what = match at.trim_end_matches('.') {
        "" => "the value".to_string(),
        field => format!("field `{field}`"),
    };
    // `nan`, `inf`, `infinity`: words Rust reads and proto3 JSON does not.
    let numeral = text
        .trim()
        .trim_start_matches(['-', '+'])
        .starts_with(|c: char| c.is_ascii_digit() || c == '.');
    if !numeral {
        return Err(format!(
            "{what} takes a number, `NaN`, `Infinity` or `-Infinity`, not `{text}`"
        ));
    }
    if !fits {
        return Err(format!("{what} is out of range for a {name}: `{text}`"));
    }
    Ok(())
}

/// Refuses a `Timestamp` or `Duration` (`name`) in JSON's text form that the parser would read
/// as another value, where protojson and json_format refuse it: a leap second (`23:59:60`,
/// read as `23:59:59`), more than 9 fractional digits (cut to nanoseconds), a value outside the
/// type's range (years 1 to 9999; ±10 000 years for a `Duration`). Other text is left to the
/// parser.
fn time_text(name: &str, text: &str, at: &str) -> Result<(), String> {
    let what = match at.trim_end_matches('.') {
        "" => "the value".to_string(),
        field => format!("field `{field}`"),
    };
    let fraction_digits =
        |after_point: &str| after_point.bytes().take_while(u8::is_ascii_digit).count();
    if name == "google.protobuf.Timestamp" {
        // `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`
        let time = text.get(11..).unwrap_or_default();
        if time.get(6..8) == Some("60") {
            return Err(format!(
                "{what} is `{text}`: a Timestamp has no leap seconds (`:60`); give `:59`"
            ));
        }
        if fraction_digits(
            time.get(8..)
                .and_then(|t| t.strip_prefix('.'))
                .unwrap_or_default(),
        ) > 9
        {
            return Err(format!(
                "{what} is `{text}`: a Timestamp holds at most 9 fractional digits (nanoseconds)"
            ));
        }
        // 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z
        let in_range =
            |t: &prost_types::Timestamp| (-62_135_596_800..=253_402_300_799).contains(&t.seconds);
        if text
            .parse::<prost_types::Timestamp>()
            .is_ok_and(|t| !in_range(&t))
        {
            return Err(format!(
                "{what} is `{text}`: a Timestamp is between years 0001 and 9999"
            ));
        }
    } else {
        let number = text.strip_suffix('s').unwrap_or(text);
        if fraction_digits(number.split_once('.').map(|(_, f)| f).unwrap_or_default()) > 9 {
            return Err(format!(
                "{what} is `{text}`: a Duration holds at most 9 fractional digits (nanoseconds)"
            ));
        }
        const MAX: i64 = 315_576_000_000;
        if text
            .parse::<prost_types::Duration>()
            .is_ok_and(|d| !(-MAX..=MAX).contains(&d.seconds))
        {
            return Err(format!(
                "{what} is `{text}`: a Duration is at most 315576000000s (10 000 years) either way"
            ));
        }
    }
    Ok(())
}

/// Refuses a map whose keys name one entry twice in two spellings (`"1"` and `"01"` for an
/// integer key; the JSON reader already refuses one spelling twice), as protojson refuses a
/// duplicate key: one of the two values would be dropped.
fn same_keys(key: &Kind, entries: &serde_json::Map<String, Json>, at: &str) -> Result<(), String> {
    if !is_integer(key) {
        return Ok(());
    }
    let mut seen: std::collections::HashMap<i128, &str> = std::collections::HashMap::new();
    for spelled in entries.keys() {
        let Ok(number) = spelled.trim().parse::<i128>() else {
            continue;
        };
        if let Some(first) = seen.insert(number, spelled) {
            return Err(format!(
                "map `{}` has the key {number} twice (`{first}` and `{spelled}`); give it once",
                at.trim_end_matches('.')
            ));
        }
    }
    Ok(())
}

/// Whether the whole number `f`, read from a JSON number, is in the range of integer type
/// `kind`. A JSON integer too large for 64 bits reaches the gateway as the nearest `double`, and
/// one just past a 64-bit type's range rounds to the range's power-of-two bound: the bounds
/// themselves (2^63, -2^63, 2^64) are out, so `-9223372036854775809` is refused, not clamped
/// (`-9223372036854775808` written as such is an integer literal and never comes here).
fn fits(kind: &Kind, f: f64) -> bool {
    const TWO_63: f64 = 9_223_372_036_854_775_808.0;
    match kind {
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            (f64::from(i32::MIN)..=f64::from(i32::MAX)).contains(&f)
        }
        Kind::Uint32 | Kind::Fixed32 => (0.0..=f64::from(u32::MAX)).contains(&f),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => f > -TWO_63 && f < TWO_63,
        Kind::Uint64 | Kind::Fixed64 => (0.0..2.0 * TWO_63).contains(&f),
        _ => true,
    }
}

/// Whether integer `n` is in the range of integer type `kind`.
fn fits_exactly(kind: &Kind, n: i128) -> bool {
    match kind {
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => i32::try_from(n).is_ok(),
        Kind::Uint32 | Kind::Fixed32 => u32::try_from(n).is_ok(),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => i64::try_from(n).is_ok(),
        Kind::Uint64 | Kind::Fixed64 => u64::try_from(n).is_ok(),
        _ => true,
    }
}

/// An integer type's protobuf name, for messages.
fn kind_name(kind: &Kind) -> &'static str {
    match kind {
        Kind::Int32 => "int32",
        Kind::Sint32 => "sint32",
        Kind::Sfixed32 => "sfixed32",
        Kind::Uint32 => "uint32",
        Kind::Fixed32 => "fixed32",
        Kind::Int64 => "int64",
        Kind::Sint64 => "sint64",
        Kind::Sfixed64 => "sfixed64",
        Kind::Uint64 => "uint64",
        Kind::Fixed64 => "fixed64",
        _ => "a number",
    }
}

/// Whether `kind` is one of protobuf's integer types.
pub(super) fn is_integer(kind: &Kind) -> bool {
    matches!(
        kind,
        Kind::Int32
            | Kind::Sint32
            | Kind::Sfixed32
            | Kind::Int64
            | Kind::Sint64
            | Kind::Sfixed64
            | Kind::Uint32
            | Kind::Fixed32
            | Kind::Uint64
            | Kind::Fixed64
    )
}

/// Whether `text` is an integer as a JSON string may give one: digits, or a decimal whose
/// fraction or exponent still makes an integer (`1.5e1`).
pub(super) fn is_integer_text(text: &str) -> bool {
    text.parse::<i128>().is_ok() || integral_text(text).is_some()
}

/// 2^53: a double holds every integer below it, and only some above.
const INEXACT_ABOVE: f64 = 9_007_199_254_740_992.0;

/// The significant digits of the shortest decimal that reads back as `f`.
fn significant_digits(f: f64) -> usize {
    let shortest = format!("{f:e}");
    let mantissa = shortest.split('e').next().unwrap_or_default();
    mantissa.bytes().filter(u8::is_ascii_digit).count()
}

/// `f` as an integer's decimal digits, when it is one.
fn integral_f64(f: f64) -> Option<String> {
    (f.is_finite() && f.fract() == 0.0 && f.abs() < 1.9e19).then(|| format!("{f:.0}"))
}

/// A decimal number with a fraction or an exponent (`1.50e1`), as an integer's digits, when it
/// is one exactly; `None` for anything else.
fn integral_text(text: &str) -> Option<String> {
    let (negative, rest) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (mantissa, exponent) = match rest.find(['e', 'E']) {
        Some(i) => (&rest[..i], rest[i + 1..].parse::<i32>().ok()?),
        None => (rest, 0),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if whole.is_empty() && fraction.is_empty()
        || !whole
            .bytes()
            .chain(fraction.bytes())
            .all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let digits = format!("{whole}{fraction}");
    // The decimal point's place in `digits`, once the exponent has moved it.
    let point = i64::try_from(whole.len()).ok()? + i64::from(exponent);
    if !(0..=40).contains(&point) {
        return (digits.bytes().all(|b| b == b'0')).then(|| "0".to_string());
    }
    let point = point as usize;
    let (int, frac) = if point <= digits.len() {
        (digits[..point].to_string(), &digits[point..])
    } else {
        (format!("{digits}{}", "0".repeat(point - digits.len())), "")
    };
    if frac.bytes().any(|b| b != b'0') {
        return None;
    }
    let int = int.trim_start_matches('0');
    Some(match (int.is_empty(), negative) {
        (true, _) => "0".to_string(),
        (false, true) => format!("-{int}"),
        (false, false) => int.to_string(),
    })
}

/// Mends `json`, written from `message` by prost-reflect, where it is not what protojson and
/// json_format write:
/// - a `float` field's value as the shortest decimal that reads back as that `float` (`0.1`),
///   not as the `double` it widens to (`0.10000000149011612`);
/// - a `FloatValue` or `DoubleValue` that holds NaN or an infinity as `"NaN"`, `"Infinity"` or
///   `"-Infinity"`, as a plain `float` or `double` field's is, not as `null`.
pub(super) fn mend_response(message: &DynamicMessage, json: &mut Json) {
    match message.descriptor().full_name() {
        "google.protobuf.FloatValue" | "google.protobuf.DoubleValue" => {
            if let Some(value) = message.get_field_by_name("value") {
                mend_scalar(&value, json);
            }
        }
        "google.protobuf.Any" => mend_any(message, json),
        _ => {
            for (field, value) in message.fields() {
                if let Some(json) = json.get_mut(field.json_name()) {
                    mend_value(&field, value, json);
                }
            }
            negative_zero::mend_fields(message, json);
        }
    }
}

/// The message an `Any` holds, when the pool knows its type: in `json` itself, or under
/// `value` for a well-known type with a JSON form of its own.
fn mend_any(any: &DynamicMessage, json: &mut Json) {
    let (Some(url), Some(bytes)) = (
        any.get_field_by_name("type_url"),
        any.get_field_by_name("value"),
    ) else {
        return;
    };
    let (Some(url), Some(bytes)) = (url.as_str(), bytes.as_bytes()) else {
        return;
    };
    if url.starts_with(EMPTY_ANY) {
        // Marked empty by `mark_anys`.
        *json = Json::Object(serde_json::Map::new());
        return;
    }
    if let (Some(bare), Json::Object(object)) = (url.strip_prefix(BARE_ANY), &mut *json) {
        object.insert("@type".into(), Json::String(bare.to_string()));
    }
    let name = url.rsplit('/').next().unwrap_or(url);
    let pool = any.descriptor().parent_pool().clone();
    let Some(desc) = pool.get_message_by_name(name) else {
        return;
    };
    let Ok(inner) = DynamicMessage::decode(desc, bytes.clone()) else {
        return;
    };
    let json = match json.get_mut("value") {
        Some(value) if has_json_form(name) => value,
        _ => json,
    };
    mend_response(&inner, json);
}

fn mend_value(field: &FieldDescriptor, value: &Value, json: &mut Json) {
    match value {
        Value::List(items) => {
            if let Json::Array(values) = json {
                for (item, json) in items.iter().zip(values) {
                    mend_scalar(item, json);
                }
            }
        }
        Value::Map(entries) => {
            let Kind::Message(entry) = field.kind() else {
                return;
            };
            let value_field = entry.map_entry_value_field();
            for (key, value) in entries {
                if let Some(json) = json.get_mut(map_key_text(key)) {
                    mend_value(&value_field, value, json);
                }
            }
        }
        value => mend_scalar(value, json),
    }
}

/// A map key as proto3 JSON writes it (every key is a string).
pub(super) fn map_key_text(key: &MapKey) -> String {
    match key {
        MapKey::Bool(b) => b.to_string(),
        MapKey::I32(n) => n.to_string(),
        MapKey::I64(n) => n.to_string(),
        MapKey::U32(n) => n.to_string(),
        MapKey::U64(n) => n.to_string(),
        MapKey::String(s) => s.clone(),
    }
}

/// A single value (a list's item, a map's value or a field's).
fn mend_scalar(value: &Value, json: &mut Json) {
    match value {
        Value::F32(f) => *json = float(f64::from(*f), f.is_finite().then(|| f.to_string())),
        Value::F64(f) if !f.is_finite() => *json = float(*f, None),
        // A wrapper's, which prost-reflect writes `0`.
        value if negative_zero::is_negative_zero_value(value) => *json = Json::from(-0.0),
        Value::Message(message) => mend_response(message, json),
        _ => {}
    }
}

/// `f` as proto3 JSON writes it: a non-finite one as its string, a finite one as the number
/// `shortest` (Rust's shortest decimal that reads back as the value) says, else as `f`.
fn float(f: f64, shortest: Option<String>) -> Json {
    if f.is_nan() {
        return Json::String("NaN".into());
    }
    if f.is_infinite() {
        let name = if f > 0.0 { "Infinity" } else { "-Infinity" };
        return Json::String(name.into());
    }
    let f = shortest.and_then(|s| s.parse::<f64>().ok()).unwrap_or(f);
    serde_json::Number::from_f64(f).map_or(Json::Null, Json::Number)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pool of the well-known type `files` (as `google/protobuf/any.proto`) alone.
    fn well_known_pool(files: &[&str]) -> prost_reflect::DescriptorPool {
        let global = prost_reflect::DescriptorPool::global();
        let mut pool = prost_reflect::DescriptorPool::new();
        for file in files {
            let proto = global
                .get_file_by_name(file)
                .unwrap()
                .file_descriptor_proto()
                .clone();
            pool.add_file_descriptor_proto(proto).unwrap();
        }
        pool
    }

    #[test]
    fn integers_with_a_fraction_or_an_exponent_are_read_exactly() {
        assert_eq!(integral_text("1e2").as_deref(), Some("100"));
        assert_eq!(integral_text("-1.50e1").as_deref(), Some("-15"));
        assert_eq!(integral_text("1.0").as_deref(), Some("1"));
        assert_eq!(
            integral_text("9223372036854775807.0").as_deref(),
            Some("9223372036854775807")
        );
        assert_eq!(integral_text("0.0e-5").as_deref(), Some("0"));
        assert_eq!(integral_text("1.5"), None);
        assert_eq!(integral_text("1e-1"), None);
        assert_eq!(integral_text("e5"), None);
        assert_eq!(integral_text("0x10"), None);
        assert_eq!(integral_text("."), None);
        assert_eq!(integral_f64(1e3).as_deref(), Some("1000"));
        assert_eq!(integral_f64(1.5), None);
    }

    #[test]
    fn integers_just_past_a_types_range_are_out_of_it() {
        let out = |kind: Kind, text: &str| {
            let mut json: Json = serde_json::from_str(text).unwrap();
            conform_scalar(&kind, &mut json, "n.").is_err()
        };
        assert!(out(Kind::Uint64, "18446744073709551616"));
        assert!(out(Kind::Uint64, "1.8446744073709552e19"));
        assert!(out(Kind::Int64, "-9223372036854775809"));
        assert!(out(Kind::Int32, "2147483648.0"));
        assert!(out(Kind::Uint32, "-1.0"));
        assert!(!out(Kind::Uint64, "18446744073709551615"));
        assert!(!out(Kind::Uint64, "1.8e19"));
        // Past 2^53, a double of more than 15 significant digits may be a rounded literal.
        assert!(out(Kind::Int64, "9007199254740993.0"));
        assert!(out(Kind::Int64, "12345678901234567e1"));
        assert!(!out(Kind::Int64, "9007199254740991.0"));
        assert!(!out(Kind::Int64, "1e18"));
        assert!(!out(Kind::Int64, "-123456789012345e4"));
        assert_eq!(significant_digits(9_007_199_254_740_992.0), 16);
        assert_eq!(significant_digits(1.8e19), 2);
        assert!(!out(Kind::Int64, "-9223372036854775808"));
        assert!(!out(Kind::Int32, "2147483647.0"));
        let mut json: Json = serde_json::from_str("1e19").unwrap();
        let err = conform_scalar(&Kind::Int64, &mut json, "a.b.").unwrap_err();
        assert_eq!(
            err,
            "field `a.b` is out of range for its type (int64): 1e+19"
        );
    }

    #[test]
    fn integers_as_strings_past_a_types_range_are_refused_naming_the_field() {
        let err = |kind: Kind, text: &str| {
            conform_scalar(&kind, &mut Json::String(text.into()), "page.size.").err()
        };
        assert_eq!(
            err(Kind::Uint64, "18446744073709551616").as_deref(),
            Some(
                "field `page.size` is out of range for its type (uint64): \"18446744073709551616\""
            )
        );
        assert!(err(Kind::Uint64, "-1").is_some());
        assert!(err(Kind::Fixed32, "4294967296").is_some());
        assert!(err(Kind::Int32, "2147483648").is_some());
        assert!(err(Kind::Sint64, "-9223372036854775809").is_some());
        assert!(err(Kind::Uint32, "4294967295").is_none());
        assert!(err(Kind::Int64, "-9223372036854775808").is_none());
        assert!(err(Kind::Uint64, "18446744073709551615").is_none());
        assert!(err(Kind::Sfixed32, "-2147483648").is_none());
        // With an exponent, or a JSON number the reader took as an integer.
        assert!(err(Kind::Int64, "1e19").is_some());
        let mut json: Json = serde_json::from_str("2147483648").unwrap();
        assert!(conform_scalar(&Kind::Int32, &mut json, "n.").is_err());
        let mut json: Json = serde_json::from_str("18446744073709551615").unwrap();
        assert!(conform_scalar(&Kind::Int64, &mut json, "n.").is_err());
        assert!(conform_scalar(&Kind::Uint64, &mut json, "n.").is_ok());
    }

    #[test]
    fn an_enum_number_with_a_fraction_of_zero_is_that_number() {
        let pool = prost_reflect::DescriptorPool::global();
        let kind = pool
            .get_message_by_name("google.protobuf.Field")
            .unwrap()
            .get_field_by_name("kind")
            .unwrap()
            .kind();
        let mut json: Json = serde_json::from_str("9.0").unwrap();
        conform_scalar(&kind, &mut json, "kind.").unwrap();
        assert_eq!(json, Json::from(9));
        let mut json: Json = serde_json::from_str("9.5").unwrap();
        conform_scalar(&kind, &mut json, "kind.").unwrap();
        assert_eq!(json.as_f64(), Some(9.5), "left for the parser to refuse");
    }

    #[test]
    fn floats_as_strings_past_their_range_or_spelled_otherwise_are_refused() {
        let refused = |kind: Kind, text: &str| {
            conform_scalar(&kind, &mut Json::String(text.into()), "f.").is_err()
        };
        for text in ["1e39", "-1e39", "inf", "infinity", "-inf", "nan"] {
            assert!(refused(Kind::Float, text), "float {text}");
        }
        for text in ["1e309", "-1e400", "inf", "+infinity"] {
            assert!(refused(Kind::Double, text), "double {text}");
        }
        for text in [
            "3.4028235e38",
            "1e-50",
            "NaN",
            "Infinity",
            "-Infinity",
            "0.1",
            "words",
        ] {
            assert!(!refused(Kind::Float, text), "float {text}");
        }
        assert!(!refused(Kind::Double, "1e308"));
    }

    #[test]
    fn a_type_url_without_a_slash_is_read_and_written_as_it_is() {
        let pool = prost_reflect::DescriptorPool::global();
        let desc = pool.get_message_by_name("google.protobuf.Option").unwrap();
        let value = desc.get_field_by_name("value").unwrap();
        let sent =
            serde_json::json!({"value": {"@type": "google.protobuf.Duration", "value": "1.500s"}});
        let mut json = sent.clone();
        conform_request(&desc, &mut json, "").unwrap();
        let mut read = DynamicMessage::deserialize(desc.clone(), json).unwrap();
        restore_anys(&mut read);
        let any = read.get_field(&value).as_message().unwrap().clone();
        assert_eq!(type_url(&any).as_deref(), Some("google.protobuf.Duration"));

        mark_anys(&mut read);
        let options = prost_reflect::SerializeOptions::new();
        let mut written = read
            .serialize_with_options(serde_json::value::Serializer, &options)
            .unwrap();
        mend_response(&read, &mut written);
        assert_eq!(written, sent);
    }

    #[test]
    fn a_map_key_spelled_twice_is_refused() {
        let keys = |json: Json| match json {
            Json::Object(map) => map,
            _ => unreachable!(),
        };
        let twice = keys(serde_json::json!({"1": "a", "01": "b"}));
        let err = same_keys(&Kind::Int32, &twice, "byId.").unwrap_err();
        assert!(err.contains("map `byId` has the key 1 twice"), "{err}");
        assert!(same_keys(&Kind::String, &twice, "m.").is_ok());
        let once = keys(serde_json::json!({"1": "a", "2": "b", "-1": "c"}));
        assert!(same_keys(&Kind::Sint64, &once, "m.").is_ok());
    }

    #[test]
    fn a_bare_type_url_is_restored_where_no_type_can_stand_in_for_an_empty_any() {
        // Only `Any` and `Empty`: both have JSON forms of their own, so no stand-in exists.
        let pool = well_known_pool(&["google/protobuf/any.proto", "google/protobuf/empty.proto"]);
        assert_eq!(empty_any_url(&pool), None);
        let any = pool.get_message_by_name("google.protobuf.Any").unwrap();
        let mut json = serde_json::json!({"@type": "google.protobuf.Empty", "value": {}});
        conform_request(&any, &mut json, "").unwrap();
        let mut read = DynamicMessage::deserialize(any, json).unwrap();
        restore_anys(&mut read);
        assert_eq!(type_url(&read).as_deref(), Some("google.protobuf.Empty"));
    }

    #[test]
    fn durations_and_timestamps_no_json_can_say_are_found_with_their_path() {
        use prost_types::field_descriptor_proto::{Label, Type};
        use prost_types::{DescriptorProto, FieldDescriptorProto, FileDescriptorProto};
        let mut pool = well_known_pool(&[
            "google/protobuf/duration.proto",
            "google/protobuf/timestamp.proto",
        ]);
        let field = |name: &str, number: i32, type_name: &str, label: Label| FieldDescriptorProto {
            name: Some(name.into()),
            number: Some(number),
            r#type: Some(Type::Message as i32),
            type_name: Some(type_name.into()),
            label: Some(label as i32),
            json_name: Some(name.into()),
            ..Default::default()
        };
        pool.add_file_descriptor_proto(FileDescriptorProto {
            name: Some("t.proto".into()),
            package: Some("t".into()),
            dependency: vec![
                "google/protobuf/duration.proto".into(),
                "google/protobuf/timestamp.proto".into(),
            ],
            syntax: Some("proto3".into()),
            message_type: vec![DescriptorProto {
                name: Some("Holder".into()),
                field: vec![
                    field("took", 1, ".google.protobuf.Duration", Label::Optional),
                    field("times", 2, ".google.protobuf.Timestamp", Label::Repeated),
                    field("child", 3, ".t.Holder", Label::Optional),
                ],
                ..Default::default()
            }],
            ..Default::default()
        })
        .unwrap();
        let holder = pool.get_message_by_name("t.Holder").unwrap();
        let read = |json: Json| {
            let message = DynamicMessage::deserialize(holder.clone(), json).unwrap();
            invalid_time(&message)
        };
        let duration = |seconds: i64, nanos: i32| {
            let desc = pool
                .get_message_by_name("google.protobuf.Duration")
                .unwrap();
            let mut d = DynamicMessage::new(desc);
            d.set_field_by_name("seconds", Value::I64(seconds));
            d.set_field_by_name("nanos", Value::I32(nanos));
            d
        };
        // Valid ones, of either sign.
        assert_eq!(
            read(serde_json::json!({"took": "-1.5s", "times": ["1970-01-01T00:00:01.5Z"]})),
            None
        );
        for (seconds, nanos) in [(1, 5), (-1, -5), (0, -999_999_999), (0, 0)] {
            assert_eq!(
                invalid_time(&duration(seconds, nanos)),
                None,
                "{seconds} {nanos}"
            );
        }
        // Mixed signs, and a second or more of nanos.
        for (seconds, nanos) in [(1, -5), (-1, 5), (0, 1_000_000_000), (2, -1_000_000_000)] {
            assert!(
                invalid_time(&duration(seconds, nanos)).is_some(),
                "{seconds} {nanos}"
            );
        }
        // With their field paths, in lists and nested messages.
        let mut message = DynamicMessage::new(holder.clone());
        let mut child = DynamicMessage::new(holder.clone());
        child.set_field_by_name("took", Value::Message(duration(1, -5)));
        message.set_field_by_name("child", Value::Message(child));
        assert_eq!(
            invalid_time(&message).as_deref(),
            Some(
                "field `child.took`: a Duration of 1 s and -5 ns (its nanos must be under a \
                 second, with the sign of its seconds)"
            )
        );
        let timestamp = |nanos: i32| {
            let desc = pool
                .get_message_by_name("google.protobuf.Timestamp")
                .unwrap();
            let mut ts = DynamicMessage::new(desc);
            ts.set_field_by_name("seconds", Value::I64(1));
            ts.set_field_by_name("nanos", Value::I32(nanos));
            Value::Message(ts)
        };
        let mut message = DynamicMessage::new(holder);
        message.set_field_by_name(
            "times",
            Value::List(vec![timestamp(0), timestamp(1_500_000_000)]),
        );
        assert_eq!(
            invalid_time(&message).as_deref(),
            Some("field `times[1]`: a Timestamp with 1500000000 ns (its nanos must be 0 to 999999999)")
        );
    }

    #[test]
    fn timestamps_and_durations_the_parser_would_change_are_refused() {
        let refused = |name: &str, text: &str| time_text(name, text, "t.").is_err();
        let ts = "google.protobuf.Timestamp";
        let d = "google.protobuf.Duration";
        for text in [
            "2016-12-31T23:59:60Z",
            "2016-12-31T23:59:59.1234567891Z",
            "0000-12-31T00:00:00Z",
        ] {
            assert!(refused(ts, text), "{text}");
        }
        for text in [
            "2016-12-31T23:59:59.123456789Z",
            "2016-12-31T23:59:59+01:00",
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59.999999999Z",
            "not a time",
        ] {
            assert!(!refused(ts, text), "{text}");
        }
        for text in ["1.0000000001s", "315576000001s", "-315576000001s"] {
            assert!(refused(d, text), "{text}");
        }
        for text in ["1.000000001s", "-315576000000s", "0s", "words"] {
            assert!(!refused(d, text), "{text}");
        }
        assert_eq!(
            time_text(ts, "2016-12-31T23:59:60Z", "a.at.").unwrap_err(),
            "field `a.at` is `2016-12-31T23:59:60Z`: a Timestamp has no leap seconds (`:60`); give `:59`"
        );
    }

    #[test]
    fn an_empty_any_is_written_and_read_as_an_empty_object() {
        let pool = prost_reflect::DescriptorPool::global();
        // `google.protobuf.Option { string name = 1; Any value = 2; }`, its `value` set but empty.
        let desc = pool.get_message_by_name("google.protobuf.Option").unwrap();
        let any = pool.get_message_by_name("google.protobuf.Any").unwrap();
        let mut option = DynamicMessage::new(desc.clone());
        option.set_field_by_name("value", Value::Message(DynamicMessage::new(any)));
        let options = prost_reflect::SerializeOptions::new();
        let write =
            |m: &DynamicMessage| m.serialize_with_options(serde_json::value::Serializer, &options);
        assert!(write(&option).is_err());
        mark_anys(&mut option);
        let mut json = write(&option).unwrap();
        mend_response(&option, &mut json);
        assert_eq!(json, serde_json::json!({"value": {}}));

        // Read: `{}` for an `Any` is an `Any` set but empty, not refused for want of `@type`.
        let mut json = serde_json::json!({"value": {}});
        conform_request(&desc, &mut json, "").unwrap();
        let mut read = DynamicMessage::deserialize(desc.clone(), json).unwrap();
        restore_anys(&mut read);
        let value = desc.get_field_by_name("value").unwrap();
        assert!(read.has_field(&value));
        assert!(is_empty_any(read.get_field(&value).as_message().unwrap()));
    }

    #[test]
    fn floats_are_written_as_their_shortest_decimal_and_non_finite_as_strings() {
        let shortest = |f: f32| float(f64::from(f), Some(f.to_string())).to_string();
        assert_eq!(shortest(0.1), "0.1");
        assert_eq!(shortest(f32::MAX), "3.4028235e+38");
        assert_eq!(shortest(-1e-45), "-1e-45");
        assert_eq!(float(f64::NAN, None), Json::from("NaN"));
        assert_eq!(float(f64::NEG_INFINITY, None), Json::from("-Infinity"));
    }
}
