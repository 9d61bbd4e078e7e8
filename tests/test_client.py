"""The serving client against in-test servers that stand in for TF Serving (test fixtures, not products).

``SavedModelServer`` runs the exported SavedModel the way TF Serving does: the MetaGraph loaded
into a Session, request tensors fed to the signature's tensors (without checking them against
the signature's shapes), missing inputs filled from the SignatureDef's defaults, TF errors
returned as gRPC status codes. It answers PredictionService/Predict over gRPC and the REST
``:predict`` JSON form over HTTP. Other servers time out or answer garbage.
"""

import http.server
import json
import socket
import subprocess
import sys
import threading
import time
from concurrent import futures
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

grpc = pytest.importorskip("grpc")
pytest.importorskip("tensorflow_serving.apis.predict_pb2", reason="tensorflow-serving-api is not installed")

from tensorflow.core.protobuf import config_pb2  # noqa: E402
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc  # noqa: E402

from tf_distill.export import client as serving  # noqa: E402
from tf_distill.export import loadtest, savedmodel  # noqa: E402
from tf_distill.models import Generator  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MODEL = "student"


class SavedModelServer:
    """Runs the signatures of a SavedModel like TF Serving's Session-based servable."""

    def __init__(self, path):
        self.graph = tf.Graph()
        self.session = tf.compat.v1.Session(graph=self.graph)
        with self.graph.as_default():
            meta = tf.compat.v1.saved_model.loader.load(self.session, ["serve"], str(path))
        self.signatures = dict(meta.signature_def)
        self._callables, self._lock = {}, threading.Lock()

    def run(self, signature, inputs):
        """{output: ndarray}; raises KeyError for an unknown signature or input, tf.errors.OpError from the model."""
        sig = self.signatures[signature]
        inputs = dict(inputs)
        for name in sig.inputs:
            if name not in inputs:
                inputs[name] = tf.make_ndarray(sig.defaults[name])  # KeyError when there is no default
        unknown = set(inputs) - set(sig.inputs)
        if unknown:
            raise KeyError(f"unknown inputs {sorted(unknown)}")
        names = sorted(inputs)
        outs = sorted(sig.outputs)
        key = (signature, tuple(names))
        with self._lock:
            if key not in self._callables:
                options = config_pb2.CallableOptions(feed=[sig.inputs[n].name for n in names],
                                                     fetch=[sig.outputs[o].name for o in outs])
                self._callables[key] = self.session._make_callable_from_options(options)  # pylint: disable=protected-access
        values = self._callables[key](*[inputs[n] for n in names])
        return dict(zip(outs, values))


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, server):
        self.server = server

    def Predict(self, request, context):  # noqa: N802 (gRPC method name)
        if request.model_spec.name != MODEL:
            context.abort(grpc.StatusCode.NOT_FOUND, f"Servable not found for request: Latest({request.model_spec.name})")
        signature = request.model_spec.signature_name or "serving_default"
        inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
        try:
            outputs = self.server.run(signature, inputs)
        except KeyError as err:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        except tf.errors.OpError as err:
            context.abort(_grpc_code(err), err.message)
        response = predict_pb2.PredictResponse()
        response.model_spec.name = MODEL
        for name, value in outputs.items():
            response.outputs[name].CopyFrom(tf.make_tensor_proto(value))
        return response


def _grpc_code(err):
    return {tf.errors.InvalidArgumentError: grpc.StatusCode.INVALID_ARGUMENT,
            tf.errors.ResourceExhaustedError: grpc.StatusCode.RESOURCE_EXHAUSTED}.get(type(err),
                                                                                      grpc.StatusCode.INTERNAL)


class SlowService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def Predict(self, request, context):  # noqa: N802
        time.sleep(3)
        return predict_pb2.PredictResponse()


class WrongOutputService(prediction_service_pb2_grpc.PredictionServiceServicer):
    """A well-formed PredictResponse with the wrong content: float images of the wrong shape."""

    def Predict(self, request, context):  # noqa: N802
        response = predict_pb2.PredictResponse()
        response.outputs["images"].CopyFrom(tf.make_tensor_proto(np.zeros((1, 4, 4), np.float32)))
        return response


def start_grpc(servicer=None, generic_handler=None):
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    if servicer is not None:
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(servicer, server)
    if generic_handler is not None:
        server.add_generic_rpc_handlers((generic_handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, f"127.0.0.1:{port}"


class GarbageHandler(grpc.GenericRpcHandler):
    """Answers Predict with bytes that are no PredictResponse."""

    def service(self, handler_call_details):
        if handler_call_details.method.endswith("/Predict"):
            return grpc.unary_unary_rpc_method_handler(lambda request, context: b"\xff\xff\xff garbage \x00\x01",
                                                       request_deserializer=None, response_serializer=None)
        return None


def start_http(handler_cls):
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler_cls)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}"


