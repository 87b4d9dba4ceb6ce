"""Apply a desired state on this host: select, preflight, start, prove it serves, then
commit or roll back. The host ends with the new release healthy or the previous one
healthy again; a failed preflight changes nothing."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from typing import AbstractSet, Any, Dict, List, Optional, Set, Tuple

from mlfleet.agent import health
from mlfleet.agent.container_config import (
    runs_as_root,
)
from mlfleet.agent.credential import RegistryCredential
from mlfleet.agent.desired import DesiredState
from mlfleet.agent.engine_api import EngineError, EngineUnreachable
from mlfleet.agent.facts import HostFacts
from mlfleet.agent.host import (
    AgentHost,
    MissingInput,
    create_container,
    health_target,
    read_inputs,
    serve_after_reboot,
)
from mlfleet.agent.host_credentials import forget_credential
from mlfleet.agent.host_credentials import store_credential as store_on_host
from mlfleet.agent.imageref import ImageRef
from mlfleet.agent.platforms import PlatformMissing
from mlfleet.agent.protocol import ApplyResult, ApplyStatus, EventKind, Phase, Strategy
from mlfleet.agent.registry_auth import RegistryAuthError, RegistryTrustError
from mlfleet.agent.registry_probe import RemoteImage, remote_image
from mlfleet.agent.repair import RepairFailed, recreate
from mlfleet.agent.selection import select_variant
from mlfleet.agent.state import Release
from mlfleet.agent.variants import Variant

# Extraction needs more room than the compressed download; plus a floor for the engine.
DISK_FACTOR = 3.0
DISK_RESERVE_MIB = 32


class ApplyFailed(Exception):
    """A phase failed; `phase` says which, the message says why."""

    def __init__(self, phase: Phase, reason: str):
        super().__init__(reason)
        self.phase = phase
        self.reason = reason


# --- apply -------------------------------------------------------------------------------


def apply(host: AgentHost, desired: DesiredState, pull_via: Optional[str] = None,
          credential: Optional[RegistryCredential] = None,
          store_credential: bool = False) -> ApplyResult:  # fmt: skip
    """Apply `desired`. `pull_via`: a registry mirror (host:port) to pull the image from
    instead of its own registry; the image is then tagged under its canonical name.
    `credential`: for the image's registry, handed to the engine for the pull only (kept on
    the host, for self-healing re-pulls, only with `store_credential`: the operator's opt-in)."""
    started = time.monotonic()
    result = ApplyResult(
        status=ApplyStatus.FAILED, app=desired.app, tag=desired.tag, deployment=desired.deployment
    )
    timings: Dict[str, float] = {}
    result.timings = timings
    release: Optional[Release] = None
    promoted = False
    try:
        repair_interrupted(host)
        t = time.monotonic()
        facts = host.facts()
        variant = _select(desired, facts, result)
        timings["select_s"] = _since(t)
        current = host.store.current(desired.app)
        result.previous_tag = current.tag if current else None
        if current and _unchanged(host, current, desired, variant):
            result.status, result.variant, result.image = (
                ApplyStatus.UNCHANGED,
                variant.name,
                variant.image,
            )
            result.digest, result.container = current.digest, current.container_name
            host.event(
                EventKind.UNCHANGED,
                f"{desired.tag} ({variant.name}) already serves",
                desired.app,
                current.id,
            )
            return result
        t = time.monotonic()
        keep_credential(host, variant, credential, store_credential)
        if credential is None and not pull_via:  # by hand on a host with a `docker login`
            credential = host.placed_credential(
                ImageRef.parse(variant.image or "").registry_address
            )
        image_info, user, env_file = _preflight(
            host, desired, variant, facts, result, pull_via, credential
        )
        timings["preflight_s"] = _since(t)
        release = host.store.new_release(
            desired.app,
            desired.deployment,
            desired.tag,
            variant.name,
            variant.image,
            desired.to_dict(),
        )
        result.digest = _digest_of(variant, image_info)
        host.store.update(release.id, digest=result.digest)
        t = time.monotonic()
        container_id = _start(
            host, desired, variant, release, current, facts, user, env_file, result
        )
        timings["start_s"] = _since(t)
        _prove(host, desired, release, container_id, image_info, result, timings)
        _commit(host, desired, release, current, container_id)
        promoted = True
        result.status = ApplyStatus.SUCCEEDED
        host.event(
            EventKind.SUCCEEDED,
            f"{desired.tag} ({variant.name}) is serving",
            desired.app,
            release.id,
        )
        collect_garbage(host, desired.app, desired.retain)
    except Exception as caught:
        if promoted:
            # The release serves, proven healthy: what failed after its promotion (reporting
            # to a controller that went away, collecting old images) never undoes it.
            result.status = ApplyStatus.SUCCEEDED
            result.reason = f"after {desired.tag} was promoted: {type(caught).__name__}: {caught}"
            return result
        # Anything unexpected still ends in a rollback, never in a half-state.
        exc = (
            caught
            if isinstance(caught, ApplyFailed)
            else ApplyFailed(Phase.INTERNAL, f"{type(caught).__name__}: {caught}")
        )
        result.phase, result.reason = exc.phase, exc.reason
        if release is not None:
            _roll_back(host, desired.app, release, exc, result)
        else:
            host.event(EventKind.REFUSED, f"{exc.phase.value}: {exc.reason}", desired.app)
    finally:
        timings["total_s"] = _since(started)
    return result


