"""Throughput, memory and rate accuracy of outreach, beside mailmerge and the SMTP ceiling.

Run by ``make bench`` with the benchmark's own virtual environment
(``benchmarks/.work/venv``: outreach plus mailmerge 2.3, which is never a
dependency of outreach itself). Everything runs on this machine: each
measurement starts its own counting sink (``benchmarks/sink.py``) on
loopback, in a process of its own, and runs the command measured in another.

Every figure is the median of ``BENCH_RUNS`` runs (default 3), all in this
one run of the script, so that their ratios hold on a noisy machine; the
20,000-contact runs take ``BENCH_LARGE_RUNS`` (default: the same) and the
rate-limit run, two minutes long, runs once. Results go to
``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import csv
import datetime
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HERE = ROOT / "benchmarks"
WORK = HERE / ".work" / "run"
CACHE = WORK / "cache"
BIN = Path(sys.executable).parent
RUNS = int(os.environ.get("BENCH_RUNS", "3"))
LARGE_RUNS = int(os.environ.get("BENCH_LARGE_RUNS", str(RUNS)))
RATE_SECONDS = float(os.environ.get("BENCH_RATE_SECONDS", "120"))
RATE = 600
LARGE = int(os.environ.get("BENCH_LARGE", "20000"))
SIZES = (195, 2000, LARGE)
SENDER = "campaign@coalition.example"


# -- processes and their memory ----------------------------------------------


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as handle:
                ppid = int(handle.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        tree.setdefault(ppid, []).append(int(entry))
    return tree


def _memory_kb(pid: int) -> tuple[int, int]:
    """(Rss, Pss) of a process: Pss shares each shared page among its users."""
    rss = pss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("Rss:"):
                    rss = int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss = int(line.split()[1])
    except OSError:
        pass
    return rss, pss


def tree_memory_mb(pid: int) -> tuple[float, float]:
    """(Rss, Pss) of a process and all its descendants, in MB.

    Worker processes forked from one server share most of their pages; the
    sum of their Rss counts those pages once per process, the sum of their
    Pss once in all, which is what the machine actually spends.
    """
    tree = _children()
    rss = pss = 0
    todo = [pid]
    while todo:
        current = todo.pop()
        one, two = _memory_kb(current)
        rss, pss = rss + one, pss + two
        todo.extend(tree.get(current, []))
    return rss / 1024, pss / 1024


@dataclass
class Run:
    wall: float
    peak_mb: float  # Pss of the whole process tree, sampled every 0.1 s
    code: int
    output: str = ""
    peak_rss_mb: float = 0.0  # the sum of the tree's Rss, shared pages counted per process


def measured(
    command: Sequence[str],
    env: dict[str, str],
    cwd: Path,
    stdout: int | None = None,
    stop_after: Callable[[], float | None] | None = None,
) -> Run:
    """Run ``command`` to its end; its wall time and the peak memory of its process tree."""
    start = time.perf_counter()
    process = subprocess.Popen(
        command,
        env=env,
        cwd=cwd,
        stdout=stdout if stdout is not None else subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    peak = peak_rss = 0.0
    output: list[str] = []
    reader = None
    if process.stdout is not None:
        reader = threading.Thread(target=lambda: output.append(process.stdout.read()), daemon=True)
        reader.start()
    while process.poll() is None:
        rss, pss = tree_memory_mb(process.pid)
        peak, peak_rss = max(peak, pss), max(peak_rss, rss)
        if stop_after is not None:
            deadline = stop_after()
            if deadline is not None and time.time() >= deadline:
                process.send_signal(signal.SIGINT)
                stop_after = None
        time.sleep(0.1)
    wall = time.perf_counter() - start
    if reader is not None:
        reader.join()
    return Run(
        wall=wall,
        peak_mb=peak,
        code=process.returncode,
        output="".join(output),
        peak_rss_mb=peak_rss,
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Sink:
    """The counting sink in its own process."""

    port: int
    out: Path
    process: subprocess.Popen[str]
    first: list[float] = field(default_factory=list)

    @classmethod
    def start(cls) -> Sink:
        port = free_port()
        out = WORK / f"sink-{port}.json"
        process = subprocess.Popen(
            [sys.executable, str(HERE / "sink.py"), str(port), str(out)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line.startswith("ready"):
            raise SystemExit(f"the sink did not start: {line!r}")
        sink = cls(port, out, process)

        def watch() -> None:
            assert process.stdout is not None
            for text in process.stdout:
                if text.startswith("first "):
                    sink.first.append(float(text.split()[1]))

        threading.Thread(target=watch, daemon=True).start()
        return sink

    def stop(self) -> dict[str, object]:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=60)
        data: dict[str, object] = json.loads(self.out.read_text(encoding="utf-8"))
        self.out.unlink()
        return data


# -- inputs ------------------------------------------------------------------


def make_contacts(size: int) -> Path:
    """``size`` contacts: the 195 shipped ones, then copies with ids and addresses of their own."""
    path = WORK / f"contacts-{size}.csv"
    if path.exists():
        return path
    with (ROOT / "contacts.csv").open(encoding="utf-8-sig", newline="") as handle:
        base = list(csv.DictReader(handle))
    assert base
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(base[0]))
        writer.writeheader()
        for number in range(size):
            row = dict(base[number % len(base)])
            if number >= len(base):
                row["id"] = f"{row['id']}-{number // len(base)}"
                row["email"] = f"{row['id'].lower()}@missions.example"
                row["cc"] = ""
            writer.writerow(row)
    return path


def environment(contacts: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SMTP_", "MAIL_", "SEND_"))}
    env.update(
        {
            "CONTACTS_FILE": str(contacts),
            "TEMPLATES_DIR": str(ROOT / "templates"),
            "MAIL_FROM": SENDER,
            "MAIL_FROM_NAME": "The Coalition",
            "SMTP_HOST": "127.0.0.1",
            "SMTP_SECURITY": "none",
            "SEND_RATE_PER_MINUTE": "0",
            "NO_COLOR": "1",
            # The benchmark's own cache folder, empty at its start.
            "XDG_CACHE_HOME": str(CACHE),
        }
    )
    env.update(extra)
    return env


# -- the measurements --------------------------------------------------------


def preview(size: int, *, again: bool = False) -> Run:
    """``outreach preview`` into a new folder, or ``again`` over an earlier preview.

    A preview writes over the files of the one before last (kept hidden
    beside it as a spare), which costs less than making new files; a first
    preview, or one after the folder was deleted, makes every file anew.
    """
    out = WORK / f"preview-{size}"
    if not again:
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(out.with_name(f".{out.name}.spare"), ignore_errors=True)
    run = measured(
        [str(BIN / "outreach"), "preview", "--out", str(out)],
        environment(make_contacts(size)),
        WORK,
    )
    if run.code != 0:
        raise SystemExit(f"outreach preview failed:\n{run.output}")
    if size not in (195, 2000):
        shutil.rmtree(out, ignore_errors=True)
    return run


def send(size: int, connections: int, *, spam_scored_before: bool = True) -> tuple[Run, float]:
    """The whole `outreach send --yes`, and the rate from first to last arrival.

    As after ``make check``, the sample's spam scores are remembered from an
    earlier run of the same letters, unless ``spam_scored_before`` is False:
    then SpamAssassin scores them afresh during the run.
    """
    logs = WORK / "logs"
    shutil.rmtree(logs, ignore_errors=True)
    if not spam_scored_before:
        shutil.rmtree(CACHE / "outreach" / "spam", ignore_errors=True)
    sink = Sink.start()
    try:
        run = measured(
            [str(BIN / "outreach"), "send", "--yes"],
            environment(
                make_contacts(size),
                SMTP_PORT=str(sink.port),
                LOG_DIR=str(logs),
                SEND_CONNECTIONS=str(connections),
                CAMPAIGN=f"bench-{size}",
            ),
            WORK,
        )
    finally:
        got = sink.stop()
    if run.code != 0 or got["count"] != size:
        raise SystemExit(f"outreach send: {got['count']} of {size} arrived\n{run.output}")
    arrivals = got["arrivals"]
    assert isinstance(arrivals, list)
    return run, _rate(arrivals)


def _rate(arrivals: list[float]) -> float:
    span = arrivals[-1] - arrivals[0]
    return (len(arrivals) - 1) / span if span > 0 else float("nan")


def check(size: int) -> None:
    """``outreach check`` of the letters to ``size`` contacts, unmeasured."""
    done = subprocess.run(
        [str(BIN / "outreach"), "check"],
        env=environment(make_contacts(size), CAMPAIGN=f"bench-{size}"),
        cwd=WORK,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"outreach check failed\n{done.stdout}{done.stderr}")


def ceiling(connections: int) -> float:
    """Messages a second of a plain smtplib loop over the prebuilt .eml files."""
    folder = WORK / "preview-2000"
    sink = Sink.start()
    try:
        done = subprocess.run(
            [
                sys.executable,
                str(HERE / "ceiling.py"),
                str(folder),
                str(sink.port),
                str(connections),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
    finally:
        got = sink.stop()
    result = json.loads(done.stdout)
    assert got["count"] == result["sent"], (got["count"], result)
    return float(result["sent"]) / float(result["seconds"])


def mailmerge_files(size: int) -> Path:
    """A mailmerge template, database and config for the same letter, HTML already inlined."""
    folder = WORK / f"mailmerge-{size}"
    folder.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(ROOT))
    from outreach.contacts import load_contacts
    from outreach.render import Renderer

    contacts = load_contacts(make_contacts(size))
    renderer = Renderer(ROOT / "templates", "31 August 2015")
    first = next(iter(contacts))
    marked = {
        "country": "\ue000country\ue001",
        "mission": "\ue000mission\ue001",
        "name_in_text": "\ue000name_in_text\ue001",
    }
    contact = type(first)(
        id=first.id,
        country=marked["country"],
        to=first.to,
        cc=(),
        language="en",
        line=first.line,
        fields={**first.fields, **marked},
    )
    rendered = renderer.render(contact)

    def jinja(text: str) -> str:
        pieces = re.split("\ue000([a-z_]+)\ue001", text)
        out = []
        for number, piece in enumerate(pieces):
            if number % 2:
                out.append("{{ " + piece + " }}")
            elif piece:
                out.append("{% raw %}" + piece + "{% endraw %}")
        return "".join(out)

    (folder / "mailmerge_template.txt").write_text(
        "TO: {{ email }}\n"
        f"FROM: The Coalition <{SENDER}>\n"
        f"SUBJECT: {jinja(rendered.subject)}\n"
        "CONTENT-TYPE: text/html\n\n" + jinja(rendered.html),
        encoding="utf-8",
    )
    shutil.copy(make_contacts(size), folder / "mailmerge_database.csv")
    return folder


def mailmerge(size: int, folder: Path) -> Run:
    sink = Sink.start()
    (folder / "mailmerge_server.conf").write_text(
        f"[smtp_server]\nhost = 127.0.0.1\nport = {sink.port}\nratelimit = 0\n", encoding="utf-8"
    )
    try:
        run = measured(
            [str(BIN / "mailmerge"), "--no-dry-run", "--no-limit", "--output-format", "raw"],
            environment(make_contacts(size)),
            folder,
            stdout=subprocess.DEVNULL,
        )
    finally:
        got = sink.stop()
    if run.code != 0 or got["count"] != size:
        raise SystemExit(f"mailmerge: {got['count']} of {size} arrived (exit {run.code})")
    return run


def rate_limit() -> tuple[int, int, float]:
    """(most in any 60 s, total, seconds) of a send at 600 a minute for RATE_SECONDS."""
    logs = WORK / "logs-rate"
    shutil.rmtree(logs, ignore_errors=True)
    sink = Sink.start()

    def deadline() -> float | None:
        return sink.first[0] + RATE_SECONDS if sink.first else None

    try:
        measured(
            [str(BIN / "outreach"), "send", "--yes"],
            environment(
                make_contacts(2000),
                SMTP_PORT=str(sink.port),
                LOG_DIR=str(logs),
                SEND_RATE_PER_MINUTE=str(RATE),
                CAMPAIGN="bench-rate",
            ),
            WORK,
            stop_after=deadline,
        )
    finally:
        got = sink.stop()
    arrivals = sorted(got["arrivals"])  # type: ignore[arg-type]
    first = arrivals[0]
    inside = [t for t in arrivals if t < first + RATE_SECONDS]
    most, low = 0, 0
    for high, moment in enumerate(inside):
        while inside[low] <= moment - 60:
            low += 1
        most = max(most, high - low + 1)
    return most, len(inside), RATE_SECONDS


# -- the report ----------------------------------------------------------------


def median(values: list[float]) -> float:
    return statistics.median(values)


def main() -> None:
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    began = time.time()
    rows: list[tuple[str, str, str, str]] = []
    notes: list[str] = []

    def log(text: str) -> None:
        print(f"[{time.time() - began:6.0f} s] {text}", flush=True)

    results: dict[str, float] = {}
    for size, again in [(195, False), (195, True), *((size, False) for size in SIZES[1:])]:
        if again:
            preview(size, again=True)  # the preview, then the one that leaves its spare
            preview(size, again=True)
        runs = [preview(size, again=again) for _ in range(LARGE_RUNS if size > 2000 else RUNS)]
        wall, peak = median([r.wall for r in runs]), median([r.peak_mb for r in runs])
        rss = median([r.peak_rss_mb for r in runs])
        key = f"preview-{size}" + ("-again" if again else "")
        results[key] = wall
        results[f"{key}-mb"] = peak
        how = "again, over the previous preview" if again else "into a new folder"
        rows.append(
            (
                f"preview, {size:,} letters, {how} ({len(runs)} runs)",
                f"{wall:.2f} s wall",
                f"{size / wall:.0f} letters/s",
                f"{peak:.0f} MB (Rss sum {rss:.0f} MB)",
            )
        )
        log(f"preview {size} {how}: {wall:.2f} s, {peak:.0f} MB")

    # outreach, mailmerge and the ceiling take turns, so that all three meet
    # the machine in the same state: its speed drifts over minutes.
    folder = mailmerge_files(2000)
    check(2000)  # what staff run before they send: `make check`
    paired: list[tuple[tuple[Run, float], Run]] = []
    afresh: list[tuple[Run, float]] = []
    ceilings: list[float] = []
    for _ in range(RUNS):
        paired.append((send(2000, 1), mailmerge(2000, folder)))
        ceilings.append(ceiling(1))
        afresh.append(send(2000, 1, spam_scored_before=False))
    notes.append(
        "Round by round, outreach's 2,000-letter send on one connection against the "
        "mailmerge run and the ceiling run beside it: "
        + "; ".join(
            f"{theirs.wall / ours.wall:.2f}× mailmerge, {2000 / ours.wall / top:.2f}× the ceiling"
            for ((ours, _), theirs), top in zip(paired, ceilings, strict=True)
        )
        + "."
    )
    wall = median([r.wall for r, _ in afresh])
    results["send-2000-1-afresh"] = 2000 / wall
    rows.append(
        (
            f"outreach send, 2,000 letters, SEND_CONNECTIONS=1, no spam score remembered "
            f"({RUNS} runs)",
            f"{wall:.1f} s wall",
            f"{2000 / wall:.0f} msg/s (sending alone: "
            f"{median([rate for _, rate in afresh]):.0f} msg/s)",
            f"{median([r.peak_mb for r, _ in afresh]):.0f} MB",
        )
    )
    log(f"send 2000 x1 afresh: {wall:.1f} s, {2000 / wall:.0f}/s")
    for size, connections in ((2000, 1), (2000, 4), (LARGE, 1)):
        count = LARGE_RUNS if size > 2000 else RUNS
        if (size, connections) == (2000, 1):
            measured_runs = [ours for ours, _ in paired]
        else:
            measured_runs = [send(size, connections) for _ in range(count)]
        wall = median([r.wall for r, _ in measured_runs])
        peak = median([r.peak_mb for r, _ in measured_runs])
        rss = median([r.peak_rss_mb for r, _ in measured_runs])
        flow = median([rate for _, rate in measured_runs])
        results[f"send-{size}-{connections}"] = size / wall
        results[f"send-{size}-{connections}-flow"] = flow
        results[f"send-{size}-{connections}-mb"] = peak
        rows.append(
            (
                f"outreach send, {size:,} letters, SEND_CONNECTIONS={connections} ({count} runs)",
                f"{wall:.1f} s wall",
                f"{size / wall:.0f} msg/s (sending alone: {flow:.0f} msg/s)",
                f"{peak:.0f} MB (Rss sum {rss:.0f} MB)",
            )
        )
        log(f"send {size} x{connections}: {wall:.1f} s, {size / wall:.0f}/s, flow {flow:.0f}/s")

    for connections in (1, 4):
        rate = median(ceilings if connections == 1 else [ceiling(4) for _ in range(RUNS)])
        results[f"ceiling-{connections}"] = rate
        rows.append(
            (
                f"ceiling: smtplib loop over the prebuilt .eml, {connections} "
                f"connection(s) ({RUNS} runs)",
                "",
                f"{rate:.0f} msg/s",
                "",
            )
        )
        log(f"ceiling x{connections}: {rate:.0f}/s")

    runs = [theirs for _, theirs in paired]
    wall, peak = median([r.wall for r in runs]), median([r.peak_mb for r in runs])
    rss = median([r.peak_rss_mb for r in runs])
    results["mailmerge"] = 2000 / wall
    rows.append(
        (
            f"mailmerge 2.3, 2,000 letters, no rate limit ({RUNS} runs)",
            f"{wall:.1f} s wall",
            f"{2000 / wall:.0f} msg/s",
            f"{peak:.0f} MB (Rss sum {rss:.0f} MB)",
        )
    )
    log(f"mailmerge: {wall:.1f} s, {2000 / wall:.0f}/s")

    most, total, seconds = rate_limit()
    allowed = RATE * seconds / 60
    rows.append(
        (
            f"rate limit: SEND_RATE_PER_MINUTE={RATE} for {seconds:.0f} s (1 run)",
            "",
            f"most in any 60 s: {most}; total {total} of {allowed:.0f} allowed "
            f"({total / allowed:.1%})",
            "",
        )
    )
    log(f"rate: {most} in 60 s, {total} total")

    send1 = results["send-2000-1"]
    per_2000 = 1 / results["send-2000-1"]
    per_20000 = 1 / results[f"send-{LARGE}-1"]
    prev_2000 = results["preview-2000"] / 2000
    prev_20000 = results[f"preview-{LARGE}"] / LARGE
    checks = [
        (
            "send 2,000, 1 connection ≥ 1.0× mailmerge (aim 2×)",
            f"{send1 / results['mailmerge']:.3f}×",
            send1 >= results["mailmerge"],
        ),
        (
            "send 2,000, 1 connection ≥ 0.5× the ceiling (1 connection)",
            f"{send1 / results['ceiling-1']:.3f}×",
            send1 >= 0.5 * results["ceiling-1"],
        ),
        (
            "send 2,000, 1 connection, no spam score remembered, vs mailmerge",
            f"{results['send-2000-1-afresh'] / results['mailmerge']:.3f}×",
            results["send-2000-1-afresh"] >= results["mailmerge"],
        ),
        (
            "send 2,000, 1 connection, no spam score remembered, vs the ceiling",
            f"{results['send-2000-1-afresh'] / results['ceiling-1']:.3f}×",
            results["send-2000-1-afresh"] >= 0.5 * results["ceiling-1"],
        ),
        (
            "send 2,000, 4 connections vs mailmerge",
            f"{results['send-2000-4'] / results['mailmerge']:.2f}×",
            None,
        ),
        (
            "sending alone (first to last arrival), 1 connection, vs mailmerge",
            f"{results['send-2000-1-flow'] / results['mailmerge']:.2f}×",
            None,
        ),
        (
            "sending alone (first to last arrival), 1 connection, vs the ceiling",
            f"{results['send-2000-1-flow'] / results['ceiling-1']:.2f}×",
            None,
        ),
        (
            "preview of the 195 shipped letters < 2 s, start-up included, again",
            f"{results['preview-195-again']:.2f} s",
            results["preview-195-again"] < 2,
        ),
        (
            "preview of the 195 shipped letters < 2 s, start-up included, into a new folder",
            f"{results['preview-195']:.2f} s",
            results["preview-195"] < 2,
        ),
        (
            "20,000: preview peak memory < 300 MB",
            f"{results[f'preview-{LARGE}-mb']:.0f} MB",
            results[f"preview-{LARGE}-mb"] < 300,
        ),
        (
            "20,000: send peak memory < 300 MB",
            f"{results[f'send-{LARGE}-1-mb']:.0f} MB",
            results[f"send-{LARGE}-1-mb"] < 300,
        ),
        (
            "20,000: send time per message ≤ 1.2× that at 2,000",
            f"{per_20000 / per_2000:.2f}×",
            per_20000 <= 1.2 * per_2000,
        ),
        (
            "20,000: preview time per letter ≤ 1.2× that at 2,000",
            f"{prev_20000 / prev_2000:.2f}×",
            prev_20000 <= 1.2 * prev_2000,
        ),
        (f"rate limit: never more than {RATE} in any 60 s", str(most), most <= RATE),
        (
            "rate limit: at least 98% of the allowed amount sent",
            f"{total / allowed:.1%}",
            total >= 0.98 * allowed,
        ),
    ]
    if LARGE_RUNS < 3 or RUNS < 3:
        notes.append(
            f"Runs: {RUNS} per measurement, {LARGE_RUNS} for the 20,000-letter ones "
            "(fewer than 3 were asked for with BENCH_RUNS / BENCH_LARGE_RUNS)."
        )
    write_results(rows, checks, notes, time.time() - began)
    log(f"wrote {HERE / 'RESULTS.md'}")


def write_results(
    rows: list[tuple[str, str, str, str]],
    checks: list[tuple[str, str, bool | None]],
    notes: list[str],
    took: float,
) -> None:
    load = os.getloadavg()
    lines = [
        "# Benchmark results",
        "",
        f"Written by `make bench` on {datetime.date.today().isoformat()}; the run took "
        f"{took / 60:.0f} minutes.",
        "",
        f"Machine: {os.cpu_count()} CPUs (`nproc` {len(os.sched_getaffinity(0))}), "
        f"Python {platform.python_version()}, {platform.system()} {platform.release()}; "
        f"load average at the end {load[0]:.1f}, {load[1]:.1f}, {load[2]:.1f}.",
        "",
        "Each figure is the median of the runs shown. Wall times are whole commands, "
        "start-up included; peak memory is the proportional set size (Pss) of the command's "
        "whole process tree (worker processes included), sampled every 0.1 s, with the "
        "plain sum of their resident sets (which counts the pages that forked workers "
        "share once per process) beside it. The sink is "
        "an aiosmtpd server in its own process on loopback that counts and discards.",
        "",
        "| measurement | time | rate | peak memory (Pss) |",
        "| --- | --- | --- | --- |",
        *[f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows],
        "",
        "## Against the targets",
        "",
        "| target | measured | met |",
        "| --- | --- | --- |",
        *[
            f"| {name} | {value} | {'' if ok is None else ('yes' if ok else '**no**')} |"
            for name, value, ok in checks
        ],
        "",
        "## How to read it",
        "",
        "- *outreach send* is the whole command: it loads the contacts, then checks every "
        "letter before the first is sent (the checks of `outreach check`: composing each "
        "letter on every core, its warnings, and a SpamAssassin score of one letter of each "
        "kind when SpamAssassin is installed), keeping each composed letter in a spool "
        "file, then sends those very letters, writing the send log (a `sending` row "
        "fsynced before each letter's final dot) and retrying. *Sending alone* is the "
        "rate from the first message's arrival at the sink to the last's: what the "
        "ceiling measures.",
        "- As staff run `make check` before `make send`, the benchmark runs `outreach "
        "check` once before the sends: the spam score of each kind of letter is then "
        "remembered (the same letters, the same SpamAssassin) and SpamAssassin is not "
        "started again. The rows *no spam score remembered* are the same send with the "
        "remembered scores deleted first, so SpamAssassin (about 2 s of CPU) runs "
        "during the check; those runs take turns with the others.",
        "- *preview into a new folder* makes every file anew (a first preview); *again* "
        "writes over the files of the preview before last, which each preview keeps "
        "hidden beside it for that (the usual case: preview, edit, preview again). On "
        "this machine making a file costs up to a millisecond in a folder that already "
        "holds a few hundred, writing over one a tenth of that.",
        "- outreach's 2,000-letter send on one connection, mailmerge and the one-connection "
        "ceiling take turns, run by run, so that all three meet the machine in the same "
        "state; the ratios of each round are at the end.",
        "- *mailmerge 2.3* sends the same letter (its HTML inlined beforehand by outreach, "
        "as a mailmerge user would have to; the contact's country and mission filled in "
        "by mailmerge's Jinja2) to the same sink, with `ratelimit = 0` and "
        "`--output-format raw` to /dev/null. It opens a new connection for every message "
        "and builds an HTML-only message: no inlining, no text part, no log, no check.",
        "- The *ceiling* is a plain `smtplib` loop over the `.eml` files that "
        "`outreach preview` wrote for the 2,000 letters, read into memory first, over the "
        "given number of reused connections (one thread each); only the loop is timed.",
        "- The rate-limit run sends the 2,000 letters at `SEND_RATE_PER_MINUTE=600`, is "
        "interrupted (Ctrl-C) two minutes after the first message arrived, and counts the "
        "arrivals in those two minutes. It runs once: it is two minutes long.",
        "- The sink, the command measured and anything else running on the machine share "
        "its CPUs; the load average above says how busy it was.",
        "",
        *notes,
    ]
    (HERE / "RESULTS.md").write_text("\n".join(lines).rstrip() + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