def rest_handler(model_server=None, mode="ok"):
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep pytest output clean
            pass

        def _reply(self, code, body):
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self):  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if mode == "slow":
                time.sleep(3)
            if mode == "garbage":
                return self._reply(200, b"<html>not json</html>")
            if self.path != f"/v1/models/{MODEL}:predict":
                return self._reply(404, {"error": f"Servable not found for request: {self.path}"})
            sig = model_server.signatures[body["signature_name"]]
            inputs = {k: np.asarray(v, dtype=tf.dtypes.as_dtype(sig.inputs[k].dtype).as_numpy_dtype)
                      for k, v in body["inputs"].items()}
            try:
                outputs = model_server.run(body["signature_name"], inputs)
            except tf.errors.OpError as err:
                return self._reply(400, {"error": err.message})
            self._reply(200, {"outputs": outputs["images"].tolist()})  # one output: bare, as TF Serving

    return Handler


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    import keras  # pylint: disable=import-outside-toplevel

    keras.utils.set_random_seed(2)
    g = Generator(16, style_dim=8, n_mlp=2, channels=[8] * 6)
    g.build()
    path = savedmodel.export_saved_model(g, tmp_path_factory.mktemp("serving") / MODEL, w_avg_samples=64,
                                         max_batch=8, check_ops=False)
    return path, SavedModelServer(path)


@pytest.fixture(scope="module")
def grpc_server(model):
    server, address = start_grpc(PredictionService(model[1]))
    yield address
    server.stop(0)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def reference_images(path, seeds, psi=1.0):
    sig = tf.saved_model.load(str(path)).signatures["from_seeds"]
    return sig(seeds=tf.constant(seeds, tf.int64), truncation_psi=tf.constant(psi, tf.float32))["images"].numpy()


def test_grpc_images_from_seeds_and_pngs(model, grpc_server, tmp_path):
    from PIL import Image  # pylint: disable=import-outside-toplevel

    path, _ = model
    with serving.GrpcClient(grpc_server, MODEL, timeout=60) as c:
        images = c.images_from_seeds([3, 1, 4])
        images_psi = c.images_from_seeds([3, 1, 4], truncation_psi=0.5)
    np.testing.assert_array_equal(images, reference_images(path, [3, 1, 4]))
    np.testing.assert_array_equal(images_psi, reference_images(path, [3, 1, 4], 0.5))
    paths = serving.write_pngs(images, tmp_path, names=["a", "b", "c"])
    np.testing.assert_array_equal(np.asarray(Image.open(paths[1])), images[1])


def test_grpc_bad_requests_are_rejected_with_the_model_message(grpc_server):
    with serving.GrpcClient(grpc_server, MODEL, timeout=60) as c:
        cases = [
            ("serving_default", {"z": np.zeros((2, 5), np.float32)}, "z must be float32 [N, 8]"),
            ("serving_default", {"z": np.zeros((2,), np.float32)}, "z must be float32 [N, 8]"),
            ("serving_default", {"z": np.zeros((2, 8), np.float32), "truncation_psi": np.float32(2)},
             "truncation_psi must be in [0, 1]"),
            ("serving_default", {"z": np.zeros((2, 8), np.int64)}, "int64 vs. expect float"),  # dtype: refused at the feed
            ("from_seeds", {"seeds": np.zeros((0,), np.int64)}, "batch must hold 1 to 8"),
            ("from_seeds", {"seeds": np.arange(9, dtype=np.int64)}, "batch must hold 1 to 8"),
            ("no_such_signature", {"seeds": np.zeros((1,), np.int64)}, "no_such_signature"),
        ]
        for signature, inputs, message in cases:
            with pytest.raises(serving.RequestRejectedError, match="INVALID_ARGUMENT") as info:
                c.predict(signature, inputs)
            assert message in str(info.value), (signature, str(info.value))
        with pytest.raises(ValueError, match=r"truncation_psi must be in \[0, 1\]"):
            c.images_from_seeds([1], truncation_psi=-1)  # checked before sending
        with pytest.raises(ValueError, match="non-empty"):
            c.images_from_seeds([])
        assert c.images_from_seeds([5]).shape == (1, 16, 16, 3)  # the server is fine afterwards
    with serving.GrpcClient(grpc_server, "other_model", timeout=60) as c:
        with pytest.raises(serving.RequestRejectedError, match="NOT_FOUND"):
            c.images_from_seeds([1])


