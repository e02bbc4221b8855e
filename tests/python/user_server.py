"""A gRPC server from another implementation (Python grpcio) serving rmicro's User service,
compressing every answer with gzip (as servers told to compress do).

Usage: user_server.py STUB_DIR
STUB_DIR holds user_pb2.py and user_pb2_grpc.py made by grpc_tools.protoc from proto/user.proto.
Prints `listening on ADDR` once serving on a free loopback port.
"""
import sys
from concurrent import futures

import grpc

sys.path.insert(0, sys.argv[1])
import user_pb2  # noqa: E402
import user_pb2_grpc  # noqa: E402


class User(user_pb2_grpc.UserServicer):
    def Call(self, request, context):
        context.set_compression(grpc.Compression.Gzip)
        return user_pb2.CallResponse(msg="Hello " + request.name)

    def Stream(self, request, context):
        context.set_compression(grpc.Compression.Gzip)
        for i in range(request.count):
            yield user_pb2.StreamResponse(count=i)


server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
user_pb2_grpc.add_UserServicer_to_server(User(), server)
port = server.add_insecure_port("127.0.0.1:0")
server.start()
print(f"listening on 127.0.0.1:{port}", flush=True)
server.wait_for_termination()
