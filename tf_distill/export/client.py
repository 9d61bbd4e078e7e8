"""A small client for a TF Serving model exported by ``tf-distill-export``: gRPC and REST.

    with GrpcClient("localhost:8500", model="student") as client:
        images = client.images_from_seeds([0, 1, 2], truncation_psi=0.7)   # uint8 [3, H, W, 3]
    write_pngs(images, "out/", names=[f"seed{s:06d}" for s in (0, 1, 2)])

``RestClient("http://localhost:8501", model="student")`` has the same methods over TF
Serving's REST API (``POST /v1/models/<model>[/versions/<v>]:predict``, columnar ``inputs``).

Failures are ``ServingError`` subclasses with the address in the message:
``ServingConnectionError`` (nothing listening / unreachable), ``ServingTimeoutError`` (no
answer within ``timeout`` seconds), ``RequestRejectedError`` (the server refused the request,
e.g. InvalidArgument from the model's input checks; the server's message is kept) and
``BadResponseError`` (an answer that is not the images asked for). Inputs refused before
sending are ``RequestError`` (a ``ValueError``). All are ``UserError``: binaries print one line.

Bounds, so that neither a typo nor a hostile server exhausts the client's memory:
- a request holds 1 to ``max_batch`` seeds (default ``DEFAULT_MAX_BATCH`` = 64, the export's
  default, at most ``MAX_REQUEST_SEEDS`` = 1024); ``parse_seeds`` refuses specs of more than
  ``MAX_SEEDS`` = 100000 seeds before building any list;
- an answer may hold images up to ``max_image_side`` = 1024 px: gRPC refuses messages over
  ``grpc_reply_limit`` (uint8 bytes of ``max_batch`` such images + 64 KiB), REST reads at most
  ``rest_reply_limit`` bytes (8 JSON bytes per pixel value of the images asked for + 64 KiB:
  TF Serving writes ``255, ``, 5 bytes, plus brackets) and refuses larger or deeply nested JSON.
"""

import http.client
import json
import re
import socket
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np

from tf_distill.errors import UserError

DEFAULT_TIMEOUT = 30.0
DEFAULT_MAX_BATCH = 64  # savedmodel.DEFAULT_MAX_BATCH (not imported: the client needs no TensorFlow for REST)
MAX_REQUEST_SEEDS = 1024
MAX_SEEDS = 100_000
MAX_IMAGE_SIDE = 1024
_SLACK_BYTES = 64 << 10
_REST_BYTES_PER_VALUE = 8
_MAX_ERROR_BYTES = 2000
_NOT_TF_SERVING = "(the answer is not TF Serving's: check that the address is its REST port, e.g. :8501)"


def grpc_reply_limit(max_batch, max_image_side=MAX_IMAGE_SIDE):
    """Bytes of the largest legitimate PredictResponse: ``max_batch`` uint8 images of that side."""
    return _SLACK_BYTES + int(max_batch) * int(max_image_side) ** 2 * 3


def rest_reply_limit(n, max_image_side=MAX_IMAGE_SIDE):
    """Bytes of the largest legitimate REST answer with ``n`` uint8 images of that side (module doc)."""
    return _SLACK_BYTES + int(n) * int(max_image_side) ** 2 * 3 * _REST_BYTES_PER_VALUE


class ServingError(UserError, RuntimeError):
    """Base class of the client's errors about the server and its answers."""


class RequestError(UserError, ValueError):
    """An input the client refuses before sending (seeds, truncation psi, batch size)."""


class ServingConnectionError(ServingError):
    """The server could not be reached."""


class ServingTimeoutError(ServingError):
    """The server did not answer in time."""


class RequestRejectedError(ServingError):
    """The server answered with an error status (bad input, unknown model or signature, ...)."""


class BadResponseError(ServingError):
    """The server's answer could not be read as the expected output."""


def check_max_batch(max_batch):
    """``max_batch`` as an int in 1..MAX_REQUEST_SEEDS, else RequestError."""
    if not 1 <= int(max_batch) <= MAX_REQUEST_SEEDS:
        raise RequestError(f"seeds per request (--batch) must be in 1..{MAX_REQUEST_SEEDS}, got {max_batch} "
                           "(split larger seed lists into several requests)")
    return int(max_batch)