def _since(t: float) -> float:
    return round(time.monotonic() - t, 3)


def _select(desired: DesiredState, facts: HostFacts, result: ApplyResult) -> Variant:
    if not facts.docker or not facts.docker.reachable:
        raise ApplyFailed(
            Phase.PREFLIGHT,
            (facts.docker.error if facts.docker else None) or "Docker engine unreachable",
        )
    selection = select_variant(desired.parsed_variants(), facts)
    result.selection = selection
    if not selection.variant:
        reasons = "; ".join(f"{r.variant}: {r.reason}" for r in selection.rejected)
        raise ApplyFailed(Phase.SELECT, f"no variant fits this host ({reasons})")
    variant = next(v for v in desired.parsed_variants() if v.name == selection.variant)
    result.variant, result.image = variant.name, variant.image
    return variant


def _unchanged(host: AgentHost, current: Release, desired: DesiredState, variant: Variant) -> bool:
    """The same release already serves, healthy: nothing to do. (The record keeps env
    values as keyed hashes: the desired state is compared sealed the same way.)"""
    same = (
        current.tag == desired.tag
        and current.variant == variant.name
        and current.image == variant.image
        and _spec_key(current.spec) == _spec_key(host.store.sealed_spec(desired.to_dict()))
    )
    if not same or not current.container_id:
        return False
    info = host.engine.container_inspect(current.container_id)
    if not info or not info["State"]["Running"]:
        return False
    recorded = DesiredState.from_record(current.spec)
    target = health_target(host, recorded, current.container_id, info)
    return all(p.ok for p in health.probe_once(target, recorded.health))


def _digest_of(variant: Variant, image_info: Dict[str, Any]) -> Optional[str]:
    """`repository@sha256:...` of the image the release runs: its pin, else what the engine
    recorded."""
    if variant.digest and variant.image:
        return f"{_repository_and_tag(variant.image)[0]}@{variant.digest}"
    return (image_info.get("RepoDigests") or [None])[0]


def _spec_key(spec: Dict[str, Any]) -> str:
    keep = {k: v for k, v in spec.items() if k != "deployment"}
    return json.dumps(keep, sort_keys=True)


