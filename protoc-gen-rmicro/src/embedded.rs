//! The encoded descriptors generated code embeds (`FILE_DESCRIPTOR_SET`) for server reflection.
//!
//! They are cut from the bytes the generator was given rather than re-encoded from decoded
//! prost-types messages: prost-types drops extension fields when it decodes, so a re-encoded
//! descriptor loses every custom option (`google.api.http` on methods,
//! `google.api.field_behavior` on fields, a project's own options), and the tools that read
//! descriptors by reflection (grpcurl, HTTP transcoders, `rmicro --handler rpc`) would see none.
//!
//! Each file is edited at the wire level, knowing only which fields of descriptor.proto hold
//! nested descriptors and options; everything else, option contents included, is copied byte for
//! byte. The edits are those that make protoc's and protox's files embed the same bytes:
//! `source_code_info` is dropped (comments and spans are not served), and so is each options
//! message with nothing in it (protoc writes `options {}` for `rpc X(A) returns (B) {}` where
//! protox writes nothing).

use prost::encoding::{
    decode_key, decode_varint, encode_key, encode_varint, skip_field, DecodeContext, WireType,
};
use prost::Message;

/// A `CodeGeneratorRequest` seen as its files' encoded bytes: a repeated message field decodes
/// as repeated `bytes`, one entry per file, exactly as written.
#[derive(Clone, PartialEq, Message)]
struct RequestFiles {
    #[prost(bytes = "vec", repeated, tag = "15")]
    proto_file: Vec<Vec<u8>>,
}

/// A `FileDescriptorSet` seen the same way.
#[derive(Clone, PartialEq, Message)]
struct SetFiles {
    #[prost(bytes = "vec", repeated, tag = "1")]
    file: Vec<Vec<u8>>,
}

/// Deeper than prost's own decoding limit, which the same bytes have already passed; a guard
/// against running out of stack, never reached by a real descriptor.
const MAX_DEPTH: u32 = 100;

/// Which message the generator's input bytes hold.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Source {
    /// A `CodeGeneratorRequest` (files at field 15).
    Request,
    /// A `FileDescriptorSet` (files at field 1).
    DescriptorSet,
}

/// Each file of `bytes` (a request or a set, as `source` says) as the encoded
/// `FileDescriptorProto` it holds, in order: what the `google.api.http` bindings are read from
/// and the embedded copies are cut from, extension options and all.
pub(crate) fn file_bytes(bytes: &[u8], source: Source) -> Result<Vec<Vec<u8>>, prost::DecodeError> {
    Ok(match source {
        Source::Request => RequestFiles::decode(bytes)?.proto_file,
        Source::DescriptorSet => SetFiles::decode(bytes)?.file,
    })
}

/// Each of `files` (from [`file_bytes`]), ready to embed: without source info or empty
/// options, every other byte as given.
pub(crate) fn files(files: &[Vec<u8>]) -> Result<Vec<Vec<u8>>, String> {
    files
        .iter()
        .map(|file| {
            let mut out = Vec::with_capacity(file.len());
            rewrite(file, Level::File, 0, &mut out)?;
            Ok(out)
        })
        .collect()
}

/// An encoded `FileDescriptorSet` of `files`, each an encoded `FileDescriptorProto`.
pub(crate) fn encode_set<'a>(files: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    for file in files {
        encode_key(1, WireType::LengthDelimited, &mut out);
        encode_varint(file.len() as u64, &mut out);
        out.extend_from_slice(file);
    }
    out
}

/// The descriptor messages that hold other descriptors or options.
#[derive(Debug, Clone, Copy)]
enum Level {
    File,
    Message,
    Field,
    Oneof,
    ExtensionRange,
    Enum,
    EnumValue,
    Service,
    Method,
}

/// What one field of a descriptor message is, for the rewrite.
enum Part {
    /// A descriptor holding others or options: rewritten in turn.
    Nested(Level),
    /// An options message: dropped when empty, copied otherwise.
    Options,
    /// `FileDescriptorProto.source_code_info`: dropped.
    SourceInfo,
    /// Anything else: copied.
    Other,
}

impl Level {
    /// What field `number` of this message is (field numbers from descriptor.proto).
    fn part(self, number: u32) -> Part {
        use Level::*;
        match (self, number) {
            (File, 4) | (Message, 3) => Part::Nested(Message),
            (File, 5) | (Message, 4) => Part::Nested(Enum),
            (File, 6) => Part::Nested(Service),
            (File, 7) | (Message, 2) | (Message, 6) => Part::Nested(Field),
            (Message, 5) => Part::Nested(ExtensionRange),
            (Message, 8) => Part::Nested(Oneof),
            (Enum, 2) => Part::Nested(EnumValue),
            (Service, 2) => Part::Nested(Method),
            (File, 8)
            | (Message, 7)
            | (Field, 8)
            | (Oneof, 2)
            | (ExtensionRange, 3)
            | (Enum, 3)
            | (EnumValue, 3)
            | (Service, 3)
            | (Method, 4) => Part::Options,
            (File, 9) => Part::SourceInfo,
            _ => Part::Other,
        }
    }
}

