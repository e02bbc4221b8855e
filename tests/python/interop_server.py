"""A gRPC service written with Python grpcio (not rmicro): tests/python/interop.proto's Interop
service, for the rpc gateway's interop tests (rmicro/tests/gateway_rpc_python.rs).

Usage: interop_server.py STUBS_DIR REFLECTION [DELAY_MS [next]]
  STUBS_DIR   where to generate the Python stubs (grpc_tools.protoc, at start)
  REFLECTION  v1alpha: serve server reflection as grpcio-reflection does (v1alpha only);
              none: serve no reflection at all (UNIMPLEMENTED, as for any unknown method)
  DELAY_MS    how long each reflection call (answered or not) takes, so that concurrent
              callers overlap; 0 by default
  next        serve the service's next version, as a redeploy would: `Everything` has a field
              more, `added = 100`, which `Labelled` sets

Prints `listening on 127.0.0.1:PORT` once serving. Then each line on its standard input is
answered with a line of JSON on its standard output:
  stats             the calls of server reflection, by version (`v1alpha`, `v1`; v1 is never
                    served)
  last              the last message `Mirror` was sent, as json_format.MessageToJson writes it
                    (`{"json": ...}`), `{"json": null}` before any
  details           the details the last `Fail` with `details: rich` sent, each Any as
                    json_format.MessageToJson writes it (`{"json": [...]}`), `{"json": null}`
                    before any
  parse TYPE JSON   JSON (the rest of the line) read into message TYPE by json_format.Parse and
                    written back by MessageToJson: `{"json": ...}`, or `{"error": "..."}` when
                    json_format refuses it
Exits when its standard input closes.
"""
import json
import os
import sys
import threading
import time
from concurrent import futures

import grpc
from grpc_tools import protoc

here = os.path.dirname(os.path.abspath(__file__))
stubs, reflection_kind = sys.argv[1], sys.argv[2]
delay = int(sys.argv[3]) / 1000.0 if len(sys.argv) > 3 else 0.0
next_version = len(sys.argv) > 4 and sys.argv[4] == "next"
os.makedirs(stubs, exist_ok=True)
include = os.path.join(os.path.dirname(protoc.__file__), "_proto")
sources = here
if next_version:
    # The same files, `Everything` with one field more, compiled from a copy.
    sources = os.path.join(stubs, "next")
    os.makedirs(sources, exist_ok=True)
    for name in ("interop.proto", "interop_extra.proto", "interop_legacy.proto"):
        with open(os.path.join(here, name)) as f:
            text = f.read()
        if name == "interop.proto":
            marker = "message Everything {\n"
            assert marker in text
            text = text.replace(marker, marker + "  string added = 100;\n")
        with open(os.path.join(sources, name), "w") as f:
            f.write(text)
for proto in ("interop.proto", "interop_extra.proto", "interop_legacy.proto"):
    if protoc.main(["protoc", f"-I{sources}", f"-I{include}", f"--python_out={stubs}", proto]) != 0:
        sys.exit(f"grpc_tools.protoc failed on {proto}")
sys.path.insert(0, stubs)
import interop_extra_pb2  # noqa: E402  (in the default pool, so reflection knows it)
import interop_legacy_pb2  # noqa: E402
import interop_pb2 as pb  # noqa: E402
from google.protobuf import any_pb2, descriptor_pool, json_format, message_factory  # noqa: E402
from google.protobuf import duration_pb2, struct_pb2, wrappers_pb2  # noqa: E402
from google.rpc import code_pb2, error_details_pb2, status_pb2  # noqa: E402  (grpcio-status's)
from grpc_status import rpc_status  # noqa: E402

lock = threading.Lock()
counts = {"v1alpha": 0, "v1": 0}
mirrored = [None]
sent_details = [None]

SERVICE = "interop.v1.Interop"
CODES = {c.value[0]: c for c in grpc.StatusCode}


def echo(request, context):
    return request


def packed(message):
    any_ = any_pb2.Any()
    any_.Pack(message)
    return any_


def rich_details():
    """Details of every kind a status carries: google.rpc's (as grpc-go and grpcio-status
    users send them), well-known types with JSON forms of their own, and an Any of an Any."""
    violation = error_details_pb2.BadRequest.FieldViolation(field="name", description="too short")
    structure = struct_pb2.Struct()
    structure.update({"shelf": "top", "tags": [True, None, "new"]})
    return [
        packed(error_details_pb2.BadRequest(field_violations=[violation])),
        packed(error_details_pb2.ErrorInfo(reason="OUT_OF_STOCK", domain="books.example",
                                           metadata={"isbn": "978-3"})),
        packed(error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=1,
                                                                             nanos=500000000))),
        packed(duration_pb2.Duration(seconds=3)),
        packed(structure),
        packed(packed(pb.Note(text="inside"))),
        # An Any of an Any of a type only the default pool (so reflection) knows.
        packed(packed(interop_extra_pb2.Label(key="deep", weight=2))),
    ]