def _preflight(host: AgentHost, desired: DesiredState, variant: Variant, facts: HostFacts,
               result: ApplyResult, pull_via: Optional[str],
               credential: Optional[RegistryCredential]) -> tuple:  # fmt: skip
    """Everything that can be checked before anything running is touched."""
    spec = desired.container
    from mlfleet.agent.hardening import host_path_problem  # links, the agent's dir, env owner

    refusal = host_path_problem(spec, host.agent_dir)
    if refusal:
        raise ApplyFailed(Phase.PREFLIGHT, refusal)
    try:
        env_file = read_inputs(desired)
    except MissingInput as exc:
        raise ApplyFailed(Phase.PREFLIGHT, str(exc)) from None
    assert variant.image is not None
    image_info = _local_image(host, variant)
    if image_info is None:
        source = _pull_source(variant.image, pull_via, variant.digest)
        remote = _check_disk(host, source, facts, credential)
        result.bytes_pulled = _pull_with_retries(host, source, remote, credential)
        digest = (
            _adopt(host, source, variant.image, mirror=bool(pull_via))
            if source != variant.image
            else None
        )
        image_info = host.engine.image_inspect(variant.image)
        if image_info is None:
            raise ApplyFailed(
                Phase.PREFLIGHT, f"image {variant.image} is not on the engine after its pull"
            )
        if digest and not image_info.get("RepoDigests"):
            # Pulled from a mirror: record the manifest digest under the canonical name.
            repository = _repository_and_tag(variant.image)[0]
            image_info["RepoDigests"] = [f"{repository}@{digest}"]
    user = spec.user or (image_info.get("Config") or {}).get("User") or None
    if runs_as_root(user) and not spec.allow_root:
        raise ApplyFailed(
            Phase.PREFLIGHT,
            f"image {variant.image} runs as root; set the container's user or allow_root: true",
        )
    return image_info, spec.user, env_file


def keep_credential(host: AgentHost, variant: Variant, credential: Optional[RegistryCredential],
                    store: bool) -> None:  # fmt: skip
    """The operator's opt-in (`mlfleet_store_pull_credentials`): keep the credential on the
    host (0600, agent/registry_auth.py) so self-healing can pull again with no controller;
    without it, a credential a deployment kept before is forgotten."""
    if credential is None:
        return  # nothing came with this apply (by hand, or an open registry): nothing changes
    if store:
        store_on_host(host.agent_dir, credential)
    else:
        forget_credential(host.agent_dir, ImageRef.parse(variant.image or "").registry_address)


def _check_disk(host: AgentHost, image: str, facts: HostFacts,
                credential: Optional[RegistryCredential]) -> Optional[RemoteImage]:  # fmt: skip
    """Refuse when the missing layers will not fit; returns what the registry said. A
    registry that refuses the credential, or whose certificate is not trusted, is refused
    here, in one line, before the engine pulls anything."""
    free = facts.docker.free_disk_mib if facts.docker else None
    try:
        remote = remote_image(image, host.engine.info(), credential=credential, arch=facts.arch)
    except EngineUnreachable as exc:
        raise ApplyFailed(Phase.PREFLIGHT, str(exc)) from None
    except (RegistryAuthError, RegistryTrustError) as exc:
        raise ApplyFailed(Phase.PREFLIGHT, f"image {image}: {exc}") from None
    except PlatformMissing as exc:
        raise ApplyFailed(
            Phase.PREFLIGHT,
            f"image {image} {exc}: push an image for this host's platform under the tag, or"
            " give the host a variant that has one",
        ) from None
    if remote is None or free is None:
        return remote  # the registry cannot be asked ahead: the pull decides
    local: Set[str] = set()
    for img in host.engine.images():
        info = host.engine.image_inspect(img["Id"]) or {}
        local.update((info.get("RootFS") or {}).get("Layers") or [])
    missing = sum(
        size for (_, size), diff in zip(remote.layers, remote.diff_ids) if diff not in local
    )
    need = int(missing * DISK_FACTOR / (1024 * 1024)) + DISK_RESERVE_MIB
    if missing and need > free:
        raise ApplyFailed(
            Phase.PREFLIGHT,
            f"not enough disk for {image}: its missing layers are {missing / 1048576:.1f} MiB compressed, "
            f"about {need} MiB once unpacked, and the engine's data root has {free} MiB free",
        )
    return remote


