"""One truth per mission: the ledger that the plan, reminders, the report and the repeat check read.

The first tests pin the rules one by one, each on the case that broke it;
the state machine at the end checks them all against a small reference
model, over sequences of sends, faults, corrections, notices, reminders and
do-not-contact entries that Hypothesis makes up.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from outreach.contacts import Contact, ContactList
from outreach.donotcontact import DoNotContact
from outreach.ledger import Ledger
from outreach.report import build_report
from outreach.sending import Delivery, Plan, make_plan
from outreach.sendlog import LogRow
from outreach.settings import Settings
from tests.conftest import RunCli
from tests.smtp import SmtpServer

START = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
FIRST, REMINDER_1, REMINDER_2 = "first", "reminder-1", "reminder-2"
SUBJECTS = {FIRST: "The Code of Conduct", REMINDER_1: "Reminder", REMINDER_2: "Reminder, again"}


def contact(cid: str, to: str, cc: Sequence[str] = ()) -> Contact:
    return Contact(cid, cid, (to,), tuple(cc), "en", 2, {})


class Log:
    """A send log being written, row by row, as runs and ``outreach inbox`` write it."""

    def __init__(self) -> None:
        self.rows: list[LogRow] = []
        self.clock = START

    def add(self, campaign: str, cid: str, status: str, *addresses: str, **more: object) -> None:
        self.clock += timedelta(minutes=1)
        follows = FIRST if campaign != FIRST else ""
        values: dict[str, object] = {
            "message_id": f"<{campaign}.{cid}@coalition.example>",
            "subject": SUBJECTS[campaign],
            "follows": follows,
            **more,
        }
        self.rows.append(
            LogRow(
                self.clock,
                campaign,
                cid,
                ";".join(addresses),
                status,
                1,
                line=len(self.rows) + 2,
                **values,  # type: ignore[arg-type]
            )
        )

    def plan(
        self,
        contacts: Sequence[Contact],
        campaign: str = FIRST,
        listed: DoNotContact | None = None,
        **options: bool,
    ) -> Plan:
        config = replace(
            Settings(), campaign=campaign, follow_up_of=FIRST if campaign != FIRST else ""
        )
        return make_plan(
            contacts,
            Ledger(self.rows),
            config,
            now=self.clock,
            subject_of=lambda d: SUBJECTS[campaign],
            do_not_contact=listed,
            **options,
        )

    def report(self, contacts: Sequence[Contact], campaign: str = FIRST) -> dict[str, object]:
        listed = ContactList(Path("contacts.csv"), tuple(contacts))
        found = build_report(self.rows, campaign, Path("send-log.csv"), listed)
        return {s.id: s for s in found.contacts}


def sent_to(plan: Plan) -> dict[str, tuple[str, ...]]:
    return {d.contact.id: d.recipients for d in plan.to_send}


# -- the rules, one by one -------------------------------------------------------------------


@pytest.mark.parametrize("first_outcome", ["failed", "bounced"])
def test_a_delivery_to_a_corrected_address_supersedes_the_failure_at_the_old_one(
    first_outcome: str,
) -> None:
    log = Log()
    log.add(FIRST, "KOR", "sending", "old@kor.example")
    log.add(FIRST, "KOR", "sent" if first_outcome == "bounced" else "failed", "old@kor.example")
    if first_outcome == "bounced":
        log.add(FIRST, "KOR", "bounced", "old@kor.example", smtp_code="5.1.1")
    corrected = [contact("KOR", "new@kor.example")]
    option = {"retry_failed": True} if first_outcome == "failed" else {"retry_bounced": True}
    assert sent_to(log.plan(corrected, **option)) == {"KOR": ("new@kor.example",)}
    log.add(FIRST, "KOR", "sending", "new@kor.example")
    log.add(FIRST, "KOR", "sent", "new@kor.example")

    state = log.report(corrected)["KOR"]
    assert (state.status, state.email, state.sent_to) == (  # type: ignore[attr-defined]
        "sent",
        "new@kor.example",
        "new@kor.example",
    )
    assert "retry" not in state.next_step  # type: ignore[attr-defined]
    assert log.plan(corrected, **option).to_send == []
    reminder = log.plan(corrected, REMINDER_1)
    assert sent_to(reminder) == {"KOR": ("new@kor.example",)}
    assert reminder.not_followed_up == {}


@pytest.mark.parametrize("kind", ["replied", "auto-replied", "bounced", "delayed"])
@pytest.mark.parametrize("never_accepted", ["deferred", "failed", "sending"])
def test_a_notice_about_a_letter_no_server_accepted_changes_nothing(
    kind: str, never_accepted: str
) -> None:
    log = Log()
    log.add(FIRST, "PER", "sending", "per@missions.example")
    if never_accepted != "sending":
        log.add(FIRST, "PER", never_accepted, "per@missions.example")
    before = log.plan([contact("PER", "per@missions.example")], retry_failed=True)
    log.add(FIRST, "PER", kind, "per@missions.example")
    ledger = Ledger(log.rows)
    assert [row.status for row, _ in ledger.ignored] == [kind]
    assert "no server accepted" in ledger.ignored[0][1]
    after = log.plan([contact("PER", "per@missions.example")], retry_failed=True)
    assert sent_to(after) == sent_to(before)
    status = "ambiguous" if never_accepted == "sending" else never_accepted
    assert log.report([contact("PER", "per@missions.example")])["PER"].status == status  # type: ignore[attr-defined]


@pytest.mark.parametrize("what_came_back", ["replied", "bounced"])
def test_a_thread_is_one_no_reminder_after_an_answer_or_a_bounce_of_a_reminder(
    what_came_back: str,
) -> None:
    log = Log()
    chile = [contact("CHL", "chl@missions.example")]
    for campaign in (FIRST, REMINDER_1):
        log.add(campaign, "CHL", "sending", "chl@missions.example")
        log.add(campaign, "CHL", "sent", "chl@missions.example")
    log.add(REMINDER_1, "CHL", what_came_back, "chl@missions.example")
    second = log.plan(chile, REMINDER_2)
    assert second.to_send == []
    assert second.not_followed_up == {what_came_back: ["CHL"]}
    if what_came_back == "replied":
        # The first letter's report shows the answer to its reminder too.
        assert log.report(chile)["CHL"].status == "replied"  # type: ignore[attr-defined]


def test_the_repeat_check_counts_only_addresses_that_accepted_a_letter() -> None:
    log = Log()
    log.add(FIRST, "FRA", "sending", "fra@missions.example")
    log.add(FIRST, "FRA", "failed", "fra@missions.example", smtp_code=554)
    log.add(FIRST, "DEU", "sending", "deu@missions.example")
    log.add(FIRST, "DEU", "sent", "deu@missions.example")
    # The same letter under a mistyped campaign name.
    config = replace(Settings(), campaign="frist")
    plan = make_plan(
        [contact("FRA", "fra@missions.example"), contact("DEU", "deu@missions.example")],
        Ledger(log.rows),
        config,
        now=log.clock,
        subject_of=lambda d: SUBJECTS[FIRST],
    )
    assert [(r.contact_id, r.kind) for r in plan.repeats] == [("DEU", "got")]
    assert [(r.contact_id, r.kind) for r in plan.refused_before] == [("FRA", "refused")]


def test_plan_wording_follows_the_options_given() -> None:
    log = Log()
    log.add(FIRST, "FRA", "sending", "fra@missions.example")
    log.add(FIRST, "FRA", "failed", "fra@missions.example", smtp_code=554)
    france = [contact("FRA", "fra@missions.example")]
    assert log.plan(france).retry_failed is False
    plan = log.plan(france, retry_failed=True)
    assert (plan.retry_failed, plan.failed, sent_to(plan)) == (
        True,
        ["FRA"],
        {"FRA": ("fra@missions.example",)},
    )


def test_never_attempted_means_no_letter_of_the_campaign_was_attempted() -> None:
    log = Log()
    log.add(FIRST, "KOR", "sending", "old@kor.example")
    log.add(FIRST, "KOR", "failed", "old@kor.example")
    state = log.report([contact("KOR", "new@kor.example")])["KOR"]
    assert state.status == "failed"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "order",
    [
        pytest.param(("cc-replied", "to-deferred", "to-auto-replied"), id="cc-answer-first"),
        pytest.param(("to-auto-replied", "cc-replied"), id="out-of-office-first"),
    ],
)
def test_an_answer_from_anyone_at_the_mission_beats_an_automatic_reply(
    order: tuple[str, ...],
) -> None:
    log = Log()
    to, cc = "jpn@missions.example", "desk@jpn.example"
    log.add(FIRST, "JPN", "sending", to, cc)
    log.add(FIRST, "JPN", "sent", to, cc)
    for step in order:
        who, _, what = step.partition("-")
        log.add(FIRST, "JPN", what, to if who == "to" else cc)
    japan = [contact("JPN", to, [cc])]
    assert log.report(japan)["JPN"].status == "replied"  # type: ignore[attr-defined]
    assert log.plan(japan, REMINDER_1).not_followed_up == {"replied": ["JPN"]}


def test_a_bounce_of_one_address_does_not_hide_the_delivery_to_another() -> None:
    log = Log()
    to, cc = "mex@missions.example", "protocol@mex.example"
    log.add(FIRST, "MEX", "sending", to, cc)
    log.add(FIRST, "MEX", "sent", to, cc)
    log.add(FIRST, "MEX", "bounced", to, smtp_code="5.1.1")
    mexico = [contact("MEX", to, [cc])]
    state = log.report(mexico)["MEX"]
    assert (state.status, state.sent_to) == ("sent", cc)  # type: ignore[attr-defined]
    # The reminder goes to the address that has the letter, not the one that bounced.
    assert sent_to(log.plan(mexico, REMINDER_1)) == {"MEX": (cc,)}


def test_a_do_not_contact_entry_holds_back_a_letter_still_owed() -> None:
    log = Log()
    log.add(FIRST, "FRA", "sending", "fra@missions.example")
    log.add(FIRST, "FRA", "deferred", "fra@missions.example", smtp_code=451)
    listed = DoNotContact(ids={"FRA": "asked by phone"})
    plan = log.plan([contact("FRA", "fra@missions.example")], listed=listed, retry_failed=True)
    assert (plan.to_send, plan.do_not_contact) == ([], [("FRA", "asked by phone")])


# -- the same rules against a reference model, over generated sequences --------------------

MISSIONS = ("AAA", "BBB", "CCC")
RUN_OUTCOMES = ("accepted", "4xx", "5xx")
NOTICES = ("bounced", "delayed", "replied", "auto-replied")


class Reference:
    """What README's rules say, worked out again from the whole history at every step."""

    def __init__(self, rows: list[LogRow]) -> None:
        self.rows = rows

    def history(self, campaign: str, cid: str, address: str) -> list[str]:
        return [
            r.status
            for r in self.rows
            if r.campaign == campaign and r.contact_id == cid and address in r.addresses
        ]

    def accepted(self, campaign: str, cid: str, address: str) -> bool:
        return "sent" in self.history(campaign, cid, address)

    def state(self, campaign: str, cid: str, address: str) -> str | None:
        """The address's last row, of a run or of a notice that may attach to it."""
        found: str | None = None
        accepted = False
        for status in self.history(campaign, cid, address):
            if status in NOTICES:
                if not accepted:
                    continue  # no server accepted the letter: the notice changes nothing
                if status == "delayed" and found != "sent":
                    continue
                if status == "auto-replied" and found == "replied":
                    continue
            accepted = accepted or status == "sent"
            found = {"sending": "ambiguous"}.get(status, status)
        return found

    def states(self, campaign: str, cid: str) -> dict[str, str | None]:
        tried = {  # by a run: a notice adds no address of its own
            a
            for r in self.rows
            if r.campaign == campaign and r.contact_id == cid and r.status not in NOTICES
            for a in r.addresses
        }
        return {a: self.state(campaign, cid, a) for a in tried}

    def status(self, campaign: str, mission: Contact) -> str:
        """README's order: an answer; what a run must settle; delivered; bounced."""
        states = self.states(campaign, mission.id)
        values = set(states.values())
        if "replied" in values:
            return "replied"
        has = bool(values & {"sent", "delayed", "auto-replied"})
        settle = {s for a, s in states.items() if not has or a in mission.recipients}
        for status in ("ambiguous", "deferred", "retry", "failed"):
            if status in settle:
                return status
        for status in ("auto-replied", "sent", "delayed", "bounced"):
            if status in values:
                return status
        return "not attempted"

    def owed(self, campaign: str, mission: Contact, flags: dict[str, bool]) -> set[str]:
        """The addresses a send of ``campaign`` sends to, by README's rules."""
        states = self.states(campaign, mission.id)
        again = {"retry", "deferred"}
        if flags.get("retry_failed"):
            again.add("failed")
        if flags.get("resend_ambiguous"):
            again.add("ambiguous")
        owed = {a for a in mission.recipients if states.get(a) in again}
        values = set(states.values())
        if values & {"sent", "delayed", "auto-replied", "replied"}:
            return owed  # the mission has its letter: nobody new gets it
        status = self.status(campaign, mission)
        needs = {
            "failed": "retry_failed",
            "bounced": "retry_bounced",
            "ambiguous": "resend_ambiguous",
        }
        if status not in needs or flags.get(needs[status]):
            owed |= {a for a in mission.recipients if a not in states}
        return owed

    def answered(self, cid: str) -> bool:
        return any(
            s == "replied"
            for c in (FIRST, REMINDER_1, REMINDER_2)
            for s in self.states(c, cid).values()
        )

    def reminded(self, mission: Contact) -> set[str]:
        """Where a reminder goes: nowhere after an answer; else to the mission's current
        addresses that have a letter of the thread and never bounced one."""
        if self.answered(mission.id):
            return set()
        if self.status(FIRST, mission) not in ("sent", "delayed", "auto-replied"):
            return set()
        thread = [self.states(c, mission.id) for c in (FIRST, REMINDER_1, REMINDER_2)]
        have = {
            a
            for states in thread
            for a, s in states.items()
            if s in ("sent", "delayed", "auto-replied")
        }
        bounced = {a for states in thread for a, s in states.items() if s == "bounced"}
        return {a for a in mission.recipients if a in have - bounced}