def test_grpc_connection_failure_timeout_and_garbage():
    with serving.GrpcClient(f"127.0.0.1:{free_port()}", MODEL, timeout=10) as c:
        with pytest.raises(serving.ServingConnectionError, match="cannot reach"):
            c.images_from_seeds([1])
    server, address = start_grpc(SlowService())
    try:
        with serving.GrpcClient(address, MODEL, timeout=0.5) as c:
            t0 = time.perf_counter()
            with pytest.raises(serving.ServingTimeoutError, match="no answer within 0.5 s"):
                c.images_from_seeds([1])
            assert time.perf_counter() - t0 < 2.5
    finally:
        server.stop(0)
    server, address = start_grpc(generic_handler=GarbageHandler())
    try:
        with serving.GrpcClient(address, MODEL, timeout=10) as c:
            with pytest.raises(serving.BadResponseError, match="not a PredictResponse"):
                c.images_from_seeds([1])
    finally:
        server.stop(0)
    server, address = start_grpc(WrongOutputService())
    try:
        with serving.GrpcClient(address, MODEL, timeout=10) as c:
            with pytest.raises(serving.BadResponseError, match=r"expected images uint8 \[1, H, W, 3\]"):
                c.images_from_seeds([1])
    finally:
        server.stop(0)


def test_rest_client(model):
    path, model_server = model
    httpd, url = start_http(rest_handler(model_server))
    try:
        with serving.RestClient(url, MODEL, timeout=60) as c:
            np.testing.assert_array_equal(c.images_from_seeds([2, 9], truncation_psi=0.7),
                                          reference_images(path, [2, 9], 0.7))
            assert serving.RestClient.request_body("from_seeds", {"seeds": np.array([1, 2])}) == \
                {"signature_name": "from_seeds", "inputs": {"seeds": [1, 2]}}
            with pytest.raises(serving.RequestRejectedError, match="HTTP 400.*batch must hold 1 to 8"):
                c.images_from_seeds(list(range(9)))
        with serving.RestClient(url, "other_model", timeout=60) as c:
            with pytest.raises(serving.RequestRejectedError, match="HTTP 404"):
                c.images_from_seeds([1])
    finally:
        httpd.shutdown()
    for mode, error, message in [("garbage", serving.BadResponseError, "not JSON"),
                                 ("slow", serving.ServingTimeoutError, "no answer within")]:
        httpd, url = start_http(rest_handler(mode=mode))
        try:
            with pytest.raises(error, match=message):
                serving.RestClient(url, MODEL, timeout=0.5).images_from_seeds([1])
        finally:
            httpd.shutdown()
    with pytest.raises(serving.ServingConnectionError, match="cannot reach"):
        serving.RestClient(f"http://127.0.0.1:{free_port()}", MODEL, timeout=5).images_from_seeds([1])


def test_load_test_is_bounded_and_loopback_only(grpc_server):
    with serving.GrpcClient(grpc_server, MODEL, timeout=60) as c:
        stats = loadtest.run(c, seeds_per_request=2, requests=6, concurrency=2, max_seconds=120,
                             address=grpc_server)
    assert stats["ok"] == 6 and stats["errors"] == {} and stats["images_per_s"] > 0
    assert stats["latency_ms_p50"] <= stats["latency_ms_p99"] <= stats["latency_ms_max"]
    assert "latency ms: p50" in loadtest.format_stats(stats)
    assert loadtest.is_loopback("localhost:8500") and loadtest.is_loopback("http://127.0.0.1:8501")
    assert loadtest.is_loopback("[::1]:8500")
    with pytest.raises(ValueError, match="not a loopback address"):
        loadtest.check_target("10.1.2.3:8500")
    with pytest.raises(ValueError, match="requests must be in"):
        loadtest.run(None, requests=10**6)
    with pytest.raises(ValueError, match="concurrency must be in"):
        loadtest.run(None, concurrency=0)


def test_client_binary(grpc_server, tmp_path):
    env = {"PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": "",
           "PATH": "/usr/bin:/bin"}
    cmd = [sys.executable, "-m", "tf_distill.bin.client", f"--server={grpc_server}", f"--model={MODEL}",
           "--seeds=0-2,7", f"--out={tmp_path / 'png'}", "--batch=2", "--timeout=120"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "png").iterdir()) == ["seed0.png", "seed1.png", "seed2.png", "seed7.png"]
    cmd = [sys.executable, "-m", "tf_distill.bin.client", f"--server=127.0.0.1:{free_port()}", "--seeds=0",
           f"--out={tmp_path / 'none'}", "--timeout=20"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)
    assert proc.returncode == 1 and "error: cannot reach" in proc.stderr and "Traceback" not in proc.stderr, \
        proc.stderr[-2000:]
    assert serving.parse_seeds("0-3, 7,-2") == [0, 1, 2, 3, 7, -2]
    with pytest.raises(ValueError):
        serving.parse_seeds("5-1")


def test_models_config_parses():
    from google.protobuf import text_format  # pylint: disable=import-outside-toplevel
    from tensorflow_serving.config import model_server_config_pb2  # pylint: disable=import-outside-toplevel

    text = (ROOT / "export" / "models.config").read_text()
    config = text_format.Parse(text, model_server_config_pb2.ModelServerConfig())
    names = {c.name: c for c in config.model_config_list.config}
    assert set(names) == {"student", "teacher"}
    assert names["student"].base_path == "/models/student" and names["student"].model_platform == "tensorflow"