def _local_image(host: AgentHost, variant: Variant) -> Optional[Dict[str, Any]]:
    """The engine's image for the variant: the one its name tags, when that is the pinned
    digest (or nothing is pinned); else the pinned bits held under no name (tagged now);
    None when they must be pulled (the tag moved to other bits since this host pulled it)."""
    assert variant.image is not None
    info = host.engine.image_inspect(variant.image)
    if info is None or not variant.digest:
        return info
    if any(d.endswith("@" + variant.digest) for d in info.get("RepoDigests") or ()):
        return info
    pinned = str(replace(ImageRef.parse(variant.image), tag=None, digest=variant.digest))
    if host.engine.image_inspect(pinned) is None:
        return None
    host.engine.image_tag(pinned, *_repository_and_tag(variant.image))
    return host.engine.image_inspect(variant.image)


def _pull_source(image: str, pull_via: Optional[str], digest: Optional[str] = None) -> str:
    """The reference to pull: the image itself, or by its pinned digest (the bits its tag
    named when the deployment started), from its registry or a mirror."""
    ref = ImageRef.parse(image)
    if digest:
        ref = replace(ref, tag=None, digest=digest)
    if pull_via:
        ref = ref.with_registry(pull_via)
    return str(ref)


def _repository_and_tag(image: str) -> Tuple[str, str]:
    """'reg:5000/team/model:v3' -> ('reg:5000/team/model', 'v3'), as the engine's API wants."""
    return ImageRef.parse(image).engine_name_and_tag()


def _adopt(host: AgentHost, source: str, image: str, mirror: bool = True) -> Optional[str]:
    """Tag an image pulled by digest or from a mirror under its canonical name (a mirror's
    name is dropped). Returns the manifest digest it was pulled by (the engine forgets a
    mirror's with the name)."""
    info = host.engine.image_inspect(source) or {}
    digests = [d.split("@", 1)[1] for d in info.get("RepoDigests") or () if "@" in d]
    host.engine.image_tag(source, *_repository_and_tag(image))
    if mirror:
        host.engine.image_remove(source)  # only untags: the canonical name holds the image
    return digests[0] if digests else None


PULL_ATTEMPTS = 4
PULL_PROGRESS_EVERY_S = 20.0


def _progress(status: str, detail: Dict[str, Any]) -> str:
    """'downloading 512.0 of 2048.0 MiB' from the engine's progress detail."""
    current, total = detail.get("current"), detail.get("total")
    if status != "Downloading" or not isinstance(current, int) or not isinstance(total, int):
        return status
    return f"downloading {current / 2**20:.1f} of {total / 2**20:.1f} MiB"


# A pull that fails with these words will fail the same way again: not retried.
_FINAL_PULL_ERRORS = (
    "manifest unknown",
    "not found",
    "unauthorized",
    "authentication required",
    "no basic auth credentials",
    "denied",
    "x509",
)


def _pull_with_retries(host: AgentHost, image: str, remote: Optional[RemoteImage],
                       credential: Optional[RegistryCredential]) -> int:  # fmt: skip
    """A link that drops mid-pull gets bounded retries with backoff; layers already
    complete are not fetched again (the engine keeps them). A missing image, refused
    credentials or an untrusted certificate are not retried."""
    for attempt in range(1, PULL_ATTEMPTS + 1):
        try:
            return _pull(host, image, remote, credential)
        except ApplyFailed as exc:
            reason = exc.reason.lower()
            if attempt == PULL_ATTEMPTS or any(w in reason for w in _FINAL_PULL_ERRORS):
                raise
            host.say(
                EventKind.PULL_RETRY, f"pull attempt {attempt} failed ({exc.reason}); retrying"
            )
            time.sleep(2**attempt)
    raise AssertionError("unreachable")


