"""Python grpcio-reflection reading the `google.api.http` options of rmicro's Kitchen service from
the descriptors its server reflection serves, as a transcoding proxy would.

Usage: reflection_options_client.py ADDRESS
Prints one JSON object, method name to its HTTP rule's verb and path; exits non-zero on failure.
"""
import json
import sys

import grpc
# Imported before any descriptor is parsed, so the extension is known when options are read.
from google.api import annotations_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

address = sys.argv[1]
with grpc.insecure_channel(address) as channel:
    grpc.channel_ready_future(channel).result(timeout=10)
    database = ProtoReflectionDescriptorDatabase(channel)
    file = database.FindFileContainingSymbol("rmicro.test.kitchen.Kitchen")
    service = next(s for s in file.service if s.name == "Kitchen")
    rules = {}
    for method in service.method:
        if not method.options.HasExtension(annotations_pb2.http):
            continue
        rule = method.options.Extensions[annotations_pb2.http]
        pattern = rule.WhichOneof("pattern")
        if pattern == "custom":
            rules[method.name] = [rule.custom.kind, rule.custom.path]
        else:
            rules[method.name] = [pattern.upper(), getattr(rule, pattern)]
    print(json.dumps(rules, sort_keys=True))
