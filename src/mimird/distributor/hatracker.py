"""The HA tracker: one elected replica per (tenant, cluster) of a Prometheus HA pair, as Mimir's.

Mimir keeps a `ReplicaDesc{replica, received_at, elected_at, elected_changes, deleted_at}` per
`<tenant>/<cluster>` in a KV store; here the store is this process's memory, written through to
`<tsdb dir>/ha-tracker.json` (temporary file, fsync, rename) whenever an entry changes, and read back
at start, so an election survives a restart.

The rules are those of Mimir's `checkReplica` and its KV compare-and-swap:

* while the elected replica's stored receive time is younger than the update timeout (+ jitter), its
  requests pass untouched and any other replica's are refused (202, deduplicated);
* older than that, a request from the elected replica refreshes the receive time;
* a request from another replica takes over only once the stored receive time is older than the
  failover timeout;
* an unknown cluster is elected at once, unless the tenant already tracks `ha_max_clusters` (400).

A background pass (every `-distributor.ha-tracker.update-timeout`-ish) elects a replica that was seen
recently when the elected one has gone quiet past the failover timeout, marks entries not written
for 30 minutes deleted and forgets them 30 minutes later.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from mimird.distributor.validation import tenant_limit_message
from mimird.util.logging import kv_log

log = logging.getLogger("mimird.distributor.hatracker")

STATE_FILE = "ha-tracker.json"
DELETE_AFTER_MS = 30 * 60 * 1000  # an entry not written for this long is marked deleted...
FORGET_AFTER_MS = 30 * 60 * 1000  # ...and removed this long after that


class HADecline(Exception):
    """A request the tracker does not let through: `status` 202 (other replica) or 400 (too many clusters)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def replicas_did_not_match(replica: str, elected: str) -> HADecline:
    return HADecline(202, f"replicas did not match, rejecting sample: replica={replica}, elected={elected}")


def too_many_clusters(limit: int) -> HADecline:
    return HADecline(400, tenant_limit_message(
        "the write request has been rejected because the maximum number of high-availability (HA) clusters has "
        f"been reached for this tenant (limit: {limit})", "tenant-too-many-ha-clusters",
        "distributor.ha-tracker.max-clusters"))


def find_ha_labels(pairs, cluster_label: str, replica_label: str) -> tuple[str, str]:
    """The (cluster, replica) label values of one series' raw label pairs ("" when absent; the last wins)."""
    cluster = replica = ""
    for name, value in pairs:
        if name == replica_label:
            replica = value
        if name == cluster_label:
            cluster = value
    return cluster, replica


@dataclass
class ReplicaDesc:
    """One (tenant, cluster)'s election, times in Unix milliseconds."""

    replica: str
    received_at: int
    elected_at: int
    elected_changes: int = 0
    deleted_at: int = 0


