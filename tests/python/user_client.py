"""A gRPC client from another implementation (Python grpcio) calling rmicro's User service.

Usage: user_client.py ADDRESS STUB_DIR [gzip]
STUB_DIR holds user_pb2.py and user_pb2_grpc.py made by grpc_tools.protoc from proto/user.proto.
With `gzip`, every request message is sent gzip-compressed (as clients set up for compression do).
Prints one JSON object with what each call returned; exits non-zero on any failure.
"""
import json
import sys

import grpc

address, stub_dir = sys.argv[1], sys.argv[2]
compression = grpc.Compression.Gzip if sys.argv[3:] == ["gzip"] else None
sys.path.insert(0, stub_dir)
import user_pb2  # noqa: E402
import user_pb2_grpc  # noqa: E402

result = {}
with grpc.insecure_channel(address, compression=compression) as channel:
    grpc.channel_ready_future(channel).result(timeout=10)
    stub = user_pb2_grpc.UserStub(channel)
    result["call"] = stub.Call(user_pb2.CallRequest(name="Python"), timeout=10).msg
    result["stream"] = [r.count for r in stub.Stream(user_pb2.StreamRequest(count=3), timeout=10)]
    pings = (user_pb2.Ping(stroke=s) for s in (5, 6))
    result["ping_pong"] = [p.stroke for p in stub.PingPong(pings, timeout=10)]
    # Over the server's 4 MiB message limit (gzip-compressed, a few KiB on the wire): refused
    # before it is all decompressed.
    try:
        stub.Call(user_pb2.CallRequest(name="a" * (5 << 20)), timeout=10)
        result["too_big"] = None
    except grpc.RpcError as err:
        result["too_big"] = err.code().name
    # The same in the middle of a stream: a ping, then a message over the limit (its content does
    # not matter, the length is refused first).
    ping_pong = channel.stream_stream(
        "/go.micro.srv.user.User/PingPong",
        request_serializer=lambda raw: raw,
        response_deserializer=user_pb2.Pong.FromString,
    )
    messages = iter([user_pb2.Ping(stroke=7).SerializeToString(), b"\x12" + b"\x80\x80\xc0\x02" + b"a" * (5 << 20)])
    try:
        for _ in ping_pong(messages, timeout=10):
            pass
        result["too_big_mid_stream"] = None
    except grpc.RpcError as err:
        result["too_big_mid_stream"] = err.code().name
    try:
        stub.Call(user_pb2.CallRequest(name=""), timeout=10)
        result["error"] = None
    except grpc.RpcError as err:
        result["error"] = [err.code().name, err.details()]
print(json.dumps(result, sort_keys=True))
