"""When a provider struggles: shared rate limits, circuit breakers and failover chains.

The deliver actor asks :meth:`Guard.admit` which adapter an attempt may use *before* anything is
claimed, and tells :meth:`Guard.report` what the call did. ``admit`` returns a decision; the actor
acts on it (a :class:`Wait` is a fresh delayed message, spending no attempt)::

    admit(route) -> Go(adapter, probe)       call this adapter now (probe: the half-open circuit's one call)
                 -> Wait(delay_ms, why)      nothing may be called yet: re-enqueue, due in delay_ms

- **Rate limit** (``CHIMEWAY_RATE_LIMITS``): GCRA, one calls/seconds interval per adapter, checked
  when the call is about to be made: a call passes when the adapter's theoretical arrival time is
  at most one interval away (and moves it on by one interval), so any window of the limit's length
  carries at most the limit plus two calls (a burst of two), however late messages arrive. A delivery that may not call yet is sent again
  at its place in a second, virtual queue (each refusal moves that queue's tail on by one interval):
  a backlog of N deliveries comes back spread over N intervals, not all at the next free slot.
- **Pause**: a provider's ``Retry-After`` (a 429 or 503 answer) pauses the adapter for everyone
  until then.
- **Circuit** (``CHIMEWAY_CIRCUIT_FAILURES``, ``CHIMEWAY_CIRCUIT_OPEN_SECONDS``): that many
  transient failures in a row open it; open, no call is made; once the open time passed, one probe
  (held for the open time) goes through; its success closes the circuit, its failure opens it again.
  A permanent failure or a bounce is an answer about the recipient: it ends the row of failures.
  A success is reported only when its admission saw a failure on record (:attr:`Go.clean`), so the
  healthy path is one round trip: a success whose call was in flight when a failure landed does not
  end that row (the next one does).
- **Failover** (``CHIMEWAY_FAILOVER``): the route of a delivery is its adapter's chain; a transient
  failure moves the next attempt to the next adapter (:func:`next_adapter`, back to the first after
  the last), and an open circuit on the route's adapter sends the attempt down the chain now.

Every check is one round trip: a Lua script on Redis, with Redis's clock (workers on many machines
share it), under the runtime's namespace; :class:`MemoryGuard` does the same in one process under
the stub broker, as the enqueue dedupe does.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from redis.exceptions import NoScriptError

__all__ = ["Go", "Guard", "MemoryGuard", "RedisGuard", "Wait", "chain", "next_adapter"]

#: Circuit and rate keys left untouched this long disappear (a closed circuit's failure count too).
_KEY_TTL_MS = 86_400_000


@dataclass(frozen=True)
class Go:
    """Call ``adapter`` now. ``probe``: this call decides whether a half-open circuit closes.
    ``clean``: the circuit had no failure on record, so a success need not be reported (the healthy
    path costs one round trip, not two)."""

    adapter: str
    probe: bool = False
    clean: bool = False


@dataclass(frozen=True)
class Wait:
    """No adapter on the route may be called before ``delay_ms``; ``why`` is rate, paused or open;
    ``adapter`` is the one waited for."""

    delay_ms: int
    why: str
    adapter: str


def chain(failover: Mapping[str, str], start: str) -> list[str]:
    """``start`` and the adapters it fails over to, in order (the setting has no cycles)."""
    names = [start]
    while names[-1] in failover:
        names.append(failover[names[-1]])
    return names


def next_adapter(failover: Mapping[str, str], origin: str, failed: str) -> str:
    """The adapter after ``failed`` in the chain of the delivery's own adapter ``origin``; after the
    last one the chain starts again from ``origin`` (the attempt budget bounds the rounds)."""
    names = chain(failover, origin)
    if failed not in names:
        return origin
    return names[(names.index(failed) + 1) % len(names)]


def _route(failover: Mapping[str, str], origin: str, preferred: str) -> list[str]:
    """The chain of ``origin`` rotated to start at ``preferred``: where an open circuit sends the attempt."""
    names = chain(failover, origin)
    if preferred not in names:
        return [preferred]
    at = names.index(preferred)
    return names[at:] + names[:at]


class Guard:
    """What both stores share: the settings, the route, and the meaning of an outcome."""

    def __init__(self, settings: Any) -> None:
        self.failover = dict(settings.failover)
        #: adapter -> milliseconds between two calls (GCRA's emission interval)
        self.intervals = {name: seconds * 1000 / calls for name, (calls, seconds) in settings.rate_limits.items()}
        self.threshold = settings.circuit_failures
        self.open_ms = settings.circuit_open_seconds * 1000

    def admit(self, origin: str, preferred: str) -> Go | Wait:
        """The adapter this attempt may call now along the route from ``preferred``, or how long to wait."""
        return self._admit(_route(self.failover, origin, preferred))

    def admit_many(self, routes: Sequence[tuple[str, str]]) -> list[Go | Wait]:
        """:meth:`admit` for many attempts, ``(origin, preferred)`` each, in order (one round trip in
        Redis: a worker's group commit asks for its whole batch at once)."""
        return [self.admit(origin, preferred) for origin, preferred in routes]

    def report(self, go: Go, *, transient: bool, retry_after_s: float | None = None) -> str | None:
        """After the call ``go`` allowed: a transient failure counts toward opening the circuit (and a
        ``Retry-After`` pauses the adapter); any answer about the recipient or a success closes the
        circuit. Returns ``opened`` or ``closed`` when this report changed the circuit, else None."""
        if not transient and go.clean:
            return None
        pause_ms = int(retry_after_s * 1000) if transient and retry_after_s and retry_after_s > 0 else 0
        return self._report(go.adapter, transient, pause_ms)

    def circuits(self, adapters: Sequence[str]) -> list[dict[str, Any]]:
        """Each adapter's circuit: state (closed, open, half-open), failures in a row, seconds until it half-opens."""
        now = self._now_ms()
        rows = []
        for adapter, (failures, open_until) in zip(adapters, self._states(adapters), strict=True):
            state = "closed" if not open_until else "open" if open_until > now else "half-open"
            rows.append({"adapter": adapter, "state": state, "failures": failures,
                         "opens_for_seconds": max(0, round((open_until - now) / 1000)) if open_until else 0})
        return rows

    def _admit(self, route: list[str]) -> Go | Wait:
        raise NotImplementedError

    def _report(self, adapter: str, transient: bool, pause_ms: int) -> str | None:
        raise NotImplementedError

    def _states(self, adapters: Sequence[str]) -> list[tuple[int, int]]:
        raise NotImplementedError

    def _now_ms(self) -> int:
        return int(time.time() * 1000)


@dataclass(frozen=True)
class _Plan:
    """What :meth:`RedisGuard.admit` sends for one (origin, preferred): the route, its admit script's
    keys and arguments, and whether no rate limit counts it (then one check answers every attempt on it)."""

    route: list[str]
    key: tuple[str, ...]
    keys: list[str]
    args: list[Any]
    unlimited: bool


#: KEYS: per adapter on the route, its circuit hash, pause key, rate key and waiting queue's key.
#: ARGV: the probe's hold (ms), then per adapter its interval (ms, 0: no limit).
#: Returns {index of the adapter (0: none), delay ms, why, probe, clean (no failure on record)}.
_ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local hold = tonumber(ARGV[1])
local soonest = -1
for i = 1, #KEYS / 4 do
  local circuit, pause, rate, queue = KEYS[4 * i - 3], KEYS[4 * i - 2], KEYS[4 * i - 1], KEYS[4 * i]
  local state = redis.call('HMGET', circuit, 'open_until', 'failures')
  local open_until = tonumber(state[1] or '0')
  local wait, probe = 0, 0
  if open_until > now then
    wait = open_until - now
  elseif open_until > 0 then
    local probing = tonumber(redis.call('HGET', circuit, 'probe_until') or '0')
    if probing > now then wait = probing - now else probe = 1 end
  end
  if wait == 0 then
    local paused = tonumber(redis.call('GET', pause) or '0')
    if paused > now then return {i, paused - now, 'paused', 0, 0} end
    local interval = tonumber(ARGV[i + 1])
    if interval > 0 then
      local due = tonumber(redis.call('GET', rate) or '0')
      if due > now + interval then
        local place = math.max(tonumber(redis.call('GET', queue) or '0'), due)
        redis.call('SET', queue, tostring(place + interval), 'PX', math.ceil(place + interval - now) + 1000)
        return {i, math.ceil(place - now), 'rate', 0, 0}
      end
      due = math.max(due, now) + interval
      redis.call('SET', rate, tostring(due), 'PX', math.ceil(due - now) + 1000)
    end
    if probe == 1 then redis.call('HSET', circuit, 'probe_until', now + hold) end
    return {i, 0, 'go', probe, (state[2] or open_until > 0) and 0 or 1}
  end
  if soonest < 0 or wait < soonest then soonest = wait end
end
return {0, soonest, 'open', 0, 0}
"""

#: KEYS: circuit hash, pause key. ARGV: 1 transient / 0 not, threshold, open ms, pause ms, key ttl ms.
_REPORT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local circuit, pause = KEYS[1], KEYS[2]
if ARGV[1] == '0' then
  if redis.call('HEXISTS', circuit, 'open_until') == 1 then redis.call('DEL', circuit) return 'closed' end
  redis.call('DEL', circuit)
  return false
end
local pause_ms = tonumber(ARGV[4])
if pause_ms > 0 and tonumber(redis.call('GET', pause) or '0') < now + pause_ms then
  redis.call('SET', pause, now + pause_ms, 'PX', pause_ms)
end
local failures = redis.call('HINCRBY', circuit, 'failures', 1)
redis.call('PEXPIRE', circuit, ARGV[5])
local open_until = tonumber(redis.call('HGET', circuit, 'open_until') or '0')
if open_until > now then return false end
if open_until > 0 or failures >= tonumber(ARGV[2]) then
  redis.call('HSET', circuit, 'open_until', now + tonumber(ARGV[3]), 'probe_until', 0)
  return 'opened'
end
return false
"""


class RedisGuard(Guard):
    """Shared by every worker process that uses the same Redis and namespace."""

    def __init__(self, settings: Any, client: Any) -> None:
        super().__init__(settings)
        self.client = client
        self.namespace = settings.redis_namespace
        self._admit_script = client.register_script(_ADMIT)
        self._report_script = client.register_script(_REPORT)
        #: (origin, preferred) -> its :class:`_Plan`: the settings never change under a guard, and a
        #: worker asks about a handful of routes (adapter names) a million times
        self._plans: dict[tuple[str, str], _Plan] = {}

    def _keys(self, adapter: str) -> list[str]:
        prefix = f"{self.namespace}:resilience:{adapter}"
        return [f"{prefix}:circuit", f"{prefix}:pause", f"{prefix}:rate", f"{prefix}:queue"]

    def admit(self, origin: str, preferred: str) -> Go | Wait:
        # Guard.admit builds the route each time; here it comes from the per-guard plan cache
        return self._check(self._plan(origin, preferred))

    def _check(self, plan: _Plan) -> Go | Wait:
        return self._decision(plan.route, self._admit_script(keys=plan.keys, args=plan.args))

    def admit_many(self, routes: Sequence[tuple[str, str]]) -> list[Go | Wait]:
        """One round trip for the batch, and one check per distinct route that no rate limit counts:
        without a limit the check only reads the circuit and the pause, so attempts on the same
        route at the same instant get the same answer; but a half-open circuit lets one probe
        through, so the others on its route are checked again, each on its own."""
        plans = [self._plan(origin, preferred) for origin, preferred in routes]
        shared: dict[tuple[str, ...], int] = {}  # a route no limit counts -> its check
        checks: list[_Plan] = []
        where = []  # each attempt's check
        for plan in plans:
            if plan.key not in shared:
                checks.append(plan)
                if plan.unlimited:
                    shared[plan.key] = len(checks) - 1
            where.append(shared.get(plan.key, len(checks) - 1))
        answers = [self._decision(plan.route, answer) for plan, answer in zip(checks, self._run_many(checks), strict=True)]
        decisions: list[Go | Wait] = []
        used: set[int] = set()
        for plan, index in zip(plans, where, strict=True):
            decision = answers[index]
            if index in used and isinstance(decision, Go) and decision.probe:
                decision = self._check(plan)  # the probe went to the first attempt on this route
            used.add(index)
            decisions.append(decision)
        return decisions

    def _plan(self, origin: str, preferred: str) -> _Plan:
        plan = self._plans.get((origin, preferred))
        if plan is None:
            route = _route(self.failover, origin, preferred)
            plan = self._plans[(origin, preferred)] = _Plan(
                route, tuple(route), self._admit_keys(route), self._admit_args(route),
                not any(self.intervals.get(adapter) for adapter in route))
        return plan

    def _run_many(self, checks: list[_Plan]) -> list[Any]:
        try:
            return self._evalsha(checks)
        except NoScriptError:  # Redis restarted and forgot the script: load it, then run the batch once more
            self.client.script_load(_ADMIT)
            return self._evalsha(checks)

    def _evalsha(self, checks: list[_Plan]) -> list[Any]:
        # EVALSHA on a plain pipeline: redis-py's Script on a pipeline checks SCRIPT EXISTS on every
        # execute, a second round trip; the script is loaded by the first admit (or just above). A
        # batch on one route (the usual one) needs no pipeline: redis-py's pipeline costs the
        # worker about a quarter more CPU than the one command (~40 more Python calls).
        sha = self._admit_script.sha or self.client.script_load(_ADMIT)
        if len(checks) == 1:
            keys = checks[0].keys
            return [self.client.evalsha(sha, len(keys), *keys, *checks[0].args)]
        pipe = self.client.pipeline(transaction=False)
        for plan in checks:
            pipe.evalsha(sha, len(plan.keys), *plan.keys, *plan.args)
        return pipe.execute()

    def _admit_keys(self, route: list[str]) -> list[str]:
        return [key for adapter in route for key in self._keys(adapter)]

    def _admit_args(self, route: list[str]) -> list[Any]:
        return [self.open_ms, *(self.intervals.get(adapter, 0) for adapter in route)]

    @staticmethod
    def _decision(route: list[str], answer: Sequence[Any]) -> Go | Wait:
        index, delay, why, probe, clean = answer
        why = why.decode() if isinstance(why, bytes) else why
        adapter = route[int(index) - 1] if index else route[0]
        if why == "go":
            return Go(adapter, bool(probe), bool(clean))
        return Wait(int(delay), why, adapter)

    def _report(self, adapter: str, transient: bool, pause_ms: int) -> str | None:
        circuit, pause = self._keys(adapter)[:2]
        changed = self._report_script(
            keys=[circuit, pause], args=[1 if transient else 0, self.threshold, self.open_ms, pause_ms, _KEY_TTL_MS]
        )
        return changed.decode() if isinstance(changed, bytes) else changed or None

    def _states(self, adapters: Sequence[str]) -> list[tuple[int, int]]:
        pipe = self.client.pipeline(transaction=False)
        for adapter in adapters:
            pipe.hmget(self._keys(adapter)[0], "failures", "open_until")
        return [(int(f or 0), int(float(o or 0))) for f, o in pipe.execute()]

    def _now_ms(self) -> int:
        seconds, micros = self.client.time()
        return int(seconds) * 1000 + int(micros) // 1000


class MemoryGuard(Guard):
    """The same rules in this process only: the stub broker has no other processes to agree with."""

    def __init__(self, settings: Any) -> None:
        super().__init__(settings)
        self._lock = threading.Lock()
        self._failures: dict[str, int] = {}
        self._open_until: dict[str, int] = {}
        self._probe_until: dict[str, int] = {}
        self._paused: dict[str, int] = {}
        self._due: dict[str, float] = {}  #: when the next call may pass (GCRA's theoretical arrival time)
        self._queue: dict[str, float] = {}  #: the waiting queue's tail

    def _admit(self, route: list[str]) -> Go | Wait:
        now = self._now_ms()
        soonest = None
        with self._lock:
            for adapter in route:
                open_until, probe = self._open_until.get(adapter, 0), False
                wait = open_until - now if open_until > now else 0
                if open_until and not wait:
                    probing = self._probe_until.get(adapter, 0)
                    wait, probe = (probing - now, False) if probing > now else (0, True)
                if wait:
                    soonest = wait if soonest is None else min(soonest, wait)
                    continue
                if self._paused.get(adapter, 0) > now:
                    return Wait(self._paused[adapter] - now, "paused", adapter)
                interval = self.intervals.get(adapter, 0)
                due = self._due.get(adapter, 0.0)
                if interval and due > now + interval:  # one interval of tolerance: a burst of two
                    place = self._queue[adapter] = max(self._queue.get(adapter, 0.0), due) + interval
                    return Wait(int(place - interval - now + 0.999), "rate", adapter)
                if interval:
                    self._due[adapter] = max(due, now) + interval
                if probe:
                    self._probe_until[adapter] = now + self.open_ms
                return Go(adapter, probe, not open_until and not self._failures.get(adapter))
        return Wait(int(soonest or 0), "open", route[0])

    def _report(self, adapter: str, transient: bool, pause_ms: int) -> str | None:
        now = self._now_ms()
        with self._lock:
            if not transient:
                self._failures.pop(adapter, None)
                self._probe_until.pop(adapter, None)
                return "closed" if self._open_until.pop(adapter, None) else None
            if pause_ms:
                self._paused[adapter] = max(self._paused.get(adapter, 0), now + pause_ms)
            failures = self._failures[adapter] = self._failures.get(adapter, 0) + 1
            open_until = self._open_until.get(adapter, 0)
            if open_until > now:
                return None
            if open_until or failures >= self.threshold:
                self._open_until[adapter] = now + self.open_ms
                self._probe_until.pop(adapter, None)
                return "opened"
            return None

    def _states(self, adapters: Sequence[str]) -> list[tuple[int, int]]:
        with self._lock:
            return [(self._failures.get(a, 0), self._open_until.get(a, 0)) for a in adapters]
