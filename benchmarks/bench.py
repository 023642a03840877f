"""What users of outreach feel: its commands timed as they run them, beside mailmerge 2.3.

Run by ``make bench`` with the benchmark's own virtual environment
(``benchmarks/.work/venv``: outreach, and mailmerge 2.3, which is never a
dependency of outreach). Everything happens on this machine. Each
measurement sends to a counting SMTP sink (``sink.py``) in a process of its
own; across a network distance it sends through ``delay_proxy.py``, another
process, which holds every chunk 25 ms each way. outreach runs as staff run
it: in a folder holding ``contacts.csv`` and ``templates/``, with its
settings in the environment, ``outreach check`` once before the timed sends.

1. The 195 letters sent across 50 ms of round trip: outreach (one
   connection), mailmerge, and a plain smtplib loop.
2. ``outreach preview`` of the 195 letters.
3. 2,000 and 20,000 letters on loopback: preview and send, time per letter
   and peak memory; mailmerge and the smtplib loop beside the 2,000.
4. ``SEND_RATE_PER_MINUTE=600`` for two minutes.
5. Lines of Python in outreach, and the wall time of ``make test``.

Each figure is the median of ``BENCH_RUNS`` runs (default 3); the things
compared take turns, run by run. ``BENCH_LARGE`` (20000) and
``BENCH_LARGE_RUNS`` (1) set the large run, ``BENCH_RATE_SECONDS`` (120)
the rate run, ``BENCH_PROXY_LETTERS`` (195) the letters sent across the
distance, and ``BENCH_MAKE_TEST=0`` skips ``make test``. The results go to
``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import csv
import datetime
import itertools
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HERE = ROOT / "benchmarks"
WORK = HERE / ".work" / "run"
BIN = Path(sys.executable).parent

RUNS = int(os.environ.get("BENCH_RUNS", "3"))
LARGE = int(os.environ.get("BENCH_LARGE", "20000"))
LARGE_RUNS = int(os.environ.get("BENCH_LARGE_RUNS", "1"))
RATE_SECONDS = float(os.environ.get("BENCH_RATE_SECONDS", "120"))
PROXY_LETTERS = int(os.environ.get("BENCH_PROXY_LETTERS", "195"))
MAKE_TEST = os.environ.get("BENCH_MAKE_TEST", "1") != "0"

ONE_WAY = 0.025  # seconds each way through the relay: 50 ms round trip
RATE = 600  # a minute, for the rate-limit run
SENDER = "campaign@coalition.example"
BEFORE = "759263a"  # outreach before its restructuring
RESTRUCTURED = "17dc690"  # right after it, before sign-in, inbox, follow-ups, attachments


# -- running a command ---------------------------------------------------------


def tree_pss_mb(pid: int) -> float:
    """The proportional set size (Pss) of a process and all its descendants, in MB.

    Pss shares each shared page among the processes that map it, so worker
    processes forked from one parent are not counted many times over.
    """
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as handle:
                    parent = int(handle.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry))
    total_kb, todo = 0, [pid]
    while todo:
        current = todo.pop()
        todo.extend(children.get(current, []))
        try:
            with open(f"/proc/{current}/smaps_rollup", encoding="ascii") as handle:
                for line in handle:
                    if line.startswith("Pss:"):
                        total_kb += int(line.split()[1])
        except OSError:
            pass
    return total_kb / 1024


@dataclass
class Run:
    """One run of a command."""

    wall: float  # seconds, start to exit
    cpu: float  # seconds of CPU, user and system, of the command and every process it waited for
    peak_mb: float  # the largest Pss of its process tree, sampled every 0.1 s
    output: Path  # what it printed
    started: float  # seconds since the epoch
    arrivals: list[float] = field(default_factory=list)  # at the sink, seconds since the epoch

    @property
    def span(self) -> float:
        """Seconds from the first arrival at the sink to the last."""
        return self.arrivals[-1] - self.arrivals[0]

    @property
    def lead(self) -> float:
        """Seconds from the command's start to the first arrival at the sink."""
        return self.arrivals[0] - self.started


_numbers = itertools.count(1)


