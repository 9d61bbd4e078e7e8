"""Client and load-test robustness: bounded seed specs and requests, capped and depth-guarded
answers, one-line errors, and a non-zero exit when a server refuses every request."""

import http.server
import json
import socket
import subprocess
import sys
import threading
import tracemalloc
from concurrent import futures
from pathlib import Path

import numpy as np
import pytest

from tf_distill.errors import UserError
from tf_distill.export import client as serving
from tf_distill.export import loadtest

ROOT = Path(__file__).resolve().parents[1]
ENV = {"PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": "", "PATH": "/usr/bin:/bin"}
MB = 1 << 20


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny_images(body):
    """A valid from_seeds answer: zeros [n, 2, 2, 3] for the n seeds asked for."""
    n = len(json.loads(body)["inputs"]["seeds"])
    return json.dumps({"outputs": np.zeros((n, 2, 2, 3), np.uint8).tolist()}).encode()


def _huge_json(nbytes):
    return b'{"outputs": [' + b"0, " * (nbytes // 3) + b"0]}"


# mode -> (status, body or callable(request body), send Content-Length)
REPLIES = {
    "ok": (200, tiny_images, True),
    "deep": (200, b"[" * 100_000 + b"]" * 100_000, True),
    "deep_error": (400, b'{"error": ' + b"[" * 1000 + b"]" * 1000 + b"}", True),
    "big": (200, _huge_json(40 * MB), True),
    "big_no_length": (200, _huge_json(40 * MB), False),  # close-delimited: the length is unknown up front
    "big_error": (500, b"x" * (40 * MB), True),
    "html_error": (502, b"<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1>"
                        b"</center><hr><center>nginx</center></body></html>" + b"\n" * 5000, True),
    "refuse": (503, b'{"error": "Servable not found for request: Latest(student)"}', True),
    "odd_refused": (None, None, True),  # requests whose first seed is odd are refused, the others answered
}


def rest_handler(mode):
    status, body, with_length = REPLIES[mode]

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1" if with_length else "HTTP/1.0"

        def log_message(self, *args):
            pass

        def do_POST(self):  # noqa: N802
            request = self.rfile.read(int(self.headers["Content-Length"]))
            code, data = status, body
            if mode == "odd_refused":
                seeds = json.loads(request)["inputs"]["seeds"]
                code, data = (400, b'{"error": "odd"}') if seeds[0] % 2 else (200, tiny_images(request))
            data = data(request) if callable(data) else data
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            if with_length:
                self.send_header("Content-Length", str(len(data)))
            else:
                self.send_header("Connection", "close")
            self.end_headers()
            try:
                for i in range(0, len(data), MB):
                    self.wfile.write(data[i:i + MB])
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client stopped reading: what it should do with an oversized answer

    return Handler


@pytest.fixture
def rest_server():
    servers = []

    def start(mode):
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), rest_handler(mode))
        httpd.daemon_threads = True
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        servers.append(httpd)
        return f"http://127.0.0.1:{httpd.server_address[1]}"

    yield start
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()


def test_seed_specs_are_bounded_before_anything_is_allocated():
    tracemalloc.start()
    try:
        for spec, message in [("0-50000000", "50000001 seeds, more than 100000"),
                              ("0-99999,100000", "100001 seeds"),
                              ("5-1", "empty seed range"), ("1,x", "'x' is not a seed"), (",", "no seeds"),
                              ("0-9223372036854775808", "does not fit in int64")]:
            with pytest.raises(serving.RequestError, match=message):
                serving.parse_seeds(spec)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < MB, f"refusing the seed specs allocated {peak} bytes"
    assert serving.parse_seeds("0-99998,-3") == list(range(99999)) + [-3]
    assert issubclass(serving.RequestError, ValueError) and issubclass(serving.ServingError, UserError)


def test_requests_hold_at_most_max_batch_seeds():
    c = serving.RestClient(f"http://127.0.0.1:{free_port()}", max_batch=4)
    with pytest.raises(serving.RequestError, match="1 to 4 seeds"):
        c.images_from_seeds(range(5))  # refused before connecting
    for bad in (0, serving.MAX_REQUEST_SEEDS + 1):
        with pytest.raises(serving.RequestError, match="--batch"):
            serving.RestClient("http://127.0.0.1:1", max_batch=bad)


@pytest.mark.parametrize("mode,error,message", [
    ("deep", serving.BadResponseError, "nested too deeply"),
    ("big", serving.BadResponseError, "larger than"),
    ("big_no_length", serving.BadResponseError, "larger than"),
    ("big_error", serving.RequestRejectedError, "HTTP 500"),
    ("deep_error", serving.RequestRejectedError, "HTTP 400"),
    ("html_error", serving.RequestRejectedError,
     r"HTTP 502: 502 Bad Gateway 502 Bad Gateway nginx \(the answer is not TF Serving's: check that the address"),
])
def test_rest_answers_are_capped_and_depth_guarded(rest_server, mode, error, message):
    url = rest_server(mode)
    tracemalloc.start()
    try:
        with pytest.raises(error, match=message) as info:
            serving.RestClient(url, timeout=60).images_from_seeds([1])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # bounded by the 1-image cap (read in chunks, then joined: twice the cap at most), not by the 40 MB
    assert peak < 2 * serving.rest_reply_limit(1) + 8 * MB, f"{mode}: peak {peak / MB:.0f} MB for a 1-image answer"
    assert len(str(info.value)) < 3000 and "\n" not in str(info.value)


