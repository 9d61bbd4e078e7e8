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
``BadResponseError`` (an answer that is not the images asked for).
"""

import json
import socket
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

DEFAULT_TIMEOUT = 30.0


class ServingError(RuntimeError):
    """Base class of the client's errors."""


class ServingConnectionError(ServingError):
    """The server could not be reached."""


class ServingTimeoutError(ServingError):
    """The server did not answer in time."""


class RequestRejectedError(ServingError):
    """The server answered with an error status (bad input, unknown model or signature, ...)."""


class BadResponseError(ServingError):
    """The server's answer could not be read as the expected output."""


def _seeds_array(seeds):
    seeds = np.asarray(seeds)
    if seeds.ndim != 1 or seeds.size == 0:
        raise ValueError(f"seeds must be a non-empty 1-D list of integers, got shape {seeds.shape}.")
    if not np.issubdtype(seeds.dtype, np.integer):
        raise ValueError(f"seeds must be integers, got dtype {seeds.dtype}.")
    return seeds.astype(np.int64)


def _seed_inputs(seeds, truncation_psi):
    inputs = {"seeds": _seeds_array(seeds)}
    if truncation_psi is not None:
        psi = float(truncation_psi)
        if not 0.0 <= psi <= 1.0:
            raise ValueError(f"truncation_psi must be in [0, 1], got {psi}.")
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
                 max_message_bytes=256 << 20):
        import grpc  # pylint: disable=import-outside-toplevel
        from tensorflow_serving.apis import prediction_service_pb2_grpc  # pylint: disable=import-outside-toplevel

        self.target, self.model, self.version, self.timeout = target, model, version, float(timeout)
        options = [("grpc.max_receive_message_length", max_message_bytes),
                   ("grpc.max_send_message_length", max_message_bytes)]
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
                raise ServingConnectionError(f"cannot reach {self.target}: {details}") from None
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise ServingTimeoutError(f"{where}: no answer within {timeout:g} s") from None
            if code == grpc.StatusCode.INTERNAL and "deserializ" in (details or "").lower():
                raise BadResponseError(f"{where}: the answer is not a PredictResponse ({details})") from None
            if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
                        grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.RESOURCE_EXHAUSTED):
                raise RequestRejectedError(f"{where}: {code.name}: {details}") from None
            raise ServingError(f"{where}: {code.name}: {details}") from None
        try:
            return {name: tf.make_ndarray(proto) for name, proto in response.outputs.items()}
        except Exception as err:  # pylint: disable=broad-except
            raise BadResponseError(f"{where}: unreadable output tensor: {err}") from None

    def images_from_seeds(self, seeds, truncation_psi=None, timeout=None):
        """uint8 [N, H, W, 3] from the ``from_seeds`` signature."""
        inputs = _seed_inputs(seeds, truncation_psi)
        outputs = self.predict("from_seeds", inputs, timeout)
        if "images" not in outputs:
            raise BadResponseError(f"{self._where('from_seeds')}: no 'images' output (got {sorted(outputs)}).")
        return check_images(outputs["images"], len(inputs["seeds"]), self._where("from_seeds"))


class RestClient:
    """The same over TF Serving's REST API (JSON, columnar ``inputs``), with the standard library only."""

    def __init__(self, url="http://localhost:8501", model="student", version=None, timeout=DEFAULT_TIMEOUT):
        self.url, self.model, self.version, self.timeout = url.rstrip("/"), model, version, float(timeout)

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

    def predict_json(self, signature, inputs, timeout=None):
        """The decoded JSON answer for numpy ``inputs``."""
        body = json.dumps(self.request_body(signature, inputs)).encode()
        request = urllib.request.Request(self.endpoint(), data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
        where = f"{self.endpoint()} signature {signature!r}"
        timeout = self.timeout if timeout is None else float(timeout)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as reply:  # noqa: S310 (http(s) URL we built)
                raw = reply.read()
        except urllib.error.HTTPError as err:
            detail = err.read().decode(errors="replace")[:2000]
            try:
                detail = json.loads(detail).get("error", detail)
            except (ValueError, AttributeError):
                pass
            raise RequestRejectedError(f"{where}: HTTP {err.code}: {detail}") from None
        except urllib.error.URLError as err:
            if isinstance(err.reason, (socket.timeout, TimeoutError)):
                raise ServingTimeoutError(f"{where}: no answer within {timeout:g} s") from None
            raise ServingConnectionError(f"cannot reach {self.url}: {err.reason}") from None
        except (socket.timeout, TimeoutError):
            raise ServingTimeoutError(f"{where}: no answer within {timeout:g} s") from None
        try:
            return json.loads(raw)
        except ValueError:
            raise BadResponseError(f"{where}: the answer is not JSON ({raw[:80]!r})") from None

    def images_from_seeds(self, seeds, truncation_psi=None, timeout=None):
        inputs = _seed_inputs(seeds, truncation_psi)
        reply = self.predict_json("from_seeds", inputs, timeout)
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


def make_client(address, model="student", version=None, timeout=DEFAULT_TIMEOUT):
    """``http(s)://...`` -> RestClient, ``host:port`` -> GrpcClient."""
    if address.startswith(("http://", "https://")):
        return RestClient(address, model, version, timeout)
    return GrpcClient(address, model, version, timeout)


def parse_seeds(text):
    """'0-3,7' -> [0, 1, 2, 3, 7]."""
    seeds = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        lo, sep, hi = part.partition("-") if not part.startswith("-") else (part, "", "")
        if sep:
            lo, hi = int(lo), int(hi)
            if hi < lo:
                raise ValueError(f"empty seed range {part!r}")
            seeds.extend(range(lo, hi + 1))
        else:
            seeds.append(int(part))
    if not seeds:
        raise ValueError(f"no seeds in {text!r}")
    return seeds


def write_pngs(images, directory, names=None):
    """Writes uint8 [N, H, W, 3] images as PNG files; returns the paths."""
    from PIL import Image  # pylint: disable=import-outside-toplevel

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    names = names or [f"{i:06d}" for i in range(len(images))]
    paths = []
    for name, image in zip(names, images):
        path = directory / f"{name}.png"
        Image.fromarray(np.asarray(image, np.uint8)).save(path)
        paths.append(path)
    return paths
