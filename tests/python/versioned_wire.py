"""Kafka requests and responses through kafka-python 3's versioned message classes: a codec
other than the broker's own (kafka-protocol), for tests that must speak one exact API version.

    with VersionedClient("127.0.0.1", port) as c:
        resp = c.call(2, 3, {"replica_id": -1, "topics": [{"name": "t", "partitions": [...]}]})

Fields are given as plain dicts and lists with kafka-python's snake_case names; `build` turns
them into the nested message classes. A field the chosen version lacks is ignored by the codec,
so one dict can serve every version. Every response is decoded for the version asked, and a
response with bytes left over after the last field is an error: the broker encoded something
the version does not have.
"""

from __future__ import annotations

import importlib
import io
import pkgutil
import socket
import struct
from typing import Any

import kafka.protocol
from kafka.protocol.api_message import ApiMessage

import kafka_schemas


def _import_all_messages() -> None:
    for mod in pkgutil.walk_packages(kafka.protocol.__path__, "kafka.protocol."):
        if ".old" in mod.name or mod.name.endswith((".generate_stubs", ".parser")):
            continue
        importlib.import_module(mod.name)


_import_all_messages()


# APIs kafka-python 3 does not ship; their schemas are in kafka_schemas/.
class ConsumerGroupHeartbeatRequest(ApiMessage, load_json=kafka_schemas):
    pass


class ConsumerGroupHeartbeatResponse(ApiMessage, load_json=kafka_schemas):
    pass


class ConsumerGroupDescribeRequest(ApiMessage, load_json=kafka_schemas):
    pass


class ConsumerGroupDescribeResponse(ApiMessage, load_json=kafka_schemas):
    pass


def _message_classes() -> tuple[dict[int, type], dict[int, type]]:
    requests: dict[int, type] = {}
    responses: dict[int, type] = {}
    todo = list(ApiMessage.__subclasses__())
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if getattr(cls, "_class_version", None) is not None or "_json" not in cls.__dict__:
            continue  # a versioned wrapper, or an abstract base
        table = requests if cls.is_request() else responses
        table[cls.API_KEY] = cls
    return requests, responses


REQUESTS, RESPONSES = _message_classes()


def build(data_class: type, struct: Any, version: int, values: dict[str, Any]) -> Any:
    """A message (or nested struct) of `data_class` from `values`, nested dicts and lists
    converted to the struct classes their fields name. Unknown names are an error, so a typo in
    a test cannot silently send a default."""
    fields = struct.fields
    unknown = set(values) - set(fields)
    if unknown:
        raise KeyError(f"{data_class.__name__} has no fields {sorted(unknown)}")
    kwargs = {}
    for name, value in values.items():
        field = fields[name]
        if not field.for_version_q(version):
            continue  # not in this version: the codec would not send it anyway
        if value is not None and field.is_struct_array():
            value = [
                build(field.data_class, field, version, v) if isinstance(v, dict) else v
                for v in value
            ]
        elif value is not None and field.is_struct() and isinstance(value, dict):
            value = build(field.data_class, field, version, value)
        kwargs[name] = value
    if data_class in REQUESTS.values() or data_class in RESPONSES.values():
        return data_class[version](**kwargs)
    return data_class(version=version, **kwargs)


def request(api_key: int, version: int, values: dict[str, Any]) -> Any:
    cls = REQUESTS[api_key]
    return build(cls, cls._struct, version, values)


class ConnectionClosed(Exception):
    """The broker closed the connection instead of answering."""


class DecodeError(Exception):
    """The response did not decode as the version asked for."""


def error_codes(message: Any, path: str = "") -> list[tuple[str, int]]:
    """Every `error_code` in a decoded response, with where it sits (`topics[0].partitions[1]`)."""
    found: list[tuple[str, int]] = []

    def walk(value: Any, where: str) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                if k == "error_code" and isinstance(v, int):
                    found.append((where or ".", v))
                else:
                    walk(v, f"{where}.{k}" if where else k)
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(v, f"{where}[{i}]")

    walk(message.to_dict() if hasattr(message, "to_dict") else message, path)
    return found


class VersionedClient:
    """One TCP connection; requests are sent one at a time and answered in order."""

    def __init__(self, host: str, port: int, client_id: str = "strata-sweep", timeout: float = 30.0):
        self.addr = (host, port)
        self.client_id = client_id
        self.timeout = timeout
        self.sock = socket.create_connection(self.addr, timeout=timeout)
        self.correlation_id = 0

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "VersionedClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def send(self, api_key: int, version: int, values: dict[str, Any]) -> int:
        self.correlation_id += 1
        req = request(api_key, version, values)
        req.with_header(correlation_id=self.correlation_id, client_id=self.client_id)
        self.sock.sendall(req.encode(header=True, framed=True))
        return self.correlation_id

    def call(self, api_key: int, version: int, values: dict[str, Any]) -> Any:
        correlation_id = self.send(api_key, version, values)
        return self.receive(api_key, version, correlation_id)

    def receive(self, api_key: int, version: int, correlation_id: int) -> Any:
        frame = self._read_frame()
        cls = RESPONSES[api_key]
        if api_key == 18:
            # ApiVersions answers an error in v0's layout (KIP-511), whatever was asked.
            (err,) = struct.unpack_from(">h", frame, 4)
            if err != 0:
                version = 0
        data = memoryview(frame)
        header_io = io.BytesIO(frame)
        header = cls.parse_header(header_io, version=version)
        pos = header_io.tell()
        if header.correlation_id != correlation_id:
            raise DecodeError(
                f"correlation id {header.correlation_id}, expected {correlation_id}"
            )
        flexible = cls.flexible_version_q(version)
        decode = cls._struct.compiled_decode_from(
            version, compact=flexible, tagged=flexible, data_class=cls[None]
        )
        try:
            body, end = decode(data, pos)
        except Exception as e:  # noqa: BLE001 - any codec failure is the finding
            raise DecodeError(f"cannot decode {cls.__name__} v{version}: {e!r}") from e
        if end != len(frame):
            raise DecodeError(
                f"{cls.__name__} v{version}: {len(frame) - end} bytes left after the last field"
            )
        return body

    def _read_frame(self) -> bytes:
        (size,) = struct.unpack(">i", self._recv_exact(4))
        return self._recv_exact(size)

    def _recv_exact(self, n: int) -> bytes:
        chunks = []
        while n:
            try:
                chunk = self.sock.recv(n)
            except ConnectionResetError as e:
                raise ConnectionClosed(str(e)) from e
            if not chunk:
                raise ConnectionClosed("connection closed by the broker")
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)
