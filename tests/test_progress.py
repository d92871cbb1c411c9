"""Progress on a terminal (the rich bar) and off one (plain lines a log or a pipe can read)."""

import io
import json
import os
import re
import subprocess
import sys
import threading

import pytest
from rich.console import Console

from bfnas.commands.progress import INTERVAL_ENV, ProgressDisplay, clock_text, progress_interval

ANSI = re.compile(r"\x1b\[")


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def plain(**kwargs):
    """A display on a console that is no terminal, writing to a string, on a fake clock."""
    buf, clock = io.StringIO(), FakeClock()
    # Narrow, so that long lines must still not wrap; never a terminal, whatever FORCE_COLOR says.
    console = Console(file=buf, width=60, force_terminal=False)
    assert not console.is_terminal
    kwargs.setdefault("interval", 10.0)
    return buf, clock, lambda *a, **k: ProgressDisplay(console, *a, clock=clock, **{**kwargs, **k})


def lines(buf: io.StringIO) -> list[str]:
    return buf.getvalue().splitlines()


def test_a_line_per_stage_with_the_command_name():
    buf, clock, make = plain()
    with make("bfnas demo", "starting", total=1.0, columns=("description", "bar")) as p:
        for step, f in (
            ("writing a corpus", 0.1),
            ("fitting the predictor", 0.5),
            ("writing the report", 0.9),
        ):
            clock.now += 1
            p.update(description=step, completed=f)
    out = lines(buf)
    assert out == [
        "[0:00] bfnas demo: starting, 0%",
        "[0:01] bfnas demo: writing a corpus, 10%",
        "[0:02] bfnas demo: fitting the predictor, 50%",
        "[0:03] bfnas demo: writing the report, 90%",
    ]


def test_counters_in_a_description_continue_its_stage_and_lines_are_bounded():
    # The demo's profiling: 60 measurements over two minutes report "profiling i/60" each.
    buf, clock, make = plain()
    with make("bfnas demo", "profiling", total=1.0, columns=("description", "bar")) as p:
        for i in range(1, 61):
            clock.now += 2.0
            p.update(description=f"profiling {i}/60", completed=0.7 * i / 60)
        clock.now += 1
        p.update(description="fitting the latency predictor", completed=0.72)
    out = lines(buf)
    stages = [x for x in out if "bfnas demo:" in x]
    assert stages == [
        "[0:00] bfnas demo: profiling, 0%",
        "[0:02] bfnas demo: profiling 1/60, 1%",
        "[2:01] bfnas demo: fitting the latency predictor, 72%",
    ]
    periodic = [x for x in out if "bfnas demo:" not in x]
    # One every 10 s over 2 minutes, plus where profiling ended.
    assert 10 <= len(periodic) <= 13
    assert periodic[-1] == "[2:01]   profiling 60/60, 70%"
    stamps = [_seconds(x) for x in periodic[:-1]]
    assert all(b - a >= 10 for a, b in zip(stamps, stamps[1:], strict=False))


def _seconds(line: str) -> int:
    minutes, seconds = line[1 : line.index("]")].split(":")
    return int(minutes) * 60 + int(seconds)


def test_counts_time_left_and_note_where_known():
    buf, clock, make = plain()
    with make("bfnas profile", "profiling test-cpu-int8", total=4) as p:
        for i in range(4):
            clock.now += 10
            p.update(advance=1, note=f"last: {i + 1}.00 ms (ok)")
    assert lines(buf) == [
        "[0:00] bfnas profile: profiling test-cpu-int8, 0/4",
        "[0:10]   profiling test-cpu-int8, 1/4, about 0:30 left, last: 1.00 ms (ok)",
        "[0:20]   profiling test-cpu-int8, 2/4, about 0:20 left, last: 2.00 ms (ok)",
        "[0:30]   profiling test-cpu-int8, 3/4, about 0:10 left, last: 3.00 ms (ok)",
        "[0:40]   profiling test-cpu-int8, 4/4, last: 4.00 ms (ok)",
    ]


def test_a_resumed_run_estimates_from_its_own_pace():
    buf, clock, make = plain(interval=0)
    with make("bfnas supernet train", "training", total=100, completed=90) as p:
        clock.now += 10
        p.update(completed=95)
    assert lines(buf)[-1] == "[0:10]   training, 95/100, about 0:10 left"


