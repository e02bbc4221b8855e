//! Negative zero (`-0.0`) in `float` and `double` fields, kept both ways as protobuf's own
//! runtimes keep it: written `-0` in JSON, and sent on the wire even in a field without presence
//! (protobuf tells a field's default from other values by its bits, and `-0.0` is not `0.0`'s).
//!
//! prost-reflect compares with `==`, for which `-0.0` is the default `0.0`: it leaves such a field
//! out of both its JSON and its encoding, and reads a wrapper's `-0` as `0`. serde_json writes
//! the number as `-0.0`. The functions here mend each of those.

use std::io;

use prost::encoding::{encode_key, encode_varint, WireType};
use prost::Message;
use prost_reflect::{DynamicMessage, FieldDescriptor, Kind, ReflectMessage, Value};
use serde_json::Value as Json;

use super::proto_json::{has_json_form, map_key_text};

/// `json` as text, a negative zero written `-0` as protojson writes it (serde_json writes
/// `-0.0`); otherwise as serde_json writes it.
pub(super) fn write(json: &Json) -> String {
    let mut out = Vec::new();
    let mut writer = serde_json::Serializer::with_formatter(&mut out, Formatter);
    // Writing a `serde_json::Value` into memory cannot fail.
    if serde::Serialize::serialize(json, &mut writer).is_err() {
        return json.to_string();
    }
    String::from_utf8(out).unwrap_or_else(|_| json.to_string())
}

/// serde_json's compact form, but for a negative zero.
struct Formatter;

impl serde_json::ser::Formatter for Formatter {
    fn write_f64<W: ?Sized + io::Write>(&mut self, writer: &mut W, value: f64) -> io::Result<()> {
        if is_negative_zero(value) {
            return writer.write_all(b"-0");
        }
        serde_json::ser::CompactFormatter.write_f64(writer, value)
    }

    fn write_f32<W: ?Sized + io::Write>(&mut self, writer: &mut W, value: f32) -> io::Result<()> {
        self.write_f64(writer, f64::from(value))
    }
}

fn is_negative_zero(f: f64) -> bool {
    f == 0.0 && f.is_sign_negative()
}

/// Whether `value` is a `float` or `double` negative zero.
pub(super) fn is_negative_zero_value(value: &Value) -> bool {
    match value {
        Value::F32(f) => is_negative_zero(f64::from(*f)),
        Value::F64(f) => is_negative_zero(*f),
        _ => false,
    }
}

/// Whether request JSON `json` is a negative zero: the number `-0` (`-0.0`, `-0e3`) or a string
/// of one, as path and query parameters are.
fn is_negative_zero_json(json: &Json) -> bool {
    match json {
        Json::Number(n) => n.as_f64().is_some_and(is_negative_zero),
        Json::String(s) => s.trim().parse::<f64>().is_ok_and(is_negative_zero),
        _ => false,
    }
}

/// Whether `json` holds a negative zero anywhere.
pub(super) fn in_json(json: &Json) -> bool {
    match json {
        Json::Array(items) => items.iter().any(in_json),
        Json::Object(object) => object.values().any(in_json),
        json => is_negative_zero_json(json),
    }
}

/// Writes into `json`, prost-reflect's JSON for `message`, the fields without presence that
/// hold a negative zero, which it leaves out as if they held `0`.
pub(super) fn mend_fields(message: &DynamicMessage, json: &mut Json) {
    let Json::Object(object) = json else {
        return;
    };
    for field in message.descriptor().fields() {
        if lost_scalar(message, &field) {
            object.insert(field.json_name().to_string(), Json::from(-0.0));
        }
    }
}

/// Sets again in `message`, read from request JSON `json`, the negative zeros reading lost: a
/// `FloatValue`'s or `DoubleValue`'s (read as `0`) and those in an `Any`'s message (whose bytes
/// prost-reflect encodes without them), in messages at any depth.
pub(super) fn restore(message: &mut DynamicMessage, json: &Json) {
    let desc = message.descriptor();
    match desc.full_name() {
        "google.protobuf.FloatValue" | "google.protobuf.DoubleValue" => {
            if let Some(field) = desc.get_field_by_name("value") {
                restore_scalar(message, &field, json);
            }
            return;
        }
        "google.protobuf.Any" => return restore_any(message, json),
        // Their numbers are in a oneof, which keeps a negative zero.
        name if has_json_form(name) => return,
        _ => {}
    }
    let Json::Object(object) = json else {
        return;
    };
    for (key, value) in object {
        let Some(field) = desc
            .get_field_by_name(key)
            .or_else(|| desc.get_field_by_json_name(key))
        else {
            continue;
        };
        if matches!(field.kind(), Kind::Float | Kind::Double) {
            restore_scalar(message, &field, value);
            continue;
        }
        if !matches!(field.kind(), Kind::Message(_))
            || !message.has_field(&field)
            || !in_json(value)
        {
            continue;
        }
        match (message.get_field_mut(&field), value) {
            (Value::Message(inner), json) => restore(inner, json),
            (Value::List(items), Json::Array(values)) => {
                for (item, json) in items.iter_mut().zip(values) {
                    if let Value::Message(inner) = item {
                        restore(inner, json);
                    }
                }
            }
            (Value::Map(entries), Json::Object(values)) => {
                for (key, item) in entries.iter_mut() {
                    if let (Value::Message(inner), Some(json)) =
                        (item, values.get(&map_key_text(key)))
                    {
                        restore(inner, json);
                    }
                }
            }
            _ => {}
        }
    }
}

