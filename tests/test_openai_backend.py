"""The OpenAI-compatible server backends against a fake server whose answers are exact."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import pytest

from harness.cli import main
from harness.engine.base import ChoiceRequest, GenerateRequest, ScoreResult
from harness.engine.http_client import retry_after_seconds
from harness.engine.openai_api import OpenAIBackend, continuation_score, normalize_base_url
from harness.engine.request_store import RequestStore
from harness.errors import HarnessError
from tests.fake_openai_server import FakeServer, completion, toy_tokens

SECRET = "sk-test-5ecret-0f-the-server"


@pytest.fixture
def server():
    fake = FakeServer()
    yield fake
    fake.close()


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def backend(server: FakeServer, endpoint: str = "completions", **options) -> OpenAIBackend:
    options.setdefault("backoff", 0.01)
    return OpenAIBackend("toy", endpoint=endpoint, base_url=server.url, **options)


def collect(batches) -> dict:
    found: dict = {}
    for batch in batches:
        for index, answer in batch:
            assert index not in found
            found[index] = answer
    return found


def test_choice_scores_are_the_continuation_tokens_sums(server):
    requests = [ChoiceRequest("The cat sat", (" on", " under the mat", " a b")), ChoiceRequest("Q:", (" yes",))]
    scores = collect(backend(server).score(requests))
    assert scores == {
        0: (ScoreResult(-1.0, False, 1), ScoreResult(-5.5, False, 3), ScoreResult(-1.0, True, 2)),
        1: (ScoreResult(-1.5, False, 1),),
    }
    bodies = sorted(server.state.answered, key=lambda b: b["prompt"])
    assert bodies[0] == {"model": "toy", "prompt": "Q: yes", "max_tokens": 1, "temperature": 0, "logprobs": 1,
                         "echo": True}
    assert [b["prompt"] for b in bodies] == ["Q: yes", "The cat sat a b", "The cat sat on", "The cat sat under the mat"]


def test_choice_scores_match_lm_eval_local_completions_parse():
    from lm_eval.models.openai_completions import LocalCompletionsAPI

    for context, continuation in [("The cat sat", " under the mat"), ("a b c", " d"), ("Answer:", " x y zz")]:
        response = completion({"prompt": context + continuation, "echo": True}, logprobs=True)
        ctxlen = len(toy_tokens(context))
        [(expected, greedy)] = LocalCompletionsAPI.parse_logprobs(response, ctxlens=[ctxlen])
        ours = continuation_score(response, context, continuation, "http://x")
        assert (ours.logprob, ours.is_greedy) == (expected, greedy)
        assert ours.num_tokens == len(toy_tokens(context + continuation)) - ctxlen


def test_generation_cuts_at_stop_strings_on_both_endpoints(server):
    requests = [GenerateRequest("one two three", 5, ("\n",)), GenerateRequest("four", 7, ())]
    assert collect(backend(server).generate(requests)) == {0: " 3 words.", 1: " 1 words.\nmore text"}
    by_prompt = {b["prompt"]: b for b in server.state.answered}
    assert by_prompt["one two three"] == {"model": "toy", "prompt": "one two three", "max_tokens": 5,
                                          "temperature": 0, "stop": ["\n"]}
    assert "stop" not in by_prompt["four"]
    chat = collect(backend(server, "chat", model_name="served-name").generate(requests))
    assert chat == {0: " 3 words.", 1: " 1 words.\nmore text"}
    messages = [b for b in server.state.answered if "messages" in b]
    assert sorted(b["messages"][0]["content"] for b in messages) == ["four", "one two three"]
    assert all(len(b["messages"]) == 1 and b["messages"][0]["role"] == "user" and b["model"] == "served-name"
               for b in messages)


def test_requests_overlap_up_to_the_concurrency(server):
    server.state.delay = 0.25
    requests = [GenerateRequest(f"prompt {i}", 4, ()) for i in range(8)]
    started = time.perf_counter()
    answers = collect(backend(server, concurrency=4).generate(requests))
    elapsed = time.perf_counter() - started
    assert len(answers) == 8
    assert 2 <= server.state.max_active <= 4
    assert elapsed < 0.75 * 8 * 0.25


def test_429_500_and_a_dropped_connection_are_retried(server):
    server.state.script = ["429:1", "500", "drop"]
    started = time.perf_counter()
    answers = collect(backend(server).generate([GenerateRequest("x y", 4, ("\n",))]))
    assert answers == {0: " 2 words."}
    assert server.state.attempts == 4
    assert time.perf_counter() - started >= 0.95  # the Retry-After of 1 s was honoured


def test_retry_after_reads_seconds_and_http_dates():
    assert retry_after_seconds("3") == 3.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None


def test_exhausted_retries_end_in_one_line_after_saving_what_finished(server, cache):
    server.state.broken_after, server.state.broken_status = 2, 503
    store = RequestStore(cache / "store.sqlite")
    requests = [GenerateRequest(f"p {i}", 4, ("\n",)) for i in range(5)]
    found: dict = {}
    with pytest.raises(HarnessError) as caught:
        for batch in backend(server, concurrency=1, max_retries=2, store=store).generate(requests):
            found.update(batch)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"POST {server.url}/v1/completions: HTTP 503 (overloaded) after 3 attempts")
    assert found == {0: " 2 words.", 1: " 2 words."}
    server.state.broken_after = None
    answered = len(server.state.answered)
    assert collect(backend(server, store=store).generate(requests)) == {i: " 2 words." for i in range(5)}
    assert len(server.state.answered) - answered == 3  # the two saved answers were not asked again


def test_a_server_without_prompt_logprobs_is_refused_in_one_line(server):
    server.state.logprobs = False
    with pytest.raises(HarnessError, match="has no prompt log-probabilities") as caught:
        collect(backend(server).score([ChoiceRequest("a", (" b", " c"))]))
    assert "\n" not in str(caught.value) and "--logits_all true" in str(caught.value)


def test_echo_without_the_generated_token_is_refused_as_misaligned(server):
    server.state.shifted = True
    with pytest.raises(HarnessError, match="prompt log-probabilities are misaligned") as caught:
        collect(backend(server).score([ChoiceRequest("a", (" b",))]))
    assert "\n" not in str(caught.value)


def test_an_echo_whose_next_token_ends_the_text_is_scored_not_refused(server, tmp_path):
    """A model whose next token is EOS generates nothing, so nothing follows the prompt in the echo
    (llama-cpp-python): the prompt's log-probabilities are right and must be kept."""
    request = ChoiceRequest("a", (" b", " c"))
    expected = collect(backend(server, store=RequestStore(tmp_path / "first.sqlite")).score([request]))
    server.state.ends = True
    answered = len(server.state.answered)
    assert collect(backend(server, store=RequestStore(tmp_path / "second.sqlite")).score([request])) == expected
    assert len(server.state.answered) - answered == 2  # both options asked of the server again