def fail(request, context):
    reply_metadata(context)
    if request.details == "crash":
        # The answer's headers, then the process is gone: no message, no status.
        context.send_initial_metadata(())
        time.sleep(0.3)
        os._exit(1)
    if request.details == "rich":
        details = rich_details()
        with lock:
            sent_details[0] = [to_json(d) for d in details]
        status = status_pb2.Status(code=request.code, message=request.message, details=details)
        context.abort_with_status(rpc_status.to_status(status))
    if request.details == "mismatch":
        status = status_pb2.Status(code=code_pb2.INTERNAL, message="not this",
                                   details=[packed(pb.Note(text="still shown"))])
        context.set_trailing_metadata([("grpc-status-details-bin", status.SerializeToString())])
    if request.details == "garbage":
        context.set_trailing_metadata([("grpc-status-details-bin", b"\xff\xff\xff")])
    if request.with_details:
        # A type of the service's own file, one only the default pool (so reflection) knows,
        # and one nobody knows.
        note, label = any_pb2.Any(), any_pb2.Any()
        note.Pack(pb.Note(text="see the docs"))
        label.Pack(interop_extra_pb2.Label(key="k", weight=3))
        unknown = any_pb2.Any(type_url="type.googleapis.com/no.Such", value=b"\x08\x01")
        status = pb.RpcStatus(
            code=request.code, message=request.message, details=[note, label, unknown]
        )
        context.set_trailing_metadata([("grpc-status-details-bin", status.SerializeToString())])
    context.abort(CODES[request.code], request.message)


def reply_metadata(context):
    """Answers metadata the caller asks for: `x-reply-header-<key>: v` as response header
    metadata `<key>: v`, `x-reply-trailer-<key>: v` as trailing metadata."""
    headers, trailers = [], []
    for k, v in context.invocation_metadata():
        if k.startswith("x-reply-header-"):
            headers.append((k[len("x-reply-header-"):], v))
        elif k.startswith("x-reply-trailer-"):
            trailers.append((k[len("x-reply-trailer-"):], v))
    if headers:
        context.send_initial_metadata(headers)
    if trailers:
        context.set_trailing_metadata(trailers)


def slow(request, context):
    reply_metadata(context)
    remaining = context.time_remaining()
    if request.give_up and remaining is not None:
        time.sleep(remaining * 0.97)
        context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
    end = time.monotonic() + request.millis / 1000.0
    while context.is_active() and time.monotonic() < end:
        time.sleep(0.01)
    metadata = {}
    for k, v in context.invocation_metadata():
        if isinstance(v, str):
            metadata[k] = f"{metadata[k]},{v}" if k in metadata else v
    return pb.CallInfo(deadline_seconds=-1 if remaining is None else remaining, metadata=metadata)


def mirror(request, context):
    with lock:
        mirrored[0] = request
    return request


def to_json(message):
    """`message` as json_format writes it by default (lowerCamelCase names, default values
    left out), read back as a value."""
    return json.loads(json_format.MessageToJson(message))


def parse(line):
    """`TYPE JSON`: the JSON read into TYPE by json_format.Parse, or why it was refused."""
    name, _, text = line.partition(" ")
    message = message_factory.GetMessageClass(descriptor_pool.Default().FindMessageTypeByName(name))()
    try:
        json_format.Parse(text, message)
    except json_format.ParseError as err:
        return {"error": str(err)}
    return {"json": to_json(message)}


def big(request, context):
    return pb.BigReply(data=b"x" * request.size)


def labelled(request, context):
    reply = pb.Everything()
    reply.any.Pack(interop_extra_pb2.Label(key="from-python", weight=7))
    if next_version:
        reply.added = "in the next version"
    return reply


def unary(fn, req, resp):
    return grpc.unary_unary_rpc_method_handler(
        fn, request_deserializer=req.FromString, response_serializer=resp.SerializeToString
    )


handlers = {
    "Echo": unary(echo, pb.Everything, pb.Everything),
    "Fail": unary(fail, pb.FailRequest, pb.Empty),
    "Slow": unary(slow, pb.SlowRequest, pb.CallInfo),
    "Big": unary(big, pb.BigRequest, pb.BigReply),
    "Labelled": unary(labelled, pb.Empty, pb.Everything),
    "Mirror": unary(mirror, pb.Scalars, pb.Scalars),
    "Legacy": unary(mirror, interop_legacy_pb2.Old, interop_legacy_pb2.Old),
    "Wrapped": unary(mirror, wrappers_pb2.StringValue, wrappers_pb2.StringValue),
    "Listed": unary(mirror, struct_pb2.ListValue, struct_pb2.ListValue),
}

def not_served(version):
    """Reflection `version` not served: UNIMPLEMENTED, as grpc answers an unknown method, after
    counting the attempt."""

    def handler(request_iterator, context):
        with lock:
            counts[version] += 1
        time.sleep(delay)
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "Method not found!")
        yield  # a generator: a streaming handler

    return grpc.method_handlers_generic_handler(
        f"grpc.reflection.{version}.ServerReflection",
        {"ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(handler)},
    )


server = grpc.server(futures.ThreadPoolExecutor(max_workers=64))
server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
if reflection_kind == "v1alpha":
    from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc

    class CountingReflection(reflection.ReflectionServicer):
        def ServerReflectionInfo(self, request_iterator, context):
            with lock:
                counts["v1alpha"] += 1
            time.sleep(delay)
            yield from super().ServerReflectionInfo(request_iterator, context)

    names = (SERVICE, reflection.SERVICE_NAME)
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(CountingReflection(names), server)
elif reflection_kind == "none":
    server.add_generic_rpc_handlers((not_served("v1alpha"),))
else:
    sys.exit(f"unknown reflection kind {reflection_kind!r}: v1alpha or none")
server.add_generic_rpc_handlers((not_served("v1"),))

port = server.add_insecure_port("127.0.0.1:0")
server.start()
print(f"listening on 127.0.0.1:{port}", flush=True)
for line in sys.stdin:
    command, _, rest = line.strip().partition(" ")
    if command == "stats":
        with lock:
            print(json.dumps(counts), flush=True)
    elif command == "last":
        with lock:
            last = mirrored[0]
        print(json.dumps({"json": None if last is None else to_json(last)}), flush=True)
    elif command == "details":
        with lock:
            print(json.dumps({"json": sent_details[0]}), flush=True)
    elif command == "parse":
        print(json.dumps(parse(rest)), flush=True)
server.stop(0)