def _pull(host: AgentHost, image: str, remote: Optional[RemoteImage],
          credential: Optional[RegistryCredential] = None) -> int:  # fmt: skip
    """Pull through the engine (only missing layers travel); returns the bytes fetched:
    the registry's sizes of the layers the engine fetched (its progress ids are the first
    12 hex digits of the layer digests), else the sizes its progress reported."""
    repository, tag = _repository_and_tag(image)
    sizes: Dict[str, int] = {d[7:19]: size for d, size in remote.layers} if remote else {}
    fetched = set()
    host.say(EventKind.PULL, f"pulling {image}")
    said_at = time.monotonic()
    try:
        for msg in host.engine.pull(repository, tag, auth=credential):
            layer, status = msg.get("id"), msg.get("status", "")
            if not layer:
                continue
            detail = msg.get("progressDetail") or {}
            total = detail.get("total")
            if status == "Downloading" and total and layer not in sizes:
                sizes[layer] = int(total)
            if status.startswith("Retrying") or (
                status == "Downloading" and time.monotonic() - said_at >= PULL_PROGRESS_EVERY_S
            ):  # a large layer on a slow link: a sign of life, which the controller waits on
                host.say(EventKind.LAYER, f"layer {layer}: {_progress(status, detail)}")
                said_at = time.monotonic()
            if status in ("Downloading", "Download complete", "Pull complete"):
                fetched.add(layer)
            if status in ("Download complete", "Already exists"):
                host.say(EventKind.LAYER, f"layer {layer}: {status}")
    except EngineError as exc:
        raise ApplyFailed(
            Phase.PREFLIGHT, f"image {image} could not be pulled: {exc.message}"
        ) from None
    except EngineUnreachable as exc:
        raise ApplyFailed(Phase.PREFLIGHT, str(exc)) from None
    return sum(sizes.get(layer, 0) for layer in fetched)


@dataclass(frozen=True)
class StartOrder:
    """Whether the old release stops before the new one starts, and why."""

    stop_first: bool
    reason: str


def start_order(
    strategy: Strategy, new_ports: AbstractSet[int], old_ports: Optional[AbstractSet[int]]
) -> StartOrder:
    """Stop-first or start-first for a new release publishing `new_ports` on the host, the
    serving one publishing `old_ports` (None: nothing serves). `auto` stops first only when
    both bind the same host port: a start-first would fail to bind it."""
    if strategy is Strategy.STOP_FIRST:
        return StartOrder(True, "strategy stop-first")
    if strategy is Strategy.START_FIRST:
        return StartOrder(False, "strategy start-first")
    if old_ports is None:
        return StartOrder(False, "nothing serves yet: nothing to stop")
    shared = sorted(set(new_ports) & set(old_ports))
    if shared:
        ports = ", ".join(str(p) for p in shared)
        return StartOrder(True, f"old and new both bind host port {ports}: the old one stops first")
    return StartOrder(
        False,
        "old and new bind different host ports: the old one serves until the new one is proven",
    )


def _host_ports(spec: DesiredState) -> Set[int]:
    return {p.host for p in spec.container.ports}


def _start(host: AgentHost, desired: DesiredState, variant: Variant, release: Release,
           current: Optional[Release], facts: HostFacts, user: Optional[str], env_file: Dict[str, str],
           result: ApplyResult) -> str:  # fmt: skip
    strategy = Strategy(desired.strategy)
    old_ports = None
    if current is not None and strategy is Strategy.AUTO:  # only `auto` reads the old spec
        old_ports = _host_ports(DesiredState.from_record(current.spec))
    order = start_order(strategy, _host_ports(desired), old_ports)
    if current and current.container_id and order.stop_first:
        host.say(EventKind.STOP, f"stopping {current.container_name} first (its port is needed)")
        try:
            host.engine.container_stop(current.container_id)
        except EngineError as exc:
            # 404: someone removed it (`docker rm`); it holds no port, a rollback recreates it.
            if exc.status != 404:
                raise ApplyFailed(
                    Phase.START, f"could not stop the old release: {exc.message}"
                ) from None
    name = f"{desired.app}.r{release.id}"
    gpu_support = facts.docker.gpu_support if facts.docker else []
    try:
        container_id = create_container(host, desired, variant, release.id, name,
                                        variant.image or "", user, env_file, gpu_support)  # fmt: skip
        result.container = name
        host.engine.container_start(container_id)
    except EngineError as exc:
        raise ApplyFailed(
            Phase.START, f"the engine refused to start {name}: {exc.message}"
        ) from None
    host.say(EventKind.STARTED, f"started {name}")
    return container_id


