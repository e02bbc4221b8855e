"""Python grpcio-reflection discovering rmicro's User service by server reflection alone (no
.proto, no generated stubs), then calling User.Call with a message built from the discovered
descriptor, and the health service's Check the same way.

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
    # The health service, described by reflection as any other.
    check = pool.FindMethodByName("grpc.health.v1.Health.Check")
    check_request = message_factory.GetMessageClass(check.input_type)
    check_response = message_factory.GetMessageClass(check.output_type)
    health = channel.unary_unary(
        "/grpc.health.v1.Health/Check",
        request_serializer=check_request.SerializeToString,
        response_deserializer=check_response.FromString,
    )(check_request(service=""), timeout=10)
    status = check.output_type.fields_by_name["status"].enum_type.values_by_number[health.status].name
    print(json.dumps({"services": services, "input": method.input_type.full_name, "msg": reply.msg, "health": status}, sort_keys=True))