def _seeds_array(seeds, max_batch):
    try:
        n = len(seeds)
    except TypeError:
        raise RequestError(f"seeds must be a 1-D list of integers, got {type(seeds).__name__}") from None
    if n > max_batch:  # checked before converting: no huge array
        raise RequestError(f"a request holds 1 to {max_batch} seeds (max_batch), got {n} "
                           f"(split them into requests of at most {max_batch})")
    seeds = np.asarray(seeds)
    if seeds.ndim != 1 or seeds.size == 0:
        raise RequestError(f"seeds must be a non-empty 1-D list of integers, got shape {seeds.shape}.")
    if not np.issubdtype(seeds.dtype, np.integer):
        raise RequestError(f"seeds must be int64 integers, got dtype {seeds.dtype}.")
    return seeds.astype(np.int64)


def _seed_inputs(seeds, truncation_psi, max_batch):
    inputs = {"seeds": _seeds_array(seeds, max_batch)}
    if truncation_psi is not None:
        psi = float(truncation_psi)
        if not 0.0 <= psi <= 1.0:  # False for NaN too
            raise RequestError(f"truncation_psi must be in [0, 1], got {psi}.")
        inputs["truncation_psi"] = np.float32(psi)
    return inputs


def check_images(images, n, where):
    """uint8 [n, H, W, 3] or BadResponseError."""
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4 \
            or images.shape[0] != n or images.shape[-1] != 3:
        desc = f"{images.dtype} {images.shape}" if isinstance(images, np.ndarray) else type(images).__name__
        raise BadResponseError(f"{where}: expected images uint8 [{n}, H, W, 3], got {desc}.")
    return images


class GrpcClient:
    """PredictionService client over gRPC (tensorflow-serving-api's PredictRequest)."""

    def __init__(self, target="localhost:8500", model="student", version=None, timeout=DEFAULT_TIMEOUT,
                 max_batch=DEFAULT_MAX_BATCH, max_image_side=MAX_IMAGE_SIDE):
        import grpc  # pylint: disable=import-outside-toplevel
        from tensorflow_serving.apis import prediction_service_pb2_grpc  # pylint: disable=import-outside-toplevel

        self.target, self.model, self.version, self.timeout = target, model, version, float(timeout)
        self.max_batch = check_max_batch(max_batch)
        self.max_reply_bytes = grpc_reply_limit(self.max_batch, max_image_side)
        options = [("grpc.max_receive_message_length", self.max_reply_bytes),
                   ("grpc.max_send_message_length", self.max_reply_bytes)]
        self._grpc = grpc
        self._channel = grpc.insecure_channel(target, options=options)
        self._stub = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)

    def close(self):
        self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _where(self, signature):
        return f"{self.target} model {self.model!r} signature {signature!r}"

    def predict(self, signature, inputs, timeout=None):
        """{output name: ndarray} for numpy ``inputs`` on the named signature."""
        import tensorflow as tf  # pylint: disable=import-outside-toplevel
        from tensorflow_serving.apis import predict_pb2  # pylint: disable=import-outside-toplevel

        grpc = self._grpc
        request = predict_pb2.PredictRequest()
        request.model_spec.name = self.model
        request.model_spec.signature_name = signature
        if self.version is not None:
            request.model_spec.version.value = int(self.version)
        for name, value in inputs.items():
            request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
        where = self._where(signature)
        timeout = self.timeout if timeout is None else float(timeout)
        try:
            response = self._stub.Predict(request, timeout=timeout)
        except grpc.RpcError as err:
            code, details = err.code(), err.details()
            if code == grpc.StatusCode.UNAVAILABLE:
                raise ServingConnectionError(f"cannot reach {self.target}: {details} "
                                             "(check that the model server runs there)") from None
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise ServingTimeoutError(f"{where}: no answer within {timeout:g} s") from None
            if code == grpc.StatusCode.INTERNAL and "deserializ" in (details or "").lower():
                raise BadResponseError(f"{where}: the answer is not a PredictResponse ({details})") from None
            if code == grpc.StatusCode.RESOURCE_EXHAUSTED and "received message larger" in (details or "").lower():
                raise BadResponseError(f"{where}: the answer is larger than {self.max_reply_bytes} bytes "
                                       f"({details}) (ask for fewer images per request)") from None
            if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
                        grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.RESOURCE_EXHAUSTED):
                raise RequestRejectedError(f"{where}: {code.name}: {details}") from None
            raise ServingError(f"{where}: {code.name}: {details}") from None
        for name, proto in response.outputs.items():  # a declared shape is filled in by make_ndarray: bound it
            count = int(np.prod([max(int(dim.size), 0) for dim in proto.tensor_shape.dim], dtype=np.float64))
            if count > self.max_reply_bytes:
                raise BadResponseError(f"{where}: output {name!r} declares {count} values, more than "
                                       f"{self.max_reply_bytes} (ask for fewer images per request)")
        try:
            return {name: tf.make_ndarray(proto) for name, proto in response.outputs.items()}
        except Exception as err:  # pylint: disable=broad-except
            raise BadResponseError(f"{where}: unreadable output tensor: {err}") from None

    def images_from_seeds(self, seeds, truncation_psi=None, timeout=None):
        """uint8 [N, H, W, 3] from the ``from_seeds`` signature (1 <= N <= max_batch)."""
        inputs = _seed_inputs(seeds, truncation_psi, self.max_batch)
        outputs = self.predict("from_seeds", inputs, timeout)
        if "images" not in outputs:
            raise BadResponseError(f"{self._where('from_seeds')}: no 'images' output (got {sorted(outputs)}).")
        return check_images(outputs["images"], len(inputs["seeds"]), self._where("from_seeds"))


