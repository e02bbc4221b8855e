//! Where the message JSON of prost-reflect's serde support differs from proto3 JSON as real
//! peers write it (protojson, json_format), and the mending.

use prost_reflect::{DynamicMessage, FieldDescriptor, Kind, MapKey, ReflectMessage, Value};
use serde_json::Value as Json;

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
    let name = url.rsplit('/').next().unwrap_or(url);
    let pool = any.descriptor().parent_pool().clone();
    let Some(desc) = pool.get_message_by_name(name) else {
        return;
    };
    let Ok(inner) = DynamicMessage::decode(desc, bytes.clone()) else {
        return;
    };
    let json = match json.get_mut("value") {
        Some(value) if name.starts_with("google.protobuf.") => value,
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
                let key = match key {
                    MapKey::Bool(b) => b.to_string(),
                    MapKey::I32(n) => n.to_string(),
                    MapKey::I64(n) => n.to_string(),
                    MapKey::U32(n) => n.to_string(),
                    MapKey::U64(n) => n.to_string(),
                    MapKey::String(s) => s.clone(),
                };
                if let Some(json) = json.get_mut(&key) {
                    mend_value(&value_field, value, json);
                }
            }
        }
        value => mend_scalar(value, json),
    }
}

/// A single value (a list's item, a map's value or a field's).
fn mend_scalar(value: &Value, json: &mut Json) {
    match value {
        Value::F32(f) => *json = float(f64::from(*f), f.is_finite().then(|| f.to_string())),
        Value::F64(f) if !f.is_finite() => *json = float(*f, None),
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