def _prove(host: AgentHost, desired: DesiredState, release: Release, container_id: str,
           image_info: Dict[str, Any], result: ApplyResult, timings: Dict[str, float]) -> None:  # fmt: skip
    info = host.engine.container_inspect(container_id) or {}
    target = health_target(host, desired, container_id, info)
    t = time.monotonic()
    verdict = health.wait_healthy(target, desired.health, host.report)
    timings["health_s"] = _since(t)
    host.store.record_health(release.id, verdict.ok, "; ".join(verdict.evidence[-3:]))
    result.health_evidence = list(verdict.evidence)
    if not verdict.ok:
        raise ApplyFailed(Phase.HEALTH, verdict.evidence[-1] if verdict.evidence else "not healthy")
    t = time.monotonic()
    watched = health.monitor(target, desired.health, desired.monitor_s, host.report)
    timings["monitor_s"] = _since(t)
    result.health_evidence += list(watched.evidence)
    if not watched.ok:
        raise ApplyFailed(
            Phase.MONITOR,
            watched.evidence[-1] if watched.evidence else "failed in the monitor window",
        )


def _commit(host: AgentHost, desired: DesiredState, release: Release, current: Optional[Release],
            container_id: str) -> None:  # fmt: skip
    serve_after_reboot(host, container_id)
    if current and current.container_id:
        info = host.engine.container_inspect(current.container_id)
        if info and info["State"]["Running"]:
            host.engine.container_stop(
                current.container_id
            )  # start-first: the old one served until now
    host.store.promote(desired.app, release.id)


# --- rollback ----------------------------------------------------------------------------


def _roll_back(
    host: AgentHost, app: str, failed: Release, exc: ApplyFailed, result: ApplyResult
) -> None:
    """Remove the new release; bring the previous one back and prove it serves again."""
    latest = host.store.get(failed.id)
    if latest and latest.container_id:
        result.logs = host.engine.container_logs(latest.container_id, tail=30).splitlines()[-30:]
        host.engine.container_remove(latest.container_id, force=True)
    previous = host.store.current(app)
    if previous is None:
        host.store.update(failed.id, status="failed", reason=exc.reason)
        host.event(
            EventKind.FAILED,
            f"{failed.tag}: {exc.phase.value}: {exc.reason} (nothing served before)",
            app,
            failed.id,
        )
        result.status = ApplyStatus.FAILED
        return
    verdict = restore(host, previous)
    result.health_evidence += [f"rollback: {line}" for line in verdict.evidence[-5:]]
    if verdict.ok:
        host.store.reinstate(
            app, previous.id, failed.id, "rolled_back", f"{exc.phase.value}: {exc.reason}"
        )
        host.event(EventKind.ROLLED_BACK, f"{failed.tag} failed ({exc.phase.value}: {exc.reason}); {previous.tag} serves again",
                   app, failed.id)  # fmt: skip
        result.status = ApplyStatus.ROLLED_BACK
    else:
        # Never rolled back again: recorded and left for an operator.
        host.store.update(
            failed.id, status="rollback_failed", reason=f"{exc.phase.value}: {exc.reason}"
        )
        host.event(EventKind.ROLLBACK_FAILED, f"{previous.tag} did not become healthy again: "
                   + (verdict.evidence[-1] if verdict.evidence else "?"), app, failed.id)  # fmt: skip
        result.status = ApplyStatus.ROLLBACK_FAILED


