"""Roll a release out over the fleet: images checked in the registry first, the fleet lock,
canary then batches (each host runs the agent's apply), a failure budget per wave and its
action, every host result recorded. The plan and every decision come from the pure
functions of controller/rollout.py; this module carries them out through a session."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from mlfleet.agent.imageref import ImageRef
from mlfleet.agent.platforms import Platform, PlatformError, PlatformMissing, choose, is_index
from mlfleet.agent.protocol import (
    ApplyRequest,
    DesiredState,
    Event,
    HostFacts,
    ProtocolError,
    TransferMode,
    facts_from_dict,
)
from mlfleet.agent.selection import select_variant
from mlfleet.agent.variants import Variant, VariantError, parse_variants
from mlfleet.controller import hostops
from mlfleet.controller.errors import ConfigError
from mlfleet.controller.fleet_lock import FleetLock, held
from mlfleet.controller.host_failure import host_failed
from mlfleet.controller.hosts import Host
from mlfleet.controller.outcomes import OUTCOME_OF_APPLY, DeployReport, HostResult, Outcome
from mlfleet.controller.playbook import Playbook
from mlfleet.controller.registry import Registry, RegistryAccess
from mlfleet.controller.registry_filter import PullScope
from mlfleet.controller.relay import Relay
from mlfleet.controller.relay_cache import RelayCache
from mlfleet.controller.rollout import (
    PER_VARIANT,
    Action,
    BatchSpec,
    Canary,
    FailureBudget,
    Wave,
    decide,
    plan_waves,
)
from mlfleet.controller.session import FleetSession
from mlfleet.controller.transport import Transport


@dataclass(frozen=True)
class RolloutOptions:
    """How a deployment is rolled out: the playbook's `rollout:` with the CLI's overrides."""

    canary: Canary
    batch: BatchSpec
    budget: FailureBudget
    on_failure: Action
    transfer: Optional[TransferMode] = None  # None: each host's mlfleet_transfer


# --- the plan ----------------------------------------------------------------------------------


def playbook_variants(playbook: Playbook) -> Optional[List[Variant]]:
    """The playbook's variants as the agent reads them (None when it would not)."""
    try:
        return parse_variants([v.spec for v in playbook.variants])
    except VariantError:
        return None


def expected_variant(
    variants: Optional[Sequence[Variant]], facts: Optional[HostFacts]
) -> Tuple[bool, Optional[str]]:
    """(known, variant): the variant the host's agent will select, from its stored facts
    (pure). known False: no usable facts or variants, any variant may be chosen."""
    if facts is None or variants is None:
        return False, None
    return True, select_variant(variants, facts).variant


def stored_facts(session: FleetSession, host: Host) -> Optional[HostFacts]:
    """The facts `mlfleet facts` stored for the host, when they can still be read."""
    data = session.state.facts(host.name)
    if data is None:
        return None
    try:
        return facts_from_dict(data)
    except ProtocolError:
        return None  # stored by another version: as if none were stored


def stored_facts_of(session: FleetSession) -> Dict[str, HostFacts]:
    """Host -> its stored facts, for the session's hosts that have readable ones (read once
    per command: the plan's canary and the image check both use them)."""
    found = {host.name: stored_facts(session, host) for host in session.hosts}
    return {name: facts for name, facts in found.items() if facts is not None}


def expected_variants(
    playbook: Playbook, facts_of: Mapping[str, HostFacts]
) -> Dict[str, Optional[str]]:
    """Host -> the variant it will select, for the hosts whose stored facts tell (pure)."""
    variants = playbook_variants(playbook)
    out: Dict[str, Optional[str]] = {}
    for name, facts in facts_of.items():
        known, variant = expected_variant(variants, facts)
        if known:
            out[name] = variant
    return out


def plan_rollout(
    hosts: Sequence[str], options: RolloutOptions, variant_of: Mapping[str, Optional[str]]
) -> Tuple[List[Wave], str]:
    """The waves (pure, rollout.plan_waves) and how the canary was chosen, in words."""
    waves = plan_waves(hosts, options.canary, options.batch, variant_of)
    if options.canary != PER_VARIANT:
        return waves, f"{options.canary} host(s)"
    canary = waves[0].hosts if waves and waves[0].name == "canary" else ()
    known = [h for h in canary if variant_of.get(h) is not None]
    if not known:
        return (
            waves,
            "one host per variant, but no host's variant is known (run `mlfleet facts`): the first host",
        )
    return waves, "one host per variant: " + ", ".join(f"{h} ({variant_of[h]})" for h in known)