def test_describe_records_the_server_never_the_key(server, monkeypatch):
    monkeypatch.setenv("TOY_KEY", SECRET)
    described = backend(server, api_key_env="TOY_KEY", concurrency=3).describe()
    assert described == {"model": "toy", "backend": "openai-completions", "model_name": "toy",
                         "server_models": ["toy-model"], "server_version": None, "base_url": server.url,
                         "endpoint": "/v1/completions", "concurrency": 3}
    server.state.echo_auth = True
    with pytest.raises(HarnessError) as caught:
        collect(backend(server, api_key_env="TOY_KEY").generate([GenerateRequest("a", 2, ())]))
    assert SECRET not in str(caught.value) and "Bearer ***" in str(caught.value)
    monkeypatch.delenv("TOY_KEY")
    with pytest.raises(HarnessError, match="--api-key-env TOY_KEY: that environment variable is not set"):
        backend(server, api_key_env="TOY_KEY")


def test_base_url_forms():
    for given in ("http://h:8000", "http://h:8000/", "http://h:8000/v1", "http://h:8000/v1/completions",
                  "http://h:8000/v1/chat/completions"):
        assert normalize_base_url(given, "openai-chat") == "http://h:8000"
    with pytest.raises(HarnessError, match="needs --base-url"):
        normalize_base_url(None, "openai-chat")


def run_args(server: FakeServer, out: Path, *extra: str) -> list[str]:
    return ["run", "--backend", "openai-completions", "--base-url", server.url, "--model", "toy",
            "--tasks", "compare_length,add_numbers", "--templates", "completion,equation", "--limit", "4",
            "--out", str(out), "--run-id", "r", *extra]


def test_cli_run_sends_the_key_only_in_the_header(server, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TOY_KEY", SECRET)
    assert main(run_args(server, tmp_path / "out", "--api-key-env", "TOY_KEY", "--concurrency", "2")) == 0
    assert server.state.authorization == {f"Bearer {SECRET}"}
    output = capsys.readouterr()
    assert SECRET not in output.out + output.err
    record = json.loads((tmp_path / "out" / "r" / "run.json").read_text())
    assert record["model"]["base_url"] == server.url and record["model"]["server_models"] == ["toy-model"]
    for path in (tmp_path / "out").rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path


def test_openai_chat_refuses_choice_tasks_before_any_request(server, tmp_path, capsys):
    args = run_args(server, tmp_path / "out")
    args[2] = "openai-chat"
    assert main(args) == 2
    error = capsys.readouterr().err
    assert "task 'compare_length' is a choice task: backend openai-chat cannot score options" in error
    assert server.state.attempts == 0 and server.state.gets == 0


def test_killed_run_resumes_without_sending_a_finished_request_twice(server, tmp_path, capsys, monkeypatch):
    server.state.broken_after = 5  # the server fails for good after five answers
    assert main(run_args(server, tmp_path / "out", "--max-retries", "0", "--concurrency", "2")) == 2
    assert "HTTP 500 (overloaded) after 1 attempt" in capsys.readouterr().err
    assert (tmp_path / "out" / "r" / "samples.jsonl").read_text().count("\n") >= 1
    server.state.broken_after = None
    assert main(run_args(server, tmp_path / "out", "--max-retries", "0", "--concurrency", "2")) == 0
    sent = Counter(json.dumps(body, sort_keys=True) for body in server.state.answered)
    assert max(sent.values()) == 1
    assert len(sent) == 4 * 2 + 4  # four 2-option questions and four generations, each asked once
    # The resumed record equals an uninterrupted run's (fresh store, fresh run directory).
    fresh = FakeServer()
    try:
        monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "other-cache"))
        args = run_args(server, tmp_path / "fresh", "--max-retries", "0", "--concurrency", "2")
        args[4] = fresh.url
        assert main(args) == 0
    finally:
        fresh.close()
    resumed = [json.loads(line) for line in (tmp_path / "out" / "r" / "samples.jsonl").read_text().splitlines()]
    uninterrupted = [json.loads(line) for line in (tmp_path / "fresh" / "r" / "samples.jsonl").read_text().splitlines()]
    key = lambda s: (s["task"], s["row_id"])  # noqa: E731
    assert sorted(resumed, key=key) == sorted(uninterrupted, key=key)