def test_the_last_state_is_written_on_exit_once():
    buf, clock, make = plain()
    with make("bfnas search", "searching", total=5, columns=("description", "count")) as p:
        clock.now += 1
        p.update(completed=3)  # too soon for a line of its own
    assert lines(buf) == ["[0:00] bfnas search: searching, 0/5", "[0:01]   searching, 3/5"]
    buf, clock, make = plain(interval=0)
    with make("bfnas search", "searching", total=5, columns=("description", "count")) as p:
        p.update(completed=5)
    assert len(lines(buf)) == 2  # the line at 5/5 said it already


def test_an_interrupt_that_left_the_lock_held_still_lets_the_exit_write_its_line():
    """A Ctrl-C between the lock's acquire and its `with` block leaves the lock held by the
    main thread: leaving the display must not wait for it."""
    buf, clock, make = plain(interval=0)
    finished = threading.Event()

    def interrupted_run() -> None:
        with make("bfnas profile", "profiling", total=5, columns=("description", "count")) as p:
            p._lock.acquire()  # what the interrupted update left behind
            clock.now += 1
            p.completed = 2
        finished.set()

    worker = threading.Thread(target=interrupted_run, daemon=True)
    worker.start()
    worker.join(timeout=10)
    assert finished.is_set(), "leaving the display waited on its own lock"
    assert lines(buf)[-1] == "[0:01]   profiling, 2/5"


def test_no_escape_codes_carriage_returns_or_markup_off_a_terminal():
    buf, clock, make = plain(interval=0)
    arch = "L2 H128 heads [2, 4] ffn [bold]x[/bold] " + "y" * 80
    with make("bfnas search", "round 1: verifying 1/2", total=3, note=arch) as p:
        p.update(completed=1)
        p.message("[yellow]drift:[/] the reference moved 12 %")
    text = buf.getvalue()
    assert not ANSI.search(text) and "\r" not in text
    assert arch in text  # not parsed as markup, not wrapped at the console's width
    assert "drift: the reference moved 12 %" in text and "[yellow]" not in text


def test_each_line_is_flushed_as_it_is_written():
    class Recorder(io.StringIO):
        def __init__(self) -> None:
            super().__init__()
            self.flushed: list[int] = []

        def flush(self) -> None:
            self.flushed.append(self.getvalue().count("\n"))

    file, clock = Recorder(), FakeClock()
    console = Console(file=file, force_terminal=False)
    with ProgressDisplay(console, "bfnas x", "a", total=2, interval=0, clock=clock) as p:
        p.update(advance=1)
        p.update(description="b")
    # "a, 0/2", "a, 1/2", "b, 1/2": each is flushed before the next is written.
    assert sorted(set(file.flushed)) == [1, 2, 3]


def test_interval_from_the_environment(monkeypatch):
    monkeypatch.setenv(INTERVAL_ENV, "0.5")
    assert progress_interval() == 0.5
    for bad in ("soon", "-1", "nan", ""):
        monkeypatch.setenv(INTERVAL_ENV, bad)
        assert progress_interval() == 10.0
    monkeypatch.setenv(INTERVAL_ENV, "0")
    buf, clock, make = plain(interval=None)
    with make("bfnas x", "a", total=3) as p:
        for _ in range(3):
            p.update(advance=1)
    assert len(lines(buf)) == 4


def test_clock_text():
    assert [clock_text(s) for s in (0, 42.9, 725, 3723)] == ["0:00", "0:42", "12:05", "1:02:03"]


def test_a_terminal_gets_the_rich_bar():
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=100)
    with ProgressDisplay(console, "bfnas profile", "profiling", total=4, interval=0) as p:
        for _ in range(4):
            p.update(advance=1, note="last: 1.00 ms (ok)")
    text = buf.getvalue()
    assert "━" in text and "4/4" in text and "last: 1.00 ms (ok)" in text
    assert "bfnas profile:" not in text  # no plain stage lines on a terminal


def test_unknown_columns_are_a_programming_error():
    with pytest.raises(ValueError, match="unknown progress columns"):
        ProgressDisplay(
            Console(file=io.StringIO(), force_terminal=False),
            "bfnas x",
            "a",
            columns=("bar", "speed"),
        )


# -- a real command, its output redirected to a pipe ------------------------------------------

SENTENCE = (
    "the quick brown fox jumps over a lazy dog while seven wizards quietly "
    "judge boxing matches near the old river bank"
)


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "tiny.txt"
    words, docs = SENTENCE.split(), []
    for d in range(12):
        lines_ = [" ".join(words[(d + i + j) % len(words)] for j in range(14)) for i in range(8)]
        docs.append("\n".join(lines_))
    path.write_text("\n\n".join(docs) + "\n")
    return path