def needed_images(
    playbook: Playbook, host: Host, tag: str, variant_of: Mapping[str, Optional[str]]
) -> Dict[str, bool]:
    """Image reference -> whether the host needs it: only its expected variant's when its
    stored facts tell (`variant_of`, from `expected_variants`: the others would not be
    pulled), every variant's when they do not (the host is not in `variant_of`)."""
    images = playbook.images(host.vars, host.name, tag)
    known, chosen = host.name in variant_of, variant_of.get(host.name)
    return {ref: (not known or name == chosen) for name, ref in images.items()}


def check_images(
    session: FleetSession,
    playbook: Playbook,
    tag: str,
    variant_of: Mapping[str, Optional[str]],
    facts_of: Mapping[str, HostFacts],
) -> Dict[str, str]:
    """Every image the deployment needs must be in its registry: one missing stops the
    deployment before any host is touched. A host with stored facts needs only the variant
    it will select (hosts whose hardware changed since are still safe: their agent's pull
    fails in preflight, before anything running is touched). Returns each image's manifest
    digest: the deployment pins it, so every host runs the same bits even when the tag is
    pushed again while the rollout goes on."""
    # Each image is checked with each credential that will pull it (hosts or groups may
    # have their own): a credential that may not read it fails here, before any host.
    refs: Dict[Tuple[str, RegistryAccess], List[str]] = {}
    for host in session.hosts:
        for ref, needed in needed_images(playbook, host, tag, variant_of).items():
            access = session.registry_access(host, ImageRef.parse(ref).registry_address)
            users = refs.setdefault((ref, access), [])
            if needed:
                users.append(host.name)
    missing, unused, unfit = [], [], []
    digests: Dict[str, str] = {}
    clients: Dict[RegistryAccess, Registry] = {}
    arch_of = {name: facts.arch for name, facts in facts_of.items()}
    for (ref, access), users in refs.items():
        image = ImageRef.parse(ref)
        registry = clients.setdefault(access, access.client(timeout=10))
        found = registry.get_manifest_bytes(image.api_repository, image.reference)
        if found is not None:
            digests.setdefault(ref, image.digest or found[2])
            unfit.extend(_platform_misses(ref, found[0], users, arch_of))
        elif users:
            missing.append(
                f"{ref} (needed by {', '.join(users[:3])}{' ...' if len(users) > 3 else ''})"
            )
        else:
            unused.append(ref)
    if missing:
        raise ConfigError(
            "not in the registry: " + "; ".join(missing),
            hint=f"push tag {tag} for these variants, or run `mlfleet facts` so hosts need only the"
            " variant they select",
        )
    if unfit:
        raise ConfigError(
            "; ".join(unfit),
            hint="push an image for those platforms under the tag (a multi-platform index), or"
            " give those hosts a variant that has one",
        )
    if unused:
        session.progress(
            "*", f"not in the registry, and no host's stored facts select them: {', '.join(unused)}"
        )
    return digests


def _platform_misses(ref: str, raw: bytes, users: Sequence[str],
                     arch_of: Mapping[str, str]) -> List[str]:  # fmt: skip
    """For an image index: each platform that hosts needing it run (their stored facts'
    architecture) and it has no image for, in words (pure)."""
    try:
        index = json.loads(raw)
    except ValueError:
        return []
    if not isinstance(index, dict) or not is_index(index):
        return []
    lacking: Dict[str, Tuple[PlatformMissing, List[str]]] = {}
    for host in users:
        if host not in arch_of:
            continue
        try:
            choose(index, Platform.from_machine(arch_of[host]))
        except PlatformMissing as exc:
            lacking.setdefault(str(exc.want), (exc, []))[1].append(host)
        except PlatformError:
            continue  # a machine the platform table does not know: its engine decides
    return [
        f"image {ref} {exc} (needed by {', '.join(hosts[:3])}{' ...' if len(hosts) > 3 else ''})"
        for exc, hosts in lacking.values()
    ]


def pin_digests(desired: DesiredState, digests: Mapping[str, str]) -> DesiredState:
    """The desired state with each variant's image pinned to the digest its tag named when
    the deployment started (pure)."""
    variants = [
        replace(v, digest=digests[v.image])
        if v.image is not None and v.image in digests and v.digest is None
        else v
        for v in desired.parsed_variants()
    ]
    return replace(desired, variants=[v.to_dict() for v in variants])


# --- the deployment ----------------------------------------------------------------------------