/// Appends `message` (a `level` descriptor) to `out`, edited as the module says.
fn rewrite(mut message: &[u8], level: Level, depth: u32, out: &mut Vec<u8>) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err("descriptors nested too deeply".into());
    }
    let bad = |err: prost::DecodeError| format!("malformed {level:?} descriptor: {err}");
    while !message.is_empty() {
        let field = message;
        let (number, wire_type) = decode_key(&mut message).map_err(bad)?;
        if wire_type != WireType::LengthDelimited {
            skip_field(wire_type, number, &mut message, DecodeContext::default()).map_err(bad)?;
            out.extend_from_slice(&field[..field.len() - message.len()]);
            continue;
        }
        let key = &field[..field.len() - message.len()];
        let len = decode_varint(&mut message).map_err(bad)?;
        let len = usize::try_from(len)
            .ok()
            .filter(|len| *len <= message.len())
            .ok_or_else(|| {
                format!("malformed {level:?} descriptor: field {number} is cut short")
            })?;
        let (payload, rest) = message.split_at(len);
        message = rest;
        match level.part(number) {
            Part::SourceInfo => {}
            Part::Options if payload.is_empty() => {}
            Part::Nested(inner) => {
                let mut nested = Vec::with_capacity(payload.len());
                rewrite(payload, inner, depth + 1, &mut nested)?;
                out.extend_from_slice(key);
                encode_varint(nested.len() as u64, out);
                out.extend_from_slice(&nested);
            }
            Part::Options | Part::Other => {
                out.extend_from_slice(&field[..field.len() - message.len()]);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(number: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_key(number, WireType::LengthDelimited, &mut out);
        encode_varint(payload.len() as u64, &mut out);
        out.extend_from_slice(payload);
        out
    }

    fn strip(file: &[u8]) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        rewrite(file, Level::File, 0, &mut out).map(|()| out)
    }

    #[test]
    fn keeps_extension_options_and_drops_source_info_and_empty_options() {
        // MethodOptions holding only an extension (field 50000, a string).
        let mut extension = Vec::new();
        encode_key(50000, WireType::LengthDelimited, &mut extension);
        encode_varint(2, &mut extension);
        extension.extend_from_slice(b"hi");
        let kept = [field(1, b"A"), field(4, &extension)].concat();
        let emptied = [field(1, b"B"), field(4, b"")].concat();
        let service = [field(1, b"S"), field(2, &kept), field(2, &emptied)].concat();
        let file = [
            field(1, b"a.proto"),
            field(6, &service),
            field(8, b""),
            field(9, b"\x0a\x00"),
        ]
        .concat();

        let want_service = [field(1, b"S"), field(2, &kept), field(2, &field(1, b"B"))].concat();
        let want = [field(1, b"a.proto"), field(6, &want_service)].concat();
        assert_eq!(strip(&file).unwrap(), want);
    }

    #[test]
    fn unknown_fields_and_other_wire_types_are_copied() {
        let mut file = field(1, b"a.proto");
        encode_key(99, WireType::Varint, &mut file);
        encode_varint(300, &mut file);
        encode_key(98, WireType::ThirtyTwoBit, &mut file);
        file.extend_from_slice(&[1, 2, 3, 4]);
        encode_key(97, WireType::StartGroup, &mut file);
        encode_key(1, WireType::Varint, &mut file);
        encode_varint(1, &mut file);
        encode_key(97, WireType::EndGroup, &mut file);
        assert_eq!(strip(&file).unwrap(), file);
    }

    #[test]
    fn malformed_bytes_are_errors_not_panics() {
        let cases: &[&[u8]] = &[
            b"\x0a",                                             // a key with no length
            b"\x0a\x05abc",                                      // a length past the end
            b"\x22\x03\x12\x05a",                                // a nested message cut short
            b"\x0a\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", // a varint too long
            b"\x0d\x01\x02",                                     // a 32-bit field cut short
            b"\x0c",                                             // an end-group with no start
            b"\x0b\x08\x01",                                     // a group never ended
            b"\x00",                                             // field number 0
        ];
        for case in cases {
            assert!(strip(case).is_err(), "{case:?}");
        }
        // Messages nested past any real descriptor.
        let mut nested = Vec::new();
        for _ in 0..200 {
            nested = field(3, &nested);
        }
        let file = field(4, &nested);
        assert!(strip(&file).unwrap_err().contains("too deeply"));
        assert!(file_bytes(b"\x7a\x05ab", Source::Request).is_err());
    }
}
