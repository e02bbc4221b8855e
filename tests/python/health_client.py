"""grpcio's own health checking client against a server: `check ADDR SERVICE` prints the
status (or the error code), `watch ADDR SERVICE` prints each status as it comes, then END."""
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def name(status):
    return health_pb2.HealthCheckResponse.ServingStatus.Name(status)


def main():
    mode, addr, service = sys.argv[1:4]
    with grpc.insecure_channel(addr) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest(service=service)
        if mode == "check":
            try:
                print(name(stub.Check(request, timeout=10).status))
            except grpc.RpcError as err:
                print(err.code().name)
        else:
            try:
                for answer in stub.Watch(request, timeout=60):
                    print(name(answer.status), flush=True)
                print("END", flush=True)
            except grpc.RpcError as err:
                print("ERROR", err.code().name, flush=True)


if __name__ == "__main__":
    main()