def deploy(
    session: FleetSession,
    playbook: Playbook,
    tag: str,
    options: RolloutOptions,
    *,
    playbook_path: str = "",
    inventory_path: str = "",
) -> DeployReport:
    """Canary, then batches; after each wave `rollout.decide` says whether to go on, stop,
    or roll back the hosts this deployment updated. Hosts of waves not run are `skipped`."""
    facts_of = stored_facts_of(session)
    variant_of = expected_variants(playbook, facts_of)
    waves, _ = plan_rollout([h.name for h in session.hosts], options, variant_of)
    digests = check_images(session, playbook, tag, variant_of, facts_of)
    state = session.state
    why = f"deploy {playbook.app} {tag}"
    # On every host too: another controller's deployment stops this one here.
    with held(session, why) as lock:
        for stale in state.mark_interrupted():
            state.event(
                "interrupted", f"deployment {stale} was interrupted; a new deploy finishes the job"
            )
        deployment_id = state.start_deployment(
            app=playbook.app, tag=tag, playbook=playbook_path, inventory=inventory_path,
            hosts=len(session.hosts), policy=repr(options),
        )  # fmt: skip
        try:
            status, reason, results = _run_waves(
                session,
                playbook,
                tag,
                options,
                waves,
                deployment_id,
                Pins(digests, variant_of),
                lock,
            )
        except BaseException as exc:
            state.finish_deployment(deployment_id, "interrupted", f"{type(exc).__name__}: {exc}")
            raise
    state.finish_deployment(deployment_id, status, reason)
    ordered = [results[h.name] for h in session.hosts if h.name in results]
    return DeployReport(status, deployment_id, tag, reason, ordered)


def _run_waves(
    session: FleetSession,
    playbook: Playbook,
    tag: str,
    options: RolloutOptions,
    waves: List[Wave],
    deployment_id: int,
    pins: Pins,
    lock: Optional[FleetLock] = None,
) -> Tuple[str, str, Dict[str, HostResult]]:
    by_name = {h.name: h for h in session.hosts}
    results: Dict[str, HostResult] = {}
    status, reason = "succeeded", ""
    for i, wave in enumerate(waves):
        if lock is not None:
            lock.renew_if_due()
        session.progress("*", f"{wave.name}: {', '.join(wave.hosts)}")
        done = session.each(
            lambda h, w=wave: _deploy_host(
                session, playbook, h, tag, deployment_id, w, options, pins
            ),  # type: ignore[misc]
            [by_name[n] for n in wave.hosts],
        )
        results.update(done)
        failed = [n for n, r in done.items() if r.outcome.counts_as_failure]
        remaining = sum(len(w.hosts) for w in waves[i + 1 :])
        decision = decide(wave, failed, options.budget, options.on_failure, remaining)
        session.state.event("wave", decision.reason, deployment_id)
        session.progress("*", decision.reason)
        if failed:
            status, reason = "failed", decision.reason
        if decision.rollback:
            _roll_back_updated(session, playbook.app, results, deployment_id)
        if not decision.proceed:
            status = "halted" if remaining else status
            why = _halted_because(wave.name, [(n, done[n].reason or "") for n in failed])
            for w in waves[i + 1 :]:
                for name in w.hosts:
                    results[name] = HostResult(name, Outcome.SKIPPED, why, w.name)
                    session.state.record_host(deployment_id, name, w.name, results[name].to_dict())
            break
    return status, reason, results


def _halted_because(wave: str, failed: List[Tuple[str, str]]) -> str:
    """A skipped host's reason: the wave that halted the deployment and its first failure
    (a registry that refused the credentials is then named on every host left)."""
    if not failed:
        return f"deployment halted after {wave}"
    host, reason = failed[0]
    more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
    return f"deployment halted after {wave}: {host}{more}: {reason}"


