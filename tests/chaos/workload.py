"""The workload: who is sent what, which sends roll back, which webhooks go out when — decided up front.

Everything is drawn from one seeded RNG before the run starts, so a run can be repeated. Each
delivery carries its fake-adapter script and the provider message id its events will name.

Outcome mix (issue 6): about 70 % ok (a third of them after a ``sleep:`` so that kills land
mid-send), 20 % temporary-then-ok, 4 % permanent, 3 % bounced, 2 % always temporary, 1 %
unclassified (an unclassifiable return or an unexpected exception).
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field

from tests.harness import webhooks

#: (kind, weight, expected terminal state) — expectations are reported, not enforced: a kill can
#: spend an attempt, and the sweep can re-send, without any of that being wrong.
KINDS = (
    ("ok", 47, "succeeded"),
    ("ok_after_sleep", 23, "succeeded"),
    ("temporary_then_ok", 20, "succeeded"),
    ("permanent", 4, "cancelled:permanent_failure"),
    ("bounced", 3, "cancelled:bounced"),
    ("always_temporary", 2, "cancelled:retries_exhausted"),
    ("unclassified", 1, "cancelled:retries_exhausted"),
)
#: Kinds that end with the provider accepting the message, so webhooks about them can be linked.
ACCEPTED = {"ok", "ok_after_sleep", "temporary_then_ok"}
EVENT_TYPES = ("delivered", "opened", "clicked")


@dataclass
class Planned:
    tag: str
    kind: str
    script: list[str]
    rollback: bool
    duplicate: bool
    webhook: str | None = None  #: None, "early" (before the commit) or "late"
    replay: bool = False

    @property
    def payload(self) -> dict[str, object]:
        return {
            "fake_outcomes": self.script,
            "fake_provider": webhooks.PROVIDER,
            "fake_provider_message_id": webhooks.provider_message_id(self.tag),
        }

    @property
    def expected(self) -> str:
        return next(expected for kind, _, expected in KINDS if kind == self.kind)


@dataclass
class Workload:
    deliveries: list[Planned]
    forged: list[str] = field(default_factory=list)  #: tags of the deliveries forged events name

    def counts(self) -> dict[str, int]:
        return {
            "deliveries": len(self.deliveries),
            "rolled_back": sum(p.rollback for p in self.deliveries),
            "duplicates_planned": sum(p.duplicate for p in self.deliveries),
            "webhooks_early": sum(p.webhook == "early" for p in self.deliveries),
            "webhooks_late": sum(p.webhook == "late" for p in self.deliveries),
            "webhooks_replayed": sum(p.replay for p in self.deliveries),
            "webhooks_forged": len(self.forged),
        }


def _script(kind: str, rng: random.Random) -> list[str]:
    if kind == "ok":
        return ["ok"]
    if kind == "ok_after_sleep":
        return [f"sleep:{rng.randint(300, 1500)}"]
    if kind == "temporary_then_ok":
        return ["temporary"] * rng.randint(1, 2) + [rng.choice(["ok", f"sleep:{rng.randint(100, 800)}"])]
    if kind == "permanent":
        return ["permanent"]
    if kind == "bounced":
        return ["bounced"]
    if kind == "always_temporary":
        return ["temporary"]
    return [rng.choice(["garbage", "crash"])]


def plan(deliveries: int, webhook_events: int, *, rollback: float, duplicates: float, early: float,
         replay: float, forged: float, seed: int) -> Workload:
    rng = random.Random(seed)
    kinds, weights = [k[0] for k in KINDS], [k[1] for k in KINDS]
    planned = []
    for _ in range(deliveries):
        kind = rng.choices(kinds, weights)[0]
        planned.append(Planned(
            tag=uuid.UUID(int=rng.getrandbits(128)).hex,
            kind=kind,
            script=_script(kind, rng),
            rollback=rng.random() < rollback,
            duplicate=False,
        ))
    committed = [p for p in planned if not p.rollback]
    for p in rng.sample(committed, round(len(committed) * duplicates)):
        p.duplicate = True
    forged_count = round(webhook_events * forged)
    genuine = webhook_events - forged_count
    # Webhooks name deliveries the provider accepts — mostly committed ones, a few rolled back
    # (their events stay orphans for good, and must never link to anything).
    accepted = [p for p in planned if p.kind in ACCEPTED]
    targets = rng.sample(accepted, min(genuine, len(accepted)))
    for p in targets:
        p.webhook = "early" if rng.random() < early else "late"
        p.replay = rng.random() < replay
    forged_tags = [p.tag for p in rng.sample(accepted, min(forged_count, len(accepted)))]
    return Workload(planned, forged_tags)