def _bfnas(*argv: str) -> subprocess.CompletedProcess:
    # A line for every update, so a tiny run shows some; nothing that makes a pipe a terminal.
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE")}
    env[INTERVAL_ENV] = "0"
    exe = [sys.executable, "-c", "from bfnas.cli import main; raise SystemExit(main())"]
    return subprocess.run([*exe, *argv], capture_output=True, text=True, env=env, timeout=300)


def test_data_build_redirected_prints_progress_lines(tiny_corpus, tmp_path):
    proc = _bfnas(
        "data",
        "build",
        "--corpus",
        str(tiny_corpus),
        "--tokenizer",
        "minilm",
        "--out",
        str(tmp_path / "d"),
        "--seq-len",
        "16",
        "--shard-size",
        "8",
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.splitlines()
    assert re.fullmatch(r"\[0:\d\d\] bfnas data build: reading the corpus", out[0]), out
    shards = [x for x in out if re.search(r"reading the corpus, \d+ shards, \d+ sequences", x)]
    assert len(shards) >= 2
    assert "sequences of 16 tokens" in "".join(out[len(shards) + 1 :])  # then the result
    assert not ANSI.search(proc.stdout) and "\r" not in proc.stdout


def test_under_json_stdout_stays_json_and_progress_goes_to_stderr(tiny_corpus, tmp_path):
    proc = _bfnas(
        "data",
        "build",
        "--corpus",
        str(tiny_corpus),
        "--tokenizer",
        "minilm",
        "--out",
        str(tmp_path / "d"),
        "--seq-len",
        "16",
        "--shard-size",
        "8",
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["seq_len"] == 16
    assert "bfnas data build: reading the corpus" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_profile_redirected_prints_a_stage_line(tmp_path, tiny_space_file, fast_profile_file):
    proc = _bfnas(
        "profile",
        "--hw",
        str(fast_profile_file),
        "--space",
        str(tiny_space_file),
        "--samples",
        "2",
        "--db",
        str(tmp_path / "p.db"),
        "--artifacts",
        str(tmp_path / "arts"),
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.splitlines()
    assert re.fullmatch(r"\[0:\d\d\] bfnas profile: profiling test-cpu-int8, 0/2", out[0]), out
    assert any(re.search(r"profiling test-cpu-int8, 2/2, last: raw [\d.]+ ms", x) for x in out), out
    assert "already stored" in proc.stdout.split("2/2")[-1]  # then the summary
    assert not ANSI.search(proc.stdout) and "\r" not in proc.stdout


def test_demo_wiring_gives_stage_lines_on_stderr_under_json(
    monkeypatch, capsys, tmp_path, tiny_space_file
):
    # The demo itself is minutes long; its steps are stood in for, its progress wiring is not.
    import bfnas.pipeline
    from bfnas.cli import main

    def run_demo(*args, on_step, **kwargs):
        for i in range(4):
            on_step(f"profiling {i}/3", 0.7 * i / 3)
        on_step("writing the report", 0.93)
        return {"status": "ok"}

    monkeypatch.setattr(bfnas.pipeline, "run_demo", run_demo)
    monkeypatch.setenv(INTERVAL_ENV, "0")
    code = main(
        [
            "demo",
            "--space",
            str(tiny_space_file),
            "--samples",
            "30",
            "--out",
            str(tmp_path / "demo"),
            "--artifacts",
            str(tmp_path / "art"),
            "--json",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0 and json.loads(out) == {"status": "ok", "stage1": None, "task": None}
    stages = [x.split("] ", 1)[1] for x in err.splitlines() if "bfnas demo:" in x]
    assert stages == [
        "bfnas demo: starting, 0%",
        "bfnas demo: profiling 0/3, 0%",
        "bfnas demo: writing the report, 93%",
    ]
    assert "  profiling 3/3, 70%" in err


def test_a_log_that_cannot_be_written_does_not_stop_the_work():
    # (A closed pipe is rich's to handle: it exits quietly, as `| head` wants.)
    class FullDisk(io.StringIO):
        def write(self, text: str) -> int:
            raise OSError(28, "No space left on device")

    clock = FakeClock()
    console = Console(file=FullDisk(), force_terminal=False)
    with ProgressDisplay(console, "bfnas x", "a", total=3, interval=0, clock=clock) as p:
        for _ in range(3):
            p.update(advance=1)
        p.message("[yellow]drift:[/] moved")
    assert p.completed == 3
