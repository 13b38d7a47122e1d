"""The HTTP service on a local Ray Serve with the tiny model: every endpoint through `requests` and the `openai`
client, equal to the Python API; bad input, a wrong API key and overload answered with clean JSON errors; a rebuilt
index picked up between requests."""

import base64
import hashlib
import io
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import openai
import pytest
import ray
import requests
import torch
import yaml
from conftest import random_image
from ray import serve
from ray.serve.schema import ServeDeploySchema
from search_helpers import write_images

from training.search.index import SearchIndex, index_collection
from training.search.model import SearchModel
from training.search.query import search
from training.search.serve_app import app_builder, deployment, numpy_embedding, start
from training.search.serve_settings import ServeSettings, api_key_sha256
from training.search.why import CaptionBank, why


ROOT = Path(__file__).resolve().parents[1]
API_KEY = "test-key-0123456789"
TIMEOUT = 60  # seconds per request: the first one waits for the replica's first forward on a busy 2-core machine
RELATION = "a {Subject} shown at several stages of growth"


def png(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def settings(**changes) -> ServeSettings:
    values = dict(max_batch_size=8, batch_wait_timeout_s=0.02, max_images_per_request=6, max_image_pixels=300 * 300,
                  max_body_bytes=1_000_000, api_key_sha256=hashlib.sha256(API_KEY.encode()).hexdigest())  # fmt: skip
    return ServeSettings(**{**values, **changes})


@pytest.fixture(scope="module")
def service(tmp_path_factory, model, processor):
    folder = tmp_path_factory.mktemp("serve")
    model.save_pretrained(folder / "model")
    processor.save_pretrained(folder / "model")
    write_images(folder / "photos", range(6))
    reference = SearchModel.load(str(folder / "model"))
    index_collection(folder / "idx", reference, folder=folder / "photos", show_progress=False)
    port = free_port()
    ray.init(num_cpus=2, object_store_memory=200 * 2**20, include_dashboard=False, log_to_driver=False)
    try:
        start(deployment(folder / "idx", settings=settings()), "127.0.0.1", port)
        yield {"url": f"http://127.0.0.1:{port}", "folder": folder, "model": reference}
    finally:
        serve.shutdown()
        ray.shutdown()


@pytest.fixture(scope="module")
def model(processor):
    from training.tiny_backbone import build_tiny_model

    return build_tiny_model(processor, seed=0)


@pytest.fixture(scope="module")
def processor():
    from training.tiny_backbone import build_tiny_processor

    return build_tiny_processor(image_size=112)


def post(service, path, document, key=API_KEY, timeout=TIMEOUT):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return requests.post(service["url"] + path, json=document, headers=headers, timeout=timeout)


def test_health_checks_answer_without_the_api_key_and_name_the_served_index(service):
    assert requests.get(service["url"] + "/healthz", timeout=TIMEOUT).json() == {"status": "ok"}
    ready = requests.get(service["url"] + "/readyz", timeout=TIMEOUT).json()
    assert ready["ready"] is True and ready["images"] == 6 and ready["model"] == str(service["folder"] / "model")


def test_text_and_image_embeddings_equal_the_python_api_through_requests_and_the_openai_client(service):
    reference = service["model"]
    texts = [RELATION, "two {Object}s side by side"]
    client = openai.OpenAI(base_url=service["url"] + "/v1", api_key=API_KEY, timeout=TIMEOUT, max_retries=0)
    created = client.embeddings.create(model="relsim", input=texts)
    got = torch.tensor([row.embedding for row in created.data])
    assert got.shape == (2, 384)
    assert torch.allclose(got, reference.encode_texts(texts), atol=1e-5)
    photo = service["folder"] / "photos" / "img03.png"
    data = photo.read_bytes()
    created = client.embeddings.create(model="relsim", input=[f"data:image/png;base64,{b64(data)}", RELATION])
    expected_image = reference.embed_images([photo]).embeddings[0]
    assert torch.allclose(torch.tensor(created.data[0].embedding), expected_image, atol=1e-5)
    plain = post(service, "/v1/embeddings", {"input": [{"image": b64(data)}], "encoding_format": "float"}).json()
    assert np.allclose(numpy_embedding(plain["data"][0]["embedding"]), expected_image.numpy(), atol=1e-5)


def test_concurrent_requests_are_batched_and_each_gets_its_own_embedding(service):
    reference = service["model"]
    images = [png(random_image(50 + seed, 60, seed)) for seed in range(10, 18)]
    with ThreadPoolExecutor(8) as pool:
        answers = list(
            pool.map(lambda data: post(service, "/v1/embeddings", {"input": [{"image": b64(data)}]}), images)
        )
    assert [answer.status_code for answer in answers] == [200] * 8
    got = torch.tensor([answer.json()["data"][0]["embedding"] for answer in answers])
    assert torch.allclose(got, reference.embed_images(images).embeddings, atol=1e-5)


def test_search_equals_the_python_search_with_why_labels_and_serves_only_indexed_images(service):
    reference = service["model"]
    index = SearchIndex(service["folder"] / "idx")
    data = (service["folder"] / "photos" / "img02.png").read_bytes()
    answer = post(service, "/v1/search", {"image": b64(data), "text": RELATION, "top_k": 3}).json()
    expected = search(index, reference, image=data, text=RELATION, k=3)
    assert [row["id"] for row in answer["results"]] == [hit.id for hit in expected]
    assert np.allclose([row["score"] for row in answer["results"]], [hit.score for hit in expected], atol=1e-5)
    assert all(row["path"] != str(service["folder"] / "photos" / "img02.png") for row in answer["results"])
    bank = CaptionBank.read("synthetic", reference)
    query = torch.nn.functional.normalize(
        0.5 * reference.embed_image(data) + 0.5 * reference.encode_texts([RELATION])[0], dim=-1
    )
    label = why(bank, query, index.stored_vectors([expected[0].id])[0], top=1)[0]
    assert answer["results"][0]["why"] == label.caption and abs(answer["results"][0]["why_score"] - label.score) < 1e-5
    first = expected[0]
    image = requests.get(f"{service['url']}/v1/images/{first.id}", headers={"Authorization": f"Bearer {API_KEY}"},
                         timeout=TIMEOUT)  # fmt: skip
    assert image.status_code == 200 and image.content == Path(first.path).read_bytes()
    missing = requests.get(f"{service['url']}/v1/images/6", headers={"Authorization": f"Bearer {API_KEY}"},
                           timeout=TIMEOUT)  # fmt: skip
    assert missing.status_code == 404 and missing.json()["error"]["param"] == "id"
    outside = requests.get(f"{service['url']}/v1/images/..%2Fmodel%2Fconfig.json",
                           headers={"Authorization": f"Bearer {API_KEY}"}, timeout=TIMEOUT)  # fmt: skip
    assert outside.status_code == 404


def test_similarity_equals_the_models_pairwise_scores(service):
    reference = service["model"]
    left = [png(random_image(40, 40, seed)) for seed in (30, 31)]
    right = [png(random_image(44, 52, seed)) for seed in (32, 33)]
    answer = post(
        service, "/v1/similarity", {"pairs": [[b64(a), {"image": b64(b)}] for a, b in zip(left, right, strict=True)]}
    )
    expected = reference.model.similarity(left, right, reference.processor)
    assert answer.status_code == 200 and np.allclose(answer.json()["scores"], expected.numpy(), atol=1e-5)


def test_bad_requests_get_a_json_error_naming_the_field_and_the_item(service):
    good = b64(png(random_image(30, 30, 1)))
    malformed = requests.post(service["url"] + "/v1/search", data=b'{"image": ', timeout=TIMEOUT,
                              headers={"Authorization": f"Bearer {API_KEY}"})  # fmt: skip
    assert malformed.status_code == 400 and malformed.json()["error"]["param"] == "body"
    assert "malformed JSON" in malformed.json()["error"]["message"]
    not_image = post(service, "/v1/embeddings", {"input": [{"image": good}, {"image": b64(b"GIF89a not really")}]})
    assert not_image.status_code == 400
    assert not_image.json()["error"]["param"] == "input" and not_image.json()["error"]["index"] == 1
    bomb = post(service, "/v1/similarity", {"pairs": [[good, good], [good, b64(png(random_image(400, 400, 2)))]]})
    assert (
        bomb.status_code == 400 and bomb.json()["error"]["index"] == 1 and "pixels" in bomb.json()["error"]["message"]
    )
    url = post(service, "/v1/search", {"image": "https://example.com/cat.jpg"})
    assert (
        url.status_code == 400 and url.json()["error"]["param"] == "image" and "URL" in url.json()["error"]["message"]
    )
    too_many = post(service, "/v1/embeddings", {"input": [{"image": good}] * 7})
    assert too_many.status_code == 413 and "limit of 6" in too_many.json()["error"]["message"]
    too_big = post(service, "/v1/embeddings", {"input": ["x" * 1_000_001]})
    assert too_big.status_code == 413 and too_big.json()["error"]["param"] == "body"
    chunked = requests.post(service["url"] + "/v1/embeddings", data=iter([b'{"input": ["', b"x" * 1_000_001, b'"]}']),
                            headers={"Authorization": f"Bearer {API_KEY}"}, timeout=TIMEOUT)  # fmt: skip
    assert chunked.status_code == 413 and "limit of 1000000 bytes" in chunked.json()["error"]["message"]
    top_k = post(service, "/v1/search", {"text": RELATION, "top_k": 0})
    assert top_k.status_code == 400 and top_k.json()["error"]["param"] == "top_k"


def test_a_wrong_or_missing_api_key_is_refused_with_401_by_requests_and_the_openai_client(service):
    for key in ("wrong-key", None):
        answer = post(service, "/v1/embeddings", {"input": [RELATION]}, key=key)
        assert answer.status_code == 401 and answer.headers["WWW-Authenticate"] == "Bearer"
        assert answer.json()["error"]["param"] == "authorization"
    client = openai.OpenAI(base_url=service["url"] + "/v1", api_key="wrong-key", timeout=TIMEOUT, max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        client.embeddings.create(model="relsim", input=[RELATION])


def test_an_index_rebuilt_while_requests_are_in_flight_is_served_whole_from_the_next_request_on(service):
    folder = service["folder"]
    old = search(SearchIndex(folder / "idx"), service["model"], text=RELATION, k=9)
    before = requests.get(service["url"] + "/readyz", timeout=TIMEOUT).json()
    answers, rebuilt = [], threading.Event()

    def keep_asking():
        while not rebuilt.is_set():
            answers.append(post(service, "/v1/search", {"text": RELATION, "top_k": 9}).json())

    asking = threading.Thread(target=keep_asking)
    asking.start()
    try:
        write_images(folder / "photos", range(6, 9))
        index_collection(folder / "idx", service["model"], folder=folder / "photos", show_progress=False)
    finally:
        rebuilt.set()
        asking.join(TIMEOUT)
    new = search(SearchIndex(folder / "idx"), service["model"], text=RELATION, k=9)
    answers.append(post(service, "/v1/search", {"text": RELATION, "top_k": 9}).json())
    # every answer is one generation's whole answer: old ids and scores (6 images) or new ones (9), never a mix
    generations = {before["generation"]: old}
    for answer in answers:
        expected = generations.setdefault(answer["generation"], new)
        assert [row["id"] for row in answer["results"]] == [hit.id for hit in expected]
        assert [row["path"] for row in answer["results"]] == [hit.path for hit in expected]
        assert np.allclose([row["score"] for row in answer["results"]], [hit.score for hit in expected], atol=1e-5)
    assert len(answers[-1]["results"]) == 9 and answers[-1]["generation"] != before["generation"]
    assert len(generations) == 2 and len(answers) >= 2
    assert requests.get(service["url"] + "/readyz", timeout=TIMEOUT).json()["images"] == 9


def test_api_key_is_read_from_a_file_or_the_environment_never_empty(tmp_path, monkeypatch):
    (tmp_path / "key").write_text("secret\n")
    assert api_key_sha256(tmp_path / "key") == hashlib.sha256(b"secret").hexdigest()
    monkeypatch.setenv("RELSIM_API_KEY", "from-env")
    assert api_key_sha256() == hashlib.sha256(b"from-env").hexdigest()
    monkeypatch.delenv("RELSIM_API_KEY")
    assert api_key_sha256() is None
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ValueError, match=r"empty"):
        api_key_sha256(tmp_path / "empty")
    assert ServeSettings(api_key_sha256=api_key_sha256(tmp_path / "key")).accepts_token("secret")
    assert not ServeSettings(api_key_sha256=api_key_sha256(tmp_path / "key")).accepts_token("secreT")


def test_a_replica_killed_during_a_burst_gives_answers_or_clean_errors_and_the_service_recovers(service):
    replicas = [actor for actor in ray.util.list_named_actors(all_namespaces=True) if "RelsimService" in actor["name"]]
    assert len(replicas) == 1
    texts = [f"a {{Subject}} number {number}" for number in range(24)]

    def call(text):
        try:
            return post(service, "/v1/embeddings", {"input": [text]}, timeout=30).status_code
        except requests.RequestException as error:  # a dropped connection is an answer too; a hang is not
            return type(error).__name__

    with ThreadPoolExecutor(6) as pool:
        answers = pool.map(call, texts)
        ray.kill(ray.get_actor(replicas[0]["name"], namespace=replicas[0]["namespace"]))
        answers = list(answers)
    assert set(answers) <= {200, 500, 502, 503, 504, "ConnectionError"}, answers
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if post(service, "/v1/embeddings", {"input": [RELATION]}, timeout=10).status_code == 200:
                break
        except requests.RequestException:
            pass
        time.sleep(1)
    answer = post(service, "/v1/embeddings", {"input": [RELATION]})
    assert answer.status_code == 200
    expected = service["model"].encode_texts([RELATION])[0]
    assert torch.allclose(torch.tensor(answer.json()["data"][0]["embedding"]), expected, atol=1e-5)


def test_overload_gets_fast_503s_with_retry_after_and_the_service_keeps_serving(service):
    # a batch that waits a second for company holds its requests, so the ones past the bound of 2 are refused
    slow = settings(max_pending_requests=2, batch_wait_timeout_s=1.0, max_batch_size=64)
    start(deployment(service["folder"] / "idx", settings=slow), "127.0.0.1", int(service["url"].rsplit(":", 1)[1]))
    image = b64(png(random_image(30, 30, 5)))

    def call(_):
        started = time.monotonic()
        answer = post(service, "/v1/embeddings", {"input": [{"image": image}]})
        return answer, time.monotonic() - started

    with ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(call, range(10)))
    # the two requests let in waited for each other: one forward embedded both
    batches = requests.get(service["url"] + "/readyz", timeout=TIMEOUT).json()["batches"]
    assert batches["image_forwards"] == 1 and batches["images"] == 2
    refused = [(answer, seconds) for answer, seconds in answers if answer.status_code == 503]
    assert {answer.status_code for answer, _ in answers} == {200, 503}
    assert len(refused) >= 5
    assert all(answer.headers.get("Retry-After") == "1" for answer, _ in refused), [a.headers for a, _ in refused]
    assert all(seconds < 0.9 for _, seconds in refused)
    assert all(answer.json()["error"]["code"] == 503 for answer, _ in refused)
    assert post(service, "/v1/embeddings", {"input": [RELATION]}).status_code == 200


