"""The query baseline: a bare grpc.aio server answering every DigitalTwin call with
one constant, pre-serialised-size-equal ``QueryResponse`` (no validation, no model,
no metrics). Prints ready with its port; serves until a line arrives on stdin."""

from __future__ import annotations

import argparse
import asyncio
import base64
import sys

import grpc
from _common import emit

from twin._proto import digital_twin_pb2 as pb
from twin._proto import digital_twin_pb2_grpc as pb_grpc


class Constant(pb_grpc.DigitalTwinServicer):
    def __init__(self, response: pb.QueryResponse) -> None:
        self.response = response

    async def Query(  # noqa: N802 - the gRPC method name
        self, request: pb.QueryRequest, context: grpc.aio.ServicerContext
    ) -> pb.QueryResponse:
        return self.response


async def main(args: argparse.Namespace) -> None:
    response = pb.QueryResponse.FromString(base64.b64decode(args.response))
    server = grpc.aio.server()
    pb_grpc.add_DigitalTwinServicer_to_server(Constant(response), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    emit({"ready": True, "port": port, "response_bytes": response.ByteSize()})
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    await server.stop(0.5)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--response", required=True, help="base64 of a serialised QueryResponse")
    asyncio.run(main(p.parse_args()))