def restore(host: AgentHost, release: Release) -> health.Verdict:
    """Start a kept release's container (recreate it from its record if it is gone) and
    wait until it is healthy."""
    desired = DesiredState.from_record(release.spec)
    info = host.engine.container_inspect(release.container_id) if release.container_id else None
    if info is None:
        try:
            return recreate(host, release)
        except RepairFailed as exc:
            return health.Verdict(
                ok=False,
                evidence=[
                    f"container of {release.tag} is gone and was not recreated: {exc.reason}"
                ],
                probes=[],
                seconds=0.0,
            )
    if not info["State"]["Running"]:
        host.engine.container_start(release.container_id or "")
        info = host.engine.container_inspect(release.container_id or "") or info
    host.say(EventKind.RESTORE, f"bringing {release.tag} back ({release.container_name})")
    return health.wait_healthy(
        health_target(host, desired, release.container_id or "", info), desired.health, host.report
    )


def rollback_to(host: AgentHost, app: str, tag: Optional[str]) -> ApplyResult:
    """`mlfleet-agent rollback [--to TAG]`: make a kept release current again."""
    current = host.store.current(app)
    kept = host.store.releases(app, ["previous", "retired"])
    target = next((r for r in kept if tag is None or r.tag == tag), None)
    result = ApplyResult(status=ApplyStatus.FAILED, app=app, tag=tag or "", deployment="rollback")
    if target is None:
        have = ", ".join(sorted({r.tag for r in kept})) or "none"
        result.reason = (
            f"no kept release {'of ' + tag if tag else 'to roll back to'} (kept: {have})"
        )
        return result
    result.tag, result.variant, result.image = target.tag, target.variant, target.image
    result.previous_tag = current.tag if current else None
    if current and current.container_id:
        host.engine.container_stop(current.container_id)
    verdict = restore(host, target)
    result.health_evidence = list(verdict.evidence)
    if verdict.ok:
        host.store.reinstate(app, target.id, None, "retired", "")
        serve_after_reboot(host, target.container_id or "")
        host.event(EventKind.ROLLED_BACK, f"rolled back by request to {target.tag}", app, target.id)
        result.status = ApplyStatus.ROLLED_BACK
        return result
    # The requested release does not serve: bring the one we stopped back.
    if target.container_id:
        try:
            host.engine.container_stop(target.container_id)
        except EngineError as exc:
            if exc.status != 404:  # 404: it is gone and was not recreated: nothing to stop
                raise
    if current:
        restore(host, current)
    result.reason = (
        f"{target.tag} did not become healthy; {current.tag if current else 'nothing'} restored"
    )
    return result


def repair_interrupted(host: AgentHost) -> List[tuple]:
    """A release still `starting` means an apply died (kill -9, power loss): remove its
    container. (The app's current release, stopped by a stop-first apply, is restarted by
    the tick.) Returns (app, what was done) pairs."""
    done = []
    for release in host.store.releases(statuses=["starting"]):
        if release.container_id:
            host.engine.container_remove(release.container_id, force=True)
        host.store.update(release.id, status="failed", reason="apply was interrupted")
        msg = f"removed {release.tag}: its apply was interrupted"
        host.event(EventKind.REPAIRED, msg, release.app, release.id)
        done.append((release.app, msg))
    return done


# --- garbage collection ------------------------------------------------------------------


def collect_garbage(host: AgentHost, app: str, retain: int) -> None:
    """Keep `retain` releases (never the current or previous one); remove older containers
    and the images no kept release uses."""
    kept = host.store.releases(app, ["current", "previous", "retired"])
    keep_ids = {r.id for r in kept[:retain]} | {
        r.id for r in kept if r.status in ("current", "previous")
    }
    keep_images = {r.image for r in kept if r.id in keep_ids}
    for release in kept:
        if release.id in keep_ids:
            continue
        if release.container_id:
            host.engine.container_remove(release.container_id, force=True)
        host.store.update(release.id, status="removed")
        if release.image and release.image not in keep_images:
            try:
                host.engine.image_remove(release.image)
            except EngineError:
                pass  # still used by something else: leave it
    # Containers of failed releases are removed at rollback; their images go too.
    for release in host.store.releases(app, ["failed", "rolled_back", "rollback_failed"]):
        if release.image and release.image not in keep_images:
            try:
                host.engine.image_remove(release.image)
            except EngineError:
                pass
