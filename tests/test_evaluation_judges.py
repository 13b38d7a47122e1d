"""The judge's score reader, the OpenAI-compatible judge against a local chat-completions server, the local VLM
judge on a tiny Qwen2.5-VL, and cached judging of retrievals."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import PIL.Image
import pytest
from evaluation_helpers import write_pool_folder

from training.evaluation.embed import read_image
from training.evaluation.judges import judge_retrievals
from training.evaluation.judges.cache import JudgementCache
from training.evaluation.judges.local_vlm import LocalVLMJudge
from training.evaluation.judges.openai_compatible import OpenAICompatibleJudge
from training.evaluation.judges.prompt import RELATIONAL_SIMILARITY_QUESTION, parse_score
from training.evaluation.pool import by_hash, read_pool
from training.evaluation.retrieval import Retrieval
from training.vlm.chat import QwenVLChat


@pytest.mark.parametrize(
    ("answer", "score"),
    [
        ("Score: 7", 7.0),
        ("**Score:** 8/10", 8.0),
        ('{"score": 6}', 6.0),
        ('```json\n{"score": 3.5}\n```', 3.5),
        ("I would rate it 9 out of 10.", 9.0),
        ("Both images show growth over time. 10/10", 10.0),
        ("Rating: 4", 4.0),
        ("5", 5.0),
        ("  2.\n", 2.0),
        ("Score: seven", 7.0),
        ("The score is 0 because nothing is shared.", 0.0),
        ("Score: 11", None),
        ("Score: -2", None),
        ("somewhere between 3 and 4", None),
        ("I cannot compare these images.", None),
        ("", None),
    ],
)
def test_parse_score_reads_messy_answers(answer, score):
    assert parse_score(answer) == score


class ChatCompletionsServer:
    """A local server speaking the chat-completions protocol: answers from a list (bytes are sent as the raw body of a
    200 response, for malformed answers; an int is an error status), optional failures first."""

    def __init__(self, answers, failures=()):
        self.answers = list(answers)
        self.failures = list(failures)
        self.requests = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
                if outer.failures or isinstance(outer.answers[0], int):
                    self.send_response(outer.failures.pop(0) if outer.failures else outer.answers.pop(0))
                    self.send_header("Content-Type", "application/json")
                    self.send_header("retry-after-ms", "10")  # keeps the client's backoff short in tests
                    self.end_headers()
                    self.wfile.write(b'{"error": {"message": "slow down"}}')
                    return
                answer = outer.answers.pop(0)
                if isinstance(answer, bytes):
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(answer)))
                    self.end_headers()
                    self.wfile.write(answer)
                    return
                reply = {
                    "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": body["model"],
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": answer}}],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                }  # fmt: skip
                data = json.dumps(reply).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self):
        return f"http://127.0.0.1:{self.server.server_port}/v1"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def pool(tmp_path):
    items = read_pool(write_pool_folder(tmp_path / "pool"))
    return by_hash(items)


def test_openai_compatible_judge_retries_and_sends_the_question_with_both_images(pool, monkeypatch):
    monkeypatch.setenv("RELSIM_JUDGE_API_KEY", "secret")
    with ChatCompletionsServer(["Score: 8"], failures=[429, 503]) as server:
        judge = OpenAICompatibleJudge(base_url=server.base_url, model="local-judge")
        answer = judge.ask(read_image(pool["g0_0"].image)[0], read_image(pool["g0_1"].image)[0])
    assert answer == "Score: 8" and len(server.requests) == 3  # two retries, then the answer
    request = server.requests[-1]
    assert request["path"] == "/v1/chat/completions" and request["auth"] == "Bearer secret"
    body = request["body"]
    assert body["model"] == "local-judge" and body["temperature"] == 0.0
    content = body["messages"][0]["content"]
    urls = [part["image_url"]["url"] for part in content if part["type"] == "image_url"]
    assert len(urls) == 2 and all(url.startswith("data:image/jpeg;base64,") for url in urls)
    assert content[-1]["text"] == RELATIONAL_SIMILARITY_QUESTION


def test_openai_compatible_judge_gives_up_on_client_errors(pool):
    import openai

    with ChatCompletionsServer([], failures=[400]) as server:
        judge = OpenAICompatibleJudge(base_url=server.base_url, model="m")
        image = read_image(pool["g0_0"].image)[0]
        with pytest.raises(openai.BadRequestError):
            judge.ask(image, image)
    assert len(server.requests) == 1


def test_judging_retrievals_caches_answers(pool, tmp_path):
    retrievals = [Retrieval("m", "g0_0", ["g0_1", "d0"], [0.9, 0.5]), Retrieval("m", "g1_0", ["d1"], [0.4])]
    with ChatCompletionsServer(["Score: 9", "I'd say 2/10", "no idea"]) as server:
        judge = OpenAICompatibleJudge(base_url=server.base_url, model="m")
        cache = JudgementCache(tmp_path / "answers.jsonl")
        judgements = judge_retrievals(judge, retrievals, pool, cache, top=2, show_progress=False)
        again = judge_retrievals(judge, retrievals, pool, JudgementCache(tmp_path / "answers.jsonl"), top=2,
                                 show_progress=False)  # fmt: skip
    assert len(server.requests) == 3  # the second pass asked nothing
    assert [(j.query, j.candidate, j.rank, j.score) for j in judgements] == [
        ("g0_0", "g0_1", 0, 9.0), ("g0_0", "d0", 1, 2.0), ("g1_0", "d1", 0, None)
    ]  # fmt: skip
    assert [j.answer for j in again] == [j.answer for j in judgements]


def test_local_vlm_judge_answers_each_pair_greedily(backbone_dir, pool, tmp_path):
    chat = QwenVLChat.from_pretrained(str(backbone_dir), max_pixels=56 * 56)
    judge = LocalVLMJudge(chat, batch_size=2, max_new_tokens=4)
    retrievals = [Retrieval("m", "g0_0", ["g0_1"], [0.9]), Retrieval("m", "g1_0", ["d1"], [0.4]),
                  Retrieval("m", "g2_0", ["g2_1"], [0.7])]  # fmt: skip
    judgements = judge_retrievals(judge, retrievals, pool, JudgementCache(tmp_path / "a.jsonl"), show_progress=False)
    assert len(judgements) == 3 and all(isinstance(j.answer, str) for j in judgements)
    again = judge_retrievals(judge, retrievals, pool, JudgementCache(tmp_path / "b.jsonl"), show_progress=False)
    assert [j.answer for j in again] == [j.answer for j in judgements]  # greedy: the same answers
    assert all(j.score == parse_score(j.answer) for j in judgements)
    assert judge.identity()["model"] == str(backbone_dir)


def test_a_damaged_answer_cache_names_its_file_and_line(tmp_path):
    path = tmp_path / "answers.jsonl"
    path.write_text('{"key": "a", "answer": "Score: 3"}\n{"key": "b"}\n')
    with pytest.raises(ValueError, match=r"answers\.jsonl:2: answer: missing from this judge answer record"):
        JudgementCache(path)
    path.write_text('{"key": "a", "answer": "Score: 3"}\n{"key": "b", "ans\n{"key": "c", "answer": "Score: 4"}\n')
    with pytest.raises(ValueError, match=r"answers\.jsonl:2: <line>: malformed JSON"):
        JudgementCache(path)


def test_a_half_written_last_answer_is_recovered_and_cut_before_the_next_append(tmp_path, caplog):
    path = tmp_path / "answers.jsonl"
    path.write_text('{"key": "a", "answer": "Score: 3"}\n{"key": "b", "answer": "Sco')  # killed mid-write
    cache = JudgementCache(path)
    assert cache.answers == {"a": "Score: 3"} and "answers.jsonl:2: the last line is half-written" in caplog.text
    cache.put("b", "Score: 5")
    assert path.read_text().splitlines() == ['{"key": "a", "answer": "Score: 3"}', '{"key": "b", "answer": "Score: 5"}']
    assert JudgementCache(path).answers == {"a": "Score: 3", "b": "Score: 5"}


GARBAGE = b'{"id": "chatcmpl-1", "choices": [{"index": 0, "mess'  # a 200 whose JSON body is cut off


@pytest.mark.parametrize(
    "malformed",
    [GARBAGE, b'{"id": "x", "object": "chat.completion", "created": 0, "model": "m", "choices": []}', ""],
    ids=["invalid-json", "no-choices", "empty-content"],
)
def test_malformed_answers_are_retried_then_recorded_as_failures_and_asked_again(pool, tmp_path, malformed):
    retrievals = [Retrieval("m", "g0_0", ["g0_1"], [0.9]), Retrieval("m", "g1_0", ["d1"], [0.4]),
                  Retrieval("m", "g2_0", ["g2_1"], [0.7])]  # fmt: skip
    with ChatCompletionsServer(["Score: 9", malformed, malformed, malformed, "Score: 2", "Score: 4"]) as server:
        judge = OpenAICompatibleJudge(base_url=server.base_url, model="m", malformed_retries=2, malformed_wait=0.0)
        judgements = judge_retrievals(judge, retrievals, pool, JudgementCache(tmp_path / "answers.jsonl"),
                                      show_progress=False)  # fmt: skip
        assert len(server.requests) == 5  # the second pair was asked three times
        again = judge_retrievals(judge, retrievals, pool, JudgementCache(tmp_path / "answers.jsonl"),
                                 show_progress=False)  # fmt: skip
    assert len(server.requests) == 6 and [j.score for j in again] == [9.0, 4.0, 2.0]  # a rerun asks the failed pair
    assert [(j.answer, j.score) for j in judgements] == [("Score: 9", 9.0), ("", None), ("Score: 2", 2.0)]
    records = [json.loads(line) for line in (tmp_path / "answers.jsonl").read_text().splitlines()]
    assert [("answer" in r, "failure" in r, r["query"]) for r in records] == [
        (True, False, "g0_0"), (False, True, "g1_0"), (True, False, "g2_0"), (True, False, "g1_0")
    ]  # fmt: skip
    assert "no readable answer" in records[1]["failure"]


def test_answers_are_saved_as_they_arrive_when_a_later_request_fails(pool, tmp_path):
    import openai

    retrievals = [Retrieval("m", "g0_0", ["g0_1", "d0", "d1"], [0.9, 0.5, 0.4])]
    with ChatCompletionsServer(["Score: 9", "Score: 1", 400]) as server:
        judge = OpenAICompatibleJudge(base_url=server.base_url, model="m")
        with pytest.raises(openai.BadRequestError):
            judge_retrievals(judge, retrievals, pool, JudgementCache(tmp_path / "answers.jsonl"), top=3,
                             show_progress=False)  # fmt: skip
    assert sorted(JudgementCache(tmp_path / "answers.jsonl").answers.values()) == ["Score: 1", "Score: 9"]


def test_judge_answers_are_keyed_by_image_content(pool, tmp_path):
    retrievals = [Retrieval("m", "g0_0", ["g0_1"], [0.9])]
    with ChatCompletionsServer(["Score: 9", "Score: 3"]) as server:
        judge = OpenAICompatibleJudge(base_url=server.base_url, model="m")
        first = judge_retrievals(judge, retrievals, pool, JudgementCache(tmp_path / "a.jsonl"), show_progress=False)
        PIL.Image.new("RGB", (16, 16), (250, 0, 250)).save(pool["g0_1"].image)  # same hash, new picture
        second = judge_retrievals(judge, retrievals, pool, JudgementCache(tmp_path / "a.jsonl"), show_progress=False)
    assert len(server.requests) == 2 and (first[0].score, second[0].score) == (9.0, 3.0)