def test_rest_cap_fits_legitimate_answers(rest_server):
    url = rest_server("ok")
    images = serving.RestClient(url, timeout=60).images_from_seeds([1, 2, 3])
    assert images.shape == (3, 2, 2, 3) and images.dtype == np.uint8
    # a 1024 px image in TF Serving's JSON ("255, " per value, brackets per pixel) fits the cap of one image
    one_image = len(json.dumps({"outputs": [[[[255, 255, 255]] * 1024] * 1024]}))
    assert one_image <= serving.rest_reply_limit(1) < 2 * one_image


def test_grpc_reply_size_and_declared_shape_are_capped():
    grpc = pytest.importorskip("grpc")
    pytest.importorskip("tensorflow_serving.apis.predict_pb2")
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    from tensorflow_serving.apis import predict_pb2  # pylint: disable=import-outside-toplevel
    from tensorflow_serving.apis import prediction_service_pb2_grpc  # pylint: disable=import-outside-toplevel

    class Service(prediction_service_pb2_grpc.PredictionServiceServicer):
        def Predict(self, request, context):  # noqa: N802
            response = predict_pb2.PredictResponse()
            if request.model_spec.name == "big":  # 256 px images for a client that expects at most 16 px
                response.outputs["images"].CopyFrom(tf.make_tensor_proto(np.zeros((1, 256, 256, 3), np.uint8)))
            else:  # a tiny message declaring a 4096 x 4096 image that make_ndarray would fill in
                proto = response.outputs["images"]
                proto.dtype = tf.uint8.as_datatype_enum
                for size in (1, 4096, 4096, 3):
                    proto.tensor_shape.dim.add().size = size
            return response

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(Service(), server)
    address = f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
    server.start()
    try:
        for model, message in [("big", "larger than"), ("declared", "declares 50331648 values")]:
            with serving.GrpcClient(address, model, timeout=30, max_batch=1, max_image_side=16) as c:
                with pytest.raises(serving.BadResponseError, match=message):
                    c.images_from_seeds([1])
    finally:
        server.stop(0)


def _run(binary, *args):
    proc = subprocess.run([sys.executable, "-m", f"tf_distill.bin.{binary}", *args], capture_output=True,
                          text=True, env=ENV, timeout=300, cwd=ROOT)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert "Traceback" not in proc.stderr and len(errors) == 1, proc.stderr[-3000:]
    return proc, errors[0]


def test_client_binary_one_line_errors(rest_server, tmp_path):
    out = tmp_path / "png"
    proc, error = _run("client", f"--server=http://127.0.0.1:{free_port()}", "--seeds=0-50000000", f"--out={out}")
    assert proc.returncode == 2 and "--seeds" in error and "more than 100000" in error
    proc, error = _run("client", f"--server=http://127.0.0.1:{free_port()}", "--seeds=0", f"--out={out}",
                          "--timeout=20")
    assert proc.returncode == 1 and error.startswith("error: cannot reach")
    proc, error = _run("client", f"--server={rest_server('deep')}", "--seeds=0", f"--out={out}")
    assert proc.returncode == 1 and "nested too deeply" in error
    assert not out.exists()


def test_client_binary_batches_and_streams(rest_server, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "tf_distill.bin.client", f"--server={rest_server('ok')}",
                           "--seeds=0-4,9", "--batch=2", f"--out={tmp_path}"], capture_output=True, text=True,
                          env=ENV, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"seed{s}.png" for s in (0, 1, 2, 3, 4, 9)]


@pytest.mark.parametrize("target", ["refuse", "nothing_listening"])
def test_loadtest_fails_when_every_request_fails(rest_server, target):
    url = rest_server("refuse") if target == "refuse" else f"http://127.0.0.1:{free_port()}"
    proc, error = _run("loadtest", f"--server={url}", "--requests=6", "--concurrency=2", "--max_seconds=60")
    assert proc.returncode == 1 and "all 6 requests failed" in error, proc.stderr[-2000:]
    assert ("Servable not found" if target == "refuse" else "cannot reach") in error
    assert "errors: 6 of 6 requests failed" in proc.stdout


def test_loadtest_reports_partial_failures_with_counts(rest_server):
    url = rest_server("odd_refused")
    with serving.RestClient(url, timeout=60) as c:
        stats = loadtest.run(c, seeds_per_request=1, requests=8, concurrency=2, max_seconds=60, address=url)
    assert stats["ok"] == 4 and stats["errors"] == {"RequestRejectedError": 4}
    loadtest.check_outcome(stats)  # partial failures are a result, not an error
    text = loadtest.format_stats(stats)
    assert "errors: 4 of 8 requests failed (RequestRejectedError x4)" in text and "HTTP 400: odd" in text
    with pytest.raises(loadtest.AllRequestsFailedError, match="all 3 requests failed"):
        loadtest.check_outcome({"ok": 0, "errors": {"ServingTimeoutError": 3}, "first_errors": {}})
    with pytest.raises(loadtest.LoadTestError, match="seeds_per_request"):
        loadtest.run(None, seeds_per_request=serving.MAX_REQUEST_SEEDS + 1)