def _deploy_host(
    session: FleetSession,
    playbook: Playbook,
    host: Host,
    tag: str,
    deployment_id: int,
    wave: Wave,
    options: RolloutOptions,
    pins: Optional[Pins] = None,
) -> HostResult:
    started = time.time()

    def event(e: Event) -> None:
        if e.kind.milestone:
            session.progress(host.name, e.message)

    try:
        transport = session.transport(host)
        desired = playbook.desired_state(host.vars, host.name, tag, str(deployment_id))
        if pins is not None:
            desired = pin_digests(desired, pins.digests)
        registry = _registry_of(desired)
        mode = options.transfer or TransferMode(host.transfer)
        if mode is TransferMode.AUTO:
            mode = TransferMode.PULL if _reaches(transport, registry) else TransferMode.RELAY
        relay_bytes: Optional[int] = None
        access = session.registry_access(host, f"{registry[0]}:{registry[1]}")
        request = ApplyRequest(desired, access.credential, host.store_pull_credentials)
        if mode is TransferMode.RELAY:
            source = session.relay_source(host, registry)
            cache = session.relay_cache(registry)
            if cache is not None and source == cache.address:
                _fill_relay_cache(session, host, cache, desired, pins)
            scope = PullScope.of_variants(desired.parsed_variants())
            with Relay(transport, source, host.bwlimit_kbit, scope=scope) as relay:
                session.progress(
                    host.name, f"relay: the host pulls through {relay.address} (SSH tunnel)"
                )
                outcome = hostops.apply(
                    transport, session.bundle(), request, pull_via=relay.address, on_event=event
                )
            relay_bytes = relay.bytes_to_host
            if relay.refusals:  # someone on the host tried more than this pull through it
                session.progress(host.name, f"relay: refused {relay.refusals} request(s) outside "
                                            f"this deployment's pull; first: {relay.refused[0]}")  # fmt: skip
        else:
            outcome = hostops.apply(transport, session.bundle(), request, on_event=event)
        result = HostResult(
            host.name,
            OUTCOME_OF_APPLY[outcome.status],
            reason=outcome.reason,
            wave=wave.name,
            tag=tag,
            variant=outcome.variant,
            image=outcome.image,
            digest=outcome.digest,
            previous_tag=outcome.previous_tag,
            # Relay: what crossed the host's link, counted in the tunnel; pull: layer sizes.
            bytes=relay_bytes if relay_bytes is not None else outcome.bytes_pulled,
            transfer=mode,
            evidence=outcome.health_evidence[-10:],
            timings=outcome.timings,
        )
    except Exception as exc:  # whatever it was, this host's failure, not the deployment's
        failure = host_failed(host.name, exc)
        result = HostResult(host.name, failure.outcome, failure.reason, wave.name, tag)
    result.started = started
    result.duration_s = round(time.time() - started, 2)
    session.state.record_host(deployment_id, host.name, wave.name, result.to_dict())
    session.progress(
        host.name, result.outcome.value + (f": {result.reason}" if result.reason else "")
    )
    return result


_REACH = "import socket, sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), 3)"


@dataclass(frozen=True)
class Pins:
    """What the deployment resolved before touching any host: each image's digest, and the
    variant each host with stored facts will select."""

    digests: Mapping[str, str]
    variant_of: Mapping[str, Optional[str]]


def _fill_relay_cache(session: FleetSession, host: Host, cache: RelayCache,
                      desired: DesiredState, pins: Optional[Pins]) -> None:  # fmt: skip
    """Copy into the relay cache what the host will pull: its expected variant's image when
    its stored facts tell, else every variant's (its agent picks one). (Hosts with
    credentials of their own, per-group auth files, had each image they need checked with
    their credential by check_images before any host was touched.)"""
    chosen = pins.variant_of.get(host.name) if pins else None
    for variant in desired.parsed_variants():
        if variant.image is None or (chosen is not None and variant.name != chosen):
            continue
        image = ImageRef.parse(variant.image)
        stats = cache.fill(image.api_repository, variant.digest or image.reference)
        if stats is not None and stats.blobs:
            session.progress(
                host.name,
                f"relay cache: fetched {stats.blobs} blob(s), {stats.bytes / 1048576:.1f} MiB,"
                f" of {image} from {cache.upstream.address}",
            )


def _registry_of(desired: DesiredState) -> Tuple[str, int]:
    """(host, port) of the registry the desired state's images live in."""
    return ImageRef.parse(desired.parsed_variants()[0].image or "").address()


def _reaches(transport: Transport, registry: Tuple[str, int]) -> bool:
    """Whether the host itself can open a connection to the registry (for --transfer auto)."""
    argv = [transport.host.python, "-c", _REACH, registry[0], str(registry[1])]
    return transport.run(argv, timeout=30).code == 0


def _roll_back_updated(
    session: FleetSession, app: str, results: Dict[str, HostResult], deployment_id: int
) -> None:
    """Return the hosts this deployment updated to their previous release."""
    from mlfleet.controller.commands import rollback_fleet

    updated = [
        h for h in session.hosts if h.name in results and results[h.name].outcome is Outcome.UPDATED
    ]
    for back in rollback_fleet(session, app, None, updated):
        result = results[back.host]
        if back.outcome is Outcome.ROLLED_BACK:
            result.outcome, result.reason = (
                Outcome.ROLLED_BACK,
                back.reason or "deployment rolled back",
            )
        else:
            result.outcome = Outcome.FAILED
            result.reason = f"rollback: {back.reason}"
        session.state.event(
            "rollback", f"{back.host}: {result.outcome.value}", deployment_id, back.host
        )
        session.progress(back.host, f"rolled back ({result.outcome.value})")