class Campaigns(RuleBasedStateMachine):
    """Weeks of a campaign, compressed: every step is something staff, a server or the mail does."""

    def __init__(self) -> None:
        super().__init__()
        self.log = Log()
        self.contacts = {
            "AAA": contact("AAA", "aaa@missions.example"),
            "BBB": contact("BBB", "bbb@missions.example", ["desk@bbb.example"]),
            "CCC": contact("CCC", "ccc@missions.example"),
        }
        self.listed: dict[str, str] = {}
        self.corrections = 0

    def _send(
        self, campaign: str, outcomes: list[str], lost: bool, killed: bool, flags: dict[str, bool]
    ) -> None:
        listed = DoNotContact(ids=dict(self.listed))
        plan = self.log.plan(list(self.contacts.values()), campaign, listed, **flags)
        reference = Reference(self.log.rows)
        free = [m for m in self.contacts.values() if m.id not in self.listed]
        if campaign == FIRST:
            expected = {m.id: reference.owed(FIRST, m, flags) for m in free}
        else:
            expected = {m.id: reference.reminded(m) for m in free}
        assert {cid: set(r) for cid, r in sent_to(plan).items()} == {
            cid: owed for cid, owed in expected.items() if owed
        }
        draws = iter(outcomes * 10)
        for number, delivery in enumerate(plan.to_send):
            for address in delivery.recipients:
                assert not reference.accepted(campaign, delivery.contact.id, address)
            last = number == len(plan.to_send) - 1
            self._transaction(campaign, delivery, draws, lost, killed and last)

    def _transaction(
        self, campaign: str, delivery: Delivery, draws: Iterator[str], lost: bool, killed: bool
    ) -> None:
        """One SMTP transaction, logged as the sender logs it; killed: after the ``sending`` row."""
        cid = delivery.contact.id
        self.log.add(campaign, cid, "sending", *delivery.recipients)
        if killed:
            return
        accepted = []
        for address in delivery.recipients:
            outcome = next(draws)
            if outcome == "5xx":
                self.log.add(campaign, cid, "failed", address, smtp_code=550)
            elif outcome == "4xx":
                self.log.add(campaign, cid, "deferred", address, smtp_code=451)
            else:
                accepted.append(address)
        if accepted:
            self.log.add(campaign, cid, "ambiguous" if lost else "sent", *accepted)

    @rule(
        outcomes=st.lists(st.sampled_from(RUN_OUTCOMES), min_size=1, max_size=4),
        lost=st.booleans(),
        killed=st.booleans(),
        retry_failed=st.booleans(),
        resend_ambiguous=st.booleans(),
        retry_bounced=st.booleans(),
    )
    def send_the_first_letter(
        self,
        outcomes: list[str],
        lost: bool,
        killed: bool,
        retry_failed: bool,
        resend_ambiguous: bool,
        retry_bounced: bool,
    ) -> None:
        flags = {
            "retry_failed": retry_failed,
            "resend_ambiguous": resend_ambiguous,
            "retry_bounced": retry_bounced,
        }
        self._send(FIRST, outcomes, lost, killed, flags)

    @rule(
        campaign=st.sampled_from([REMINDER_1, REMINDER_2]),
        outcomes=st.lists(st.sampled_from(RUN_OUTCOMES), min_size=1, max_size=4),
    )
    def send_a_reminder(self, campaign: str, outcomes: list[str]) -> None:
        if any(r.campaign == campaign for r in self.log.rows):
            return  # each reminder goes once here: its retries follow the first letter's rules
        self._send(campaign, outcomes, lost=False, killed=False, flags={})

    @rule(
        cid=st.sampled_from(MISSIONS),
        kind=st.sampled_from(NOTICES),
        campaign=st.sampled_from([FIRST, REMINDER_1]),
        copy=st.booleans(),
    )
    def something_comes_back(self, cid: str, kind: str, campaign: str, copy: bool) -> None:
        """A notice, in any order, about any address, delivered or not (as a forged one is)."""
        recipients = self.contacts[cid].recipients
        address = recipients[-1] if copy else recipients[0]
        if Reference(self.log.rows).states(campaign, cid):
            code = "5.1.1" if kind == "bounced" else None
            self.log.add(campaign, cid, kind, address, smtp_code=code)

    @rule(cid=st.sampled_from(MISSIONS))
    def staff_correct_the_address(self, cid: str) -> None:
        self.corrections += 1
        new = f"{cid.lower()}.{self.corrections}@missions.example"
        self.contacts[cid] = replace(self.contacts[cid], to=(new,))

    @rule(cid=st.sampled_from(MISSIONS))
    def the_mission_asks_for_no_more_mail(self, cid: str) -> None:
        self.listed[cid] = "asked"

    @invariant()
    def the_report_says_what_the_reference_says(self) -> None:
        reference = Reference(self.log.rows)
        listed = DoNotContact(ids=dict(self.listed))
        found = build_report(
            self.log.rows, FIRST, Path("send-log.csv"), None, do_not_contact=listed
        )
        shown = {s.id: s.status for s in found.contacts}
        for mission in self.contacts.values():
            if not reference.states(FIRST, mission.id):
                assert mission.id not in shown
                continue
            expected = reference.status(FIRST, mission)
            # The report is of the log alone here (no contacts file): every address is current.
            everyone = replace(mission, to=tuple(reference.states(FIRST, mission.id)), cc=())
            expected = reference.status(FIRST, everyone)
            if expected in ("sent", "delayed", "auto-replied") and reference.answered(mission.id):
                expected = "replied"
            assert shown[mission.id] == expected

    @invariant()
    def no_address_is_sent_a_letter_twice(self) -> None:
        seen: set[tuple[str, str, str]] = set()
        for row in self.log.rows:
            if row.status == "sent":
                for address in row.addresses:
                    key = (row.campaign, row.contact_id, address)
                    assert key not in seen, key
                    seen.add(key)