def test_a_request_past_its_timeout_gets_a_json_504_in_time(service):
    # a batch that waits a second for company outlasts a 0.3 s request timeout
    slow = settings(request_timeout_s=0.3, batch_wait_timeout_s=1.0, max_batch_size=64)
    start(deployment(service["folder"] / "idx", settings=slow), "127.0.0.1", int(service["url"].rsplit(":", 1)[1]))
    started = time.monotonic()
    answer = post(service, "/v1/embeddings", {"input": [RELATION]})
    assert answer.status_code == 504 and time.monotonic() - started < 0.9
    assert answer.json()["error"]["message"] == "not answered within 0.3 s"


def test_the_gpu_serve_config_is_a_valid_serve_config_whose_args_the_app_builder_takes(tmp_path):
    config = yaml.safe_load((ROOT / "training" / "configs" / "serve-gpu.yaml").read_text())
    schema = ServeDeploySchema.model_validate(config)
    (application,) = schema.applications
    assert application.import_path == "training.search.serve_app:app_builder"
    assert application.deployments[0].ray_actor_options.num_gpus == 1
    assert application.deployments[0].autoscaling_config["max_replicas"] == 8
    assert application.args["device"] == "cuda" and application.args["max_batch_size"] == 64
    settings_fields = set(ServeSettings.__dataclass_fields__) | {"index", "model", "device", "api_key_file"}
    assert set(application.args) <= settings_fields
    with pytest.raises(ValueError, match=r"args must name the index folder"):
        app_builder({"device": "cuda"})


