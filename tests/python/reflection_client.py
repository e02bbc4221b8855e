"""Python grpcio-reflection discovering rmicro's User service by server reflection alone (no
.proto, no generated stubs), then calling User.Call with a message built from the discovered
descriptor.

Usage: reflection_client.py ADDRESS
Prints one JSON object; exits non-zero on failure.
"""
import json
import sys

import grpc
from google.protobuf import descriptor_pool, message_factory
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

address = sys.argv[1]
with grpc.insecure_channel(address) as channel:
    grpc.channel_ready_future(channel).result(timeout=10)
    database = ProtoReflectionDescriptorDatabase(channel)
    services = sorted(database.get_services())
    pool = descriptor_pool.DescriptorPool(database)
    method = pool.FindMethodByName("go.micro.srv.user.User.Call")
    request_class = message_factory.GetMessageClass(method.input_type)
    response_class = message_factory.GetMessageClass(method.output_type)
    call = channel.unary_unary(
        "/go.micro.srv.user.User/Call",
        request_serializer=request_class.SerializeToString,
        response_deserializer=response_class.FromString,
    )
    reply = call(request_class(name="Reflection"), timeout=10)
    print(json.dumps({"services": services, "input": method.input_type.full_name, "msg": reply.msg}, sort_keys=True))