Campaigns.TestCase.settings = settings(
    max_examples=int(os.environ.get("OUTREACH_LEDGER_EXAMPLES", "200")),
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
test_the_ledger_keeps_its_rules_over_generated_campaigns = Campaigns.TestCase


# -- the same story, as staff live it: the command, a real server on loopback ---------------


def test_staff_correct_a_refused_address_and_the_report_and_the_reminder_follow(
    run_cli: RunCli, project: Path, smtp_server: SmtpServer
) -> None:
    """554 at Korea's old address; staff correct it, --retry-failed, then a reminder."""
    smtp_server.script.always_refuse["kor@missions.example"] = "554 5.7.1 Relay access denied"
    env = smtp_server.env(CAMPAIGN=FIRST)
    refused = run_cli("send", "--yes", "--only", "KOR,JPN", env=env)
    assert refused.code == 1, refused.stdout
    contacts = project / "contacts.csv"
    text = contacts.read_text(encoding="utf-8")
    contacts.write_text(text.replace("kor@missions.example", "kor.un@missions.example"))

    again = run_cli("send", "--yes", "--retry-failed", "--only", "KOR,JPN", env=env)
    assert again.code == 0, again.stdout
    assert "(sent again now to the addresses that refused it: --retry-failed)" in again.stdout
    assert smtp_server.received[-1].recipients == ["kor.un@missions.example"]
    rerun = run_cli("send", "--yes", "--retry-failed", "--only", "KOR,JPN", env=env)
    assert "Nothing to send." in rerun.stdout

    report = json.loads(run_cli("report", "--format", "json", env=env).stdout)
    korea = next(c for c in report["contacts"] if c["id"] == "KOR")
    assert (korea["status"], korea["sent_to"], korea["next_step"]) == (
        "sent",
        "kor.un@missions.example",
        "",
    )
    smtp_server.received.clear()
    env.update(CAMPAIGN=REMINDER_1, FOLLOW_UP_OF=FIRST)
    reminded = run_cli("send", "--yes", "--only", "KOR,JPN", env=env)
    assert reminded.code == 0, reminded.stdout + reminded.stderr
    assert sorted(r.recipients[0] for r in smtp_server.received) == [
        "jpn@missions.example",
        "kor.un@missions.example",
    ]