def _rest_error_detail(err):
    """What an HTTP error says: TF Serving's ``{"error": ...}`` text (at most _MAX_ERROR_BYTES), or, from
    something else (a proxy's or web server's HTML page), its first words and where to look instead."""
    text = err.read(_MAX_ERROR_BYTES).decode(errors="replace")
    try:
        detail = json.loads(text)
    except (ValueError, RecursionError):
        detail = None
    if isinstance(detail, dict) and "error" in detail:
        return str(detail["error"])[:_MAX_ERROR_BYTES]
    words = " ".join(re.sub(r"<[^>]*>", " ", text).split())
    return f"{words[:200]}{'...' if len(words) > 200 else ''} {_NOT_TF_SERVING}"


def _read_at_most(reply, limit, chunk=1 << 20):
    """Up to ``limit`` bytes of ``reply``, read in chunks (``read(limit)`` may allocate ``limit`` bytes up front)."""
    parts, size = [], 0
    while size < limit:
        part = reply.read(min(chunk, limit - size))
        if not part:
            break
        parts.append(part)
        size += len(part)
    return b"".join(parts)


class RestClient:
    """The same over TF Serving's REST API (JSON, columnar ``inputs``), with the standard library only."""

    def __init__(self, url="http://localhost:8501", model="student", version=None, timeout=DEFAULT_TIMEOUT,
                 max_batch=DEFAULT_MAX_BATCH, max_image_side=MAX_IMAGE_SIDE):
        self.url, self.model, self.version, self.timeout = url.rstrip("/"), model, version, float(timeout)
        try:
            urllib.parse.urlsplit(self.url)
        except ValueError as err:  # e.g. an unclosed IPv6 bracket
            raise RequestError(f"{url} is not a valid URL ({err}); give http(s)://host:port, e.g. "
                               "http://localhost:8501") from None
        self.max_batch = check_max_batch(max_batch)
        self.max_image_side = int(max_image_side)

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def endpoint(self):
        version = "" if self.version is None else f"/versions/{int(self.version)}"
        return f"{self.url}/v1/models/{self.model}{version}:predict"

    @staticmethod
    def request_body(signature, inputs):
        """The JSON body TF Serving's REST predict API takes (columnar form)."""
        return {"signature_name": signature,
                "inputs": {k: np.asarray(v).tolist() for k, v in inputs.items()}}

    def predict_json(self, signature, inputs, timeout=None, max_reply_bytes=None):
        """The decoded JSON answer for numpy ``inputs``; at most ``max_reply_bytes`` are read.

        The default limit fits ``max_batch`` images (``rest_reply_limit``); a longer answer, or
        one nested deeper than Python's recursion limit, is a BadResponseError.
        """
        body = json.dumps(self.request_body(signature, inputs)).encode()
        request = urllib.request.Request(self.endpoint(), data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
        where = f"{self.endpoint()} signature {signature!r}"
        timeout = self.timeout if timeout is None else float(timeout)
        limit = rest_reply_limit(self.max_batch, self.max_image_side) if max_reply_bytes is None \
            else int(max_reply_bytes)
        too_large = f"{where}: the answer is larger than {limit} bytes, more than the images asked for " \
                    f"(at most {self.max_image_side} px) can take (check that the address is a tf-distill model server)"
        try:
            with urllib.request.urlopen(request, timeout=timeout) as reply:  # noqa: S310 (http(s) URL we built)
                length = reply.headers.get("Content-Length", "")
                if length.strip().isdigit() and int(length) > limit:
                    raise BadResponseError(too_large)
                raw = _read_at_most(reply, limit + 1)
        except urllib.error.HTTPError as err:
            raise RequestRejectedError(f"{where}: HTTP {err.code}: {_rest_error_detail(err)}") from None
        except urllib.error.URLError as err:
            if isinstance(err.reason, (socket.timeout, TimeoutError)):
                raise ServingTimeoutError(f"{where}: no answer within {timeout:g} s") from None
            raise ServingConnectionError(f"cannot reach {self.url}: {err.reason} "
                                         "(check that the model server runs there)") from None
        except (socket.timeout, TimeoutError):
            raise ServingTimeoutError(f"{where}: no answer within {timeout:g} s") from None
        except http.client.HTTPException as err:
            raise BadResponseError(f"{where}: not a valid HTTP answer ({type(err).__name__}: {err})") from None
        except ConnectionError as err:
            raise ServingConnectionError(f"{where}: the connection broke ({err}) (check the server)") from None
        if len(raw) > limit:
            raise BadResponseError(too_large)
        try:
            return json.loads(raw)
        except ValueError:
            raise BadResponseError(f"{where}: the answer is not JSON ({raw[:80]!r})") from None
        except RecursionError:  # the C decoder stops at the recursion limit: nothing legitimate nests so deep
            raise BadResponseError(f"{where}: the answer is JSON nested too deeply to be images") from None

    def images_from_seeds(self, seeds, truncation_psi=None, timeout=None):
        """uint8 [N, H, W, 3] from the ``from_seeds`` signature (1 <= N <= max_batch)."""
        inputs = _seed_inputs(seeds, truncation_psi, self.max_batch)
        reply = self.predict_json("from_seeds", inputs, timeout,
                                  rest_reply_limit(len(inputs["seeds"]), self.max_image_side))
        where = f"{self.endpoint()} signature 'from_seeds'"
        outputs = reply.get("outputs") if isinstance(reply, dict) else None
        if isinstance(outputs, dict):
            outputs = outputs.get("images")
        if outputs is None:
            raise BadResponseError(f"{where}: no 'outputs' images in the answer (keys {sorted(reply)[:5]}).")
        try:
            images = np.asarray(outputs)
        except ValueError:
            raise BadResponseError(f"{where}: ragged 'outputs'") from None
        if images.dtype.kind not in "iu" or images.size and (images.min() < 0 or images.max() > 255):
            raise BadResponseError(f"{where}: 'outputs' are not uint8 pixel values (dtype {images.dtype}).")
        return check_images(images.astype(np.uint8), len(inputs["seeds"]), where)


def is_rest(address):
    """True for an ``http(s)://`` URL (REST), False for ``host:port`` (gRPC)."""
    return address.startswith(("http://", "https://"))


def make_client(address, model="student", version=None, timeout=DEFAULT_TIMEOUT, max_batch=DEFAULT_MAX_BATCH):
    """``http(s)://...`` -> RestClient, ``host:port`` -> GrpcClient."""
    if is_rest(address):
        return RestClient(address, model, version, timeout, max_batch)
    return GrpcClient(address, model, version, timeout, max_batch)


def parse_seeds(text, max_seeds=MAX_SEEDS):
    """'0-3,7' -> [0, 1, 2, 3, 7]; RequestError for bad syntax, int64 overflow or more than ``max_seeds`` seeds.

    Ranges are counted before any list is built, so '0-50000000' costs nothing to refuse.
    """
    parts = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        lo, sep, hi = part.partition("-") if not part.startswith("-") else (part, "", "")
        try:
            lo, hi = (int(lo), int(hi)) if sep else (int(part), int(part))
        except ValueError:
            raise RequestError(f"{part!r} is not a seed or a range of seeds (e.g. 0-7,42)") from None
        if hi < lo:
            raise RequestError(f"empty seed range {part!r} (write LOW-HIGH)")
        if lo < -2**63 or hi >= 2**63:
            raise RequestError(f"seed {part!r} does not fit in int64")
        parts.append(range(lo, hi + 1))
    total = sum(len(r) for r in parts)
    if not total:
        raise RequestError(f"no seeds in {text!r} (e.g. 0-7,42)")
    if total > max_seeds:
        raise RequestError(f"{text!r} names {total} seeds, more than {max_seeds} per run (ask for fewer)")
    return [s for r in parts for s in r]


def write_pngs(images, directory, names=None):
    """Writes uint8 [N, H, W, 3] images as PNG files (each atomically); returns the paths."""
    from tf_distill.images import save_png  # pylint: disable=import-outside-toplevel

    names = names or [f"{i:06d}" for i in range(len(images))]
    return [save_png(np.asarray(image, np.uint8), Path(directory) / f"{name}.png")
            for name, image in zip(names, images)]