def measure(
    command: list[str],
    cwd: Path,
    env: dict[str, str],
    *,
    interrupt: Callable[[], bool] | None = None,
    check: bool = True,
) -> Run:
    """Run ``command`` to its end: its wall time, CPU time and peak memory.

    What it prints goes to a file in ``WORK/output``. ``interrupt``, asked
    ten times a second, says when to press Ctrl-C (SIGINT); without it, a
    command that fails stops the benchmark, unless ``check`` is false.
    """
    output = WORK / "output" / f"{next(_numbers):03}-{Path(command[0]).name}.txt"
    output.parent.mkdir(parents=True, exist_ok=True)
    peak = 0.0
    with output.open("w", encoding="utf-8") as out:
        used = resource.getrusage(resource.RUSAGE_CHILDREN)
        started, start = time.time(), time.perf_counter()
        process = subprocess.Popen(
            command, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out
        )
        finished = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not finished.is_set():
                peak = max(peak, tree_pss_mb(process.pid))
                finished.wait(0.1)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        if interrupt is None:
            process.wait()
        else:
            interrupted = False
            while process.poll() is None:
                if not interrupted and interrupt():
                    process.send_signal(signal.SIGINT)
                    interrupted = True
                time.sleep(0.1)
        wall = time.perf_counter() - start
        now_used = resource.getrusage(resource.RUSAGE_CHILDREN)
        finished.set()
        sampler.join()
    if process.returncode != 0 and interrupt is None and check:
        tail = output.read_text(encoding="utf-8", errors="replace")[-3000:]
        raise SystemExit(f"{' '.join(command)} in {cwd} exited with {process.returncode}:\n{tail}")
    cpu = sum(now_used[:2]) - sum(used[:2])  # ru_utime and ru_stime
    return Run(wall, cpu, peak, output, started)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Helper:
    """The sink or the relay, in a process of its own.

    It listens on ``self.port``, prints ``ready`` once it does (and the sink
    ``first <time>`` at its first message), and on SIGTERM writes what it
    saw as JSON to a file.
    """

    def __init__(self, script: str, *args: str) -> None:
        self.port = free_port()
        self.report = WORK / f"{script}-{self.port}.json"
        self.first_arrival: float | None = None
        self.process = subprocess.Popen(
            [sys.executable, str(HERE / script), str(self.port), *args, str(self.report)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line.startswith("ready"):
            raise SystemExit(f"{script} did not start: {line!r}")
        threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith("first "):
                self.first_arrival = float(line.split()[1])

    def stop(self) -> dict[str, object]:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=60)
        found: dict[str, object] = json.loads(self.report.read_text(encoding="utf-8"))
        self.report.unlink()
        return found


relay_reports: list[dict[str, object]] = []


def deliver(
    command: Callable[[int], tuple[list[str], Path, dict[str, str]]],
    letters: int,
    *,
    far: bool,
    stop_after: float | None = None,
) -> Run:
    """Run a sender against a fresh sink, through the relay when ``far``.

    ``command(port)`` gives the command, its folder and its environment for
    a server on that port. Unless ``stop_after`` (seconds after the first
    arrival, when it is interrupted) is given, every one of ``letters`` must
    arrive.
    """
    sink = Helper("sink.py")
    relay = Helper("delay_proxy.py", str(sink.port), str(ONE_WAY * 1000)) if far else None
    interrupt = None
    if stop_after is not None:

        def interrupt() -> bool:
            first = sink.first_arrival
            return first is not None and time.time() >= first + stop_after

    args, cwd, env = command((relay or sink).port)
    try:
        run = measure(args, cwd, env, interrupt=interrupt)
    finally:
        if relay is not None:
            relay_reports.append(relay.stop())
        received = sink.stop()
    arrivals = received["arrivals"]
    assert isinstance(arrivals, list)
    run.arrivals = sorted(float(t) for t in arrivals)
    if stop_after is None and len(run.arrivals) != letters:
        raise SystemExit(f"{' '.join(args)}: {len(run.arrivals)} of {letters} letters arrived")
    return run


# -- the campaigns --------------------------------------------------------------


def campaign(size: int) -> Path:
    """A folder as staff have it: ``contacts.csv`` with ``size`` contacts, and ``templates/``.

    The first contacts are the repository's 195; more are copies of them
    with ids and addresses of their own.
    """
    folder = WORK / f"campaign-{size}"
    if folder.exists():
        return folder
    folder.mkdir(parents=True)
    shutil.copytree(ROOT / "templates", folder / "templates")
    with (ROOT / "contacts.csv").open(encoding="utf-8-sig", newline="") as handle:
        shipped = list(csv.DictReader(handle))
    with (folder / "contacts.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(shipped[0]))
        writer.writeheader()
        for number in range(size):
            row = dict(shipped[number % len(shipped)])
            if number >= len(shipped):
                row["id"] = f"{row['id']}-{number // len(shipped)}"
                row["email"] = f"{row['id'].lower()}@missions.example"
                row["cc"] = ""
            writer.writerow(row)
    return folder


def outreach_env(**settings: str) -> dict[str, str]:
    """The environment outreach runs in: no setting of the caller's, the benchmark's own."""
    ours: tuple[str, ...] = ("SMTP_", "MAIL_", "SEND_", "CAMPAIGN", "CONTACTS_FILE")
    ours += ("TEMPLATES_DIR", "PREVIEW_DIR", "LOG_DIR", "LETTER_DATE")
    env = {k: v for k, v in os.environ.items() if not k.startswith(ours)}
    env.update(
        NO_COLOR="1",
        XDG_CACHE_HOME=str(WORK / "cache"),
        CAMPAIGN="bench",
        MAIL_FROM=SENDER,
        MAIL_FROM_NAME="The Coalition",
        SMTP_HOST="127.0.0.1",
        SMTP_SECURITY="none",
        SEND_RATE_PER_MINUTE="0",
    )
    env.update(settings)
    return env


def outreach_check(folder: Path) -> None:
    """``outreach check``, untimed, as staff run ``make check`` before ``make send``."""
    measure([str(BIN / "outreach"), "check"], folder, outreach_env())


def outreach_preview(folder: Path) -> Run:
    """``outreach preview`` into ``out/preview/``, made anew (no earlier preview)."""
    shutil.rmtree(folder / "out", ignore_errors=True)
    return measure([str(BIN / "outreach"), "preview"], folder, outreach_env())


def outreach_send(
    folder: Path,
    letters: int,
    *,
    far: bool,
    rate: int = 0,
    stop_after: float | None = None,
) -> Run:
    """``outreach send --yes`` with a send log of its own (a reused one would send nothing)."""
    logs = WORK / "logs" / str(next(_numbers))
    shutil.rmtree(logs, ignore_errors=True)

    def command(port: int) -> tuple[list[str], Path, dict[str, str]]:
        env = outreach_env(
            SMTP_PORT=str(port),
            SEND_RATE_PER_MINUTE=str(rate),
            LOG_DIR=str(logs),
        )
        return [str(BIN / "outreach"), "send", "--yes"], folder, env

    return deliver(command, letters, far=far, stop_after=stop_after)


def mailmerge_folder(folder: Path) -> Path:
    """mailmerge's files for the campaign in ``folder``: the same letter, the same contacts.

    mailmerge has no inliner, so its template is the HTML outreach wrote for
    the first contact (styles inlined), with that contact's mission and
    country name turned back into Jinja2 fields; everything else is kept
    as it is with ``{% raw %}``. It is one HTML part, where outreach sends
    HTML and plain text.
    """
    target = folder.with_name(folder.name.replace("campaign", "mailmerge"))
    if target.exists():
        return target
    target.mkdir()
    shutil.copy(folder / "contacts.csv", target / "mailmerge_database.csv")
    with (folder / "contacts.csv").open(encoding="utf-8", newline="") as handle:
        first = next(csv.DictReader(handle))
    html = (folder / "out" / "preview" / "letters" / f"{first['id']}.html").read_text(
        encoding="utf-8"
    )
    body = "{% raw %}" + html + "{% endraw %}"
    for column in ("mission", "name_in_text"):  # the mission's name holds the country's
        body = body.replace(first[column], "{% endraw %}{{ " + column + " }}{% raw %}")
    (target / "mailmerge_template.txt").write_text(
        "TO: {{ email }}\n"
        f"FROM: The Coalition <{SENDER}>\n"
        "SUBJECT: Request to endorse the Code of Conduct regarding Security Council action\n"
        "CONTENT-TYPE: text/html\n\n" + body,
        encoding="utf-8",
    )
    return target


def mailmerge_send(folder: Path, letters: int, *, far: bool) -> Run:
    """mailmerge 2.3 sending every letter: a new connection for each, no rate limit."""
    target = mailmerge_folder(folder)

    def command(port: int) -> tuple[list[str], Path, dict[str, str]]:
        # No "security" line: no TLS and no login. ratelimit = 0: no limit.
        (target / "mailmerge_server.conf").write_text(
            f"[smtp_server]\nhost = 127.0.0.1\nport = {port}\nratelimit = 0\n", encoding="utf-8"
        )
        mailmerge = [str(BIN / "mailmerge"), "--no-dry-run", "--no-limit", "--output-format", "raw"]
        return mailmerge, target, dict(os.environ)

    return deliver(command, letters, far=far)


def smtplib_send(folder: Path, letters: int, *, far: bool) -> Run:
    """A plain smtplib loop over the .eml files of the last preview, on one connection."""

    def command(port: int) -> tuple[list[str], Path, dict[str, str]]:
        loop = [
            sys.executable,
            str(HERE / "smtplib_loop.py"),
            str(folder / "out" / "preview" / "letters"),
        ]
        return [*loop, str(port), "1"], WORK, dict(os.environ)

    return deliver(command, letters, far=far)


# -- the measurements --------------------------------------------------------------

Runs = dict[str, list[Run]]


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def across_the_distance() -> Runs:
    """The headline: the letters sent through the 50 ms relay, each sender in turn."""
    folder = campaign(PROXY_LETTERS)
    outreach_check(folder)
    outreach_preview(folder)  # the .eml files of the smtplib loop, and mailmerge's letter
    runs: Runs = {"outreach-1": [], "mailmerge": [], "smtplib": []}
    for number in range(RUNS):
        runs["outreach-1"].append(outreach_send(folder, PROXY_LETTERS, far=True))
        runs["mailmerge"].append(mailmerge_send(folder, PROXY_LETTERS, far=True))
        runs["smtplib"].append(smtplib_send(folder, PROXY_LETTERS, far=True))
        log(
            f"across 50 ms, round {number + 1}: "
            + ", ".join(f"{name} {found[-1].wall:.1f} s" for name, found in runs.items())
        )
    return runs


def preview_195() -> list[Run]:
    folder = campaign(195)
    outreach_check(folder)
    runs = [outreach_preview(folder) for _ in range(RUNS)]
    log("preview of 195: " + ", ".join(f"{r.wall:.2f} s" for r in runs))
    return runs


def on_loopback() -> Runs:
    """2,000 letters, with mailmerge and the smtplib loop beside them, and ``LARGE`` letters.

    The rounds of 2,000 run ``RUNS`` times; each large run goes between two
    of them, so that it can be compared with the runs just before and after.
    The large folder is not checked first: checking 20,000 letters takes
    minutes, and the letters its check would score (one of each kind, the
    first contacts') are the very letters the 2,000-letter folder's check
    scored, the same contacts with the same campaign and sender.
    """
    small, large = campaign(2000), campaign(LARGE)
    outreach_check(small)
    runs: Runs = {
        "preview-2000": [],
        "send-2000": [],
        "mailmerge-2000": [],
        "smtplib-2000": [],
        "preview-large": [],
        "send-large": [],
    }
    for number in range(max(RUNS, LARGE_RUNS + 1)):
        if 0 < number <= LARGE_RUNS:
            runs["preview-large"].append(outreach_preview(large))
            shutil.rmtree(large / "out")  # 60,000 files
            runs["send-large"].append(outreach_send(large, LARGE, far=False))
            log(
                f"on loopback, {LARGE} letters: preview {runs['preview-large'][-1].wall:.1f} s, "
                f"send {runs['send-large'][-1].wall:.1f} s"
            )
        runs["preview-2000"].append(outreach_preview(small))
        runs["send-2000"].append(outreach_send(small, 2000, far=False))
        runs["mailmerge-2000"].append(mailmerge_send(small, 2000, far=False))
        runs["smtplib-2000"].append(smtplib_send(small, 2000, far=False))
        log(
            f"on loopback, 2,000 letters, round {number + 1}: "
            + ", ".join(f"{name} {runs[name][-1].wall:.1f} s" for name in list(runs)[:4])
        )
    return runs


def per_letter_ratio(near: Runs, command: str, value: Callable[[Run], float]) -> float:
    """Time per letter at ``LARGE`` over that at 2,000, for ``preview`` or ``send``.

    Each large run is set against the mean of the 2,000-letter runs just
    before and just after it, which met the machine in nearly the same state;
    the median over the large runs.
    """
    small, large = near[f"{command}-2000"], near[f"{command}-large"]
    ratios = [
        value(run) / LARGE / ((value(small[k]) + value(small[k + 1])) / 2 / 2000)
        for k, run in enumerate(large)
    ]
    return statistics.median(ratios)


def rate_limit() -> Run:
    """SEND_RATE_PER_MINUTE=600, interrupted ``RATE_SECONDS`` after the first arrival."""
    folder = campaign(2000)
    run = outreach_send(folder, 2000, far=False, rate=RATE, stop_after=RATE_SECONDS)
    log(f"rate limit: {len(run.arrivals)} arrived")
    return run


def rate_figures(rated: Run) -> tuple[int, int, float]:
    """The most arrivals in any 60 s, those in the first ``RATE_SECONDS``, and the allowed."""
    arrivals = rated.arrivals
    most, low = 0, 0
    for high, moment in enumerate(arrivals):
        while arrivals[low] <= moment - 60:
            low += 1
        most = max(most, high - low + 1)
    inside = sum(1 for t in arrivals if t < arrivals[0] + RATE_SECONDS)
    return most, inside, RATE * RATE_SECONDS / 60


def lines_at(commit: str) -> int | None:
    """Lines of outreach/*.py at ``commit`` (None outside a git clone that has it)."""
    try:
        names = subprocess.run(
            ["git", "ls-tree", "--name-only", commit, "outreach/"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        total = 0
        for name in names:
            if name.endswith(".py"):
                shown = subprocess.run(
                    ["git", "show", f"{commit}:{name}"], cwd=ROOT, capture_output=True, check=True
                )
                total += shown.stdout.count(b"\n")
    except (OSError, subprocess.CalledProcessError):
        return None
    return total


def python_lines() -> tuple[int | None, int | None, int]:
    """Lines of outreach/*.py before and right after the restructuring, and now."""
    now = sum(p.read_bytes().count(b"\n") for p in (ROOT / "outreach").glob("*.py"))
    return lines_at(BEFORE), lines_at(RESTRUCTURED), now


def make_test() -> tuple[float, str] | None:
    """The wall time of ``make test`` in this tree (its virtual environment made first)."""
    if not MAKE_TEST:
        return None
    subprocess.run(["make", "--silent", ".venv/.installed"], cwd=ROOT, check=True)
    # A failing test suite is reported in RESULTS.md, not a reason to lose the figures.
    run = measure(["make", "test"], ROOT, dict(os.environ), check=False)
    printed = run.output.read_text(encoding="utf-8", errors="replace").splitlines()
    summary = [line.strip("= ") for line in printed if re.search(r"\d+ (passed|failed)", line)]
    log(f"make test: {run.wall:.0f} s")
    return run.wall, summary[-1] if summary else "no summary line"


# -- the report ----------------------------------------------------------------------


def median(runs: list[Run], value: Callable[[Run], float] = lambda r: r.wall) -> float:
    return statistics.median(value(r) for r in runs)


def seconds(runs: list[Run], value: Callable[[Run], float] = lambda r: r.wall) -> str:
    """The median of ``runs``, with their range when there are several."""
    values = sorted(value(r) for r in runs)
    places = 2 if values[-1] < 10 else 1
    text = f"{statistics.median(values):.{places}f} s"
    if len(values) > 1:
        text += f" ({values[0]:.{places}f}–{values[-1]:.{places}f})"
    return text


def distance_table(far: Runs) -> list[str]:
    bound = PROXY_LETTERS * 4 * 2 * ONE_WAY
    rows = [
        ("outreach send (one connection)", far["outreach-1"]),
        ("mailmerge 2.3 (a new connection per letter)", far["mailmerge"]),
        ("plain smtplib loop over outreach's .eml files, one connection", far["smtplib"]),
    ]
    return [
        "| sender | whole command | start to first arrival | sending (first to last arrival) |",
        "| --- | --- | --- | --- |",
        *[
            f"| {name} | {seconds(runs)} | {seconds(runs, lambda r: r.lead)} "
            f"| {seconds(runs, lambda r: r.span)} |"
            for name, runs in rows
        ],
        f"| the round-trip bound: {PROXY_LETTERS} × 4 round trips × 50 ms | {bound:.1f} s | "
        f"| {bound:.1f} s |",
        "",
        "Round by round, whole commands side by side: mailmerge took "
        + ratios(far["mailmerge"], far["outreach-1"])
        + " the time of outreach, and outreach "
        + ratios(far["outreach-1"], far["smtplib"])
        + " that of the smtplib loop.",
    ]


def ratios(these: list[Run], those: list[Run]) -> str:
    """The wall time of each of ``these`` over that of the run of ``those`` in the same round."""
    return ", ".join(f"{a.wall / b.wall:.2f}×" for a, b in zip(these, those, strict=True))


def loopback_table(previews: list[Run], near: Runs) -> list[str]:
    large = f"{LARGE:,}"
    rows = [
        ("outreach preview, 195 letters", previews, 195),
        ("outreach preview, 2,000 letters", near["preview-2000"], 2000),
        (f"outreach preview, {large} letters", near["preview-large"], LARGE),
        ("outreach send, 2,000 letters", near["send-2000"], 2000),
        (f"outreach send, {large} letters", near["send-large"], LARGE),
        ("mailmerge 2.3, 2,000 letters", near["mailmerge-2000"], 2000),
        ("plain smtplib loop, 2,000 letters, one connection", near["smtplib-2000"], 2000),
    ]
    table = [
        "| command | runs | whole command | per letter | CPU time | sending (first to last "
        "arrival) | peak memory (Pss) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, runs, letters in rows:
        per_letter = 1000 * median(runs) / letters
        sending = seconds(runs, lambda r: r.span) if runs[0].arrivals else "–"
        memory = f"{median(runs, lambda r: r.peak_mb):.0f} MB"
        table.append(
            f"| {name} | {len(runs)} | {seconds(runs)} | {per_letter:.2f} ms "
            f"| {seconds(runs, lambda r: r.cpu)} | {sending} | {memory} |"
        )
    return table


Target = tuple[str, str, bool]  # what is aimed at, what was measured, whether it was met


def against_targets(far: Runs, previews: list[Run], near: Runs, rated: Run) -> list[Target]:
    bound = PROXY_LETTERS * 4 * 2 * ONE_WAY
    ours, theirs = median(far["outreach-1"]), median(far["mailmerge"])
    preview_wall = median(previews)
    large = f"{LARGE:,}"
    targets = [
        (
            f"across 50 ms: outreach on one connection ≥ 1.5× mailmerge's speed, whole "
            f"command, {PROXY_LETTERS} letters",
            f"{theirs / ours:.2f}× ({ours:.1f} s against {theirs:.1f} s)",
            theirs / ours >= 1.5,
        ),
        (
            f"across 50 ms: outreach on one connection ≤ 1.2 × the round-trip bound, "
            f"{1.2 * bound:.1f} s",
            f"{ours:.1f} s = {ours / bound:.2f}× the bound",
            ours <= 1.2 * bound,
        ),
        (
            "preview of the 195 letters < 2 s, start-up included (aim < 1.5 s)",
            f"{preview_wall:.2f} s",
            preview_wall < 2,
        ),
    ]
    for command in ("preview", "send"):
        peak = median(near[f"{command}-large"], lambda r: r.peak_mb)
        targets.append(
            (f"{command} of {large} letters: peak memory < 300 MB", f"{peak:.0f} MB", peak < 300)
        )
    for command in ("preview", "send"):
        wall = per_letter_ratio(near, command, lambda r: r.wall)
        cpu = per_letter_ratio(near, command, lambda r: r.cpu)
        targets.append(
            (
                f"{command}: time per letter at {large} ≤ 1.2× that at 2,000",
                f"{wall:.2f}× (CPU time: {cpu:.2f}×), against the runs of 2,000 beside it",
                wall <= 1.2,
            )
        )
    most, inside, allowed = rate_figures(rated)
    targets += [
        (f"rate limit {RATE} a minute: never more in any 60 s", f"{most} at most", most <= RATE),
        (
            f"rate limit {RATE} a minute: ≥ 98% of the allowed amount sent in {RATE_SECONDS:.0f} s",
            f"{inside} of {allowed:.0f} ({inside / allowed:.1%})",
            inside >= 0.98 * allowed,
        ),
    ]
    return targets


def main() -> None:
    # Started in the background (`make bench &`), this process and its children
    # would ignore SIGINT; the rate-limit run stops outreach with it, as Ctrl-C.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    began, load_before = time.time(), os.getloadavg()
    log(f"benchmark results go to {HERE / 'RESULTS.md'}")

    far = across_the_distance()
    previews = preview_195()
    near = on_loopback()
    rated = rate_limit()
    lines = python_lines()
    tested = make_test()

    targets = against_targets(far, previews, near, rated)
    took = time.time() - began
    write_results(
        targets=targets,
        far=distance_table(far),
        near=loopback_table(previews, near),
        rated=rated,
        lines=lines,
        tested=tested,
        load=(load_before, os.getloadavg()),
        took=took,
    )
    print()
    print(f"Against the targets (the benchmark took {took / 60:.0f} minutes):")
    for name, value, met in targets:
        print(f"  {'met    ' if met else 'NOT MET'}  {name}: {value}")
    print(f"Every figure, and how it was measured: {HERE / 'RESULTS.md'}")


def write_results(
    *,
    targets: list[Target],
    far: list[str],
    near: list[str],
    rated: Run,
    lines: tuple[int | None, int | None, int],
    tested: tuple[float, str] | None,
    load: tuple[tuple[float, float, float], tuple[float, float, float]],
    took: float,
) -> None:
    most, sent, allowed = rate_figures(rated)
    before, restructured, after = lines
    (l1, l5, l15), (e1, e5, e15) = load
    n = PROXY_LETTERS
    chunks = sum(int(str(r["chunks"])) for r in relay_reports)
    late = sum(float(str(r["mean_late_ms"])) * int(str(r["chunks"])) for r in relay_reports)
    late_99 = statistics.median(float(str(r["p99_late_ms"])) for r in relay_reports)
    latest = max(float(str(r["max_late_ms"])) for r in relay_reports)
    text = [
        "# Benchmark results",
        "",
        f"Written by `make bench` on {datetime.date.today().isoformat()}; the run took "
        f"{took / 60:.0f} minutes.",
        "",
        f"Machine: `nproc` {len(os.sched_getaffinity(0))}, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}; load average {l1:.2f}, {l5:.2f}, {l15:.2f} "
        f"at the start and {e1:.2f}, {e5:.2f}, {e15:.2f} at the end. Runs: {RUNS} of each "
        f"(`BENCH_RUNS`), {LARGE_RUNS} of the {LARGE:,}-letter ones (`BENCH_LARGE_RUNS`).",
        "",
        "Each figure is the median of the runs, with their range in brackets. Every "
        "command is timed whole, from its start to its exit, start-up included.",
        "",
        "## Against the targets",
        "",
        "| target | measured | met |",
        "| --- | --- | --- |",
        *[f"| {name} | {value} | {'yes' if met else '**no**'} |" for name, value, met in targets],
        "",
        f"## Sending across a network distance: {n} letters, 50 ms round trip, no rate limit",
        "",
        *far,
        "",
        "## On this machine (loopback, no rate limit)",
        "",
        *near,
        "",
        f"Rate limit: with `SEND_RATE_PER_MINUTE={RATE}`, {sent} letters arrived in the "
        f"first {RATE_SECONDS:.0f} s ({allowed:.0f} allowed), and at most {most} in any "
        "60 s.",
        "",
        "## The code and its tests",
        "",
        (
            f"Lines of Python in `outreach/*.py`: {before:,} before the restructuring "
            f"(commit {BEFORE}), {restructured:,} right after it (commit {RESTRUCTURED}, "
            f"before signing in with OAuth2, `outreach inbox`, follow-ups, attachments and the "
            f"do-not-contact list were added), {after:,} in the tree benchmarked."
            if before is not None and restructured is not None
            else f"Lines of Python in `outreach/*.py`: {after:,} in the tree benchmarked."
        ),
        "",
        (
            f"`make test`: {tested[0]:.0f} s of wall time, run once; pytest's summary: "
            f"{tested[1]}. The machine may have been busy with other work."
            if tested is not None
            else "`make test` was not timed in this run (`BENCH_MAKE_TEST=0`)."
        ),
        "",
        "## How each figure was measured",
        "",
        "- outreach runs as staff run it: in a folder holding `contacts.csv` and "
        "`templates/` (copied from the repository), with its settings in the environment "
        "(`SMTP_HOST=127.0.0.1 SMTP_SECURITY=none MAIL_FROM=campaign@coalition.example "
        "SEND_RATE_PER_MINUTE=0`, and a new `LOG_DIR` for each "
        "send, since a send log that has the letters sends nothing). The 195 contacts are "
        "the repository's; the 2,000 and "
        f"{LARGE:,} are those 195, then copies of them with ids and addresses of their own.",
        "- `outreach send --yes` is the whole command: it reads the contacts, composes and "
        "checks every letter (keeping each, as checked, in memory up to 16 MB and then in "
        "an unnamed file in LOG_DIR), takes the spam score of one letter of each kind, then "
        "sends each kept letter, its Date set as it goes, over one reused connection, writing and "
        "fsyncing a `sending` row in the send log before each letter's data. As staff run "
        "`make check` before `make send`, `outreach check` runs once, untimed, in the "
        "195-letter and the 2,000-letter folders before their sends; each send scores its "
        "sample with SpamAssassin (installed here) again, as it does for staff.",
        "- *Sending* is the time from the first letter's arrival at the sink to the last's. "
        "The sink is an aiosmtpd server in a process of its own that counts and discards.",
        "- *Across a network distance*: the senders connect to `benchmarks/delay_proxy.py`, "
        "an asyncio TCP relay in a process of its own between them and the sink. It "
        "delivers every chunk of bytes, both ways, 25 ms after it arrived (50 ms round "
        "trip, about New York to a European provider), in order and with no limit on "
        "bandwidth. It models the TCP handshake too: it opens its connection to the sink "
        "three one-way trips (75 ms) after accepting the sender's, when the server would "
        "see the sender's ACK, so the server's greeting reaches the sender 100 ms, two "
        "round trips, after it began to connect. The relay delivered chunks "
        f"{late / chunks:.2f} ms after their due time on average, and 99% of each run's "
        f"within {late_99:.1f} ms (the median over the runs); the latest was {latest:.0f} ms "
        "late.",
        "- *The round-trip bound* is what one reused connection cannot beat: four round "
        "trips a letter (MAIL, RCPT, DATA, then the data with its final dot, each waiting "
        f"for the server's reply), {n} × 4 × 50 ms = {n * 0.2:.0f} s, leaving out the "
        "connection's opening and closing. The plain smtplib loop (`benchmarks/"
        "smtplib_loop.py`: `sendmail` of each `.eml` that `outreach preview` wrote, on one "
        "connection) checks the relay against it.",
        "- *mailmerge 2.3* sends the same letter to the same contacts: its template is the "
        "HTML outreach wrote for the first contact (mailmerge has no inliner), with the "
        "mission's and country's names as Jinja2 fields, and its server section names the "
        "relay or the sink with no `security` (no TLS, no login) and `ratelimit = 0`; it "
        "runs with `--no-dry-run --no-limit --output-format raw`. It opens a new "
        "connection for every letter (handshake and greeting, EHLO, the letter, QUIT) and "
        "sends one HTML part, with no text part, no send log and no check.",
        "- *outreach preview* writes every letter into a new `out/preview/` (the folder "
        "is deleted before each run).",
        "- *Peak memory* is the largest proportional set size (Pss) of the command's "
        "whole process tree, its worker processes included, sampled every 0.1 s: Pss "
        "counts the pages that forked workers share once in all.",
        f"- *Rate limit*: `outreach send` of the 2,000 letters at `SEND_RATE_PER_MINUTE="
        f"{RATE}` on loopback, interrupted (Ctrl-C) {RATE_SECONDS:.0f} s after the first "
        "letter arrived; the arrivals are counted in those seconds, and in every window of "
        "60 s.",
        "- The runs of the things compared take turns, so that each meets the machine "
        "in nearly the same state: across the distance, outreach on one connection, on "
        "four, mailmerge, the smtplib loop, round after round; on loopback, the "
        "2,000-letter preview, send, mailmerge and smtplib loop, round after round, with "
        "each large run between two rounds. The time per letter of a large run is set "
        "against the mean of the 2,000-letter runs just before and after it.",
        "- *CPU time* is the user and system time of the command and of every process it "
        "started and waited for (its workers, SpamAssassin). It grows much less than "
        "the wall time when other work on the machine takes the cores.",
        "- The sink, the relay, the command measured and whatever else the machine runs "
        "share its cores; the load average above says how busy it was.",
    ]
    kept = _sections_of_others(HERE / "RESULTS.md", text)
    (HERE / "RESULTS.md").write_text("\n\n".join(["\n".join(text), *kept]) + "\n", encoding="utf-8")


def _sections_of_others(path: Path, ours: list[str]) -> list[str]:
    """The sections of RESULTS.md that other scripts write (``bounces.py``, ``sisimai.py``).

    They measure other things, on their own corpora; a run of this one keeps them as they are.
    """
    if not path.exists():
        return []
    headings = {line for line in ours if line.startswith("## ")}
    sections = re.split(r"(?m)^(?=## )", path.read_text(encoding="utf-8"))[1:]
    return [s.rstrip("\n") for s in sections if s.splitlines()[0] not in headings]


if __name__ == "__main__":
    main()
