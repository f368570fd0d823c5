"""The runner's pure parts: tails, the 4096-byte fit, progress lines, settings, outcome naming."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codetask_runner import oom, result
from codetask_runner.capture import Tail, decode_tail
from codetask_runner.config import Config, deadline_margin
from codetask_runner.process import Finished
from codetask_runner.progress import MAX_READ, ProgressFile, parse_line

pytestmark = pytest.mark.unit


# --- tails ------------------------------------------------------------------------------------


@given(chunks=st.lists(st.binary(max_size=300), max_size=40), limit=st.integers(0, 500))
def test_tail_keeps_the_last_limit_bytes_and_counts_all(chunks: list[bytes], limit: int) -> None:
    tail = Tail(limit)
    for chunk in chunks:
        tail.feed(chunk)
        assert len(tail._buf) <= max(2 * limit, 0)  # bounded whatever was fed
    stream = b"".join(chunks)

    assert tail.total == len(stream)
    assert tail.data == (stream[-limit:] if limit else b"")
    assert tail.truncated == (len(stream) > limit)


def test_tail_cut_inside_a_character_drops_its_leftover_bytes() -> None:
    assert decode_tail("€x".encode()[1:], cut=True) == "x"
    assert decode_tail("€x".encode()[2:], cut=True) == "x"
    assert decode_tail(b"\x80plain", cut=False) == "\ufffdplain"


# --- the 4096-byte fit ------------------------------------------------------------------------


def _outcome(stdout: str, stderr: str, message: str = "") -> result.Outcome:
    out, err = Tail(1 << 20), Tail(1 << 20)
    out.feed(stdout.encode())
    err.feed(stderr.encode())
    return result.Outcome(
        reason=result.COMPLETED,
        exit_code=0,
        signal=None,
        message=message,
        started_at=1_700_000_000.25,
        finished_at=1_700_000_001.5,
        duration=1.25,
        stdout=out,
        stderr=err,
    )


texts = st.text(max_size=6000) | st.text(alphabet='ab\n"\\\x01€😀', max_size=6000)


@settings(max_examples=150, deadline=None)
@given(stdout=texts, stderr=texts, message=st.text(max_size=700))
def test_fitted_result_is_valid_json_within_4096_bytes_keeping_stream_ends(
    stdout: str, stderr: str, message: str
) -> None:
    data = result.encode_fitted(_outcome(stdout, stderr, message))
    doc = json.loads(data)

    assert len(data) <= result.MAX_BYTES
    assert stdout.endswith(doc["stdout"]) and stderr.endswith(doc["stderr"])
    assert doc["truncated"]["stdout"] == (doc["stdout"] != stdout)
    assert doc["truncated"]["stderr"] == (doc["stderr"] != stderr)
    assert doc["stdoutBytes"] == len(stdout.encode())
    if doc["truncated"]["stdout"] or doc["truncated"]["stderr"]:
        assert len(data) > result.MAX_BYTES - 8  # the budget is used up, not wasted


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | texts,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@given(value=json_values)
def test_result_encoding_is_exactly_what_json_dumps_writes(value: object) -> None:
    doc = {"v": 1, "value": value, "tuple": (1, "two")}
    expected = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()

    assert result.encode(doc) == expected


def test_result_encoding_refuses_what_a_result_never_holds() -> None:
    with pytest.raises(TypeError):
        result.encode({"v": object()})
    with pytest.raises(TypeError):
        result.encode({"v": {1: "non-str key"}})


def test_fit_keeps_a_small_stream_whole_and_gives_the_rest_to_the_big_one() -> None:
    doc = json.loads(result.encode_fitted(_outcome("o" * 50_000, "short error\n")))

    assert doc["stderr"] == "short error\n"
    assert doc["truncated"] == {"stdout": True, "stderr": False}
    assert len(doc["stdout"]) > 3000


def test_fit_shares_the_budget_evenly_when_both_streams_are_big() -> None:
    data = result.encode_fitted(_outcome("o" * 50_000, "e" * 50_000))
    doc = json.loads(data)

    assert abs(len(doc["stdout"]) - len(doc["stderr"])) <= 1
    assert len(data) <= result.MAX_BYTES


def test_result_document_has_the_contract_fields_in_order() -> None:
    doc = json.loads(result.encode_fitted(_outcome("4\n", "")))

    assert list(doc) == [
        "v",
        "exitCode",
        "signal",
        "reason",
        "message",
        "startedAt",
        "finishedAt",
        "durationSeconds",
        "stdout",
        "stderr",
        "stdoutBytes",
        "stderrBytes",
        "truncated",
    ]
    assert doc["startedAt"] == "2023-11-14T22:13:20.250000Z"
    assert doc["durationSeconds"] == 1.25


# --- naming the outcome -----------------------------------------------------------------------


def _finished(**state: object) -> Finished:
    finished = Finished(Tail(10), Tail(10), 0.0)
    for key, value in state.items():
        setattr(finished, key, value)
    return finished


@pytest.mark.parametrize(
    ("state", "reason", "exit_code", "signal"),
    [
        ({"exit_status": 0}, "Completed", 0, None),
        ({"exit_status": 3}, "NonZeroExit", 3, None),
        ({"signal": 9}, "NonZeroExit", 137, 9),
        ({"signal": 9, "oom": True}, "OOMKilled", 137, 9),
        ({"signal": 15, "oom": True}, "NonZeroExit", 143, 15),
        ({"exit_status": 1, "oom": True}, "NonZeroExit", 1, None),
        ({"signal": 15, "stopped": "deadline"}, "DeadlineExceeded", 124, 15),
        ({"exit_status": 0, "stopped": "deadline"}, "DeadlineExceeded", 124, None),
        ({"signal": 15, "stopped": "terminated", "stop_signal": 15}, "Terminated", 143, 15),
        ({"exit_status": 0, "stopped": "terminated", "stop_signal": 2}, "Terminated", 143, None),
    ],
)
def test_how_the_code_ended_names_reason_exit_code_and_signal(
    state: dict[str, object], reason: str, exit_code: int, signal: int | None
) -> None:
    oom_killed = bool(state.pop("oom", False))
    outcome = result.from_finished(_finished(**state), timeout=10, grace=5, oom_killed=oom_killed)

    assert (outcome.reason, outcome.exit_code, outcome.signal) == (reason, exit_code, signal)


# --- progress lines ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "fields"),
    [
        (
            b'{"percent": 40, "stage": "download", "message": "3/7 files"}',
            (40, "download", "3/7 files"),
        ),
        (b'{"percent": 12.5}', (12.5, None, None)),
        (b'{"percent": 250, "extra": 1}', (100, None, None)),
        (b'{"percent": -3}', (0, None, None)),
        (b'{"percent": "40", "stage": "x"}', (None, "x", None)),
        (b'{"percent": true, "message": "m"}', (None, None, "m")),
        (b'{"unknown": 1}', None),
        (b"{}", None),
        (b"[1, 2]", None),
        (b"not json", None),
        (b'{"percent": NaN}', None),
        (b"\xff\xfe", None),
        (b"", None),
    ],
)
def test_progress_line_keeps_known_valid_fields_only(
    line: bytes, fields: tuple[object, object, object] | None
) -> None:
    parsed = parse_line(line)

    if fields is None:
        assert parsed is None
    else:
        assert parsed == dict(zip(("percent", "stage", "message"), fields, strict=True))


def test_progress_file_yields_the_latest_complete_valid_line(tmp_path: Path) -> None:
    path = tmp_path / "progress"
    progress = ProgressFile(str(path))
    progress.create()
    assert progress.poll() is None

    with path.open("a") as f:
        f.write('{"percent": 1}\n{"percent": 2}\ngarbage\n{"percent": 3')
    assert progress.poll() == {"percent": 2, "stage": None, "message": None}
    assert progress.poll() is None  # nothing new; the half line waits for its end
    with path.open("a") as f:
        f.write("}\n")
    assert progress.poll() == {"percent": 3, "stage": None, "message": None}


def test_progress_file_takes_an_unterminated_last_line_at_the_end(tmp_path: Path) -> None:
    path = tmp_path / "progress"
    path.write_text('{"stage": "done"}')
    progress = ProgressFile(str(path))

    assert progress.poll() is None
    assert progress.poll(final=True) == {"percent": None, "stage": "done", "message": None}


def test_progress_file_replaced_or_truncated_is_read_from_its_start(tmp_path: Path) -> None:
    path = tmp_path / "progress"
    path.write_text('{"percent": 10}\n' * 10)
    progress = ProgressFile(str(path))
    assert progress.poll() == {"percent": 10, "stage": None, "message": None}

    path.write_text('{"percent": 20}\n')  # truncated and rewritten: shorter than before
    assert progress.poll() == {"percent": 20, "stage": None, "message": None}
    path.unlink()
    path.write_text('{"percent": 30}\n' * 20)  # a new file
    assert progress.poll() == {"percent": 30, "stage": None, "message": None}


def test_progress_file_flood_is_read_in_bounded_windows(tmp_path: Path) -> None:
    path = tmp_path / "progress"
    lines = [json.dumps({"percent": i % 100, "message": "m" * 50}) for i in range(20_000)]
    path.write_text("\n".join(lines) + "\n")
    assert path.stat().st_size > 10 * MAX_READ
    progress = ProgressFile(str(path))

    assert progress.poll() == json.loads(lines[-1]) | {"stage": None}


# --- settings ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("timeout", "margin"),
    [(0.1, 0.05), (1, 0.1), (2, 0.2), (5, 0.5), (10, 1.0), (3600, 1.0)],
)
def test_deadline_margin_is_ten_percent_between_a_tenth_and_one_second(
    timeout: float, margin: float
) -> None:
    assert deadline_margin(timeout) == pytest.approx(margin)


def test_config_reads_the_contract_environment_with_defaults(tmp_path: Path) -> None:
    config = Config(
        {
            "CODETASK_LANGUAGE": "node",
            "CODETASK_CODE_FILE": "/codetask/input/code",
            "CODETASK_ARGS": '["a", "b c"]',
            "CODETASK_TIMEOUT_SECONDS": "60",
            "CODETASK_WORKDIR": str(tmp_path),
        }
    )

    assert config.errors == []
    assert config.args == ("a", "b c")
    assert config.deadline == 59
    assert config.output_limit == 16384
    assert config.grace == 5
    assert config.result_path == "/dev/termination-log"
    assert config.redis_url is None
    assert (config.heartbeat_interval, config.heartbeat_ttl) == (10, 30)


def test_config_without_timeout_has_no_deadline() -> None:
    config = Config({"CODETASK_LANGUAGE": "sh", "CODETASK_CODE_FILE": "/c"})

    assert config.timeout is None and config.deadline is None


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("CODETASK_LANGUAGE", "ruby"),
        ("CODETASK_CODE_FILE", ""),
        ("CODETASK_ARGS", "[1, 2]"),
        ("CODETASK_ARGS", "{"),
        ("CODETASK_TIMEOUT_SECONDS", "0"),
        ("CODETASK_TIMEOUT_SECONDS", "inf"),
        ("CODETASK_OUTPUT_LIMIT_BYTES", "1.5"),
        ("CODETASK_GRACE_SECONDS", "-1"),
        ("CODETASK_ATTEMPT", "0"),
        ("CODETASK_HEARTBEAT_INTERVAL", "0"),
    ],
)
def test_config_names_each_invalid_variable(key: str, value: str) -> None:
    env = {"CODETASK_LANGUAGE": "python", "CODETASK_CODE_FILE": "/c", key: value}

    assert any(error.startswith(key) for error in Config(env).errors)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("low 0\nhigh 0\nmax 3\noom 2\noom_kill 2\n", 2),
        ("oom_kill_disable 0\nunder_oom 0\noom_kill 7\n", 7),
        ("low 0\n", None),
        ("oom_kill lots\n", None),
    ],
)
def test_oom_kills_reads_the_cgroup_counter(
    tmp_path: Path, content: str, expected: int | None
) -> None:
    counter = tmp_path / "memory.events"
    counter.write_text(content)
    assert oom.oom_kills((str(tmp_path / "missing"), str(counter))) == expected