def test_serve_refuses_an_empty_api_key_file_in_one_line_before_starting_ray(tmp_path):
    (tmp_path / "key").write_text("")
    command = [sys.executable, "-m", "training.search", "serve", "--index", str(tmp_path), "--api-key-file",
               str(tmp_path / "key")]  # fmt: skip
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    expected = f"--api-key-file {tmp_path / 'key'}: empty; write the API key on its first line"
    assert result.stderr.strip().splitlines() == [f"python -m training.search serve: error: {expected}"]


def test_url_images_are_fetched_only_when_enabled_http_only_and_capped(tmp_path):
    from url_server_helpers import serve_folder

    from training.search.serve_inputs import RequestError, image_input

    data = png(random_image(20, 30, 7))
    (tmp_path / "cat.png").write_bytes(data)
    with serve_folder(tmp_path) as server:
        with pytest.raises(RequestError, match=r"^input\[2\]: URLs are not fetched by this service"):
            image_input({"image": server.url("cat.png")}, ServeSettings(), "input", 2)
        enabled = ServeSettings(allow_url_images=True, max_body_bytes=100_000, url_timeout_s=10)
        assert image_input(server.url("cat.png"), enabled, "image").data == data
        with pytest.raises(RequestError, match=r"^image: cannot fetch .*huge\.jpg"):
            image_input(server.url("huge.jpg"), enabled, "image")
        with pytest.raises(RequestError, match=r"^image: cannot fetch .*: redirect refused: .* redirects to file:"):
            image_input(server.redirect(f"file://{tmp_path / 'cat.png'}"), enabled, "image")
        with pytest.raises(RequestError, match=r"^image: URL scheme refused: file URLs"):
            image_input(f"file://{tmp_path / 'cat.png'}", enabled, "image")