/// Sets `field` (a `float` or `double` without presence) to a negative zero when `json` is one.
fn restore_scalar(message: &mut DynamicMessage, field: &FieldDescriptor, json: &Json) {
    if field.is_list() || field.supports_presence() || !is_negative_zero_json(json) {
        return;
    }
    let zero = match field.kind() {
        Kind::Float => Value::F32(-0.0),
        _ => Value::F64(-0.0),
    };
    message.set_field(field, zero);
}

/// [`restore`] in the message an `Any` holds, its bytes encoded again with [`encode`].
fn restore_any(any: &mut DynamicMessage, json: &Json) {
    let (Some(url), Some(bytes)) = (
        any.get_field_by_name("type_url")
            .and_then(|u| u.as_str().map(str::to_string)),
        any.get_field_by_name("value")
            .and_then(|v| v.as_bytes().cloned()),
    ) else {
        return;
    };
    let name = url.rsplit('/').next().unwrap_or(&url);
    let Some(desc) = any.descriptor().parent_pool().get_message_by_name(name) else {
        return;
    };
    let Ok(mut inner) = DynamicMessage::decode(desc, bytes) else {
        return;
    };
    let inner_json = match json.get("value") {
        Some(value) if has_json_form(name) => value,
        _ => json,
    };
    restore(&mut inner, inner_json);
    any.set_field_by_name("value", Value::Bytes(encode(&inner).into()));
}

/// `message` encoded, with the negative zeros prost-reflect's encoding leaves out of fields
/// without presence (at any depth).
pub(super) fn encode(message: &DynamicMessage) -> Vec<u8> {
    let mut buf = Vec::with_capacity(message.encoded_len());
    encode_into(message, &mut buf);
    buf
}

fn encode_into(message: &DynamicMessage, buf: &mut Vec<u8>) {
    let lost: Vec<FieldDescriptor> = message
        .descriptor()
        .fields()
        .filter(|f| loses_zero(message, f))
        .collect();
    if lost.is_empty() {
        message.encode_raw(buf);
        return;
    }
    // prost-reflect encodes the other fields; these follow (a parser takes fields in any order).
    let mut rest = message.clone();
    for field in &lost {
        rest.clear_field(field);
    }
    rest.encode_raw(buf);
    for field in &lost {
        encode_field(field, &message.get_field(field), buf);
    }
}

/// Whether prost-reflect's encoding of `field` in `message` would lose a negative zero.
fn loses_zero(message: &DynamicMessage, field: &FieldDescriptor) -> bool {
    if lost_scalar(message, field) {
        return true;
    }
    if field.is_group() || !matches!(field.kind(), Kind::Message(_)) || !message.has_field(field) {
        return false;
    }
    // A map entry's value has no presence: a negative zero is lost there as in a field.
    let holds = |value: &Value| match value {
        Value::Message(m) => holds_lost_zero(m),
        value => field.is_map() && is_negative_zero_value(value),
    };
    match &*message.get_field(field) {
        Value::List(items) => items.iter().any(holds),
        Value::Map(entries) => entries.values().any(holds),
        value => holds(value),
    }
}

/// Whether `field` is a `float` or `double` without presence that holds a negative zero.
fn lost_scalar(message: &DynamicMessage, field: &FieldDescriptor) -> bool {
    matches!(field.kind(), Kind::Float | Kind::Double)
        && !field.is_list()
        && !field.supports_presence()
        && is_negative_zero_value(&message.get_field(field))
}

fn holds_lost_zero(message: &DynamicMessage) -> bool {
    message
        .descriptor()
        .fields()
        .any(|f| loses_zero(message, &f))
}