class HATracker:
    """Elections for every tenant and cluster, persisted under `state_dir` (None: memory only)."""

    def __init__(self, state_dir: Path | None, clock=time.time, rng: random.Random | None = None):
        self.path = Path(state_dir) / STATE_FILE if state_dir is not None else None
        self.clock = clock
        self.rng = rng or random.Random()
        self.elected: dict[tuple[str, str], ReplicaDesc] = {}
        # Other replicas' latest request time per (tenant, cluster), for the background re-election.
        self.seen: dict[tuple[str, str], dict[str, int]] = {}
        self._jitter_fraction: dict[str, float] = {}
        self.elected_changes_listener = None  # called with (tenant, cluster) on each change of replica

    # state
    def load(self) -> None:
        """Read the persisted elections, if any; an unreadable file is logged and ignored."""
        if self.path is None or not self.path.is_file():
            return
        try:
            document = json.loads(self.path.read_text())
            for entry in document.get("replicas", []):
                key = (entry.pop("tenant"), entry.pop("cluster"))
                self.elected[key] = ReplicaDesc(**entry)
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
            kv_log(log, logging.ERROR, "ignoring unreadable HA tracker state", path=str(self.path), err=str(exc))
            self.elected.clear()

    def save(self) -> None:
        """Write every entry to the state file atomically."""
        if self.path is None:
            return
        entries = [{"tenant": tenant, "cluster": cluster, **asdict(desc)}
                   for (tenant, cluster), desc in sorted(self.elected.items())]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump({"version": 1, "replicas": entries}, fh, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)

    def _update_timeout_ms(self, tenant: str, limits: dict) -> int:
        """The update timeout plus this tenant's jitter, drawn once in [-max, +max) as Mimir does per tracker."""
        fraction = self._jitter_fraction.get(tenant)
        if fraction is None:
            fraction = self._jitter_fraction[tenant] = self.rng.uniform(-1.0, 1.0)
        jitter = limits["ha_tracker_update_timeout_jitter_max"] * fraction
        return int((limits["ha_tracker_update_timeout"] + jitter) * 1000)

    def clusters(self, tenant: str) -> int:
        return sum(1 for (t, _), desc in self.elected.items() if t == tenant and not desc.deleted_at)

    # the decision
    def check_replica(self, tenant: str, cluster: str, replica: str, limits: dict, now_ms: int | None = None) -> None:
        """Let a request from `replica` of `cluster` through, or raise HADecline."""
        now = int(self.clock() * 1000) if now_ms is None else now_ms
        key = (tenant, cluster)
        desc = self.elected.get(key)
        if desc is not None and desc.deleted_at:
            desc = None
        update_timeout = self._update_timeout_ms(tenant, limits)
        if desc is not None:
            age = now - desc.received_at
            if desc.replica == replica:
                if age < update_timeout:
                    return
            else:
                self.seen.setdefault(key, {})[replica] = now
                if age < int(limits["ha_tracker_failover_timeout"] * 1000):
                    raise replicas_did_not_match(replica, desc.replica)
        else:
            limit = limits["ha_max_clusters"]
            if limit > 0 and self.clusters(tenant) + 1 > limit:
                raise too_many_clusters(limit)
        self._elect(key, replica, now, desc)

    def _elect(self, key: tuple[str, str], replica: str, now: int, previous: ReplicaDesc | None) -> None:
        if previous is not None and previous.replica == replica:
            desc = ReplicaDesc(replica, now, previous.elected_at, previous.elected_changes)
        else:
            changes = previous.elected_changes + 1 if previous is not None else 0
            desc = ReplicaDesc(replica, now, now, changes)
            kv_log(log, logging.INFO, "HA tracker elected replica", user=key[0], cluster=key[1], replica=replica)
            if self.elected_changes_listener is not None and previous is not None:
                self.elected_changes_listener(*key)
        self.elected[key] = desc
        self.seen.get(key, {}).pop(replica, None)
        self.save()

    # background
    def maintain(self, limits_for, now_ms: int | None = None) -> None:
        """Re-elect where the elected replica went quiet and another is sending; expire idle entries."""
        now = int(self.clock() * 1000) if now_ms is None else now_ms
        changed = False
        for key, desc in list(self.elected.items()):
            if desc.deleted_at:
                if now - desc.deleted_at > FORGET_AFTER_MS:
                    del self.elected[key]
                    self.seen.pop(key, None)
                    changed = True
                continue
            if now - desc.received_at > DELETE_AFTER_MS:
                desc.deleted_at = now
                changed = True
                continue
            limits = limits_for(key[0])
            failover = int(limits["ha_tracker_failover_timeout"] * 1000)
            others = self.seen.get(key, {})
            recent = [(t, r) for r, t in others.items() if now - t < failover and r != desc.replica]
            if now - desc.received_at >= failover and recent:
                _, replica = max(recent)
                self._elect(key, replica, max(recent)[0], desc)
        if changed:
            self.save()

    def rows(self, limits_for, now_ms: int | None = None) -> list[dict]:
        """The live elections sorted by (tenant, cluster), with Mimir's page columns (times in ms)."""
        now = int(self.clock() * 1000) if now_ms is None else now_ms
        out = []
        for (tenant, cluster), desc in sorted(self.elected.items()):
            if desc.deleted_at:
                continue
            limits = limits_for(tenant)
            out.append({
                "userID": tenant, "cluster": cluster, "replica": desc.replica,
                "elected_at": desc.elected_at, "received_at": desc.received_at,
                "update_ms": desc.received_at + int(limits["ha_tracker_update_timeout"] * 1000) - now,
                "failover_ms": desc.received_at + int(limits["ha_tracker_failover_timeout"] * 1000) - now,
            })
        return out