/// `field`'s `value` (one that [`loses_zero`]), encoded as protobuf encodes it.
fn encode_field(field: &FieldDescriptor, value: &Value, buf: &mut Vec<u8>) {
    let number = field.number();
    match value {
        Value::F32(f) => prost::encoding::float::encode(number, f, buf),
        Value::F64(f) => prost::encoding::double::encode(number, f, buf),
        Value::Message(inner) => encode_message(number, inner, buf),
        Value::List(items) => {
            for item in items {
                if let Value::Message(inner) = item {
                    encode_message(number, inner, buf);
                }
            }
        }
        Value::Map(entries) => {
            let Kind::Message(entry_desc) = field.kind() else {
                return;
            };
            let key_field = entry_desc.map_entry_key_field();
            let value_field = entry_desc.map_entry_value_field();
            for (key, item) in entries {
                // The key, and a value prost-reflect encodes as it is, by prost-reflect.
                let mut entry = DynamicMessage::new(entry_desc.clone());
                entry.set_field(&key_field, Value::from(key.clone()));
                let own = matches!(item, Value::Message(_)) || is_negative_zero_value(item);
                if !own {
                    entry.set_field(&value_field, item.clone());
                }
                let mut bytes = entry.encode_to_vec();
                let value_number = value_field.number();
                match item {
                    Value::Message(inner) => encode_message(value_number, inner, &mut bytes),
                    Value::F32(f) if own => {
                        prost::encoding::float::encode(value_number, f, &mut bytes)
                    }
                    Value::F64(f) if own => {
                        prost::encoding::double::encode(value_number, f, &mut bytes)
                    }
                    _ => {}
                }
                encode_key(number, WireType::LengthDelimited, buf);
                encode_varint(bytes.len() as u64, buf);
                buf.extend_from_slice(&bytes);
            }
        }
        _ => {}
    }
}

/// `message` as length-delimited field `number`, encoded by [`encode`].
fn encode_message(number: u32, message: &DynamicMessage, buf: &mut Vec<u8>) {
    let bytes = encode(message);
    encode_key(number, WireType::LengthDelimited, buf);
    encode_varint(bytes.len() as u64, buf);
    buf.extend_from_slice(&bytes);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::rpc::proto_json;

    fn negative_zero(json: &Json) -> bool {
        json.as_f64().is_some_and(is_negative_zero)
    }

    #[test]
    fn a_negative_zero_is_written_minus_0() {
        let json = serde_json::json!({"a": -0.0, "b": [0.0, -0.0, 1.5, -2.0], "c": 0});
        assert_eq!(write(&json), r#"{"a":-0,"b":[0.0,-0,1.5,-2.0],"c":0}"#);
    }

    /// `DoubleValue { value: -0.0 }` as protobuf encodes it (the field, as the bits differ from
    /// `0.0`'s).
    const WIRE: &[u8] = &[9, 0, 0, 0, 0, 0, 0, 0, 0x80];

    #[test]
    fn a_wrappers_negative_zero_is_read_sent_and_written() {
        let pool = prost_reflect::DescriptorPool::global();
        let desc = pool
            .get_message_by_name("google.protobuf.DoubleValue")
            .unwrap();
        // Written: `-0`, not `0`.
        let answer = DynamicMessage::decode(desc.clone(), WIRE).unwrap();
        let options = prost_reflect::SerializeOptions::new();
        let mut json = answer
            .serialize_with_options(serde_json::value::Serializer, &options)
            .unwrap();
        proto_json::mend_response(&answer, &mut json);
        assert!(negative_zero(&json), "{json}");
        // Read and sent, from the number and from a string.
        for sent in [serde_json::json!(-0.0), serde_json::json!("-0")] {
            let mut read = DynamicMessage::deserialize(desc.clone(), sent.clone()).unwrap();
            restore(&mut read, &sent);
            assert_eq!(encode(&read), WIRE, "{sent}");
        }
    }

    #[test]
    fn a_negative_zero_in_an_anys_message_is_sent() {
        // `google.protobuf.Option { string name = 1; Any value = 2; }` (proto3).
        let pool = prost_reflect::DescriptorPool::global();
        let desc = pool.get_message_by_name("google.protobuf.Option").unwrap();
        let mut sent = serde_json::json!({"value": {
            "@type": "type.googleapis.com/google.protobuf.DoubleValue", "value": -0.0}});
        proto_json::conform_request(&desc, &mut sent, "").unwrap();
        let mut read = DynamicMessage::deserialize(desc.clone(), sent.clone()).unwrap();
        restore(&mut read, &sent);
        let any = read.get_field_by_name("value").unwrap();
        let bytes = any
            .as_message()
            .unwrap()
            .get_field_by_name("value")
            .unwrap();
        assert_eq!(bytes.as_bytes().unwrap().as_ref(), WIRE);
        // A message without a negative zero is encoded as prost-reflect encodes it.
        let plain = DynamicMessage::deserialize(desc, serde_json::json!({"name": "n"})).unwrap();
        assert_eq!(encode(&plain), plain.encode_to_vec());
    }
}
